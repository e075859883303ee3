"""Run every workload side by side and write ``benchmarks/results/`` (markdown, JSON, PNG).

    python -m benchmarks.run            # full size: 6955 trials x 7776 neurons, both image dtypes
    python -m benchmarks.run --size tiny

Sample data is generated into ``benchmarks/data/`` (git-ignored) when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

import converter
from converter.sample import sample_name

from . import workloads as W

SIZES = {
    "full": {"trials": 6955, "neurons": 7776, "repeat": 5},
    "tiny": {"trials": 60, "neurons": 40, "repeat": 1},
}
HERE = Path(__file__).resolve().parent


def dataset(data: Path, trials: int, neurons: int, image_dtype: str, as_zip: bool = False, seed: int = 0,
            images: str = "smooth") -> Path:
    """A sample folder (or zip) of this size and kind of image, generated once and reused."""
    where = data / f"{image_dtype}{'' if images == 'smooth' else '-' + images}-{trials}x{neurons}"
    path = where / (sample_name(seed) + (".zip" if as_zip else ""))
    if not path.exists():
        print(f"generating {path} ...", file=sys.stderr)
        converter.make_sample(where, trials=trials, neurons=neurons, image_dtype=image_dtype, as_zip=as_zip, seed=seed,
                              images=images)
    return path


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    mem = next((int(l.split()[1]) // 1024**2 for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), None)
    import numcodecs
    import xarray
    import zarr

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem, "python": platform.python_version(),
            "numpy": np.__version__, "zarr": zarr.__version__, "numcodecs": numcodecs.__version__,
            "xarray": xarray.__version__, "converter": converter.__version__}


def _get(rows, dataset, workload, method, **match):
    """The fastest warm-cache time of a method (over the ways of opening, unless ``match`` picks one)."""
    times = [r["seconds"] for r in rows
             if r.get("dataset") == dataset and r["workload"] == workload and r.get("method") == method
             and r.get("cache") is None and all(r.get(k) == v for k, v in match.items())]
    return min(times) if times else None


def _cold(rows, dataset, workload, method):
    return next((r["seconds"] for r in rows if r.get("dataset") == dataset and r["workload"] == workload
                 and r.get("method") == method and r.get("cache") == "cold"), None)


def targets(rows: list[dict]) -> list[dict]:
    """The issues' targets, each with its measured figure (warm cache; cold beside it) and whether it is met."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        def add(name, value, ok, fmt, cold=None):
            if value is not None:
                out.append({"dataset": ds, "target": name, "value": fmt.format(value), "met": bool(ok(value)),
                            "cold": None if cold is None else fmt.format(cold)})

        def speedup(name, workload, mode, need, fmt="{:.1f}x"):
            a, c = _get(rows, ds, workload, "a"), _get(rows, ds, workload, "c", mode=mode)
            ac, cc = _cold(rows, ds, workload, "a"), _cold(rows, ds, workload, "c")
            if a and c:
                add(name, a / c, lambda v: v >= need, fmt, ac / cc if ac and cc and mode == _COLD_MODE.get(workload) else None)

        lazy, plain = "open_mouse, default (lazy)", "plain xr.open_zarr, no converter"
        w = "random batch of 128, all keys"
        speedup("random batch, MouseDataset default >= 3x (a)", w, "MouseDataset, default (on disk)", 3)
        speedup("random batch, loaders default >= 3x (a)", w, "loaders, default (on disk; DataLoader in this process)", 3)
        speedup("random batch, open_mouse(...).sel(trial=b).load() >= 2x (a)", w, "open_mouse, default: sel(trial=b).load()", 2)
        speedup("all responses, open_mouse >= 10x (a)", "load all responses", lazy, 10)
        c = _get(rows, ds, "load all responses", "c", mode=lazy)
        d = next((r["seconds"] for r in rows if r.get("dataset") == ds and r["workload"] == "load all responses" and r.get("note", "").startswith("read + Blosc")), None)
        if c and d:
            add("all responses within 1.5x of read + decode of the stored bytes (d)", c / d, lambda v: v <= 1.5, "{:.2f}x the bound")
        speedup("one neuron, open_mouse default >= 50x (a)", "one neuron, all trials", lazy, 50, "{:.0f}x")
        hundred = next((r["workload"] for r in rows if r.get("dataset") == ds and r["workload"].endswith("V1 neurons, all trials")), None)
        if hundred:
            speedup("100 V1 neurons, open_mouse default >= 30x (a)", hundred, lazy, 30, "{:.0f}x")
        speedup("train-tier responses, ds.sensorium.tier('train') >= 4x (a)", "responses of the train tier", lazy, 4)
        speedup("test repeats mean per image >= 5x (a)", "test repeats grouped by image_id (mean)", lazy, 5)
        for workload in ("load all responses", "one neuron, all trials", "responses of the train tier"):
            speedup(f"plain xr.open_zarr, {workload} >= 1x (a)", workload, plain, 1, "{:.2f}x")
        mem, d = _get(rows, ds, w, "c", mode="MouseDataset, in_memory=True"), _get(rows, ds, w, "d")
        if mem and d:
            add("in-memory random batch within 1.5x of an np.memmap gather", mem / d, lambda v: v <= 1.5, "{:.2f}x the gather")
        conv = sorted((r for r in rows if r.get("dataset") == ds and r["workload"] == "convert"), key=lambda r: r["trials"])
        if conv:
            big = max(r["trials"] for r in conv)
            read = next(r["seconds"] for r in conv if r["trials"] == big and r["method"] == "a")
            wall = next(r["seconds"] for r in conv if r["trials"] == big and r["method"] == "c")
            add("conversion <= 3x the time to np.load every file", wall / read, lambda v: v <= 3, "{:.2f}x")
            peaks = [r["peak_rss_mb"] for r in conv if r["method"] == "c"]
            add("peak memory flat across sizes (max/min)", max(peaks) / min(peaks), lambda v: v <= 1.25, "{:.2f}")
        a, c = _get(rows, ds, "convert from zip", "a"), _get(rows, ds, "convert from zip", "c")
        if a and c:
            add("conversion from the zip no slower than unzip alone", c / a, lambda v: v <= 1, "{:.2f}x unzip")
        whole = next((r for r in rows if r.get("dataset") == ds and r.get("variable") == "whole store"), None)
        if whole and ds == "float32 images":  # the target as set: uint8 and noisy images do not compress
            add("store <= 0.8x the source bytes", whole["ratio"], lambda v: v <= 0.8, "{:.2f}x")
        for r in rows:
            if r.get("dataset") == ds and r["workload"] == "loader memory":
                add(f"loaders over {r['mice']} mice, {r['workers']} workers: peak memory above tiny mice <= half the source",
                    r["above_tiny_mb"] / r["source_mb"], lambda v: v <= 0.5, "{:.2f}x the source")
    return out


