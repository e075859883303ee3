"""The analyses of docs/cookbook.md, three ways: plain xarray, ``ds.sensorium``, a NumPy loop over the files.

    python -m benchmarks.cookbook              # full size: 6955 trials x 7776 neurons; a 2023 mouse of 180 clips
    python -m benchmarks.cookbook --size tiny  # seconds; the tests run it

Each `Analysis` holds the same computation written as a user writes it:

- ``plain(ds)``: on ``xr.open_zarr(store)`` as opened in a process that never imports
  ``converter`` (this module does not import it);
- ``sensorium(ds)``: on ``converter.open_mouse(store)``;
- ``files(tree)``: a NumPy loop over the dataset folder, ``np.load`` per file, as before the store.

Every function returns a dict of labelled results (`xarray.DataArray` or ``pandas`` objects, or
plain arrays keyed by label), so the three can be compared value for value by
`tests/test_cookbook.py` and timed side by side by ``python -m benchmarks.cookbook``.  The code
in the bodies is what docs/cookbook.md shows (a test checks that it is there, line for line).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr

RUNNING_CM_S = 1.0  # "running": running speed above this (the samples' speed is in cm/s)


def open_plain(store) -> xr.Dataset:
    """The store as plain xarray opens it, then its coordinates loaded (docs/cookbook.md, "Opening")."""
    ds = xr.open_zarr(store)
    ds = ds.assign_coords(ds.coords.to_dataset().compute().coords)  # the small labels, in memory
    return ds


class FileTree:
    """A dataset folder read the way it was read before the store: ``np.load`` per file."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def meta(self, which: str, name: str) -> np.ndarray:
        return np.load(self.folder / "meta" / which / f"{name}.npy", allow_pickle=False)

    @cached_property
    def n(self) -> int:
        return len(os.listdir(self.folder / "data/responses"))

    def load(self, key: str, trials=None) -> np.ndarray:
        """Trials of data folder ``key``, in the order given (default: every file, in file order)."""
        return np.stack(list(self.load_each(key, trials)))

    def load_each(self, key: str, trials=None):
        """Trials of data folder ``key`` one at a time."""
        for i in range(self.n) if trials is None else trials:
            yield np.load(self.folder / f"data/{key}/{i}.npy", allow_pickle=False)


