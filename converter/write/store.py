"""Where the store is written: the skeleton and the final metadata (one block of trials: `.block`).

The skeleton (every array's metadata, all coordinates and statistics) is written by zarr-python
exactly as ``xarray.Dataset.to_zarr`` writes it (a test compares every object, byte for byte),
without importing xarray, pandas or dask (~0.6 s of a conversion's start). It is written into
memory, and its objects then go to the store at once: one concurrent round of PUTs in object
storage, where writing array by array costs ~8 requests per array, one after another. The per-trial
data arrays are then filled block by block, each chunk or shard encoded by `converter.zarrlite`;
blocks own disjoint chunks, so they may run in any order and in parallel.
"""

from __future__ import annotations

import base64
import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import zarr
    from zarr.codecs import BloscCodec
    from zarr.storage import MemoryStore

_FILE_CHUNK = 1 << 20  # bytes per chunk of files/bytes

from .. import contract, zarrlite
from ..errors import SourceError
from ..source import Source
from ..source.files import crc32
from ..storage import child, filesystem, open_array, read_objects, renames, write_bytes, write_objects
from .block import BlockResult
from .layout import DataVar, row_copy


@dataclass
class MetaArray:
    """One meta or statistics file, read and ready to store."""

    rel: str  # path relative to the dataset folder
    name: str  # coordinate or variable name in the store
    dims: tuple[str, ...]
    values: np.ndarray  # source dtype and byte order
    crc32: int
    header: bytes

    def attrs(self) -> dict:
        return {
            contract.SOURCE: self.rel,
            contract.SOURCE_DTYPE: self.values.dtype.str,
            contract.NPY_HEADER: base64.b64encode(self.header).decode(),
            contract.SOURCE_CRC32: self.crc32,
        }

    def stored_values(self) -> np.ndarray:
        """Text as variable-length strings, numbers in native byte order."""
        v = self.values
        if v.dtype.kind == "U":
            return v.astype(object)
        if v.dtype.kind == "S":
            return contract.text_from_bytes(v)
        return v.astype(v.dtype.newbyteorder("="), order="C")


def small() -> dict:
    """The codecs of every other array (coordinates, statistics, checksums, files): zstd, as xarray
    writes by default, then a CRC-32C of every chunk, so that no reader takes damaged bytes for values.

    zarr-python is imported on first use: a conversion's blocks start on its workers while this
    process imports it (`converter.write.convert`)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": [ZstdCodec(), Crc32cCodec()]}


def blosc(codec) -> BloscCodec:
    from zarr.codecs import BloscCodec

    return BloscCodec(cname=codec.cname, clevel=codec.clevel, shuffle=codec.shuffle)


@dataclass(frozen=True)
class _Placeholder:
    """An array whose metadata the skeleton writes and whose values come later (the blocks, the
    flags): zarr-python creates it as xarray would, without dask."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    encoding: dict
    attrs: dict


def _placeholder(v: DataVar, attrs: dict) -> _Placeholder:
    return _Placeholder(v.dims, v.shape, v.dtype, _encoding(v), attrs)


def _create(group: zarr.Group, name: str, p: _Placeholder, coordinates: str = "") -> None:
    """What ``xarray.Dataset.to_zarr(compute=False)`` writes of a lazy variable: its metadata (a
    float's fill value NaN), its attributes, ``coordinates`` last, and no chunk."""
    array = group.create(name, shape=p.shape, dtype=p.dtype, fill_value=np.nan if np.dtype(p.dtype).kind == "f" else None,
                         dimension_names=p.dims, config={}, **p.encoding)
    array.attrs.put({**p.attrs, **({"coordinates": coordinates} if coordinates else {})})


@dataclass(frozen=True)
class _Values:
    """An array the skeleton writes whole: its dimensions, values and attributes."""

    dims: tuple[str, ...]
    values: np.ndarray
    attrs: dict


