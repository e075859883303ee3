"""Sensorium 2023 (video) scans: the store against per-file ``np.load``, side by side in one run.

    python -m benchmarks.video                 # full size: 720 trials x 7900 neurons x 300 frames
    python -m benchmarks.video --size tiny     # seconds; the tests run it

A full-size synthetic mouse (about 8.6 GB of ``.npy`` files) and one a quarter its size are
generated into ``benchmarks/data/`` (git-ignored) when absent.  Results go to
``benchmarks/results/video-<size>.{md,json}``; ``--update-readme`` copies the targets into
docs/how-to/sensorium-2023.md.  Method (a) is the file tree read as ``MovieFileTreeDataset`` reads it (one
``np.load`` per file), (c) this store.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

import converter
from converter.sample_video import video_sample_name

from . import workloads as W
from .run import HERE, machine, parser, replace_between

SIZES = {
    "full": {"trials": 720, "neurons": 7900, "frames": 300, "repeat": 5},
    "tiny": {"trials": 40, "neurons": 20, "frames": 80, "repeat": 1},
}
BATCH, WINDOW = 32, 60
KEYS = ("videos", "responses", "behavior", "pupil_center")


def dataset(data: Path, trials: int, neurons: int, frames: int) -> Path:
    """A synthetic 2023 scan of this size, generated once and reused."""
    where = data / f"video-{trials}x{neurons}x{frames}"
    path = where / video_sample_name(0)
    if not path.exists():
        print(f"generating {path} ...", file=sys.stderr)
        converter.make_sample(where, trials=trials, neurons=neurons, video=True, frames=frames)
    return path


def _clip_batch_files(folder: Path, trials: np.ndarray, starts: np.ndarray) -> list[list[np.ndarray]]:
    """(a) the least a file tree can do: every file of each trial loaded, the window copied out
    (as the official ``ToTensor`` copies it) and the file's array freed."""
    out = []
    for i, s in zip(trials.tolist(), starts.tolist()):
        out.append([np.load(folder / f"data/{k}/{i}.npy")[..., s : s + WINDOW].copy() for k in KEYS])
    return out


def _official_item(folder: Path, i: int, s: int, stats: dict) -> list[np.ndarray]:
    """(a) as ``mouse_video_loader`` builds an item: NeuroNormalizer on the whole files, CutVideos
    (the first NaN frame of any variable), the window, the behavior channels, float32."""
    x = {k: np.load(folder / f"data/{k}/{i}.npy") for k in KEYS}
    x["videos"] = (x["videos"] - stats["videos_mean"]) / stats["videos_std"]
    x["responses"] = x["responses"] * stats["precision"]
    x["behavior"] = (x["behavior"] - 0) * (1 / stats["behavior_std"])
    x["pupil_center"] = (x["pupil_center"] - stats["pupil_mean"]) / stats["pupil_std"]
    ends = []
    for v in x.values():
        nans = np.argwhere(np.isnan(v))[:, -1]
        ends.append(nans.min() if nans.size else v.shape[-1])
    x = {k: np.take(v, np.arange(min(ends)), -1)[..., s : s + WINDOW] for k, v in x.items()}
    video = np.moveaxis(x["videos"], -1, 0)[None]
    beh = np.ones((1, *video.shape[1:])) * x["behavior"][:, :, None, None]
    return [np.concatenate([video, beh]).astype(np.float32), *(x[k].astype(np.float32) for k in KEYS[1:])]


def _statistics(folder: Path) -> dict:
    def stat(key, name):
        return np.load(folder / f"meta/statistics/{key}/all/{name}.npy")

    s = stat("responses", "std")
    threshold = 0.01 * np.nanmean(s)
    precision = np.ones_like(s) / threshold
    precision[s > threshold] = 1 / s[s > threshold]
    return {"videos_mean": stat("videos", "mean")[()], "videos_std": stat("videos", "std")[()], "precision": precision,
            "behavior_std": stat("behavior", "std"), "pupil_mean": stat("pupil_center", "mean"), "pupil_std": stat("pupil_center", "std")}


