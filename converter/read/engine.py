"""Which reader serves an array: `converter.zarrlite` where it handles the layout, zarr-python
otherwise, behind one interface (``shape``, ``dtype``, ``chunks``, ``chunk_cost``, ``read``).

`open_reader` picks; `cost` weighs two layouts of the same values for a selection.  Both
readers give identical arrays (tests/test_engine.py checks it).  Why our own reader, with
today's numbers: docs/zarrlite.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from .. import contract
from ..storage import filesystem, local_path, open_array
from ..zarrlite import CHUNK_COST, ChunkReader, RemoteRows, read_coordinates as _read_coordinates
from ..zarrlite.reader import into

Selection = tuple  # one slice or 1-d integer array per axis (orthogonal indexing)

# A request to object storage, in decoded elements: one round trip, about what fetching and
# decoding a 2 MiB tile costs (measured against moto's server in benchmarks/remote.py).
_REQUEST_COST = 1 << 19


class ZarrReader:
    """The same interface over zarr-python, for stores at URLs and layouts `ChunkReader` skips."""

    def __init__(self, array, remote: bool = False) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.chunks = tuple(array.chunks)
        self.chunk_cost = _REQUEST_COST if remote else CHUNK_COST

    def read(self, selection: Selection = (), out: np.ndarray | None = None) -> np.ndarray:
        got = self._read(tuple(selection) + (slice(None),) * (len(self.shape) - len(selection)))
        if out is None:
            return got
        into(out, got.shape, got.dtype)[...] = got
        return out

    def _read(self, selection: Selection) -> np.ndarray:
        if all(isinstance(s, slice) for s in selection):
            return np.asarray(self.array[selection])
        # zarr wants sorted unique indices per axis; gather back the order asked for
        keys, inverse = [], []
        for s in selection:
            if isinstance(s, slice):
                keys.append(s)
                inverse.append(slice(None))
            else:
                u, inv = np.unique(np.asarray(s, dtype=np.int64), return_inverse=True)
                keys.append(u)
                inverse.append(inv)
        got = np.asarray(self.array.get_orthogonal_selection(tuple(keys)))
        for k, inv in enumerate(inverse):
            if not isinstance(inv, slice):
                got = np.take(got, inv, axis=k)
        return got


def open_reader(store: str | os.PathLike, name: str, storage_options: dict | None = None,
                meta: dict | None = None, array=None) -> ChunkReader | RemoteRows | ZarrReader:
    """The fastest reader of array ``name`` of ``store`` that handles its layout (``meta``: its
    ``zarr.json``, which a store at a URL needs for `RemoteRows`; ``array``: the zarr-python
    array, when the caller has it already)."""
    local = local_path(store)
    if local is not None and meta is None:
        try:
            meta = json.loads((local / name / "zarr.json").read_text())
        except (OSError, ValueError):
            meta = {}
    # the per-trial data are written whole: a chunk missing there is damage, not the fill value
    whole = contract.written_whole((meta or {}).get("attributes") or {})
    if local is not None:
        reader = ChunkReader.from_path(local / name, meta, missing_is_damage=whole)
        if reader is not None:
            return reader

    def zarr_reader() -> ZarrReader:
        return ZarrReader(array if array is not None else open_array(store, name, storage_options), remote=local is None)

    if local is None and meta is not None:
        fs, _ = filesystem(store, storage_options)
        rows = RemoteRows.from_meta(fs, f"{os.fspath(store).rstrip('/')}/{name}", meta, zarr_reader, missing_is_damage=whole)
        if rows is not None:
            rows.chunk_cost = _REQUEST_COST
            return rows
    return zarr_reader()


def cost(reader: ChunkReader | ZarrReader, selection: Sequence) -> int:
    """Relative cost of serving ``selection``: elements decoded, plus the reader's fixed cost per
    chunk (``chunk_cost``: a local read, or a request to object storage), or per request where
    the reader merges chunks into fewer requests."""
    elements, chunks = 1, 1
    for sel, n, c in zip(tuple(selection) + (slice(None),) * (len(reader.shape) - len(selection)), reader.shape, reader.chunks):
        if isinstance(sel, slice):
            start, stop, _ = sel.indices(n)
            touched = (stop - 1) // c - start // c + 1 if stop > start else 0
        else:
            touched = len(np.unique(np.asarray(sel, dtype=np.int64) // c))
        elements *= touched * c
        chunks *= touched
    requests = getattr(reader, "requests", None)  # RemoteRows merges nearby rows into one request
    if requests is not None:
        chunks = min(chunks, requests(selection))
    return elements + reader.chunk_cost * chunks


def read_coordinates(store: str | os.PathLike, names: Sequence[str], metadata: dict,
                     storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """Whole small arrays of ``store`` (its coordinates) in one round of reads; those in layouts
    `converter.zarrlite` does not handle are left out (read them through zarr-python)."""
    fs, root = filesystem(store, storage_options)
    return _read_coordinates(fs, root, names, metadata)
