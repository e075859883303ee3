"""Whole rows of a sharded array at a URL, read as `ChunkReader` reads local files but with range
requests: merged where rows lie close together, all sent at once."""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np

from .codecs import MISSING, checked
from .pool import in_runs
from .reader import ChunkReader, Selection, axis_indices, into, whole_rows

MAX_GAP, MAX_BLOCK = 1 << 20, 16 << 20


class RemoteRows(ChunkReader):
    """Whole rows of a sharded array at a URL, one trial per inner chunk: the bytes of every row
    asked for come in one concurrent round of range requests (fsspec ``cat_ranges``), nearby rows
    merged into one range, then are checked and decoded as `ChunkReader` does with local files.
    Any other selection goes to the reader ``fallback()`` makes (zarr-python), made on first need.

    Make it with `RemoteRows.from_meta`; like every fsspec filesystem, it is not fork-safe, so a
    process makes its own.
    """

    def __init__(self, fs, url: str, local: ChunkReader, fallback: Callable[[], object]) -> None:
        self.__dict__.update(local.__dict__)
        self.fs, self.url, self._fallback, self._other = fs, url.rstrip("/"), fallback, None

    @classmethod
    def from_meta(cls, fs, url: str, meta: dict, fallback: Callable[[], object],
                  missing_is_damage: bool = False) -> RemoteRows | None:
        """A reader for the array at ``url`` (``meta``: its ``zarr.json``), or None unless it holds
        one whole row per inner chunk of a shard, in a layout `ChunkReader` handles."""
        local = ChunkReader.from_path(url, meta, missing_is_damage)
        if local is None or not local._whole_rows or local._compressor is None:
            return None
        return cls(fs, url, local, fallback)

    def _key(self, idx: tuple[int, ...]) -> str:
        return f"{self.url}/{self._sep.join(['c', *map(str, idx)])}"

    def _tail(self, key: str) -> tuple[bytes, int] | None:
        try:
            size = self.fs.size(key)
        except FileNotFoundError:
            return None
        return self.fs.cat_file(key, start=max(0, size - self._index_bytes), end=size), size

    def requests(self, selection: Selection) -> int:
        """About how many range requests reading ``selection`` takes (at most one per row): rows
        of a shard less than `MAX_GAP` apart share one, up to `MAX_BLOCK` (rows taken at their
        decoded size, which their stored size does not exceed)."""
        rows = whole_rows(selection, self.shape)
        if rows is None:
            return 1 << 62  # not whole rows: not through us
        rows = np.unique(axis_indices(rows, self.shape[0]))
        if not len(rows):
            return 0
        row_bytes = max(1, int(np.prod(self.shape[1:])) * self.dtype.itemsize)
        apart = (np.diff(rows) - 1) * row_bytes > MAX_GAP
        new_shard = np.diff(rows // self._per_shard[0]) != 0
        starts = np.concatenate([[0], np.flatnonzero(apart | new_shard) + 1])  # of the runs that merge
        ends = np.append(starts[1:] - 1, len(rows) - 1)
        spans = rows[ends] - rows[starts] + 1
        return int(np.sum(-(-spans * row_bytes // MAX_BLOCK)))

    def _fetch(self, keys: list[str], offsets: np.ndarray, lengths: np.ndarray) -> list[memoryview]:
        """The bytes of each range, fetched as few larger ranges in one concurrent round: ranges
        of a shard less than `MAX_GAP` apart merge, up to `MAX_BLOCK` each (zarr-python's
        defaults for coalescing shard reads)."""
        from fsspec.utils import merge_offset_ranges

        ends = offsets + lengths
        paths, starts, stops = merge_offset_ranges(keys, offsets.tolist(), ends.tolist(), max_gap=MAX_GAP, max_block=MAX_BLOCK)
        blocks = self.fs.cat_ranges(paths, starts, stops, on_error="raise") if paths else []
        blocks_of: dict[str, tuple[list[int], list[int]]] = {}  # per file, its blocks and their starts, in order
        for j, key in enumerate(paths):
            js, at = blocks_of.setdefault(key, ([], []))
            js.append(j)
            at.append(starts[j])
        out = []
        for key, start, end in zip(keys, offsets.tolist(), ends.tolist()):
            js, at = blocks_of[key]
            j = js[bisect.bisect_right(at, start) - 1]  # the block that starts last at or before it
            out.append(memoryview(blocks[j])[start - starts[j] : end - starts[j]])
        return out

    def read(self, selection: Selection = (), out: np.ndarray | None = None) -> np.ndarray:
        rows = whole_rows(selection, self.shape)
        if rows is not None:
            return self._read_rows(rows, out)
        if self._other is None:
            self._other = self._fallback()
        return self._other.read(selection, out)

    def _read_rows(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed): every distinct row's bytes in one round of
        concurrent range requests, then one decode per row."""
        rows = axis_indices(rows, self.shape[0])
        out = into(out, (len(rows), *self.shape[1:]), self.dtype)
        rest = (0,) * (len(self.shape) - 1)
        unique, first = np.unique(rows, return_inverse=True)
        entries, shard_of = self._row_entries(unique)
        present = entries[:, 0] != MISSING
        for k in np.flatnonzero(~present).tolist():
            self._missing(f"{self._key((int(shard_of[k]), *rest))}: inner chunk of row {int(unique[k])}")
        got = np.flatnonzero(present)
        raws = self._fetch([self._key((s, *rest)) for s in shard_of[got].tolist()], entries[got, 0].astype(np.int64),
                           entries[got, 1].astype(np.int64))
        values = np.empty((len(unique), *self.shape[1:]), dtype=self.dtype)
        values[~present] = self.fill_value

        def fill(js) -> None:
            for j in js:
                k = int(got[j])
                raw = checked(raws[j], lambda: f"{self.url}: inner chunk {(int(unique[k]), *rest)}") if self._crc else raws[j]
                self._compressor(raw, values[k : k + 1])

        in_runs(fill, range(len(got)), values.nbytes)
        np.take(values, first, axis=0, out=out)
        return out
