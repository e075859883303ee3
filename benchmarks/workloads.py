"""The timed workloads.  Each returns rows ``{"workload", "method", "seconds", ...}``.

Methods: ``a`` the file tree read per item with ``np.load`` (as ``FileTreeDataset``),
``b`` the file tree read all at once (``np.load`` + ``np.stack``), ``c`` this project's
store (``open_mouse`` / ``MouseDataset``), ``d`` physical references measured in the same
run (codec decode of the stored chunks, memcpy, ``np.memmap`` gather).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np

import converter

KEYS = ("images", "responses", "behavior", "pupil_center")


WARM_UP = True  # `sized` turns it off for tiny runs, which check that every path runs, not how fast


def sized(size: str) -> None:
    """Set up the timings for a run at ``size``: tiny runs take no warm-up run."""
    global WARM_UP
    WARM_UP = size != "tiny"


def best(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` runs, after one warm-up run (not at tiny size)."""
    if WARM_UP:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def drop_cache(*roots: Path) -> None:
    """Evict the files under ``roots`` from the page cache (no root needed)."""
    os.sync()
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.is_file():
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def cold(fn: Callable[[], object], *roots: Path) -> float:
    drop_cache(*roots)
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@dataclass
class Ctx:
    """One dataset, its store, and the shared random state of a run."""

    folder: Path
    store: Path
    stacked: Path  # one .npy per key, for the memmap reference
    repeat: int
    rng: np.random.Generator
    label: str  # e.g. "float32 images"

    @property
    def n(self) -> int:
        return len(os.listdir(self.folder / "data/responses"))

    def row(self, workload: str, method: str, seconds: float, **extra) -> dict:
        return {"dataset": self.label, "workload": workload, "method": method, "seconds": seconds, **extra}


def load_item(folder: Path, i: int, keys=KEYS) -> list[np.ndarray]:
    """What ``FileTreeDataset.__getitem__`` does: one ``np.load`` per key."""
    return [np.load(folder / f"data/{k}/{i}.npy") for k in keys]


def stack_key(folder: Path, key: str, trials) -> np.ndarray:
    return np.stack([np.load(folder / f"data/{key}/{i}.npy") for i in trials])


def decode_bound(store: Path, key: str, workers: int = os.cpu_count() or 1) -> Callable[[], None]:
    """A function that reads and Blosc-decodes every stored chunk of ``key`` (inner chunks of
    shards included), with numcodecs alone: no zarr, no assembling of the result."""
    import json

    from converter.zarrlite import ChunkReader

    meta = json.loads((store / key / "zarr.json").read_text())
    files = [p for p in (store / key / "c").rglob("*") if p.is_file()]
    reader = ChunkReader.from_path(store / key)
    if reader is not None and reader.sharded:
        pieces = []
        for p in files:
            shard = tuple(int(x) for x in p.relative_to(store / key / "c").parts)
            index = reader._shard_index(shard).reshape(-1, 2)
            pieces += [(p, int(o), int(n)) for o, n in index if o != 2**64 - 1]

        def run():
            def one(piece):
                path, offset, nbytes = piece
                with open(path, "rb") as f:
                    f.seek(offset)
                    numcodecs.blosc.decompress(f.read(nbytes))
            with ThreadPoolExecutor(workers) as ex:
                list(ex.map(one, pieces))
        return run
    assert any(c["name"] == "blosc" for c in meta["codecs"]), meta["codecs"]

    def run():
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(lambda p: numcodecs.blosc.decompress(p.read_bytes()), files))

    return run


def make_stacked(ctx: Ctx) -> None:
    ctx.stacked.mkdir(parents=True, exist_ok=True)
    ds = converter.open_mouse(ctx.store)
    for key in KEYS:
        path = ctx.stacked / f"{key}.npy"
        if not path.exists():
            np.save(path, ds[key].values)


# -- 1. conversion -----------------------------------------------------------------

_CONVERT_CHILD = """
import json, sys, time, converter
t = time.perf_counter()
converter.convert(sys.argv[1], sys.argv[2], progress=False)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report
# the resident size of the (large) benchmark process that started it.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": hwm / 1024}))
"""