def _per_image(ids: np.ndarray, x: np.ndarray, stat: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Mean (or variance) over the rows of each image id, ids sorted: the NumPy loop's groupby,
    vectorised (sums of sorted rows by cumulative sums), so that the baseline is a fast one."""
    order = np.argsort(ids, kind="stable")
    ids, x = ids[order], x[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    n = np.diff(np.r_[starts, len(ids)]).reshape(-1, *(1,) * (x.ndim - 1))

    def sums(v):
        c = np.concatenate([np.zeros_like(v[:1]), np.cumsum(v, axis=0)])
        return c[np.r_[starts[1:], len(ids)]] - c[starts]

    mean = sums(x) / n
    if stat == "var":
        return ids[starts], sums((x - np.repeat(mean, n.ravel(), axis=0)) ** 2) / n
    return ids[starts], mean


# ---- 1. Mean response per image, over all trials and within one tier ----

def mean_per_image_plain(ds):
    per_image = ds.responses.groupby("image_id").mean()
    test_per_image = ds.responses.where(ds.tier == "test", drop=True).groupby("image_id").mean()
    return {"all": per_image, "test": test_per_image}


def mean_per_image_sensorium(ds):
    per_image = ds.sensorium.by_image().mean().responses
    test_per_image = ds.sensorium.repeats("test").mean().responses
    return {"all": per_image, "test": test_per_image}


def mean_per_image_files(tree: FileTree):
    ids, tiers, r = tree.meta("trials", "frame_image_id"), tree.meta("trials", "tiers"), tree.load("responses")
    test = tiers == "test"
    return {"all": _per_image(ids, r), "test": _per_image(ids[test], r[test])}


# ---- 2. Select a tier ----

def tier_plain(ds):
    test = ds.where(ds.tier == "test", drop=True)
    return {"responses": test.responses}


def tier_sensorium(ds):
    test = ds.sensorium.tier("test")
    return {"responses": test.responses}


def tier_files(tree: FileTree):
    trials = np.flatnonzero(tree.meta("trials", "tiers") == "test")
    return {"responses": (trials, tree.load("responses", trials))}


# ---- 3. The test repeats: mean and variance per image, each neuron's reliability ----

def repeats_plain(ds):
    test = ds.responses.where(ds.tier == "test", drop=True).compute()  # the tier, in memory: used five times
    per_image = test.groupby("image_id")
    mean, var = per_image.mean(), per_image.var()
    sums, n = per_image.sum().sel(image_id=test.image_id), per_image.count().sel(image_id=test.image_id)
    others = (sums - test) / (n - 1)  # each trial against the mean of its image's other repeats
    oracle = xr.corr(test, others, dim="trial")
    return {"mean": mean, "var": var, "oracle": oracle}


def repeats_sensorium(ds):
    repeats = ds.sensorium.repeats(tiers="test")
    mean, var = repeats.mean()["responses"], repeats.var()["responses"]
    import converter

    oracle = converter.oracle(ds, tier="test")
    return {"mean": mean, "var": var, "oracle": oracle}


def repeats_files(tree: FileTree):
    ids, tiers = tree.meta("trials", "frame_image_id"), tree.meta("trials", "tiers")
    test = np.flatnonzero(tiers == "test")
    r, ids = tree.load("responses", test).astype(np.float64), ids[test]
    others = np.empty_like(r)
    for i in np.unique(ids):
        rows = ids == i
        others[rows] = (r[rows].sum(0) - r[rows]) / (rows.sum() - 1)
    rc, oc = r - r.mean(0), others - others.mean(0)
    oracle = (rc * oc).sum(0) / np.sqrt((rc**2).sum(0) * (oc**2).sum(0))
    return {"mean": _per_image(ids, r), "var": _per_image(ids, r, "var"), "oracle": oracle}


# ---- 4. The neurons of one area or layer, sorted by depth ----

def area_by_depth_plain(ds):
    v1 = ds.sel(neuron=ds.neuron[ds.area == "V1"])
    v1 = v1.sortby(v1.cell_motor_coordinates.isel(xyz=2))  # z: depth
    return {"responses": v1.responses.isel(trial=slice(0, 100))}


def area_by_depth_sensorium(ds):
    v1 = ds.sensorium.neurons(area="V1")
    v1 = v1.sortby(v1.cell_motor_coordinates.isel(xyz=2))
    return {"responses": v1.responses.isel(trial=slice(0, 100))}


def area_by_depth_files(tree: FileTree):
    units, area, z = tree.meta("neurons", "unit_ids"), tree.meta("neurons", "area"), tree.meta("neurons", "cell_motor_coordinates")[:, 2]
    keep = np.flatnonzero(area == "V1")
    keep = keep[np.argsort(z[keep], kind="stable")]
    return {"responses": (units[keep], tree.load("responses")[:, keep])}


# ---- 5. Responses split by behaviour: running against still ----

def running_plain(ds):
    running = (ds.behavior.sel(behavior_variable="running_speed") > RUNNING_CM_S).compute()
    by_state = ds.responses.groupby(running.rename("running")).mean()
    return {"by_state": by_state}


def running_sensorium(ds):
    running = ds.behavior.sel(behavior_variable="running_speed") > RUNNING_CM_S
    by_state = ds.responses.groupby(running.rename("running")).mean()
    return {"by_state": by_state}


def running_files(tree: FileTree):
    running = tree.load("behavior")[:, 2] > RUNNING_CM_S
    r = tree.load("responses")
    return {"by_state": np.stack([r[~running].mean(0), r[running].mean(0)])}


# ---- 6. Responses in presentation order, with a rolling mean over trials ----

def presentation_order_plain(ds):
    in_order = ds.responses.sortby("trial_idx")
    rolling = in_order.mean("neuron").rolling(trial=20).mean()
    return {"rolling": rolling}


def presentation_order_sensorium(ds):
    in_order = ds.responses.sortby("trial_idx")
    rolling = in_order.mean("neuron").rolling(trial=20).mean()
    return {"rolling": rolling}


def presentation_order_files(tree: FileTree):
    order = np.argsort(tree.meta("trials", "trial_idx"), kind="stable")
    population = tree.load("responses", order).mean(1)
    window = np.lib.stride_tricks.sliding_window_view(population, 20).mean(1)
    return {"rolling": (order, np.r_[np.full(19, np.nan), window])}


# ---- 7. One neuron's tuning: mean response per image, sorted, the top 10 ----

def tuning_plain(ds):
    unit = ds.neuron.values[0]
    tuning = ds.responses.sel(neuron=unit).groupby("image_id").mean()
    ranked = tuning.sortby(tuning, ascending=False)
    return {"top10": ranked[:10]}


def tuning_sensorium(ds):
    unit = ds.neuron.values[0]
    tuning = ds.responses.sel(neuron=unit).groupby("image_id").mean()
    ranked = tuning.sortby(tuning, ascending=False)
    return {"top10": ranked[:10]}


def tuning_files(tree: FileTree):
    unit = tree.meta("neurons", "unit_ids")[0]
    ids, r = tree.meta("trials", "frame_image_id"), tree.load("responses")[:, 0]
    u, mean = _per_image(ids, r)
    top = np.argsort(-mean, kind="stable")[:10]
    return {"top10": (unit, u[top], mean[top])}


# ---- 8. A subset to NetCDF and to a pandas DataFrame ----

def subset_plain(ds, path="subset.nc"):
    subset = ds[["responses", "behavior"]].where(ds.tier == "test", drop=True).isel(neuron=slice(0, 50))
    subset.to_netcdf(path)
    back = xr.open_dataset(path)
    xr.testing.assert_identical(back.load(), subset.compute())
    table = subset.responses.to_dataframe()
    return {"netcdf": back.responses, "table": table["responses"]}


def subset_sensorium(ds, path="subset.nc"):
    subset = ds.sensorium.tier("test")[["responses", "behavior"]].isel(neuron=slice(0, 50))
    subset.to_netcdf(path)
    back = xr.open_dataset(path)
    xr.testing.assert_identical(back.load(), subset.load())
    table = subset.responses.to_dataframe()
    return {"netcdf": back.responses, "table": table["responses"]}


def subset_files(tree: FileTree, path="subset.nc"):
    trials = np.flatnonzero(tree.meta("trials", "tiers") == "test")
    responses, behavior = tree.load("responses", trials)[:, :50], tree.load("behavior", trials)
    coords = {"trial": trials, "neuron": tree.meta("neurons", "unit_ids")[:50]}
    for which, dim, rows in (("trials", "trial", trials), ("neurons", "neuron", slice(0, 50))):  # every label, as the store has
        for f in sorted((tree.folder / "meta" / which).glob("*.npy")):
            values = np.load(f, allow_pickle=False)[rows]
            coords.setdefault(f.stem, ((dim, *(f"{f.stem}_{k}" for k in range(1, values.ndim))), values))
    subset = xr.Dataset({"responses": (("trial", "neuron"), responses), "behavior": (("trial", "behavior_variable"), behavior)},
                        coords=coords)
    subset.to_netcdf(path)
    subset.responses.to_dataframe()
    return {"netcdf": (trials, responses)}


# ---- 9. The correlation matrix of 100 neurons across trials ----

def correlation_plain(ds):
    hundred = ds.responses.isel(neuron=slice(0, 100))
    matrix = hundred.to_pandas().corr()
    return {"matrix": matrix}


def correlation_sensorium(ds):
    hundred = ds.responses.isel(neuron=slice(0, 100))
    matrix = hundred.to_pandas().corr()
    return {"matrix": matrix}


def correlation_files(tree: FileTree):
    return {"matrix": np.corrcoef(tree.load("responses")[:, :100], rowvar=False)}


# ---- 10. Sensorium 2023: mean response over each clip's valid frames; mean time course per tier ----

def clips_plain(ds):
    valid = ds.responses.where(ds.frame < ds.n_frames)  # the NaN padding past n_frames left out
    per_clip = valid.mean("frame")
    time_course = valid.mean("neuron").groupby("tier").mean()
    return {"per_clip": per_clip, "time_course": time_course}


def clips_sensorium(ds):
    valid = ds.sensorium.valid().responses
    per_clip = valid.mean("frame")
    time_course = valid.mean("neuron").groupby("tier").mean()
    return {"per_clip": per_clip, "time_course": time_course}


def clips_files(tree: FileTree):
    r = tree.load("responses")
    n = np.array([int(np.argmax(np.isnan(v).any(axis=(0, 1)))) if np.isnan(v).any() else v.shape[-1] for v in tree.load_each("videos")])
    valid = np.where(np.arange(r.shape[-1]) < n[:, None, None], r, np.nan)
    tiers = tree.meta("trials", "tiers")
    with warnings.catch_warnings():  # frames that are padding in every clip of a tier: NaN, as in xarray
        warnings.simplefilter("ignore", RuntimeWarning)
        course = {t: np.nanmean(np.nanmean(valid[tiers == t], axis=1), axis=0) for t in np.unique(tiers)}
    return {"per_clip": np.nanmean(valid, axis=-1), "time_course": course}


@dataclass(frozen=True)
class Analysis:
    """One analysis of docs/cookbook.md, written three ways."""

    name: str
    plain: Callable
    sensorium: Callable
    files: Callable
    clips: bool = False  # a Sensorium 2023 analysis


ANALYSES = (
    Analysis("1. mean response per image", mean_per_image_plain, mean_per_image_sensorium, mean_per_image_files),
    Analysis("2. select a tier", tier_plain, tier_sensorium, tier_files),
    Analysis("3. test repeats: mean, variance, oracle", repeats_plain, repeats_sensorium, repeats_files),
    Analysis("4. neurons of one area, by depth", area_by_depth_plain, area_by_depth_sensorium, area_by_depth_files),
    Analysis("5. running against still", running_plain, running_sensorium, running_files),
    Analysis("6. presentation order, rolling mean", presentation_order_plain, presentation_order_sensorium, presentation_order_files),
    Analysis("7. one neuron's tuning, top 10", tuning_plain, tuning_sensorium, tuning_files),
    Analysis("8. a subset to NetCDF and pandas", subset_plain, subset_sensorium, subset_files),
    Analysis("9. correlation matrix of 100 neurons", correlation_plain, correlation_sensorium, correlation_files),
    Analysis("10. 2023: valid frames per clip, time course per tier", clips_plain, clips_sensorium, clips_files, clips=True),
)


def materialize(results: dict) -> dict:
    """Every lazy result computed, as a user's next line (a plot, a print) would."""
    return {k: v.load() if isinstance(v, xr.DataArray | xr.Dataset) else v for k, v in results.items()}


def timed(fn, *args, repeat: int = 1) -> float:
    """Seconds of the fastest of ``repeat`` runs of ``fn(*args)``, its results computed."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        materialize(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


SIZES = {
    "full": {"trials": 6955, "neurons": 7776, "clips": (180, 7900, 300), "repeat": 3},
    "tiny": {"trials": 300, "neurons": 40, "clips": (40, 20, 40), "repeat": 1},
}
PLAIN_TARGET, SENSORIUM_TARGET = 1.0, 5.0  # speed-ups over the NumPy loop that issue 20 asks for


def _measure(label: str, folder: Path, store: Path, clips: bool, repeat: int) -> list[dict]:
    """Every analysis of one kind, three ways, side by side; the results checked against each other."""
    import tempfile

    import converter

    rows = []
    tree = FileTree(folder)
    t = time.perf_counter()
    plain = open_plain(store)
    opened = {"plain": time.perf_counter() - t}
    t = time.perf_counter()
    ds = converter.open_mouse(store)
    opened["sensorium"] = time.perf_counter() - t
    rows.append({"dataset": label, "analysis": "0. open the store (coordinates loaded)", "files": None, **opened})
    here = os.getcwd()
    os.chdir(tempfile.mkdtemp())  # analysis 8 writes its NetCDF file here
    try:
        for a in ANALYSES:
            if a.clips != clips:
                continue
            print(f"[cookbook] {label}: {a.name} ...", file=sys.stderr)
            rows.append({"dataset": label, "analysis": a.name, "files": timed(a.files, tree, repeat=repeat),
                         "plain": timed(a.plain, plain, repeat=repeat), "sensorium": timed(a.sensorium, ds, repeat=repeat)})
    finally:
        os.chdir(here)
    return rows


def markdown(rows: list[dict], info: dict, size: str) -> str:
    ms = lambda s: f"{s * 1e3:.0f} ms" if s >= 0.01 else f"{s * 1e3:.1f} ms"  # noqa: E731
    lines = [f"The cookbook's analyses, {size} size. Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; "
             f"Python {info['python']}, xarray {info['xarray']}, zarr {info['zarr']}, flox {info.get('flox', '-')}, "
             f"sensorium-zarr {info['converter']}. Warm page cache, best of the repeats, results computed. Targets: plain "
             f"xarray >= {PLAIN_TARGET:g}x the NumPy loop, open_mouse >= {SENSORIUM_TARGET:g}x.", "",
             "| data | analysis | (a) NumPy loop over the files | plain `xr.open_zarr` | (a)/plain | `open_mouse` + `ds.sensorium` | (a)/open_mouse |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["files"]
        if a is None:
            lines.append(f"| {r['dataset']} | {r['analysis']} | - | {ms(r['plain'])} | - | {ms(r['sensorium'])} | - |")
            continue
        p, c = a / r["plain"], a / r["sensorium"]
        lines.append(f"| {r['dataset']} | {r['analysis']} | {ms(a)} | {ms(r['plain'])} | {p:.2f}x{'' if p >= PLAIN_TARGET else ' (missed)'} "
                     f"| {ms(r['sensorium'])} | {c:.2f}x{'' if c >= SENSORIUM_TARGET else ' (missed)'} |")
    return "\n".join(lines) + "\n"


def run(size: str = "full", data: Path | None = None, out: Path | None = None) -> dict:
    import json

    import converter

    from . import run as R
    from . import video

    data, out = data or R.HERE / "data", out or R.HERE / "results"
    cfg = SIZES[size]
    t, n = cfg["trials"], cfg["neurons"]
    work = data / "work" / "cookbook"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    folder = R.dataset(data, t, n, "float32")
    clip_folder = video.dataset(data, *cfg["clips"])
    for label, src, clips in ((f"2022, {t} x {n}", folder, False), ("2023, {} clips x {} x {} frames".format(*cfg["clips"]), clip_folder, True)):
        store = work / f"{src.name}.zarr"
        if not (store / "zarr.json").exists():
            converter.convert(src, store, overwrite=True, progress=False)
        rows += _measure(label, src, store, clips, cfg["repeat"])
    import flox

    info = {**R.machine(), "flox": flox.__version__}
    result = {"size": size, "machine": info, "rows": rows}
    (out / f"cookbook-{size}.json").write_text(json.dumps(result, indent=1, default=float))
    (out / f"cookbook-{size}.md").write_text(markdown(rows, info, size))
    return result


def main(argv: list[str] | None = None) -> int:
    from . import run as R

    args = R.parser(__doc__, SIZES).parse_args(argv)
    run(args.size, args.data, args.out)
    md = (args.out / f"cookbook-{args.size}.md").read_text()
    if args.update_readme:
        R.replace_between(R.HERE.parent / "docs" / "how-to/analyse.md", "cookbook-results", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