def _var(dims: tuple[str, ...], values, attrs: dict) -> _Values:
    return _Values(tuple(dims), np.asarray(values), attrs)


def _write(group: zarr.Group, name: str, v: _Values, chunks: tuple[int, ...] | None = None, coordinates: str = "") -> None:
    """What ``xarray.Dataset.to_zarr`` writes of a numpy variable with ``_FillValue: None`` and
    `small` codecs: text as zarr's variable-length strings, a float's fill value NaN, dimension
    names unless it has none, ``coordinates`` last; one chunk unless ``chunks`` says otherwise."""
    values = v.values
    text = values.dtype.kind in "OUT"
    array = group.create(name, shape=values.shape, dtype=str if text else values.dtype,
                         chunks=chunks or tuple(max(1, n) for n in values.shape),
                         fill_value=np.nan if values.dtype.kind == "f" else None,
                         dimension_names=v.dims or None, config={}, **small())
    array.attrs.put({**v.attrs, **({"coordinates": coordinates} if coordinates else {})})
    if values.size:
        array[...] = values


def _coordinates(coord_dims: dict[str, tuple[str, ...]], var_dims: dict[str, tuple[str, ...]]) -> tuple[dict[str, str], str]:
    """xarray's ``coordinates`` attributes (CF): each variable lists the non-dimension coordinates
    whose dimensions it has; the group lists those no variable lists."""
    non_dim = {c for c, dims in coord_dims.items() if c not in dims}
    per_var = {k: sorted(c for c in non_dim if set(coord_dims[c]) <= set(dims)) for k, dims in var_dims.items()}
    listed = {c for cs in per_var.values() for c in cs}
    return {k: " ".join(cs) for k, cs in per_var.items()}, " ".join(sorted(non_dim - listed))


def _encoding(v: DataVar) -> dict:
    from zarr.codecs import Crc32cCodec

    enc = {"chunks": v.chunks, "compressors": [blosc(v.codec), Crc32cCodec()]}
    if v.shards is not None:
        enc["shards"] = v.shards
    return enc