def clip_batches(label: str, folder: Path, store: Path, repeat: int, rng: np.random.Generator, n_batches: int = 10) -> list[dict]:
    """A random batch of 32 clips of 60 frames: the same trials and windows both ways."""
    from converter.torch import VideoDataset

    ds = VideoDataset(store, frames=WINDOW, normalize=False)
    batches = []
    for _ in range(n_batches):
        idx = rng.choice(len(ds), BATCH, replace=False)
        batches.append((idx, rng.integers(0, ds.n_frames[idx] - WINDOW + 1)))

    def files():
        for idx, starts in batches:
            _clip_batch_files(folder, ds.trial_ids[idx], starts)

    def store_batches():
        for idx, starts in batches:
            ds.batch(idx, starts)

    got, want = ds.batch(*batches[0]), _clip_batch_files(folder, ds.trial_ids[batches[0][0]], batches[0][1])
    for j, item in enumerate(want):  # the same values both ways before anything is timed
        assert np.array_equal(got["responses"][j], item[1], equal_nan=True)
        assert np.array_equal(got["videos"][j, 0], np.moveaxis(item[0], -1, 0), equal_nan=True)
    w = f"random batch of {BATCH} clips x {WINDOW} frames, all keys"
    stats = _statistics(folder)
    normalized = VideoDataset(store, frames=WINDOW, behavior_channels=True)

    def official():
        for idx, starts in batches:
            [_official_item(folder, i, s, stats) for i, s in zip(ds.trial_ids[idx].tolist(), starts.tolist())]

    def store_official():
        for idx, starts in batches:
            normalized.batch(idx, starts)

    ref, got = _official_item(folder, int(ds.trial_ids[batches[0][0][0]]), int(batches[0][1][0]), stats), normalized.batch(*batches[0])
    assert all(np.array_equal(r, got[k][0]) for r, k in zip(ref, KEYS))
    wn = f"{w}, normalised with behavior channels (the official chain)"
    rows = [{"dataset": label, "workload": wn, "method": "a", "seconds": W.best(official, max(1, repeat // 2)) / n_batches},
            {"dataset": label, "workload": wn, "method": "c", "mode": "VideoDataset.batch, normalize=True", "seconds": W.best(store_official, repeat) / n_batches},
            {"dataset": label, "workload": w, "method": "a", "seconds": W.best(files, repeat) / n_batches},
            {"dataset": label, "workload": w, "method": "c", "mode": "VideoDataset.batch (on disk)",
             "seconds": W.best(store_batches, repeat) / n_batches}]
    W.drop_cache(folder)
    rows.append({"dataset": label, "workload": w, "method": "a", "cache": "cold", "seconds": W.cold(files, folder) / n_batches})
    rows.append({"dataset": label, "workload": w, "method": "c", "cache": "cold", "mode": "VideoDataset.batch (on disk)",
                 "seconds": W.cold(store_batches, store) / n_batches})
    return rows


def one_neuron(label: str, folder: Path, store: Path, repeat: int) -> list[dict]:
    """Every frame of every trial of one neuron, with ``open_mouse`` and from the files."""
    ds = converter.open_mouse(store)
    j = ds.sizes["neuron"] // 3
    files = sorted(os.listdir(folder / "data/responses"), key=lambda f: int(f[:-4]))

    def from_files():
        return np.stack([np.load(folder / "data/responses" / f)[j] for f in files])

    def from_store():
        return ds.responses.isel(neuron=j).values

    order = np.argsort(ds.trial.values)
    assert np.array_equal(from_store()[order], from_files(), equal_nan=True)
    w = "one neuron, all trials and frames"
    return [{"dataset": label, "workload": w, "method": "a", "seconds": W.best(from_files, max(1, repeat // 2))},
            {"dataset": label, "workload": w, "method": "c", "mode": "open_mouse, default (lazy)", "seconds": W.best(from_store, repeat)}]


def conversion(label: str, sizes: list[tuple[int, Path]], work: Path, repeat: int) -> list[dict]:
    """Wall time and peak memory of ``convert`` (a fresh process) against ``np.load`` of every file."""
    rows = []
    for trials, folder in sizes:
        read = W.best(lambda: [np.load(p) for p in folder.rglob("*.npy")], max(1, repeat // 4))
        res = W.convert_in_child(folder, work / f"video-{trials}.zarr")
        mb = W.source_bytes(folder) / 1e6
        common = {"dataset": label, "workload": "convert", "trials": trials}
        rows.append({**common, "method": "a", "seconds": read, "note": "np.load every source file"})
        rows.append({**common, "method": "c", "seconds": res["seconds"], "peak_rss_mb": res["peak_rss_mb"], "mb_per_s": mb / res["seconds"],
                     "source_mb": mb, "store_mb": sum(p.stat().st_size for p in (work / f"video-{trials}.zarr").rglob("*") if p.is_file()) / 1e6})
    return rows


def targets(rows: list[dict]) -> list[dict]:
    def get(workload, method, cache=None):
        return next((r["seconds"] for r in rows if r["workload"] == workload and r["method"] == method and r.get("cache") == cache), None)

    out = []
    batch = f"random batch of {BATCH} clips x {WINDOW} frames, all keys"
    a, c = get(batch, "a"), get(batch, "c")
    ac, cc = get(batch, "a", "cold"), get(batch, "c", "cold")
    out.append({"target": f"random batch of {BATCH} clips x {WINDOW} frames >= 3x (a)", "value": f"{a / c:.1f}x", "met": a / c >= 3,
                "cold": f"{ac / cc:.1f}x"})
    wn = f"{batch}, normalised with behavior channels (the official chain)"
    a, c = get(wn, "a"), get(wn, "c")
    out.append({"target": "the same, normalised, against the official transform chain >= 3x", "value": f"{a / c:.1f}x", "met": a / c >= 3, "cold": None})
    a, c = get("one neuron, all trials and frames", "a"), get("one neuron, all trials and frames", "c")
    out.append({"target": "one neuron, all trials >= 50x (a)", "value": f"{a / c:.0f}x", "met": a / c >= 50, "cold": None})
    conv = sorted((r for r in rows if r["workload"] == "convert"), key=lambda r: r["trials"])
    big = max(r["trials"] for r in conv)
    read = next(r["seconds"] for r in conv if r["trials"] == big and r["method"] == "a")
    wall = next(r["seconds"] for r in conv if r["trials"] == big and r["method"] == "c")
    out.append({"target": "conversion <= 3x the time to np.load every file", "value": f"{wall / read:.2f}x", "met": wall / read <= 3, "cold": None})
    peaks = [r["peak_rss_mb"] for r in conv if r["method"] == "c"]
    out.append({"target": "peak memory flat across sizes (max/min)", "value": f"{max(peaks) / min(peaks):.2f}", "met": max(peaks) / min(peaks) <= 1.25, "cold": None})
    return out


def markdown(rows: list[dict], met: list[dict], info: dict, size: str) -> str:
    ms = lambda s: f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s"  # noqa: E731
    lines = [f"Sensorium 2023, {size} size. Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Python {info['python']}, "
             f"numpy {info['numpy']}, zarr {info['zarr']}, sensorium-zarr {info['converter']}. Warm page cache unless marked cold.", "",
             "| target | measured (warm) | cold cache | met |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {t['cold'] or ''} | {'yes' if t['met'] else '**no**'} |" for t in met]
    lines += ["", "| workload | (a) file tree | (c) store | (a)/(c) |", "|---|---|---|---|"]
    for w in dict.fromkeys(r["workload"] for r in rows if r["workload"] != "convert"):
        for cache in (None, "cold"):
            a = next((r for r in rows if r["workload"] == w and r["method"] == "a" and r.get("cache") == cache), None)
            c = next((r for r in rows if r["workload"] == w and r["method"] == "c" and r.get("cache") == cache), None)
            if a and c:
                label = w + (f" ({c['mode']})" if c.get("mode") else "") + (" (cold)" if cache else "")
                lines.append(f"| {label} | {ms(a['seconds'])} | {ms(c['seconds'])} | {a['seconds'] / c['seconds']:.1f}x |")
    lines += ["", "| conversion | trials | np.load every file (a) | convert (c) | (c)/(a) | source MB/s | peak memory | store / source |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["workload"] == "convert" and r["method"] == "c":
            a = next(x for x in rows if x["workload"] == "convert" and x["trials"] == r["trials"] and x["method"] == "a")
            lines.append(f"| convert | {r['trials']} | {ms(a['seconds'])} | {ms(r['seconds'])} | {r['seconds'] / a['seconds']:.2f}x | "
                         f"{r['mb_per_s']:.0f} | {r['peak_rss_mb']:.0f} MB | {r['store_mb'] / r['source_mb']:.2f} |")
    return "\n".join(lines) + "\n"


def run(size: str = "full", data: Path = HERE / "data", out: Path = HERE / "results") -> dict:
    cfg = SIZES[size]
    W.sized(size)
    t, n, f = cfg["trials"], cfg["neurons"], cfg["frames"]
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    work = data / "work" / "video"
    work.mkdir(parents=True, exist_ok=True)
    label = f"{t} trials x {n} neurons x {f} frames"
    full, quarter = dataset(data, t, n, f), dataset(data, t // 4, n, f)
    print("[video] conversion ...", file=sys.stderr)
    rows = conversion(label, [(t // 4, quarter), (t, full)], work, cfg["repeat"])
    shutil.rmtree(work / f"video-{t // 4}.zarr", ignore_errors=True)  # only its time and memory were wanted
    W.drop_cache(quarter)  # leave the page cache to the full mouse and its store, both read warm below
    store = work / f"video-{t}.zarr"
    rng = np.random.default_rng(0)
    print("[video] random clip batches ...", file=sys.stderr)
    rows += clip_batches(label, full, store, cfg["repeat"], rng)
    print("[video] one neuron ...", file=sys.stderr)
    rows += one_neuron(label, full, store, cfg["repeat"])
    info = machine()
    met = targets(rows)
    result = {"size": size, "machine": info, "targets": met, "rows": rows}
    (out / f"video-{size}.json").write_text(json.dumps(result, indent=1, default=float))
    (out / f"video-{size}.md").write_text(markdown(rows, met, info, size))
    return result


def update_readme(md: str, readme: Path = HERE.parent / "docs" / "how-to/sensorium-2023.md") -> None:
    """Put a results file between the video markers of docs/how-to/sensorium-2023.md."""
    replace_between(readme, "video-results", md)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, SIZES).parse_args(argv)
    run(args.size, args.data, args.out)
    md = (args.out / f"video-{args.size}.md").read_text()
    if args.update_readme:
        update_readme(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
