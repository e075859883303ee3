"""One block of trials written: read from the source, encoded, written as whole chunk files.

What a worker of a conversion runs, in this process or another (`converter.write.processes`);
it imports neither xarray nor zarr-python, so a worker process starts in 0.15-0.3 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import contract, zarrlite
from ..source import Source, read_trials
from ..source.npy import NpyHeader
from ..storage import child, open_array, write_bytes
from .layout import DataVar, row_copy, write_chunks


@dataclass(frozen=True)
class Part:
    """What one task of a conversion writes: one data variable's files for one block of trials.

    A block's variables are separate tasks, so that more workers than blocks have work, and a
    block's record is saved once all of them are written (`BlockResult.merged`)."""

    block: range
    key: str

    def __str__(self) -> str:
        return f"data/{self.key} of trials {self.block.start}-{self.block.stop - 1}"


@dataclass
class BlockResult:
    """What writing one block learned: checksums, headers seen, and the per-trial flags it found
    (``<key>_withheld``, ``n_frames``), written whole at the end."""

    block: range
    crc32: dict[str, np.ndarray] = field(default_factory=dict)
    headers: dict[str, set[bytes]] = field(default_factory=dict)
    flags: dict[str, np.ndarray] = field(default_factory=dict)

    @staticmethod
    def merged(parts: list[BlockResult]) -> BlockResult:
        """The result of a whole block, from those of its parts (one data variable each)."""
        out = BlockResult(parts[0].block)
        for r in parts:
            out.crc32.update(r.crc32)
            out.headers.update(r.headers)
            out.flags.update(r.flags)
        return out


def write_block(
    source: Source,
    path: Path,
    data_vars: dict[str, DataVar],
    expect: dict[str, NpyHeader],
    block: range,
    progress=None,
    storage_options: dict | None = None,
    files: list[int] | None = None,
    alloc=np.empty,
) -> BlockResult:
    """Read one block of trials of every data folder and write it into its chunks.

    ``block`` is a run of stored positions; ``files`` the file number stored at each
    (default: the positions themselves); ``alloc`` gives the arrays they are read into (`read_trials`).

    Opens only the arrays it writes (not the root group), so it works on a store whose
    root metadata is not written yet.
    """
    result = BlockResult(block)
    for key, v in data_vars.items():
        tb = read_trials(source, key, block if files is None else files, expect[key], progress, alloc)
        for target in (v, row_copy(v)):
            if target is not None:
                _write_rows(path, target, block, tb.values, storage_options)
        withheld = _withheld(tb.values, contract.FRAME in v.dims)
        result.flags[v.withheld_name] = withheld
        if key == contract.VIDEOS:
            result.flags[contract.N_FRAMES] = np.array([contract.first_nan_frame(clip) for clip in tb.values], dtype=np.int64)
        result.crc32[key] = tb.crc32
        result.headers[key] = tb.headers
        del tb  # the next folder's trials are read only after this one's are released
    return result


def _withheld(values: np.ndarray, padded: bool) -> np.ndarray:
    """Per trial: every value zero (and, in padded clips, every other one NaN)."""
    if not values[0].size:
        return np.zeros(len(values), bool)
    # row by row: a whole-block `any` would allocate a boolean copy of the block
    if padded and values.dtype.kind == "f":
        # fmax and fmin pass over NaN (NaN only where the row is all NaN): no copy of the row
        return np.array([_zero_or_nan(np.fmax.reduce(row, axis=None)) and _zero_or_nan(np.fmin.reduce(row, axis=None)) for row in values])
    if padded and values.dtype.kind == "c":
        return np.array([not np.any(np.where(np.isnan(row), 0, row)) for row in values])
    return np.array([not row.any() for row in values])


def _zero_or_nan(x) -> bool:
    return bool(x == 0 or np.isnan(x))


def _write_rows(path, v: DataVar, block: range, values: np.ndarray, storage_options: dict | None) -> None:
    """Rows ``block`` of array ``v``, encoded here and written as whole files (shards or chunks).

    zarr-python would pay ~0.5 ms per (inner) chunk and keep memory growing block after block;
    the bytes are the same (the tests compare them).
    """
    if block.start % write_chunks(v)[0]:
        open_array(path, v.path, storage_options, "r+")[block.start : block.stop] = values
        return
    if v.shards is None:
        origin = (block.start, *(0,) * (len(v.shape) - 1))
        for idx, data in zarrlite.encode_chunks(values, origin, v.chunks, v.shape, v.codec.cname, v.codec.clevel, v.codec.shuffle):
            write_bytes(child(path, f"{v.path}/c/" + "/".join(map(str, idx))), data, storage_options)
        return
    for s in range(0, len(block), v.shards[0]):
        shard = zarrlite.encode_shard(values[s : s + v.shards[0]], v.chunks, v.shards, v.codec.cname, v.codec.clevel, v.codec.shuffle, joined=False)
        key = "/".join(["c", str((block.start + s) // v.shards[0]), *["0"] * (len(v.shape) - 1)])
        write_bytes(child(path, f"{v.path}/{key}"), shard, storage_options)