# The mode whose cold-cache run is reported beside the warm figure of a target.
_COLD_MODE = {"random batch of 128, all keys": "MouseDataset, default (on disk)", "load all responses": "open_mouse, default (lazy)",
              "one neuron, all trials": "open_mouse, default (lazy)"}


def _ms(s):
    return "" if s is None else (f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s")


def markdown(rows: list[dict], met: list[dict], info: dict, size: str) -> str:
    lines = [f"# Benchmark results ({size} size)", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Python {info['python']}, "
             f"numpy {info['numpy']}, zarr {info['zarr']}, numcodecs {info['numcodecs']}, xarray {info['xarray']}, "
             f"sensorium-zarr {info['converter']}. Warm page cache unless marked cold; best of several runs.", "",
             "(a) file tree, per-item `np.load` (as `FileTreeDataset`); (b) file tree, `np.load` + `np.stack`; "
             "(c) this store; (d) physical reference.", ""]
    lines += ["## Targets", "", "| dataset | target | measured (warm) | cold cache | met |", "|---|---|---|---|---|"]
    lines += [f"| {t['dataset']} | {t['target']} | {t['value']} | {t.get('cold') or ''} | {'yes' if t['met'] else '**no**'} |" for t in met]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        lines += ["", f"## {ds}", "", "| workload | (a) | (b) | (c) | (d) | (a)/(c) | (c)/(d) |", "|---|---|---|---|---|---|---|"]
        seen = []
        for r in rows:
            if r.get("dataset") != ds or r["workload"] in ("size", "convert", "convert from zip", "convert several mice", "loader memory") or r["workload"] in seen:
                continue
            w = r["workload"]
            seen.append(w)
            group = [x for x in rows if x.get("dataset") == ds and x["workload"] == w]
            variants = sorted({(x.get("mode"), x.get("cache")) for x in group if x["method"] == "c"}, key=str)
            for mode, cache in variants:
                pick = lambda m: next((x for x in group if x["method"] == m and x.get("cache") == cache and (m != "c" or x.get("mode") == mode)), None)
                a, b, c = pick("a"), pick("b") if cache is None else None, pick("c")
                d = next((x for x in group if x["method"] == "d"), None) if cache is None else None
                label = w + (f" ({mode})" if mode else "") + (" (cold)" if cache else "")
                ratio_a = f"{a['seconds'] / c['seconds']:.1f}x" if a and c else ""
                ratio_d = f"{c['seconds'] / d['seconds']:.2f}" if c and d else ""
                dtxt = f"{_ms(d['seconds'])} ({d.get('note', '')})" if d else ""
                lines.append(f"| {label} | {_ms(a and a['seconds'])} | {_ms(b and b['seconds'])} | {_ms(c['seconds'])} | {dtxt} | {ratio_a} | {ratio_d} |")
        conv = [r for r in rows if r.get("dataset") == ds and r["workload"] in ("convert", "convert from zip")]
        if conv:
            lines += ["", "| conversion | trials | read every file / unzip (a) | convert (c) | (c)/(a) | source MB/s | peak memory |", "|---|---|---|---|---|---|---|"]
            for r in conv:
                if r["method"] != "c":
                    continue
                a = next(x for x in conv if x["workload"] == r["workload"] and x["trials"] == r["trials"] and x["method"] == "a")
                mbs = f"{r['mb_per_s']:.0f}" if "mb_per_s" in r else ""
                lines.append(f"| {r['workload']} | {r['trials']} | {_ms(a['seconds'])} | {_ms(r['seconds'])} | {r['seconds'] / a['seconds']:.2f}x | {mbs} | {r['peak_rss_mb']:.0f} MB |")
        scale = [r for r in rows if r.get("dataset") == ds and r["workload"] == "convert several mice"]
        if scale:
            lines += ["", "| convert-all on a local dask cluster | mice | trials | wall time | peak memory per worker |", "|---|---|---|---|---|"]
            lines += [f"| {r['workers']} worker{'s' if r['workers'] > 1 else ''} | {r['mice']} | {r['trials']} | {_ms(r['seconds'])} | {r['peak_worker_mb']:.0f} MB |" for r in scale]
        memory = [r for r in rows if r.get("dataset") == ds and r["workload"] == "loader memory"]
        if memory:
            lines += ["", "| loaders, mice iterated together | mice | workers | peak PSS, main + workers | same on tiny mice | above tiny | source data |", "|---|---|---|---|---|---|---|"]
            lines += [f"| default (on disk) | {r['mice']} | {r['workers']} | {r['peak_pss_mb']:.0f} MB | {r['tiny_peak_pss_mb']:.0f} MB | {r['above_tiny_mb']:.0f} MB | {r['source_mb']:.0f} MB |" for r in memory]
        sz = [r for r in rows if r.get("dataset") == ds and r["workload"] == "size"]
        lines += ["", "| variable | source MB | store MB | store / source |", "|---|---|---|---|"]
        lines += [f"| {r['variable']} | {r['source_bytes'] / 1e6:.1f} | {r['store_bytes'] / 1e6:.1f} | {r['ratio']:.2f} |" for r in sz]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(datasets), 1, figsize=(11, 5 * len(datasets)), squeeze=False)
    for ax, ds in zip(axes[:, 0], datasets):
        labels, speedups = [], []
        for r in rows:
            if r.get("dataset") != ds or r.get("method") != "c" or r.get("cache") or r["workload"] in ("convert", "convert from zip", "convert several mice", "loader memory"):
                continue
            a = _get(rows, ds, r["workload"], "a")
            if a:
                labels.append(r["workload"] + (f" ({r['mode']})" if r.get("mode") else ""))
                speedups.append(a / r["seconds"])
        y = np.arange(len(labels))
        ax.barh(y, speedups, color=["tab:green" if s >= 1 else "tab:red" for s in speedups])
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1, color="black", lw=0.8)
        for yi, s in zip(y, speedups):
            ax.text(s, yi, f" {s:.1f}x", va="center", fontsize=8)
        ax.set_xlabel("speed-up of the store over per-item np.load (log scale)")
        ax.set_title(ds)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(size: str = "full", data: Path = HERE / "data", out: Path = HERE / "results") -> dict:
    cfg = SIZES[size]
    W.sized(size)
    t, n = cfg["trials"], cfg["neurons"]
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    work = data / "work"
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    # smooth 1/f images, as uint8, and with pixel noise (hard to compress and to decode)
    for image_dtype, images in (("float32", "smooth"), ("uint8", "smooth"), ("float32", "noise")):
        label = f"{image_dtype} images" if images == "smooth" else f"{image_dtype} {images} images"
        full = dataset(data, t, n, image_dtype, images=images)
        if label == "float32 images":
            # every size holds at least two full write blocks, so that two blocks are in flight at each
            sizes = [(t // 2, dataset(data, t // 2, n, image_dtype)), (t, full), (2 * t, dataset(data, 2 * t, n, image_dtype))]
            zip_path = dataset(data, t, n, image_dtype, as_zip=True)
        else:
            sizes, zip_path = [(t, full)], None
        here = work / label.replace(" ", "-")
        here.mkdir(parents=True, exist_ok=True)
        # tiny size (the tests): the same code, so the conversion is measured on the first kind only
        if size == "full" or label == "float32 images":
            print(f"[{label}] conversion ...", file=sys.stderr)
            rows += W.conversion(label, sizes, here, zip_path, cfg["repeat"])
        else:
            converter.convert(full, here / f"convert-{t}.zarr", overwrite=True, progress=False)
        ctx = W.Ctx(full, here / f"convert-{t}.zarr", here / "stacked", cfg["repeat"], rng, label)
        shutil.rmtree(ctx.stacked, ignore_errors=True)
        W.make_stacked(ctx)
        for workload in W.READING if size == "full" or label == "float32 images" else [W.sizes]:
            print(f"[{label}] {workload.__name__} ...", file=sys.stderr)
            rows += workload(ctx)
    print("[scale-out] convert-all, peak memory per worker ...", file=sys.stderr)
    mice = [dataset(data, t, n, "float32")] + [dataset(data, t, n, "float32", seed=s) for s in (1, 2)][: 2 if size == "full" else 1]
    rows += W.scale_out("float32 images", mice, work, (1, 2) if size == "full" else (2,))
    print("[memory] loaders over several mice ...", file=sys.stderr)
    stores = []
    for k, m in enumerate(mice):
        dest = work / f"memory-{k}.zarr"
        shutil.rmtree(dest, ignore_errors=True)
        stores.append(converter.convert(m, dest, progress=False))
    tiny = stores if size == "tiny" else [
        converter.convert(dataset(data, 60, 40, "float32", seed=k), work / f"memory-tiny-{k}.zarr", overwrite=True, progress=False)
        for k in range(len(mice))]
    rows += W.loader_memory("float32 images", stores, tiny, sum(W.source_bytes(m) for m in mice) / 1e6)
    info = machine()
    met = targets(rows)
    result = {"size": size, "machine": info, "targets": met, "rows": rows}
    (out / f"results-{size}.json").write_text(json.dumps(result, indent=1, default=float))
    (out / f"results-{size}.md").write_text(markdown(rows, met, info, size))
    chart(rows, out / f"results-{size}.png")
    return result


def update_readme(md: str, readme: Path = HERE.parent / "docs" / "performance.md") -> None:
    """Put the targets and the float32 tables of a results file between the markers of the
    documentation's performance page, and its chart beside it."""
    targets = md[md.index("## Targets"):md.index("\n## ", md.index("## Targets") + 1)]
    first = md.index("\n## ", md.index("## Targets") + 1) + 1
    tables = md[first:md.index("\n## ", first + 1)] if "\n## " in md[first + 1:] else md[first:]
    header = md.splitlines()[2].replace("Machine:", "Latest full-size run. Machine:")
    title, body = tables.strip().split("\n", 1)
    block = "\n".join([header, "", targets.replace("## Targets", "").strip(), "",
                       "### " + title.removeprefix("## ") + " (uint8: see the results file)", "", body.strip()]) + "\n"
    replace_between(readme, "results", block)
    chart_file = HERE / "results" / "results-full.png"
    if chart_file.exists():
        shutil.copyfile(chart_file, readme.parent / "performance-full.png")


def replace_between(readme: Path, marker: str, block: str) -> None:
    """Put ``block`` between ``<!-- <marker>:start -->`` and ``<!-- <marker>:end -->`` of ``readme``."""
    text = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    readme.write_text(text[: text.index(start) + len(start)] + "\n" + block + text[text.index(end):])


def parser(doc: str, sizes: dict, readme: str = "copy the results into the documentation (docs/)") -> argparse.ArgumentParser:
    """The options every benchmark command takes."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--size", choices=list(sizes), default="full")
    p.add_argument("--data", type=Path, default=HERE / "data", help="where sample data and stores go (git-ignored)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--update-readme", action="store_true", help=readme)
    return p


def command(doc: str, sizes: dict, run, name: str, page: str, marker: str):
    """The ``main`` of a benchmark: run it at ``--size``, print ``<out>/<name>-<size>.md``, and with
    ``--update-readme`` copy it between the markers ``marker`` of ``docs/<page>``."""
    def main(argv: list[str] | None = None) -> int:
        args = parser(doc, sizes, f"copy the results into docs/{page}").parse_args(argv)
        run(args.size, args.data, args.out)
        md = (args.out / f"{name}-{args.size}.md").read_text()
        if args.update_readme:
            replace_between(HERE.parent / "docs" / page, marker, md)
        print(md)
        return 0
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, SIZES, "copy the targets and float32 tables into docs/performance.md").parse_args(argv)
    result = run(args.size, args.data, args.out)
    if args.update_readme:
        update_readme((args.out / f"results-{args.size}.md").read_text())
    print((args.out / f"results-{args.size}.md").read_text())
    return 0 if result["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
