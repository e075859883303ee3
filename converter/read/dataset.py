"""Opening stores for analysis: `open_mouse` and `info`."""

from __future__ import annotations

import os

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from .. import contract
from ..errors import StoreError
from ..storage import child, exists, listing, local_path, location, open_group, zarr_kwargs
from ..write.layout import BLOCK_TRIALS
from .engine import cost, open_reader, read_coordinates
from ..store_info import checked_root, format_info, info  # noqa: F401  (re-exported: their home before store_info.py)
from .statistics import read_statistics  # noqa: F401  (its home before 0.7)

class StoreArray(BackendArray):
    """A data variable read through `converter.engine`.

    Where the store keeps two layouts of a variable (tiles, and the trial-major copy
    under ``by_trial/``), each selection is served by the one that decodes the least.
    """

    def __init__(self, readers: list) -> None:
        self.readers = readers
        self.shape = readers[0].shape
        self.dtype = np.dtype(readers[0].dtype).newbyteorder("=")

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        if isinstance(key, (indexing.BasicIndexer, indexing.OuterIndexer)):
            return self._read(key.tuple)  # the engine takes any order and repeats: no reorder copy
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        drop = tuple(k for k, sel in enumerate(key) if isinstance(sel, (int, np.integer)))
        sel = tuple(np.array([sel]) if k in drop else sel for k, sel in enumerate(key))
        reader = min(self.readers, key=lambda r: cost(r, sel))
        out = reader.read(sel)
        return out.reshape([n for k, n in enumerate(out.shape) if k not in drop]) if drop else out


def _store_array(path, name: str, meta: dict, storage_options: dict | None, group=None) -> StoreArray:
    names = [name] + [c for c in (contract.row_copy_path(name),) if c in meta]
    return StoreArray([open_reader(path, n, storage_options, meta.get(n), None if group is None else group[n]) for n in names])


def _coordinates(root_attrs: dict, arrays: dict[str, dict]) -> list[str]:
    """The arrays xarray opens as coordinates: dimension names, and the names listed in a
    ``coordinates`` attribute (of an array, or of the root)."""
    dims = {d for m in arrays.values() for d in m.get("dimension_names") or ()}
    listed = set(str(root_attrs.get("coordinates", "")).split())
    for m in arrays.values():
        listed |= set(str(m.get("attributes", {}).get("coordinates", "")).split())
    return [name for name in arrays if name in dims or name in listed]


def _attributes(attrs: dict) -> dict:
    """Attributes as xarray shows them: without xarray's own ``coordinates`` bookkeeping."""
    return {k: v for k, v in attrs.items() if k != "coordinates"}


def open_mouse(
    path: str | os.PathLike,
    *,
    dask: bool = False,
    trial_chunk: int = BLOCK_TRIALS,
    load: bool = False,
    storage_options: dict | None = None,
) -> xr.Dataset:
    """Open one store as a lazy `xarray.Dataset`; coordinates are loaded into memory.

    Parameters
    ----------
    path : str or os.PathLike
        The store written by `convert`: a local path or a URL such as ``s3://bucket/m.zarr``.
    dask : bool
        Back the data variables with dask, in chunks of ``trial_chunk`` trials.  By default
        they are lazily indexed: a selection (``isel``, ``sel``, ``tier``, ``neurons``) is
        read when its values are needed, straight from the chunks it touches, through
        `converter.engine`.
    trial_chunk : int
        Trials per dask chunk; rounded up to a multiple of the stored chunks and shards
        (1024 trials), so that every dask chunk reads whole stored chunks.
    load : bool
        Read everything into memory now.
    storage_options : dict, optional
        For a URL, passed to fsspec (e.g. ``{"endpoint_url": ...}``).
    """
    root = checked_root(path, storage_options)
    meta = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    arrays = {name: m for name, m in meta.items() if "/" not in name and m.get("node_type") == "array"}
    coord_names = _coordinates(root.get("attributes", {}), arrays)
    values = read_coordinates(path, coord_names, meta, storage_options)  # all at once
    if len(values) < len(coord_names):  # a layout the quick reader leaves to zarr-python
        plain = xr.open_zarr(path, consolidated=True, chunks=None, **zarr_kwargs(path, storage_options))
        values.update({name: plain[name].values for name in coord_names if name not in values})
    group = None if local_path(path) is not None else open_group(path, storage_options)  # one request, not one per array
    variables = {}
    for name, m in arrays.items():
        data = values[name] if name in coord_names else indexing.LazilyIndexedArray(_store_array(path, name, meta, storage_options, group))
        variables[name] = xr.Variable(tuple(m.get("dimension_names") or ()), data, _attributes(m.get("attributes", {})))
    ds = xr.Dataset({n: v for n, v in variables.items() if n not in coord_names}, coords={n: variables[n] for n in coord_names},
                    attrs=_attributes(root.get("attributes", {})))
    if load:
        ds = ds.load()
    elif dask:
        step = -(-max(1, trial_chunk) // BLOCK_TRIALS) * BLOCK_TRIALS
        ds = ds.assign({name: var.chunk({d: step if d == "trial" else -1 for d in var.dims}) for name, var in ds.data_vars.items()})
    ds.encoding["source"] = str(path)  # lets ds.sensorium find the statistics
    ds.encoding["storage_options"] = storage_options
    return ds


def _store_paths(paths_or_folder, storage_options: dict | None = None) -> list:
    """The stores of a list, or those directly inside a folder (a path or a URL)."""
    if not isinstance(paths_or_folder, (str, os.PathLike)):
        return [location(p) for p in paths_or_folder]
    folder = location(paths_or_folder)
    if exists(child(folder, "zarr.json"), storage_options):
        return [folder]
    try:
        entries = listing(folder, storage_options)
    except FileNotFoundError:
        entries = []
    found = [entry for entry, is_folder in entries if is_folder and exists(child(entry, "zarr.json"), storage_options)]
    if not found:
        raise StoreError(f"{folder}: no stores in this folder")
    return found


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
