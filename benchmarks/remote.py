"""Reads from object storage: each stored layout, what `open_mouse` picks, and per-file ``np.load``.

    python -m benchmarks.remote                 # full size: 6955 trials x 7776 neurons
    python -m benchmarks.remote --size tiny     # seconds; the tests run it

A real S3 API, moto's server, runs on loopback in a child process; the store and the source's
response files are uploaded to it, and every read goes through s3fs over HTTP.  Loopback has
no network latency, so a request costs less here than in a real bucket: the gap between few
large and many small requests is the least it will be.  Results go to
``benchmarks/results/remote-<size>.{md,json}``; ``--update-readme`` copies them into docs/how-to/object-storage.md.
Method (a) is the file tree in the bucket (one GET and ``np.load`` per file, as a loop over a
mounted bucket does), (c) the store through `converter.open_mouse`, which picks a layout by
`converter.read.engine.cost`; the two layouts are also read on their own, and the trial-major one
once more through zarr-python, as it was read before 0.8.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

import converter
from converter.read.engine import ZarrReader, cost, open_reader
from converter.storage import open_array

from . import workloads as W
from .moto import moto_server
from .run import HERE, command, dataset, machine

SIZES = {
    "full": {"trials": 6955, "neurons": 7776, "repeat": 3},
    "tiny": {"trials": 300, "neurons": 40, "repeat": 1},
}
RUN, BATCH = 200, 128


def _cases(ds, rng: np.random.Generator) -> dict[str, tuple]:
    """Selections as positions in the store's trial order (the order `open_mouse` shows)."""
    tiers = ds["tier"].values
    return {
        f"a run of {RUN} trials (the overview's panel)": (np.arange(min(RUN, ds.sizes["trial"])),),
        "the train tier": (np.flatnonzero(tiers == "train"),),
        f"random batch of {BATCH} trials": (np.sort(rng.choice(ds.sizes["trial"], min(BATCH, ds.sizes["trial"]), replace=False)),),
        "one neuron, all trials": (slice(None), np.array([ds.sizes["neuron"] // 2])),
    }


OPEN = "open_mouse (metadata and every coordinate)"
CONVERT = "convert the source folder into the bucket"
STREAM = f"DeviceLoader streaming, shuffled batches of {BATCH} trials"
RUNS = 8  # run_length of the second streaming row: runs of 8 stored trials, shuffled within buffers of 8 batches
ZARR = "by_trial, zarr-python"  # the same shards read one request after another, as before 0.8


def reads(label: str, folder: Path, fs, url: str, options: dict, repeat: int) -> list[dict]:
    """Each case read every way; ``fs`` is the s3fs filesystem the source files were put in."""
    ds = converter.open_mouse(url, storage_options=options)
    rows = [dict(dataset=label, workload=OPEN, method="c", seconds=W.best(lambda: converter.open_mouse(url, storage_options=options), repeat))]
    meta = json.loads(fs.cat_file(f"{url}/zarr.json"))["consolidated_metadata"]["metadata"]
    layouts = {"tiles": open_reader(url, "responses", options, meta["responses"]),
               "by_trial": open_reader(url, "by_trial/responses", options, meta["by_trial/responses"]),  # concurrent ranges
               ZARR: ZarrReader(open_array(url, "by_trial/responses", options), remote=True)}
    files = ds["trial"].values  # file number of each stored position
    for workload, sel in _cases(ds, np.random.default_rng(0)).items():
        row = dict(dataset=label, workload=workload)
        if len(sel) == 1 and len(sel[0]) <= BATCH * 2:  # (a) only where a loop over files is a fair way to do it
            paths = [f"{folder.name}/data/responses/{i}.npy" for i in files[sel[0]].tolist()]
            rows.append({**row, "method": "a", "seconds": W.best(lambda: np.stack([np.load(io.BytesIO(fs.cat_file(f"data/tree/{p}"))) for p in paths]), repeat)})
        through_xarray = ds["responses"].isel(trial=sel[0], neuron=sel[1] if len(sel) > 1 else slice(None))
        want = through_xarray.values
        for name, reader in layouts.items():
            got = reader.read(sel)
            assert got.tobytes() == want.tobytes(), (workload, name)  # every way reads the same bits
            rows.append({**row, "method": "c", "layout": name, "seconds": W.best(lambda: reader.read(sel), repeat)})
        picked = min(("tiles", "by_trial"), key=lambda n: cost(layouts[n], sel))
        rows.append({**row, "method": "c", "layout": f"open_mouse ({picked})",
                     "seconds": W.best(lambda: through_xarray.values, repeat)})
    if importlib.util.find_spec("torch") is not None:
        for run in (1, RUNS):
            rows.append({"dataset": label, "workload": STREAM, "method": "c", "run_length": run,
                         "seconds": streamed(url, options, layouts["by_trial"], repeat, run)})
    return rows


def writes(label: str, folder: Path, fs, options: dict) -> list[dict]:
    """Into the bucket once, both ways: (a) the source folder uploaded as it is, one PUT per file
    (s3fs sends them concurrently), (c) `converter.convert` from the folder into a store there."""
    print("[remote] writing ...", file=sys.stderr)
    t = time.perf_counter()
    fs.put(str(folder), f"data/upload/{folder.name}", recursive=True)
    a = time.perf_counter() - t
    t = time.perf_counter()
    converter.convert(folder, "s3://data/converted.zarr", storage_options=options, progress=False)
    c = time.perf_counter() - t
    return [{"dataset": label, "workload": CONVERT, "method": "a", "seconds": a, "note": "upload the source folder"},
            {"dataset": label, "workload": CONVERT, "method": "c", "seconds": c}]


def streamed(url: str, options: dict, by_trial, repeat: int, run_length: int, n: int = 16) -> float:
    """Seconds per batch of responses from `DeviceLoader` streaming from the bucket, ``n`` batches
    a time (its thread reads ahead while the last is taken)."""
    from converter.torch import DeviceLoader

    dl = DeviceLoader(url, batch_size=BATCH, mode="streaming", keys=("responses",), normalize=False, storage_options=options,
                      run_length=run_length)
    (idx, _), first = dl.batches(0)[0], next(iter(dl))
    assert first["responses"].numpy().tobytes() == by_trial.read((dl.dataset.trials[idx.numpy()],)).tobytes()
    n = min(n, len(dl))

    def take():
        for _ in zip(range(n), dl):
            pass

    return W.best(take, repeat) / n


def markdown(rows: list[dict], info: dict, size: str) -> str:
    ms = lambda s: f"{s * 1e3:.0f} ms"  # noqa: E731
    lines = [f"Reads from object storage, {size} size. Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; "
             f"Python {info['python']}, zarr {info['zarr']}, sensorium-zarr {info['converter']}. moto's S3 server on loopback; "
             "best of the repeats.", "",
             "| responses of ... | (a) one GET per file | tiles | by_trial | by_trial through zarr-python | open_mouse picks | "
             "open_mouse / faster layout | (a) / open_mouse |",
             "|---|---|---|---|---|---|---|---|"]
    opened = [r for r in rows if r["workload"] == OPEN]
    for w in dict.fromkeys(r["workload"] for r in rows if r["workload"] not in (OPEN, STREAM, CONVERT)):
        got = {r.get("layout", "a"): r["seconds"] for r in rows if r["workload"] == w}
        pick = next(k for k in got if k.startswith("open_mouse"))
        a = got.get("a")
        lines.append(f"| {w} | {ms(a) if a else '-'} | {ms(got['tiles'])} | {ms(got['by_trial'])} | {ms(got[ZARR])} | {pick[len('open_mouse '):]} "
                     f"{ms(got[pick])} | {got[pick] / min(got['tiles'], got['by_trial']):.2f} | {f'{a / got[pick]:.1f}x' if a else '-'} |")
    lines += [""] + [f"{OPEN}: {ms(r['seconds'])} (target 0.2 s)." for r in opened]
    put = {r["method"]: r["seconds"] for r in rows if r["workload"] == CONVERT}
    if put:
        lines += ["", f"Into the bucket: `convert` from the folder to a store there takes {put['c']:.1f} s; uploading the folder "
                      f"as it is (one PUT per file, concurrent) takes {put['a']:.1f} s: {put['a'] / put['c']:.1f}x the conversion's time."]
    batch = {r.get("layout", "a"): r["seconds"] for r in rows if r["workload"] == f"random batch of {BATCH} trials"}
    if batch:
        ratio = batch["a"] / batch["by_trial"]
        lines += ["", f"Random batch of {BATCH} trials from `by_trial` (concurrent range requests): {ratio:.1f}x faster than one GET "
                      f"per file (target 5x: {'met' if ratio >= 5 else '**missed**'}); through zarr-python, {batch['a'] / batch[ZARR]:.1f}x."]
        for r in rows:
            if r["workload"] == STREAM:
                how = "trial by trial" if r["run_length"] == 1 else f"in runs of {r['run_length']} stored trials, within buffers of 8 batches"
                lines.append(f"{STREAM} ({how}): {ms(r['seconds'])} a batch, {batch['a'] / r['seconds']:.1f}x one GET per file "
                             f"for a random batch (target 5x: {'met' if batch['a'] / r['seconds'] >= 5 else '**missed**'}).")
    return "\n".join(lines) + "\n"


def run(size: str = "full", data: Path = HERE / "data", out: Path = HERE / "results") -> dict:
    import s3fs

    cfg = SIZES[size]
    t, n = cfg["trials"], cfg["neurons"]
    folder = dataset(data, t, n, "float32")
    W.sized(size)

    store = data / "work" / "remote" / f"remote-{t}.zarr"
    if not (store / "zarr.json").exists():
        converter.convert(folder, store, overwrite=True, progress=False)
    out.mkdir(parents=True, exist_ok=True)
    with moto_server() as endpoint:
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("data")
        print("[remote] uploading ...", file=sys.stderr)
        fs.put(str(store), "data/m.zarr", recursive=True)
        fs.put(str(folder / "data" / "responses"), f"data/tree/{folder.name}/data/responses", recursive=True)
        print("[remote] reading ...", file=sys.stderr)
        rows = reads(f"{t} trials x {n} neurons", folder, fs, "s3://data/m.zarr", options, cfg["repeat"])
        rows += writes(f"{t} trials x {n} neurons", folder, fs, options)  # last: the server holds it all in memory
    info = machine()
    result = {"size": size, "machine": info, "rows": rows}
    (out / f"remote-{size}.json").write_text(json.dumps(result, indent=1, default=float))
    (out / f"remote-{size}.md").write_text(markdown(rows, info, size))
    return result


main = command(__doc__, SIZES, run, "remote", "how-to/object-storage.md", "remote-results")


if __name__ == "__main__":
    sys.exit(main())