def convert_in_child(src: Path, dest: Path) -> dict:
    """Convert in a fresh process; its wall time and peak resident memory."""
    import json

    if dest.exists():
        shutil.rmtree(dest)
    out = subprocess.run([sys.executable, "-c", _CONVERT_CHILD, str(src), str(dest)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def source_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.npy"))


def conversion(label: str, sizes: list[tuple[int, Path]], work: Path, zip_path: Path | None, repeat: int) -> list[dict]:
    rows = []
    for trials, folder in sizes:
        n_files = len(list(folder.rglob("*.npy")))
        read = best(lambda: [np.load(p) for p in folder.rglob("*.npy")], max(1, repeat // 2))
        res = convert_in_child(folder, work / f"convert-{trials}.zarr")
        mb = source_bytes(folder) / 1e6
        common = {"dataset": label, "trials": trials, "files": n_files}
        rows.append({**common, "workload": "convert", "method": "a", "seconds": read, "note": "np.load every source file"})
        rows.append({**common, "workload": "convert", "method": "c", "seconds": res["seconds"], "peak_rss_mb": res["peak_rss_mb"], "mb_per_s": mb / res["seconds"]})
    if zip_path is not None:
        trials = sizes[-1][0]
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            t = time.perf_counter()
            subprocess.run(["unzip", "-q", str(zip_path), "-d", tmp], check=True)
            unzip = time.perf_counter() - t
        res = convert_in_child(zip_path, work / "convert-zip.zarr")
        rows.append({"dataset": label, "trials": trials, "workload": "convert from zip", "method": "a", "seconds": unzip, "note": "unzip -q alone"})
        rows.append({"dataset": label, "trials": trials, "workload": "convert from zip", "method": "c", "seconds": res["seconds"], "peak_rss_mb": res["peak_rss_mb"]})
    return rows


# -- 2-8. reading ------------------------------------------------------------------


def open_store(ctx: Ctx) -> list[dict]:
    meta = [ctx.folder / "meta/trials", ctx.folder / "meta/neurons"]
    a = best(lambda: ([os.listdir(ctx.folder / f"data/{k}") for k in KEYS], [np.load(p) for d in meta for p in d.glob("*.npy")]), ctx.repeat)
    c = best(lambda: converter.open_mouse(ctx.store), ctx.repeat)
    c_cold = cold(lambda: converter.open_mouse(ctx.store), ctx.store)
    return [ctx.row("open (metadata only)", "a", a, note="list data folders + np.load meta arrays"),
            ctx.row("open (metadata only)", "c", c), ctx.row("open (metadata only)", "c", c_cold, cache="cold")]


def load_variables(ctx: Ctx) -> list[dict]:
    rows = []
    ds = converter.open_mouse(ctx.store)
    for key in KEYS:
        w = f"load all {key}"
        a = best(lambda: [np.load(ctx.folder / f"data/{key}/{i}.npy") for i in range(ctx.n)], 1)
        b = best(lambda: stack_key(ctx.folder, key, range(ctx.n)), 1)
        c = best(lambda: ds[key].values, ctx.repeat)
        arr = ds[key].values
        d_decode = best(decode_bound(ctx.store, key), ctx.repeat)
        dst = np.empty_like(arr)
        d_copy = best(lambda: np.copyto(dst, arr), ctx.repeat)
        rows += [ctx.row(w, "a", a), ctx.row(w, "b", b), ctx.row(w, "c", c, bytes=arr.nbytes, mode="open_mouse, default (lazy)"),
                 ctx.row(w, "d", d_decode, note="read + Blosc-decode every chunk, 2 threads"),
                 ctx.row(w, "d", d_copy, note="memcpy")]
        if key == "responses":
            rows.append(ctx.row(w, "a", cold(lambda: [np.load(ctx.folder / f"data/{key}/{i}.npy") for i in range(ctx.n)], ctx.folder / "data" / key), cache="cold"))
            rows.append(ctx.row(w, "c", cold(lambda: converter.open_mouse(ctx.store)[key].values, ctx.store), cache="cold"))
            dds = converter.open_mouse(ctx.store, dask=True)
            rows.append(ctx.row(w, "c", best(lambda: dds[key].values, ctx.repeat), mode="open_mouse, dask=True"))
    return rows


def random_batches(ctx: Ctx, batch: int = 128, n_batches: int = 10) -> list[dict]:
    from converter.torch import MouseDataset, collate, loaders

    batches = [ctx.rng.choice(ctx.n, size=min(batch, ctx.n), replace=False) for _ in range(n_batches)]
    w = f"random batch of {batch}, all keys"

    def per_batch(fn):
        return best(lambda: [fn(b) for b in batches], 1) / n_batches

    a = per_batch(lambda b: [load_item(ctx.folder, i) for i in b])
    disk = MouseDataset(ctx.store)  # the default: read from the store at every batch
    mem = MouseDataset(ctx.store, in_memory=True).load()
    c_disk = per_batch(lambda b: collate(disk.__getitems__(b)))
    c_mem = per_batch(lambda b: collate(mem.__getitems__(b)))
    ds = converter.open_mouse(ctx.store)
    c_xr = per_batch(lambda b: ds[list(KEYS)].sel(trial=b).load())
    dl = next(iter(loaders([ctx.store], batch_size=batch, tier="train", seed=0, normalize=False, include_behavior=True,
                           add_behavior_as_channels=False, include_eye_position=True)["train"].values()))
    next(iter(dl))  # warm-up

    def loader_batches():
        got = 0
        while got < n_batches:  # as many epochs as it takes: a tiny store has one batch
            for _ in dl:
                got += 1
                if got == n_batches:
                    break
    c_dl = best(loader_batches, 1) / n_batches
    maps = {k: np.load(ctx.stacked / f"{k}.npy", mmap_mode="r") for k in KEYS}
    d = per_batch(lambda b: [maps[k][np.sort(b)] for k in KEYS])
    a_cold = cold(lambda: [load_item(ctx.folder, i) for i in batches[0]], ctx.folder / "data")
    c_cold = cold(lambda: collate(MouseDataset(ctx.store).__getitems__(batches[0])), ctx.store)
    size = len(batches[0])
    return [ctx.row(w, "a", a, trials_per_s=size / a), ctx.row(w, "c", c_disk, mode="MouseDataset, default (on disk)", trials_per_s=size / c_disk),
            ctx.row(w, "c", c_dl, mode="loaders, default (on disk; DataLoader in this process)", trials_per_s=size / c_dl),
            ctx.row(w, "c", c_xr, mode="open_mouse, default: sel(trial=b).load()", trials_per_s=size / c_xr),
            ctx.row(w, "c", c_mem, mode="MouseDataset, in_memory=True", trials_per_s=size / c_mem),
            ctx.row(w, "d", d, note="np.memmap gather from stacked arrays", trials_per_s=size / d),
            ctx.row(w, "a", a_cold, cache="cold"), ctx.row(w, "c", c_cold, mode="MouseDataset, default (on disk)", cache="cold")]


def epoch(ctx: Ctx, batch: int = 128) -> list[dict]:
    import torch

    from converter.read.normalize import Normalizer
    from converter.torch import loaders

    tiers = np.load(ctx.folder / "meta/trials/tiers.npy")
    train = np.flatnonzero(tiers == "train")
    norm = Normalizer.from_statistics({k: {s: np.load(ctx.folder / f"meta/statistics/{k}/all/{s}.npy") for s in ("mean", "std")} for k in ("images", "responses")})

    def filetree_epoch():
        order = ctx.rng.permutation(train)
        for s in range(0, len(order), batch):
            items = [load_item(ctx.folder, i, ("images", "responses")) for i in order[s : s + batch]]
            torch.stack([torch.from_numpy(norm("images", x[0]).astype(np.float32)) for x in items])
            torch.stack([torch.from_numpy(norm("responses", x[1]).astype(np.float32)) for x in items])

    dl = next(iter(loaders([ctx.store], batch_size=batch, tier="train", seed=0)["train"].values()))
    a = best(filetree_epoch, 1)
    c = best(lambda: [b for b in dl], 1)
    w = "epoch of the train loader (normalised images + responses)"
    return [ctx.row(w, "a", a, note="FileTreeDataset-style per-item np.load + NeuroNormalizer"), ctx.row(w, "c", c, mode="loaders, default (on disk)")]


def tier_responses(ctx: Ctx) -> list[dict]:
    tiers = np.load(ctx.folder / "meta/trials/tiers.npy")
    train = np.flatnonzero(tiers == "train")
    w = "responses of the train tier"
    a = best(lambda: [np.load(ctx.folder / f"data/responses/{i}.npy") for i in train], 1)
    rows = [ctx.row(w, "a", a)]
    for mode, ds in _modes(ctx):
        rows.append(ctx.row(w, "c", best(lambda: ds.sensorium.tier("train").responses.values, ctx.repeat), mode=mode))
    return rows


def _modes(ctx: Ctx):
    """The store opened both ways `open_mouse` offers."""
    return [("open_mouse, default (lazy)", converter.open_mouse(ctx.store)), ("open_mouse, dask=True", converter.open_mouse(ctx.store, dask=True))]


def neurons(ctx: Ctx) -> list[dict]:
    area = np.load(ctx.folder / "meta/neurons/area.npy")
    n = len(area) // 2
    hundred = np.flatnonzero(area == "V1")[:100]
    resp = np.load(ctx.stacked / "responses.npy", mmap_mode="r")
    rows = []
    for w, cols in (("one neuron, all trials", [n]), (f"{len(hundred)} V1 neurons, all trials", hundred)):
        a = best(lambda: np.stack([np.load(ctx.folder / f"data/responses/{i}.npy")[cols] for i in range(ctx.n)]), 1)
        rows.append(ctx.row(w, "a", a))
        for mode, ds in _modes(ctx):
            rows.append(ctx.row(w, "c", best(lambda: ds.responses.isel(neuron=cols).values, ctx.repeat), mode=mode))
        rows.append(ctx.row(w, "d", best(lambda: np.ascontiguousarray(resp[:, cols]), ctx.repeat), note="np.memmap column of stacked responses"))
        if len(cols) == 1:
            lazy = lambda: converter.open_mouse(ctx.store).responses.isel(neuron=cols).values
            rows.append(ctx.row(w, "c", cold(lazy, ctx.store), cache="cold", mode="open_mouse, default (lazy)"))
    return rows


def repeats(ctx: Ctx) -> list[dict]:
    tiers = np.load(ctx.folder / "meta/trials/tiers.npy")
    ids = np.load(ctx.folder / "meta/trials/frame_image_id.npy")
    test = np.flatnonzero(tiers == "test")

    def filetree():
        r = np.stack([np.load(ctx.folder / f"data/responses/{i}.npy") for i in test])
        return {u: r[ids[test] == u].mean(0) for u in np.unique(ids[test])}

    w = "test repeats grouped by image_id (mean)"
    rows = [ctx.row(w, "a", best(filetree, 1))]
    for mode, ds in _modes(ctx):
        c = best(lambda: ds[["responses"]].sensorium.tier("test").sensorium.repeats().mean()["responses"].values, ctx.repeat)
        rows.append(ctx.row(w, "c", c, mode=mode))
    return rows


def sizes(ctx: Ctx) -> list[dict]:
    rows = []
    for key in KEYS:
        src = sum(p.stat().st_size for p in (ctx.folder / "data" / key).glob("*.npy"))
        dst = sum(p.stat().st_size for p in (ctx.store / key).rglob("*") if p.is_file())
        rows.append({"dataset": ctx.label, "workload": "size", "variable": key, "source_bytes": src, "store_bytes": dst, "ratio": dst / src})
    src = source_bytes(ctx.folder)
    dst = sum(p.stat().st_size for p in ctx.store.rglob("*") if p.is_file())
    rows.append({"dataset": ctx.label, "workload": "size", "variable": "whole store", "source_bytes": src, "store_bytes": dst, "ratio": dst / src})
    return rows


# -- scale-out ------------------------------------------------------------------------

def _worker_peak_mb() -> float:
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024


def scale_out(label: str, sources: list[Path], work: Path, workers: tuple[int, ...] = (1, 2)) -> list[dict]:
    """``convert-all`` of several mice on a local dask cluster of each number of ``workers``, and
    the peak memory of a worker (`benchmarks.conversion` times every worker count)."""
    from distributed import Client, LocalCluster

    src_dir = work / "scale-src"
    shutil.rmtree(src_dir, ignore_errors=True)
    src_dir.mkdir(parents=True)
    for s in sources:
        (src_dir / s.name).symlink_to(s, target_is_directory=s.is_dir())
    rows = []
    for n in workers:
        out = work / f"scale-{n}"
        shutil.rmtree(out, ignore_errors=True)
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            t = time.perf_counter()
            result = converter.convert_all(src_dir, out, scheduler=cluster.scheduler_address, progress=False)
            wall = time.perf_counter() - t
            peaks = list(client.run(_worker_peak_mb).values())
        assert all(r.status == "converted" for r in result), result
        rows.append({"dataset": label, "workload": "convert several mice", "method": "c", "workers": n, "mice": len(sources),
                     "trials": sum(r.trials for r in result), "seconds": wall, "peak_worker_mb": max(peaks)})
        shutil.rmtree(out)
    return rows


_PLAIN_CHILD = """
import json, sys, time
import numpy as np, xarray as xr
store, n_neuron = sys.argv[1], int(sys.argv[2])
batch = json.loads(sys.argv[3])
def best(f, k=3):
    f(); t = []
    for _ in range(k):
        s = time.perf_counter(); f(); t.append(time.perf_counter() - s)
    return min(t)
ds = xr.open_zarr(store)
train = np.flatnonzero(ds["tier"].values == "train")
out = {
    "load all responses": best(lambda: ds["responses"].values),
    "one neuron, all trials": best(lambda: ds["responses"].isel(neuron=[n_neuron]).values),
    "responses of the train tier": best(lambda: ds["responses"].isel(trial=train).values),
    "random batch of 128, all keys": best(lambda: ds[["images", "responses", "behavior", "pupil_center"]].sel(trial=batch).load()),
}
assert "converter" not in sys.modules
print(json.dumps(out))
"""


def plain_xarray(ctx: Ctx) -> list[dict]:
    """The same reads through plain ``xarray.open_zarr`` in a process that never imports converter."""
    import json

    n_neuron = len(np.load(ctx.folder / "meta/neurons/unit_ids.npy")) // 2
    batch = ctx.rng.choice(ctx.n, size=min(128, ctx.n), replace=False).tolist()
    out = subprocess.run([sys.executable, "-c", _PLAIN_CHILD, str(ctx.store), str(n_neuron), json.dumps(batch)],
                         capture_output=True, text=True, check=True)
    return [ctx.row(w, "c", t, mode="plain xr.open_zarr, no converter") for w, t in json.loads(out.stdout).items()]


READING = [open_store, load_variables, random_batches, epoch, tier_responses, neurons, repeats, plain_xarray, sizes]


_LOADER_MEMORY_CHILD = """
import json, sys, threading, time
import psutil
from converter.torch import loaders
stores, workers, batches = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
me = psutil.Process()
peak = [0]
def tree_pss():
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], tree_pss())
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
dls = loaders(stores, batch_size=128, tier="train", seed=0, include_behavior=True, include_eye_position=True,
              num_workers=workers, multiprocessing_context="fork", persistent_workers=True)["train"]
def cycle(dl):
    while True:
        yield from dl
its = [cycle(dl) for dl in dls.values()]
for _ in range(batches):  # round robin over the mice, as neuralpredictors' LongCycler does
    for it in its:
        next(it)
peak[0] = max(peak[0], tree_pss())
stop.set()
print(json.dumps({"peak_pss_mb": peak[0] / 2**20}))
"""


def loader_memory(label: str, full: list[Path], tiny: list[Path], source_mb: float, workers: int = 2, batches: int = 10) -> list[dict]:
    """Peak memory (PSS of the process tree) of multi-mouse training on the default loaders."""
    import json

    def peak(stores):
        out = subprocess.run([sys.executable, "-c", _LOADER_MEMORY_CHILD, json.dumps([str(s) for s in stores]), str(workers), str(batches)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["peak_pss_mb"]

    big = peak(full)
    small = big if tiny == full else peak(tiny)  # the tiny run's stores are already the smallest
    return [{"dataset": label, "workload": "loader memory", "method": "c", "mice": len(full), "workers": workers,
             "peak_pss_mb": big, "tiny_peak_pss_mb": small, "above_tiny_mb": big - small, "source_mb": source_mb}]
