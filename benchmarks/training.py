"""Feeding a model: the file tree, today's ``loaders`` and the device loaders, side by side.

``python -m benchmarks.training`` (``--size tiny`` runs the same code in seconds) measures, for
one full-size mouse's train tier (batches of 128, normalised) and for three mice cycled as
neuralpredictors' ``LongCycler`` does, and for a quarter-size Sensorium 2023 mouse (180 clips;
random windows of 60 frames, batches of 32, normalised, behavior as video channels):

- a file-tree ``DataLoader`` (one ``np.load`` per file, as ``FileTreeDataset``; for clips, the
  official ``mouse_video_loader`` chain), for ``num_workers`` 0, 2, 4, ... up to the cores;
- ``converter.torch.loaders`` (``video_loaders``) for the same worker counts;
- ``DeviceLoader`` resident and streaming, on CUDA where there is one, else on the CPU;

each alone (``--model``: also with the reference model of `benchmarks.model`, image scans).  For each: items/s (loaders alone: the best of three runs),
the fraction of the time the consumer waited for data, the time to the first batch, and the peak
memory of the process tree.  Results go to ``benchmarks/results/training-<size>.{md,json}`` (``--images noise``: the image scans of the
noisy-image sample, into ``training-<size>-noise.*``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

import converter
from converter.torch import DeviceLoader, MiceCycler, MouseDataset, VideoDataset, loaders, video_loaders

from . import video
from .run import HERE, dataset, machine

SIZES = {"full": {"trials": 6955, "neurons": 7776, "batches": 60, "clips": (180, 7900, 300), "clip_batches": 10},
         "tiny": {"trials": 300, "neurons": 40, "batches": 4, "clips": (40, 20, 80), "clip_batches": 2}}
KEYS = ("images", "responses", "behavior", "pupil_center")
REPEAT = 3  # a loader alone is measured this many times, the best kept: runs on 2 cores differ by up to 40%
BATCH = 128
CLIP_BATCH, WINDOW = video.BATCH, video.WINDOW  # 32 clips of 60 frames


class FileTree(Dataset):
    """What ``FileTreeDataset`` + ``NeuroNormalizer`` do: one ``np.load`` per file per item."""

    def __init__(self, folder: Path, store: Path) -> None:
        self.folder = folder
        ref = MouseDataset(store, tier="train", keys=KEYS, normalize=True)
        self.items, self.normalizer = ref.trial_ids, ref.normalizer

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        n = int(self.items[i])
        return {k: torch.from_numpy(self.normalizer(k, np.load(self.folder / f"data/{k}/{n}.npy")).astype(np.float32)) for k in KEYS}


class FileTreeClips(Dataset):
    """What ``MovieFileTreeDataset`` and ``mouse_video_loader``'s transforms do: every file of the
    trial loaded and normalised whole, cut to the valid frames, a random window, behavior channels."""

    def __init__(self, folder: Path, store: Path) -> None:
        ref = VideoDataset(store, tier="train", frames=WINDOW, normalize=False)
        self.folder, self.items, self.n_frames = folder, ref.trial_ids, ref.n_frames
        self.stats = video._statistics(folder)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        start = int(np.random.randint(0, self.n_frames[i] - WINDOW + 1))
        item = video._official_item(self.folder, int(self.items[i]), start, self.stats)
        return {k: torch.from_numpy(v) for k, v in zip(video.KEYS, item)}


class Peak:
    """Peak resident memory of this process and its children, sampled every 50 ms."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        me = psutil.Process()

        def sample():
            while not self._stop.is_set():
                total = 0
                for p in [me, *me.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
                time.sleep(0.05)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def consume(make, n: int, device: torch.device, step=None) -> dict:
    """Make the loader and take ``n`` batches: time to the first (making the loader included),
    trials/s after it, and the fraction of that time spent waiting for data."""
    start = time.perf_counter()
    batches = make()
    it = iter(batches)
    waited, trials, first = 0.0, 0, None
    for k in range(n + 1):
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(batches)
            batch = next(it)
        if isinstance(batch, tuple):  # (data_key, batch) from a cycler
            batch = batch[1]
        images = (batch["images"] if "images" in batch else batch["videos"]).to(device, non_blocking=True)
        responses = batch["responses"].to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        got = time.perf_counter()
        if first is None:
            first, t0 = got - start, got
            continue
        waited += got - t
        trials += len(images)
        if step is not None:
            step(images, responses)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    total = time.perf_counter() - t0
    return {"trials_per_s": trials / total, "waiting": waited / total, "first_batch_s": first}


_RESIDENT_CHILD = """
import json, sys
from converter.torch import DeviceLoader

def status(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field)) / 1024

base = status("VmRSS")
dl = DeviceLoader(sys.argv[1], mode="resident", device=sys.argv[2], **json.loads(sys.argv[3]))
loaded = status("VmHWM")
for _, batch in zip(range(5), dl):
    pass
print(json.dumps({"base_mb": base, "load_peak_mb": loaded, "peak_mb": status("VmHWM"), "raw_mb": dl.items.resident_bytes() / 2**20}))
"""


def reads_alone(store: Path):
    """The reads of a streaming `DeviceLoader`, as it makes them (the variables side by side, the
    next batch ahead, into memory used before), without normalising or handing batches over: the
    bound of its mode on this machine."""
    from concurrent.futures import ThreadPoolExecutor

    dl = DeviceLoader(store, batch_size=BATCH, device="cpu", mode="streaming", keys=KEYS)
    with ThreadPoolExecutor(len(dl.items.keys)) as threads:
        for epoch in itertools.count():
            for buffer in dl._buffers(dl.batches(epoch), 0, threads):
                yield from buffer


def warm(root: Path) -> None:
    """Read every file under ``root`` once, so that the rows after it read from the page cache."""
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def resident_memory(store: Path, device: torch.device, kwargs: dict) -> dict:
    """A resident loader made, then five batches taken, in a fresh process: its peak resident
    memory after each, and what it held after its imports, with the tier's stored raw bytes."""
    out = subprocess.run([sys.executable, "-c", _RESIDENT_CHILD, str(store), str(device), json.dumps(kwargs)],
                         capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip()[-400:]}


def model_alone(step, n: int, neurons: int, device: torch.device) -> dict:
    """The model's own speed: ``n`` steps on one batch already on the device (no loading at all)."""
    images = torch.randn(BATCH, 1, 144, 256, device=device)
    responses = torch.rand(BATCH, neurons, device=device)
    step(images, responses)  # the first step allocates and picks kernels
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(n):
        step(images, responses)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"trials_per_s": n * BATCH / (time.perf_counter() - t), "waiting": 0.0, "first_batch_s": 0.0}


