"""Reading ``.npy`` bytes safely: never unpickles, checks every length.

Parsing the header is the fixed cost of ``np.load``; every trial file of one data
folder carries the same header bytes, so parsed headers are cached by their bytes.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

import numpy as np

from ..errors import SourceError

MAGIC = b"\x93NUMPY"
_LEN_BYTES = {1: 2, 2: 4, 3: 4}


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, and where its data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    offset: int

    @functools.cached_property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @functools.cached_property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def parse_header(buf: bytes | memoryview, path: str) -> NpyHeader:
    """Parse the header at the start of ``buf``; raise `SourceError` naming ``path``."""
    if not len(buf):
        raise SourceError(path, "empty file (0 bytes), not a .npy file")
    if len(buf) < 10 or bytes(buf[:6]) != MAGIC:
        raise SourceError(path, "not a .npy file (wrong magic bytes)")
    major = buf[6]
    if major not in _LEN_BYTES:
        raise SourceError(path, f"unsupported .npy format version {major}.{buf[7]}")
    n = _LEN_BYTES[major]
    hlen = int.from_bytes(bytes(buf[8 : 8 + n]), "little")
    offset = 8 + n + hlen
    if len(buf) < offset:
        raise SourceError(path, "truncated .npy header")
    parsed = _parse_dict(bytes(buf[8 + n : offset]), major, offset)
    if isinstance(parsed, str):
        raise SourceError(path, parsed)
    return parsed


@functools.lru_cache(maxsize=256)
def _parse_dict(text: bytes, major: int, offset: int) -> NpyHeader | str:
    """The header for ``text``, or the problem with it as a sentence."""
    encoding = "utf8" if major >= 3 else "latin1"
    try:
        d = ast.literal_eval(text.decode(encoding))
        descr, fortran, shape = d["descr"], d["fortran_order"], d["shape"]
        dtype = np.lib.format.descr_to_dtype(descr)
    except Exception:
        return "malformed .npy header"
    if not isinstance(fortran, bool) or not isinstance(shape, tuple):
        return "malformed .npy header"
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        return f"malformed .npy header (shape {shape!r})"
    if dtype.hasobject:
        return "holds Python objects (pickled data); refusing to unpickle"
    return NpyHeader(dtype, shape, fortran, offset)


def array_from_bytes(buf: bytes | memoryview, path: str) -> np.ndarray:
    """Decode a whole ``.npy`` file held in memory, checking its length exactly."""
    h = parse_header(buf, path)
    return array_from_header(buf, h, path)


def size_problem(h: NpyHeader, size: int) -> str:
    """What is wrong with a file of ``size`` bytes whose header is ``h`` ("" if nothing)."""
    have = size - h.offset
    if have < h.nbytes:
        return f"truncated: header declares {h.nbytes} data bytes, file has {have}"
    if have > h.nbytes:
        return f"{have - h.nbytes} unexpected bytes after the array data"
    return ""


def array_from_header(buf: bytes | memoryview, h: NpyHeader, path: str) -> np.ndarray:
    """Decode the data part of ``buf`` as declared by ``h``."""
    problem = size_problem(h, len(buf))
    if problem:
        raise SourceError(path, problem)
    flat = np.frombuffer(buf, dtype=h.dtype, count=h.count, offset=h.offset)
    return flat.reshape(h.shape, order="F" if h.fortran_order else "C")


def to_native(a: np.ndarray) -> np.ndarray:
    """The same values in native byte order and C order (no copy when already so)."""
    return a.astype(a.dtype.newbyteorder("="), order="C", copy=False)