def _zarr_objects(fill: Callable[[MemoryStore], object], initial: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """The objects that the zarr-python (or xarray) writes of ``fill(store)`` make or change.

    They are written to memory, to be written out at once (`write_objects`). ``initial``: what
    the store holds before, such as the metadata of the arrays ``fill`` writes into.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    initial = initial or {}
    held = {k: default_buffer_prototype().buffer.from_bytes(v) for k, v in initial.items()}
    fill(MemoryStore(held))
    return {k: data for k, v in held.items() if (data := v.to_bytes()) != initial.get(k)}


def _array_objects(rel: str, fill: Callable[[MemoryStore], object], metadata: bytes | None = None) -> dict[str, bytes]:
    """`_zarr_objects` of ``fill`` on the array at ``rel`` of the store (its ``zarr.json`` is
    ``metadata`` when it exists already), named from the store's root."""
    made = _zarr_objects(fill, None if metadata is None else {"zarr.json": metadata})
    return {f"{rel}/{k}": v for k, v in made.items()}


def create_skeleton(
    path: Path,
    data_vars: dict[str, DataVar],
    trial_coord: np.ndarray,
    neuron_coord: MetaArray | np.ndarray | None,
    meta: list[MetaArray],
    labels: dict[str, tuple[str, ...]],
    statistics: list[MetaArray],
    files: dict[str, int],
    storage_options: dict | None = None,
    n_frames: int | None = None,
) -> None:
    """Write every array's metadata and every small array; data arrays stay empty.

    ``files`` maps each other file of the source to its size (their bytes come with
    `write_files`). ``n_frames`` is the padded clip length of a Sensorium 2023 scan (which adds
    the ``frame`` axis and the ``n_frames`` coordinate). zarr-python writes every array as xarray
    would (`_write`, `_create`), all into memory first; it goes to ``path`` at once (`write_objects`).
    """
    import zarr

    clustered = "tier, i" if n_frames is not None else "tier, image_id, i"
    lazy: dict[str, _Placeholder] = {}  # coordinates filled at the end (flags), besides the data variables
    coords: dict[str, _Values] = {
        contract.TRIAL: _var((contract.TRIAL,), trial_coord, {"derived": f"i of data/<key>/<i>.npy (stored clustered by {clustered})"}),
    }
    if n_frames is not None:
        frame = np.arange(n_frames, dtype=np.int64)
        coords[contract.FRAME] = _var((contract.FRAME,), frame, {"derived": "position on the last axis of every data/<key>/<i>.npy"})
        coords[contract.FRAME_TIME] = _var((contract.FRAME,), frame / contract.FRAME_RATE_HZ, {
            "units": "s", "derived": f"frame / {contract.FRAME_RATE_HZ:g} Hz, the release's frame rate (not in its files)"})
        lazy[contract.N_FRAMES] = _Placeholder((contract.TRIAL,), (len(trial_coord),), "int64", {**small(), "chunks": (len(trial_coord),)}, {
            "derived": "frames before the first frame of data/videos/<i>.npy holding a NaN (the rest is padding)"})
    if isinstance(neuron_coord, MetaArray):
        coords[contract.NEURON] = _var((contract.NEURON,), neuron_coord.stored_values(), neuron_coord.attrs())
    elif neuron_coord is not None:
        coords[contract.NEURON] = _var((contract.NEURON,), neuron_coord, {"derived": "position in the responses arrays (no unit_ids.npy)"})
    for m in meta:
        values = m.stored_values()
        if m.dims[0] == contract.TRIAL:
            values = values[trial_coord]  # rows in stored order: row p is file trial_coord[p]
        coords[m.name] = _var(m.dims, values, m.attrs())
    for dim, names in labels.items():
        coords[dim] = _var((dim,), np.array(names, dtype=object), {"derived": "labels from the data description"})
    variables: dict[str, _Placeholder] = {}
    copies: dict[str, tuple[DataVar, _Placeholder]] = {}
    for key, v in data_vars.items():
        variables[key] = _placeholder(v, {contract.SOURCE: contract.data_source(key), contract.SOURCE_DTYPE: v.source_dtype})
        c = row_copy(v)
        if c is not None:
            copies[key] = (c, _placeholder(c, {
                contract.COPY_OF: key, contract.SOURCE_DTYPE: v.source_dtype,
                "derived": f"the same values as {key}, stored one trial per inner chunk for reads of whole trials"}))
        lazy[v.withheld_name] = _Placeholder((contract.TRIAL,), v.shape[:1], "bool", {**small(), "chunks": v.shape[:1]}, {
            "derived": f"True where every value of data/{key}/<i>.npy is zero{' (or NaN padding)' if contract.FRAME in v.dims else ''} "
                       "(withheld by the source, not measured)"})
    listed, unlisted = _coordinates({**{k: c.dims for k, c in coords.items()}, **{k: p.dims for k, p in lazy.items()}},
                                    {k: p.dims for k, p in variables.items()})
    groups: dict[str, dict[str, MetaArray]] = {}
    for s in statistics:
        group, stat = s.name.rsplit("/", 1)
        groups.setdefault(group, {})[stat] = s

    def fill(store: MemoryStore) -> None:
        root = zarr.open_group(store, mode="a", zarr_format=3)
        if unlisted:
            root.attrs.put({"coordinates": unlisted})
        for name, c in coords.items():  # each one chunk: opening a store reads each with one request
            _write(root, name, c)
        for name, p in {**variables, **lazy}.items():
            _create(root, name, p, listed.get(name, ""))
        for c, p in copies.values():
            group, name = c.path.rsplit("/", 1)
            _create(zarr.open_group(store, path=group, mode="a", zarr_format=3), name, p)
        for name in (contract.CHECKSUMS_GROUP.split("/")[0], contract.CHECKSUMS_GROUP):  # filled by `write_checksums` at the end
            zarr.open_group(store, path=name, mode="a", zarr_format=3)
        for group, stats in groups.items():
            g = zarr.open_group(store, path=group, mode="a", zarr_format=3)
            for stat, s in stats.items():
                _write(g, stat, _var(s.dims, s.stored_values(), s.attrs()))
        values, placeholders = _files_group(files)
        group = zarr.open_group(store, path=contract.FILES_GROUP, mode="a", zarr_format=3)
        of_files, _ = _coordinates({"path": ("file",)}, {k: v.dims for k, v in {**values, **placeholders}.items() if k != "path"})
        for name, v in values.items():
            _write(group, name, v, _file_chunks(v.values.size), of_files.get(name, ""))
        for name, p in placeholders.items():
            _create(group, name, p, of_files[name])

    write_objects(path, _zarr_objects(fill), storage_options)


def _file_chunks(n: int) -> tuple[int]:
    """The chunks of a one-dimensional array of group ``files``: `_FILE_CHUNK` entries at most."""
    return (max(1, min(n, _FILE_CHUNK)),)


def _files_group(files: dict[str, int]) -> tuple[dict[str, _Values], dict[str, _Placeholder]]:
    """Group ``files``: the source's other files, their bytes one after another, cut by offset and
    size; ``bytes`` and ``crc32`` are filled by `write_files`."""
    sizes = np.array(list(files.values()), dtype=np.uint64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64) if len(files) else sizes
    where = "file of the source that is not an array (config.json, change.log, ...)"
    values = {
        "offset": _var(("file",), offsets, {"derived": "where each file starts in files/bytes"}),
        "size": _var(("file",), sizes, {"derived": "bytes of each file"}),
        "path": _var(("file",), np.array(list(files), dtype=np.dtypes.StringDType()),
                     {"derived": f"path of each {where}, relative to the dataset folder"}),
    }
    total = int(sizes.sum())
    lazy = {"bytes": _Placeholder(("byte",), (total,), "uint8", {**small(), "chunks": _file_chunks(total)},
                                  {"derived": "the bytes of every file in files/path, one after another"}),
            "crc32": _Placeholder(("file",), (len(files),), "uint32", {**small(), "chunks": (max(1, len(files)),)}, {"derived": "CRC-32 of each file"})}
    return values, lazy


def write_files(path, source: Source, files: dict[str, int], storage_options: dict | None = None) -> None:
    """Fill group ``files`` (made by `create_skeleton`) with the bytes of the source's other files.

    Each file is read in pieces of one chunk and written chunk by chunk, so memory does not
    depend on the files' sizes.
    """
    data = open_array(path, f"{contract.FILES_GROUP}/bytes", storage_options, mode="r+")
    crcs = np.zeros(len(files), dtype=np.uint32)
    chunk = bytearray()
    written = 0
    for k, (rel, size) in enumerate(files.items()):
        crc, n = 0, 0
        with source.open(rel) as f:
            while piece := _read_piece(source, rel, f, _FILE_CHUNK - len(chunk)):
                crc, n = crc32(piece, crc), n + len(piece)
                chunk += piece
                if len(chunk) == _FILE_CHUNK:
                    data[written : written + _FILE_CHUNK] = np.frombuffer(chunk, dtype=np.uint8)
                    written += _FILE_CHUNK
                    chunk = bytearray()
        if n != size:
            raise SourceError(source.where(rel), f"changed while being read ({n} bytes, {size} expected)")
        crcs[k] = crc
    if chunk:
        data[written : written + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    if files:
        open_array(path, f"{contract.FILES_GROUP}/crc32", storage_options, mode="r+")[...] = crcs


def _read_piece(source: Source, rel: str, f, n: int) -> bytes:
    """Up to ``n`` bytes of an open source file; a damaged zip member is a `SourceError` naming it."""
    try:
        return f.read(n)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise SourceError(source.where(rel), f"damaged zip entry ({e})") from None


def write_flags(path, results: list[BlockResult], storage_options: dict | None = None) -> None:
    """The per-trial flags every block found (``<key>_withheld``, ``n_frames``), each array whole."""
    import zarr

    names = list(results[0].flags) if results else []
    metadata = read_objects(path, [f"{name}/zarr.json" for name in names], storage_options)
    objects = {}
    for name in names:
        values = np.concatenate([r.flags[name] for r in results])

        def fill(store: MemoryStore) -> None:
            zarr.open_array(store, mode="r+")[...] = values

        objects.update(_array_objects(name, fill, metadata[f"{name}/zarr.json"]))
    write_objects(path, objects, storage_options)


def write_checksums(path: Path | str, crcs: dict[str, np.ndarray], headers: dict[str, set[bytes]],
                    storage_options: dict | None = None) -> None:
    """Store each data file's CRC-32 (``checksums/data/<key>``) and its folder's header."""
    import zarr

    one_header = [key for key in crcs if len(headers[key]) == 1]
    metadata = read_objects(path, [f"{key}/zarr.json" for key in one_header], storage_options)
    objects = {}
    for key, crc in crcs.items():
        attrs = {"checksum_of": contract.data_source(key), "derived": "CRC-32 of each source file"}
        if key in one_header:
            attrs[contract.NPY_HEADER] = base64.b64encode(next(iter(headers[key]))).decode()

            def fill(store: MemoryStore) -> None:
                zarr.open_array(store, mode="r+").attrs[contract.NPY_HEADER] = attrs[contract.NPY_HEADER]

            objects.update(_array_objects(key, fill, metadata[f"{key}/zarr.json"]))
        # each array made in a store of its own: no parent group (nor the root) is written
        # again, so a failure here never leaves a root zarr.json behind in object storage
        objects.update(_array_objects(contract.checksums_path(key), lambda s: zarr.create_array(
            s, data=crc, chunks=(min(len(crc), 65536),), **small(), dimension_names=(contract.TRIAL,), attributes=attrs, zarr_format=3)))
    write_objects(path, objects, storage_options)


# Temporary names of a write killed half-way: zarr-python's, and `location.write_bytes`'s.
_TEMPORARY = re.compile(r"(.+\.[0-9a-f]{32}\.partial|\..+\.[0-9]+\.tmp)")


def sweep_temporaries(path) -> None:
    """Delete the temporary files that writers killed half-way left in a local store.

    Only the holder of the conversion's lock calls this, once every block is written, so
    no live writer owns them.
    """
    if not renames(path):
        return  # object stores write each object whole: no temporary names
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            if _TEMPORARY.fullmatch(name):
                os.remove(os.path.join(dirpath, name))


def finalize(path, attrs: dict, storage_options: dict | None = None) -> None:
    """Set the root attributes and write every node's metadata into the root ``zarr.json``
    (`converter.zarrlite.consolidate`): one round of reads, one write."""
    fs, root = filesystem(path, storage_options)
    fs.invalidate_cache(root)
    root = root.rstrip("/")
    found = [f[len(root) + 1 :] for f in fs.find(root) if f.rsplit("/", 1)[-1] == "zarr.json"]
    nodes = {rel.removesuffix("zarr.json").rstrip("/"): json.loads(data) for rel, data in read_objects(path, found, storage_options).items()}
    # in object storage the root is hidden until now (`ObjectStoreState`)
    top = nodes.pop("", None) or {"attributes": {}, "zarr_format": 3, "consolidated_metadata": None, "node_type": "group"}
    top["attributes"] = {**top.get("attributes", {}), **attrs}
    write_bytes(child(path, "zarr.json"), zarrlite.consolidate(top, nodes), storage_options)
