"""Opening stores for analysis: `open_mouse` and `info`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import StoreError
from .layout import BLOCK_TRIALS
from .location import child, filesystem, is_url, open_group, tree_bytes, zarr_kwargs
from .schema import manifest, read_root
from .store import _CONSOLIDATED_WARNING

def _checked_root(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    root = read_root(path, storage_options)
    if root.get("attributes", {}).get("schema") != "sensorium-zarr":
        raise StoreError(f"{path}: a Zarr store, but not one written by sensorium-zarr")
    return root


def open_mouse(
    path: str | os.PathLike,
    *,
    trial_chunk: int = BLOCK_TRIALS,
    load: bool = False,
    dask: bool = True,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Open one store as a lazy `xarray.Dataset`; coordinates are loaded into memory.

    Parameters
    ----------
    path : the store written by `convert`: a local path or a URL such as ``s3://bucket/m.zarr``.
    trial_chunk : trials per dask chunk (a multiple of the stored chunks reads each
        chunk once); the other dimensions are one dask chunk each.
    load : read everything into memory now.
    dask : back the data variables with dask (the default).  ``False`` keeps them
        lazily indexed by xarray itself: a selection is then read straight from the
        chunks it touches, the fastest way to take a few neurons or trials.
    storage_options : for a URL, passed to fsspec (e.g. ``{"endpoint_url": ...}``).
    """
    _checked_root(path, storage_options)
    kw = zarr_kwargs(path, storage_options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
        lazy = xr.open_zarr(path, consolidated=True, chunks=None, **kw)
        coords = {name: lazy[name].variable.load() for name in lazy.coords}
        if dask and not load:
            ds = xr.open_zarr(path, consolidated=True, chunks={"trial": trial_chunk, "neuron": -1},
                              drop_variables=[c for c in coords if c not in lazy.dims], **kw)
        else:
            ds = lazy
    ds = ds.assign_coords(coords)
    if load:
        ds = ds.load()
    ds.encoding["source"] = str(path)  # lets ds.sensorium find the statistics
    ds.encoding["storage_options"] = storage_options
    return ds


def read_statistics(path: str | os.PathLike, source: str = "all", storage_options: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{key: {stat: array}}`` from ``statistics/<key>/<source>/`` of a store, as stored."""
    group = open_group(path, storage_options)
    if "statistics" not in group:
        return {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, per_key in group["statistics"].groups():
        if source in per_key:
            out[key] = {name: arr[...] for name, arr in per_key[source].arrays()}
    return out


def _store_paths(paths_or_folder, storage_options: dict | None = None) -> list:
    if is_url(paths_or_folder):
        fs, root = filesystem(paths_or_folder, storage_options)
        if fs.exists(f"{root}/zarr.json"):
            return [paths_or_folder]
        protocol = paths_or_folder.split("://", 1)[0]
        found = sorted(f"{protocol}://{p.rsplit('/', 1)[0]}" for p in fs.glob(f"{root}/*/zarr.json"))
        if not found:
            raise StoreError(f"{paths_or_folder}: no stores in this folder")
        return found
    if isinstance(paths_or_folder, (str, os.PathLike)):
        folder = Path(paths_or_folder)
        if (folder / "zarr.json").exists():
            return [folder]
        found = sorted(p.parent for p in folder.glob("*/zarr.json"))
        if not found:
            raise StoreError(f"{folder}: no stores in this folder")
        return found
    return [p if is_url(p) else Path(p) for p in paths_or_folder]


def open_mice(paths_or_folder, **kwargs) -> xr.DataTree:
    """Open several stores as one `xarray.DataTree`, one child per mouse named by data key.

    ``paths_or_folder`` is a list of stores or a folder holding them (paths or URLs);
    ``kwargs`` go to `open_mouse`.
    """
    children = {}
    for p in _store_paths(paths_or_folder, kwargs.get("storage_options")):
        ds = open_mouse(p, **kwargs)
        key = ds.attrs["data_key"]
        if key in children:
            raise StoreError(f"{p}: a second store for data key {key!r}")
        children[key] = ds
    return xr.DataTree.from_dict({f"/{k}": ds for k, ds in children.items()})


def info(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """Counts, dimensions and sizes of a store (on disk and decoded in memory)."""
    root = _checked_root(path, storage_options)
    m = manifest(root)
    arrays = {}
    for name, a in m["arrays"].items():
        disk = tree_bytes(child(path, name), storage_options)
        n = int(np.prod(a["shape"], dtype=np.int64))
        memory = None if a["dtype"] == "string" else n * np.dtype(a["dtype"]).itemsize
        arrays[name] = {"dims": a["dims"], "shape": a["shape"], "dtype": a["dtype"], "chunks": a["chunks"],
                        "disk_bytes": disk, "memory_bytes": memory}
    attrs = m["attributes"]
    disk_total = tree_bytes(path, storage_options)
    memory_total = sum(a["memory_bytes"] or 0 for a in arrays.values())
    dims: dict[str, int] = {}
    for a in arrays.values():
        dims.update(zip(a["dims"], a["shape"]))
    return {
        "dataset": attrs["dataset"],
        "data_key": attrs["data_key"],
        "n_trials": attrs["n_trials"],
        "n_neurons": attrs["n_neurons"],
        "tier_counts": attrs["tier_counts"],
        "withheld_trials": attrs["withheld_trials"],
        "dims": dims,
        "arrays": arrays,
        "disk_bytes": disk_total,
        "memory_bytes": memory_total,
        "compression_ratio": memory_total / disk_total if disk_total else None,
    }


def format_info(d: dict) -> str:
    """`info` as a few readable lines and a table of the data variables."""
    mb = 1e6
    lines = [
        f"{d['dataset']}  ({d['data_key']})",
        f"trials {d['n_trials']}, neurons {d['n_neurons']}; tiers: "
        + ", ".join(f"{k} {v}" for k, v in sorted(d["tier_counts"].items())),
        "withheld (all-zero) trials: " + ", ".join(f"{k} {v}" for k, v in d["withheld_trials"].items()),
        "dims: " + ", ".join(f"{k}={v}" for k, v in d["dims"].items()),
        "",
        f"{'array':<28} {'dtype':<8} {'shape':<24} {'chunks':<22} {'memory MB':>10} {'disk MB':>9} {'ratio':>6}",
    ]
    rows = sorted(d["arrays"].items(), key=lambda kv: -(kv[1]["memory_bytes"] or 0))
    for name, a in rows[:12]:
        mem = a["memory_bytes"]
        ratio = f"{mem / a['disk_bytes']:.2f}" if mem and a["disk_bytes"] else "-"
        lines.append(f"{name:<28} {a['dtype']:<8} {str(tuple(a['shape'])):<24} {str(tuple(a['chunks'] or ())):<22} "
                     f"{(mem or 0) / mb:>10.1f} {a['disk_bytes'] / mb:>9.1f} {ratio:>6}")
    if len(rows) > 12:
        lines.append(f"... and {len(rows) - 12} smaller arrays")
    lines.append(f"total: {d['memory_bytes'] / mb:.1f} MB in memory, {d['disk_bytes'] / mb:.1f} MB on disk, "
                 f"compression ratio {d['compression_ratio']:.2f}")
    return "\n".join(lines)
