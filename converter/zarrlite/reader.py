"""Reading the layouts `converter.zarrlite` handles: orthogonal selections and whole small arrays.

`ChunkReader` reads exactly the chunks an orthogonal selection touches from a local array
(``os.pread`` of inner chunks through the shard index), checks each chunk's and each shard
index's CRC-32C, and decodes on a few threads straight into the result.  `read_coordinates`
fetches every chunk of many small arrays in one round (files, or concurrent requests at a URL).
Both return None or leave out what they do not handle; the caller goes to zarr-python for it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numcodecs import Zstd, blosc

from .codecs import MISSING, checked, index_bytes, shard_index
from .pool import in_runs

Selection = tuple  # one slice or 1-d integer array per axis (orthogonal indexing)

# Fixed cost of reading one chunk, in decoded elements (measured on this package's layouts); a
# caller choosing between two layouts of the same values weighs chunks by it.
CHUNK_COST = 16384


@contextlib.contextmanager
def _open_files():
    """Shard files opened during one read (by shard index), closed at its end."""
    fds: dict = {}
    try:
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def whole_rows(selection: Selection, shape: tuple[int, ...]):
    """The rows ``selection`` takes (a range or an integer array) when it takes them whole, else None."""
    selection = tuple(selection) + (slice(None),) * (len(shape) - len(selection))
    if not all(isinstance(s, slice) and s.indices(n) == (0, n, 1) for s, n in zip(selection[1:], shape[1:])):
        return None
    sel = selection[0]
    return np.arange(*sel.indices(shape[0])) if isinstance(sel, slice) else sel


def into(out: np.ndarray | None, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """Where a read of ``shape`` and ``dtype`` goes: ``out``, checked, or a new array."""
    if out is None:
        return np.empty(tuple(shape), dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out must be a writeable, C-contiguous {np.dtype(dtype)} array of shape {tuple(shape)}, "
                         f"not {'a read-only ' if not out.flags.writeable else ''}{out.dtype} array of shape {out.shape}")
    return out


def axis_indices(sel, n: int) -> np.ndarray:
    """A 1-d integer selection of an axis of length ``n``, negative indices resolved and checked."""
    idx = np.asarray(sel, dtype=np.int64).reshape(-1)
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"index out of bounds for axis of length {n}")
    return idx


def _decoder(codecs: list[dict]):
    """``(dtype byte order, compressor or None, CRC-32C checked)`` for ``[bytes, blosc|zstd?, crc32c?]``;
    None if unsupported."""
    if not codecs or codecs[0].get("name") != "bytes":
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    crc = codecs[-1].get("name") == "crc32c" and len(codecs) > 1
    rest = codecs[1:-1] if crc else codecs[1:]
    found = _compressor(rest)
    return None if found is None else (endian, found[0], crc)


def _compressor(rest: list[dict]):
    """``(decompress or None,)`` for ``[]``, ``[blosc]`` or ``[zstd]``; None for anything else."""
    if not rest:
        return (None,)
    if len(rest) == 1 and rest[0].get("name") == "blosc":
        return (blosc.decompress,)  # a Blosc frame describes its own settings
    if len(rest) == 1 and rest[0].get("name") == "zstd":  # xarray's default for the coordinates
        return (_ZSTD.decode,)
    return None


_ZSTD = Zstd()


class ChunkReader:
    """Orthogonal reads of one local Zarr v3 array written with the codecs this package uses.

    Use `ChunkReader.from_path`, which returns None for layouts it does not handle.
    ``missing_is_damage``: a chunk never written is an error (arrays written whole), not the
    fill value.
    """

    chunk_cost = CHUNK_COST

    def __init__(self, path: Path, meta: dict, decoder, inner: tuple[int, ...] | None, index_crc: bool = False,
                 missing_is_damage: bool = False) -> None:
        self.path = Path(path)
        self.shape = tuple(meta["shape"])
        endian, self._compressor, self._crc = decoder
        self._index_crc = index_crc
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
        self.outer = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunks = inner or self.outer  # the unit of decoding
        self.sharded = inner is not None
        self.fill_value = np.array(meta.get("fill_value") or 0).astype(self.dtype.newbyteorder("="))
        self._whole = missing_is_damage
        self._sep = (meta.get("chunk_key_encoding", {}).get("configuration") or {}).get("separator", "/")
        self._per_shard = tuple(o // c for o, c in zip(self.outer, self.chunks))
        self._indexes: dict[tuple[int, ...], np.ndarray | None] = {}
        self._index_bytes = index_bytes(int(np.prod(self._per_shard)), index_crc)  # at a shard's end

    @classmethod
    def from_path(cls, path: str | os.PathLike, meta: dict | None = None, missing_is_damage: bool = False) -> ChunkReader | None:
        """A reader for the array at ``path`` (``meta``: its ``zarr.json``, when the caller has
        it), or None when its layout is not one handled here."""
        path = Path(path)
        if meta is None:
            try:
                meta = json.loads((path / "zarr.json").read_text())
            except (OSError, ValueError):
                return None
        try:
            if meta.get("node_type") != "array" or meta["chunk_grid"]["name"] != "regular":
                return None
            if meta.get("chunk_key_encoding", {}).get("name", "default") != "default":
                return None
            if meta["data_type"] not in _NUMERIC:
                return None
            codecs = meta["codecs"]
            if len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
                cfg = codecs[0]["configuration"]
                index = [c["name"] for c in cfg.get("index_codecs", [])]
                if cfg.get("index_location", "end") != "end" or index not in (["bytes"], ["bytes", "crc32c"]):
                    return None
                decoder = _decoder(cfg["codecs"])
                inner = tuple(cfg["chunk_shape"])
                outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
                if decoder is None or any(o % i for o, i in zip(outer, inner)):
                    return None
                return cls(path, meta, decoder, inner, index_crc="crc32c" in index, missing_is_damage=missing_is_damage)
            decoder = _decoder(codecs)
            return None if decoder is None else cls(path, meta, decoder, None, missing_is_damage=missing_is_damage)
        except (KeyError, TypeError, ValueError):
            return None

    # -- bytes of one chunk ------------------------------------------------------------
    def _key(self, idx: tuple[int, ...]) -> Path:
        return self.path / self._sep.join(["c", *map(str, idx)])

    def _tail(self, key) -> tuple[bytes, int] | None:
        """The last `index_bytes` of shard file ``key`` and its size (None: never written)."""
        try:
            with open(key, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - self._index_bytes))
                return f.read(self._index_bytes), size
        except FileNotFoundError:
            return None

    def _shard_index(self, shard: tuple[int, ...]) -> np.ndarray | None:
        """The index of a shard (None: never written), its CRC-32C checked: swapped or damaged
        entries would serve one trial's bytes as another's."""
        if shard not in self._indexes:
            key = self._key(shard)
            found = self._tail(key)
            if found is None:
                self._indexes[shard] = None
                return None
            entries = int(np.prod(self._per_shard))
            self._indexes[shard] = shard_index(*found, entries, self._index_crc, str(key)).reshape(*self._per_shard, 2)
        return self._indexes[shard]

    def _missing(self, where) -> None:
        """A chunk never written: the fill value, except in an array written whole (damage)."""
        if self._whole:
            raise ValueError(f"{where}: damaged (missing: the store's per-trial data are written whole)")
        return None

    def _payload(self, raw: bytes, idx: tuple[int, ...]) -> bytes | memoryview:
        """The encoded bytes of a chunk without their CRC-32C, which must match."""
        if not self._crc:
            return raw
        return checked(raw, lambda: f"{self._key(idx)}" if not self.sharded else f"{self.path}: inner chunk {idx}")

    def _raw(self, idx: tuple[int, ...], fds: dict) -> bytes | None:
        """Encoded bytes of the decoding chunk ``idx``, their CRC-32C checked and cut off (None: never
        written, i.e. fill value).  ``fds`` caches open shard files for the duration of one read.
        """
        if not self.sharded:
            try:
                return self._payload(self._key(idx).read_bytes(), idx)
            except FileNotFoundError:
                return self._missing(self._key(idx))
        shard = tuple(i // n for i, n in zip(idx, self._per_shard))
        index = self._shard_index(shard)
        if index is None:
            return self._missing(self._key(shard))
        offset, nbytes = index[tuple(i % n for i, n in zip(idx, self._per_shard))]
        if offset == MISSING:
            return self._missing(f"{self._key(shard)}: inner chunk {idx}")
        fd = fds.get(shard)
        if fd is None:
            fd = fds[shard] = os.open(self._key(shard), os.O_RDONLY)
        return self._payload(os.pread(fd, int(nbytes), int(offset)), idx)

    def _chunk(self, idx: tuple[int, ...], fds: dict, scratch: np.ndarray | None = None) -> np.ndarray:
        """One decoded chunk; into ``scratch`` (reused across chunks, no page faults) when given."""
        raw = self._raw(idx, fds)
        if raw is None:
            return np.full(self.chunks, self.fill_value)
        if self._compressor is not None:
            if scratch is not None and self.dtype.isnative:
                self._compressor(raw, scratch)
                return scratch
            raw = self._compressor(raw)
        a = np.frombuffer(raw, self.dtype).reshape(self.chunks)
        return a if self.dtype.isnative else a.astype(self.dtype.newbyteorder("="))

    # -- selections ----------------------------------------------------------------------
    @property
    def _whole_rows(self) -> bool:
        """One trial per inner chunk of a shard, whole: a row decodes straight into the result."""
        return self.sharded and self.chunks[0] == 1 and self.chunks[1:] == self.shape[1:] and self.dtype.isnative

    def _row_entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(offset, length)`` of each row's inner chunk in its shard, and each row's shard."""
        per = self._per_shard[0]
        rest = (0,) * (len(self.shape) - 1)
        shard_of = rows // per
        entries = np.empty((len(rows), 2), dtype=np.uint64)
        for shard in np.unique(shard_of).tolist():  # a row is inner chunk (row, 0, ...): a shard may be wider than the array
            index = self._shard_index((shard, *rest))
            mask = shard_of == shard
            entries[mask] = np.full((1, 2), MISSING) if index is None else index.reshape(per, -1, 2)[rows[mask] - shard * per, 0]
        return entries, shard_of

    def _read_rows(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed): one ``pread`` and one decode per row."""
        rows = axis_indices(rows, self.shape[0])
        out = into(out, (len(rows), *self.shape[1:]), self.dtype)
        rest = (0,) * (len(self.shape) - 1)
        entries, shard_of = self._row_entries(rows)
        offsets, lengths, shards = entries[:, 0].tolist(), entries[:, 1].tolist(), shard_of.tolist()
        missing, decode, crc = int(MISSING), self._compressor, self._crc

        def fill(ks: np.ndarray) -> None:
            with _open_files() as fds:
                for k in ks.tolist():
                    offset, shard = offsets[k], shards[k]
                    if offset == missing:
                        self._missing(f"{self._key((shard, *rest))}: inner chunk of row {int(rows[k])}")
                        out[k] = self.fill_value
                        continue
                    fd = fds.get(shard)
                    if fd is None:
                        fd = fds[shard] = os.open(self._key((shard, *rest)), os.O_RDONLY)
                    raw = os.pread(fd, lengths[k], offset)
                    if crc:
                        raw = checked(raw, lambda: f"{self.path}: inner chunk {(int(rows[k]), *rest)}")
                    # out[k : k + 1], a view: out[k] of a 1-d array is a scalar (np.bool_ ones are shared singletons)
                    decode(raw, out[k : k + 1])

        in_runs(fill, np.argsort(rows, kind="stable"), out.nbytes)  # a run: rows stored next to each other
        return out

    def read(self, selection: Selection = (), out: np.ndarray | None = None) -> np.ndarray:
        """``array.oindex[selection]``: per axis a slice (step 1) or a 1-d integer array.

        Integer arrays may be in any order and repeat; only the chunks they touch are read.
        ``out``: a C-contiguous array of the result's shape and native dtype to decode into
        (reused by a caller that reads many batches: no new memory to fault in).
        """
        selection = tuple(selection) + (slice(None),) * (len(self.shape) - len(selection))
        rows = whole_rows(selection, self.shape) if self._whole_rows and self._compressor is not None else None
        if rows is not None:
            return self._read_rows(rows, out)
        axes = []  # per axis: [(chunk index, positions in chunk, positions in output)]
        out_shape = []
        for sel, n, c in zip(selection, self.shape, self.chunks):
            if isinstance(sel, slice):
                start, stop, step = sel.indices(n)
                if step != 1:
                    sel = np.arange(start, stop, step)
                else:
                    out_shape.append(max(0, stop - start))
                    groups = []
                    for k in range(start // c, (stop - 1) // c + 1) if stop > start else ():
                        lo, hi = max(start, k * c), min(stop, (k + 1) * c)
                        groups.append((k, slice(lo - k * c, hi - k * c), slice(lo - start, hi - start)))
                    axes.append(groups)
                    continue
            idx = axis_indices(sel, n)
            out_shape.append(idx.size)
            order = np.argsort(idx, kind="stable")
            chunk_of = idx[order] // c
            bounds = np.flatnonzero(np.diff(chunk_of)) + 1
            groups = []
            for part in np.split(order, bounds) if idx.size else ():
                k = int(idx[part[0]] // c)
                groups.append((k, _compact(idx[part] - k * c), _compact(part)))
            axes.append(groups)
        out = into(out, out_shape, self.dtype.newbyteorder("="))
        tasks = list(itertools.product(*axes))

        def fill(group: list) -> None:
            scratch = np.empty(self.chunks, dtype=self.dtype) if len(group) > 1 else None
            with _open_files() as fds:
                for task in group:
                    idx, take, where = (tuple(t[k] for t in task) for k in range(3))
                    dest = _contiguous_target(out, where, take, self.chunks)
                    if dest is not None and self._compressor is not None and self.dtype.isnative:
                        raw = self._raw(idx, fds)
                        if raw is not None:
                            self._compressor(raw, dest)  # decode straight into the result
                            continue
                    _assign(out, where, self._chunk(idx, fds, scratch), take)

        chunk_bytes = int(np.prod(self.chunks)) * self.dtype.itemsize
        in_runs(fill, tasks, len(tasks) * chunk_bytes)  # a run: neighbouring chunks (of one shard file, when sharded)
        return out


def _contiguous_target(out: np.ndarray, where: tuple, take: tuple, chunk: tuple[int, ...]) -> np.ndarray | None:
    """The region of ``out`` a whole chunk lands on, when it is one contiguous block of memory."""
    if not all(isinstance(w, slice) for w in (*where, *take)):
        return None
    if any(t.stop - t.start != c for t, c in zip(take, chunk)):
        return None
    view = out[where]
    return view if view.flags.c_contiguous else None


def _compact(positions: np.ndarray) -> slice | np.ndarray:
    """A run of consecutive positions as a slice (cheap to assign), else the array itself."""
    n = len(positions)
    if n == 1:
        return slice(int(positions[0]), int(positions[0]) + 1)
    if n and positions[-1] - positions[0] + 1 == n and (positions[1:] - positions[:-1] == 1).all():
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _assign(out: np.ndarray, where: tuple, chunk: np.ndarray, take: tuple) -> None:
    """``out[where] = chunk[take]`` with orthogonal (not NumPy-broadcast) integer arrays."""
    if all(isinstance(t, slice) for t in (*where, *take)):
        out[where] = chunk[take]
        return
    fancy = [k for k, t in enumerate(take) if not isinstance(t, slice)]
    block = chunk[tuple(t if isinstance(t, slice) else slice(None) for t in take)]
    for k in fancy:
        block = np.take(block, take[k], axis=k)
    if all(isinstance(w, slice) for w in where):
        out[where] = block
    else:
        out[np.ix_(*[np.arange(out.shape[k])[w] if isinstance(w, slice) else w for k, w in enumerate(where)])] = block


def read_coordinates(fs, root: str, names: Sequence[str], metadata: dict) -> dict[str, np.ndarray]:
    """Whole small arrays (a store's coordinates), as stored, with one round of reads.

    ``fs`` and ``root``: an fsspec filesystem and the store's path on it; ``metadata``: the
    consolidated metadata (path -> array metadata).  Every chunk of every
    array is fetched at once (files on disk; concurrent requests at a URL), then decoded here:
    ``bytes`` or ``vlen-utf8``, then ``zstd`` or ``blosc``, on a regular grid.  Arrays in any
    other layout are left out of the result (the caller reads those through zarr-python).
    """
    plans = {n: p for n in names if (p := _whole_plan(metadata.get(n))) is not None}
    paths = {(n, idx): f"{root.rstrip('/')}/{n}/{p['sep'].join(['c', *map(str, idx)])}"
             for n, p in plans.items() for idx in p["chunks"]}
    raw = fs.cat(list(paths.values()), on_error="omit") if paths else {}
    out = {}
    for n, p in plans.items():
        value = np.full(p["shape"], p["fill"], dtype=p["dtype"])
        for idx in p["chunks"]:
            data = raw.get(paths[n, idx])
            if data is None:
                continue  # never written: the fill value
            chunk = p["decode"](checked(data, paths[n, idx]) if p["crc"] else data).reshape(p["grid"])
            where = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, p["grid"], p["shape"]))
            value[where] = chunk[tuple(slice(0, w.stop - w.start) for w in where)]
        out[n] = value
    return out


def _whole_plan(meta: dict | None) -> dict | None:
    """How to read and decode every chunk of an array, or None for a layout not handled here."""
    try:
        if meta is None or meta.get("node_type") != "array" or meta["chunk_grid"]["name"] != "regular":
            return None
        if meta.get("chunk_key_encoding", {}).get("name", "default") != "default":
            return None
        codecs = meta["codecs"]
        crc = len(codecs) > 1 and codecs[-1]["name"] == "crc32c"
        first = codecs[0]["name"] if codecs else None
        found = _compressor(codecs[1:-1] if crc else codecs[1:])
        if found is None:
            return None
        inflate = found[0] or bytes
        shape, grid = tuple(meta["shape"]), tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        if first == "vlen-utf8" and meta["data_type"] == "string":
            from numcodecs import VLenUTF8

            text = VLenUTF8()
            dtype, fill = np.dtypes.StringDType(), meta.get("fill_value") or ""
            decode = lambda b: text.decode(inflate(b)).astype(dtype)  # noqa: E731
        elif first == "bytes" and meta["data_type"] in _NUMERIC:
            endian = (codecs[0].get("configuration") or {}).get("endian", "little")
            stored = np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
            dtype, fill = stored, _fill_value(meta.get("fill_value"), stored)  # as zarr-python gives it
            decode = lambda b: np.frombuffer(inflate(b), stored)  # noqa: E731
        else:
            return None
        counts = [-(-s // c) for s, c in zip(shape, grid)]
        sep = (meta.get("chunk_key_encoding", {}).get("configuration") or {}).get("separator", "/")
        return {"shape": shape, "grid": grid, "dtype": dtype, "fill": fill, "decode": decode, "sep": sep, "crc": crc,
                "chunks": list(itertools.product(*map(range, counts)))}
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _fill_value(fill, dtype: np.dtype):
    """A Zarr v3 ``fill_value`` as a number: special floats are spelt as text, or as their bits in hex."""
    if fill is None:
        return 0
    if isinstance(fill, str):
        special = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}
        if fill in special:
            return special[fill]
        return np.frombuffer(bytes.fromhex(fill.removeprefix("0x")), dtype.newbyteorder(">"))[0]
    return fill


_NUMERIC = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"}
