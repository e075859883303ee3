"""Decoding ``.npy`` files of a source: the only place their bytes become arrays."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..contract import trial_file
from ..errors import SourceError
from .files import Source, crc32
from .npy import NpyHeader, array_from_header, parse_header, size_problem


def read_array(source: Source, rel: str) -> tuple[np.ndarray, int, bytes]:
    """One whole ``.npy`` file: the array (source byte order kept), CRC-32, header bytes."""
    buf = source.read(rel)
    path = source.where(rel)
    h = parse_header(buf, path)
    return array_from_header(buf, h, path), source.crc32(rel, buf), bytes(buf[: h.offset])


def trial_header(source: Source, key: str) -> NpyHeader:
    """The header of ``data/<key>/0.npy``, which every trial file of the folder must share.

    Only this file is read here (its first bytes): `read_trials` checks each file against it as
    it reads the file, so a conversion reads every file once.  Raises `SourceError` naming the
    file when its header is malformed or its size does not match what the header declares.
    """
    rel = trial_file(key, 0)
    head, size = source.head(rel)
    expect = _header(source, rel, head, size)
    problem = size_problem(expect, size)
    if problem:
        raise SourceError(source.where(rel), problem)
    return expect


def _header(source: Source, rel: str, head: bytes, size: int) -> NpyHeader:
    """Parse a header from a file's first bytes (reading it whole if the header is longer)."""
    try:
        return parse_header(head, source.where(rel))
    except SourceError:
        if len(head) >= size:
            raise
        return parse_header(source.read(rel), source.where(rel))


class Scratch:
    """Buffers kept for the next block of trials, one per role and thread, when ``keep``.

    A fresh array over 32 MB is mapped anew and every page of it zeroed as it is first written:
    a third of the time of verifying a 2023 scan went there. ``scratch(role, shape, dtype)`` gives
    an uninitialised array in memory that the last call for ``role`` on this thread used (grown
    when too small); it stays valid until the next such call. The memory goes with the object, so
    only an executor that holds one copy of a task for a run turns ``keep`` on (`reusing`).
    Without ``keep``, each call gives a new array. A copy made by pickling starts empty.
    """

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self._held = threading.local()

    def __reduce__(self):
        return (Scratch, (self.keep,))

    def __call__(self, role: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        if not self.keep:
            return np.empty(shape, dtype)
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        buf = getattr(self._held, role, None)
        if buf is None or buf.nbytes < n:
            buf = np.empty(max(n, 1), dtype=np.uint8)
            setattr(self._held, role, buf)
        return buf[:n].view(dtype).reshape(shape)


def reusing(task):
    """``task`` with a `Scratch` that keeps its arrays from item to item, if it has a ``scratch``:
    for an executor that holds one copy of a task for a run (our threads and worker processes;
    a dask worker keeps the tasks it has run, so a cluster gets them as they are)."""
    if dataclasses.is_dataclass(task) and any(f.name == "scratch" for f in dataclasses.fields(task)):
        return dataclasses.replace(task, scratch=Scratch(keep=True))
    return task


@dataclass
class TrialBlock:
    """Per-trial files of one data folder for a run of trials, stacked in native order."""

    values: np.ndarray
    crc32: np.ndarray
    headers: set[bytes]
    source_dtype: str  # as in the files, byte order kept


def read_trials(
    source: Source,
    key: str,
    trials: Iterable[int],
    expect: NpyHeader | None,
    progress: Callable[[int], None] | None = None,
    alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray] = np.empty,
) -> TrialBlock:
    """Read ``data/<key>/<i>.npy`` for each trial, checking every one against ``expect``.

    ``expect`` carries the shape and dtype (byte order included) that every trial of
    this folder must have (`trial_header`: trial 0's); ``None`` takes the first trial read
    as the reference.  A file that differs, or is cut short or too long, is a `SourceError`
    naming it. ``alloc(shape, dtype)`` gives the array they are read into (a `Scratch`, say).
    """
    trials = list(trials)
    reference = expect is not None
    crcs = np.empty(len(trials), dtype=np.uint32)
    headers: set[bytes] = set()
    out = None
    direct = expect is not None and _direct(source, expect)
    if direct:
        out = alloc((len(trials), *expect.shape), expect.dtype)
        head = bytearray(expect.offset)
    for j, i in enumerate(trials):
        rel = trial_file(key, i)
        if direct:
            # the file's header, then its data straight into the block's row: one system call, no copy
            row = memoryview(out[j].reshape(-1)).cast("B")
            got, size = source.read_into(rel, head, row)
            if size == len(head) + len(row) and got == size and parse_header(head, source.where(rel)) == expect:
                crcs[j] = crc32(row, crc32(head))
                headers.add(bytes(head))
                if progress is not None and j % 64 == 63:
                    progress(64)
                continue
        buf = source.read(rel)
        path = source.where(rel)
        h = parse_header(buf, path)
        if expect is None:
            expect = h
        if h.shape != expect.shape or h.dtype != expect.dtype:
            other = f"{trial_file(key, 0)}'s" if reference else "other trials'"
            raise SourceError(path, f"shape {h.shape} dtype {h.dtype.str} differs from {other} shape {expect.shape} dtype {expect.dtype.str}")
        if out is None:
            out = alloc((len(trials), *expect.shape), expect.dtype.newbyteorder("="))
        out[j] = array_from_header(buf, h, path)
        crcs[j] = source.crc32(rel, buf)
        headers.add(bytes(buf[: h.offset]))
        if progress is not None and j % 64 == 63:
            progress(64)
    if progress is not None and len(trials) % 64:
        progress(len(trials) % 64)
    assert out is not None
    return TrialBlock(out, crcs, headers, expect.dtype.str)


def _direct(source: Source, expect: NpyHeader) -> bool:
    """Whether trials can be read straight into their rows: C order, native byte order, a source
    that reads into buffers (a folder on disk)."""
    return hasattr(source, "read_into") and not expect.fortran_order and expect.dtype.isnative and expect.nbytes > 0