def result_name(size: str, images: str = "smooth") -> str:
    """The name of a run's results and working folder: ``training-<size>[-<images>]``."""
    return f"training-{size}" + ("" if images == "smooth" else f"-{images}")


def sources(size: str, data: Path, images: str = "smooth") -> tuple[list[Path], Path]:
    """The three image scans and the video scan a run reads, each generated once (side by side,
    one process each, where some are missing)."""
    s = SIZES[size]
    jobs = [(dataset, (data, s["trials"], s["neurons"], "float32", False, seed, images)) for seed in range(3)]
    jobs.append((video.dataset, (data, *s["clips"])))
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1), mp_context=multiprocessing.get_context("spawn")) as pool:
        *folders, clips = [f.result() for f in [pool.submit(fn, *args) for fn, args in jobs]]
    return folders, clips


def run(size: str, data: Path, out: Path, model: bool, workers: list[int] | None = None, images: str = "smooth") -> list[dict]:
    s = SIZES[size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = result_name(size, images)
    work = data / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    folders, folder = sources(size, data, images)
    stores = [converter.convert(f, work / f"{f.name}.zarr", progress=False) for f in folders]
    for path in (*folders, *stores):  # the rows compare reads from a warm page cache
        warm(path)
    cores = os.cpu_count() or 1
    if workers is None:
        workers = sorted({0, *range(2, cores + 1, 2)}) if cores > 1 else [0]
    ctx = {"multiprocessing_context": "fork"} if sys.platform.startswith("linux") else {}
    rows = []

    def record(name, make, n, w=None, step=None, scan="image", mice=1):
        """One row, the best of ``REPEAT`` loaders alone (of one with the model); a loader that
        fails is a row saying how, and the others still run."""
        with Peak() as peak:
            try:
                result = max((consume(make, n, device, step) for _ in range(REPEAT if step is None else 1)), key=lambda r: r["trials_per_s"])
            except Exception as e:  # noqa: BLE001
                result = {"trials_per_s": float("nan"), "waiting": float("nan"), "first_batch_s": float("nan"), "error": f"{type(e).__name__}: {e}"}
        rows.append({"loader": name, "num_workers": w, "mice": mice, "model": step is not None, "scan": scan, "device": device.type, **result,
                     "peak_mb": peak.peak / 2**20})
        print(rows[-1], file=sys.stderr)

    def dataloader_options(w):
        return {"num_workers": w, "pin_memory": device.type == "cuda", **(ctx if w else {}), **({"persistent_workers": True} if w else {})}

    for with_model in ([False, True] if model else [False]):
        step = __import__("benchmarks.model", fromlist=["trainer"]).trainer(1, s["neurons"], device) if with_model else None
        # on a CPU device the model takes seconds a step: fewer batches there
        n = s["batches"] if not with_model or device.type == "cuda" else max(2, s["batches"] // 5)
        if with_model:
            rows.append({"loader": "model alone, one batch held on the device", "num_workers": None, "mice": 1, "model": True, "scan": "image",
                         "device": device.type, **model_alone(step, n, s["neurons"], device), "peak_mb": float("nan")})
            print(rows[-1], file=sys.stderr)
        for w in workers:
            kw = dataloader_options(w)
            record("file tree", lambda: DataLoader(FileTree(folders[0], stores[0]), batch_size=BATCH, shuffle=True, **kw), n, w, step)
            record("loaders", lambda: next(iter(loaders([stores[0]], batch_size=BATCH, tier="train", include_behavior=True, add_behavior_as_channels=False,
                                                        include_eye_position=True, seed=0, **kw)["train"].values())), n, w, step)
        if not with_model:
            record("the streaming reads alone", lambda: reads_alone(stores[0]), n)
        for mode in ("resident", "streaming"):
            record(f"DeviceLoader {mode}", lambda: DeviceLoader(stores[0], batch_size=BATCH, device=device, mode=mode, keys=KEYS), n, step=step)
            record(f"DeviceLoader {mode}, 3 mice", lambda: MiceCycler({str(k): DeviceLoader(st, batch_size=BATCH, device=device, mode=mode, keys=KEYS)
                                                                       for k, st in enumerate(stores)}, seed=0), n, step=step, mice=3)
    trials, neurons, frames = s["clips"]
    clips = converter.convert(folder, work / f"{folder.name}-{trials}.zarr", progress=False)
    warm(folder)
    warm(clips)
    n = s["clip_batches"]
    for w in workers:
        kw = dataloader_options(w)
        record("file tree, clips", lambda: DataLoader(FileTreeClips(folder, clips), batch_size=CLIP_BATCH, shuffle=True, **kw), n, w, scan="video")
        record("video_loaders, clips", lambda: next(iter(video_loaders([clips], CLIP_BATCH, frames=WINDOW, tier="train", seed=0, **kw)["train"].values())),
               n, w, scan="video")
    for mode in ("resident", "streaming"):
        record(f"DeviceLoader {mode}, clips", lambda: DeviceLoader(clips, batch_size=CLIP_BATCH, device=device, mode=mode, frames=WINDOW,
                                                                   behavior_channels=True), n, scan="video")
    memory = {"image": resident_memory(stores[0], device, {"batch_size": BATCH, "keys": KEYS}),
              "video": resident_memory(clips, device, {"batch_size": CLIP_BATCH, "frames": WINDOW, "behavior_channels": True})}
    info = {**machine(), "torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    result = {"size": size, "images": images, "machine": info, "rows": rows, "resident_memory": memory}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text(markdown(result))
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Training throughput ({result['size']} size, {result.get('images', 'smooth')} images)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; device {m['device']}; torch {m['torch']}, sensorium-zarr {m['converter']}. "
             "Train tier, batches of 128 trials (image scans) or 32 clips of 60 frames (video), normalised, warm page cache."
             + (f" Note: {result['note']}" if "note" in result else ""), "",
             "| loader | num_workers | mice | model | items/s | waiting for data | first batch (s) | peak memory (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['loader']}{' (failed: ' + r['error'] + ')' if 'error' in r else ''} | {'' if r['num_workers'] is None else r['num_workers']} | {r['mice']} | "
                     f"{'yes' if r['model'] else 'no'} | {r['trials_per_s']:.0f} | {r['waiting']:.0%} | {r['first_batch_s']:.2f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines + [""] + verdicts(result["rows"], result["resident_memory"])) + "\n"


def verdicts(rows: list[dict], memory: dict[str, dict]) -> list[str]:
    """The issue's targets for loaders alone, from the rows of this run."""
    rows = [r for r in rows if "error" not in r]

    def best(prefix, mice=1, scan="image"):
        got = [r["trials_per_s"] for r in rows if r["loader"].startswith(prefix) and r["mice"] == mice and not r["model"] and r["scan"] == scan]
        return max(got) if got else float("nan")

    out = []
    tree, old = best("file tree"), best("loaders")
    for mode in ("resident", "streaming"):
        d = best(f"DeviceLoader {mode}")
        met = d >= 5 * tree and d >= 2 * old
        out.append(f"- `DeviceLoader` {mode}, one mouse: {d / tree:.1f}x the file tree's best setting (target 5x), "
                   f"{d / old:.1f}x the best `loaders` setting (target 2x): {'met' if met else '**missed**'}.")

    reads = best("the streaming reads alone")
    out.append(f"- The streaming mode's own reads, without normalising or a queue: {reads:.0f} trials/s; the streaming loader "
               f"reached {best('DeviceLoader streaming') / reads:.2f}x of them.")

    def trained(loader):
        got = [r["trials_per_s"] for r in rows if r["loader"] == loader and r["model"] and r["mice"] == 1 and r["scan"] == "image"]
        return max(got) if got else None

    ref, alone = trained("DeviceLoader resident"), trained("model alone, one batch held on the device")
    if ref and alone:
        out.append(f"- With the reference model: resident {ref:.0f} trials/s, {ref / alone:.2f}x the model alone ({alone:.0f} trials/s).")
        for loader, target in (("DeviceLoader streaming", 0.95), ("file tree", None), ("loaders", None)):
            got = trained(loader)
            if got is None:  # not run, or failed
                continue
            verdict = f" (target {target}x): {'met' if got >= target * ref else '**missed**'}" if target else " (best num_workers)"
            out.append(f"- With the reference model, {loader}: {got / ref:.2f}x the resident rate{verdict}.")
    first = [r["first_batch_s"] for r in rows if r["loader"] == "DeviceLoader resident" and not r["model"]]
    if first:
        out.append(f"- Resident, time to the first batch: {first[0]:.2f} s (target 2 s): {'met' if first[0] <= 2 else '**missed**'}.")
    tree, old = best("file tree", scan="video"), best("video_loaders", scan="video")
    for mode in ("resident", "streaming"):
        d = best(f"DeviceLoader {mode}", scan="video")
        out.append(f"- `DeviceLoader` {mode}, clips: {d / tree:.1f}x the file tree's best setting (target 3x, set for CUDA), "
                   f"{d / old:.1f}x the best `video_loaders` setting.")
    for scan, m in memory.items():
        if "error" in m:
            out.append(f"- Memory, resident, {scan} scan: the child failed: {m['error']}")
            continue
        load, batches = m["load_peak_mb"] - m["base_mb"], m["peak_mb"] - m["base_mb"]
        out.append(f"- Memory, resident, {scan} scan (a fresh process): during the load the host's peak rose {load:.0f} MB above the process "
                   f"after its imports, {load / m['raw_mb']:.2f}x the tier's stored raw bytes ({m['raw_mb']:.0f} MB; target 1.2x: "
                   f"{'met' if load <= 1.2 * m['raw_mb'] else '**missed**'}); with five batches taken, {batches:.0f} MB. "
                   "On a CPU device the resident copy is itself in host memory.")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=list(SIZES), default="full")
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--model", action="store_true", help="also measure with the reference model training")
    p.add_argument("--workers", type=lambda v: [int(w) for w in v.split(",")], default=None,
                   help="the DataLoaders' num_workers, comma-separated (default: 0, 2, 4, ... up to the cores)")
    p.add_argument("--images", choices=["smooth", "noise"], default="smooth", help="the image scans' kind of images (make_sample's images=)")
    a = p.parse_args(argv)
    run(a.size, a.data, a.out, a.model, a.workers, a.images)
    print((a.out / f"{result_name(a.size, a.images)}.md").read_text())


if __name__ == "__main__":
    main()
