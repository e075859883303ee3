"""The chunk format this package writes: bytes, checksums, shard indexes.

Chunks are ``bytes`` (little-endian) + Blosc + ``crc32c`` (a CRC-32C of the chunk after it, as
Zarr v3's core codec writes it, so a damaged chunk is found on every read), optionally inside
``sharding_indexed`` shards with their index (itself CRC-32C'd) at the end.  The writer encodes
them here (`encode_chunks`, `encode_shard`); `converter.zarrlite.reader` decodes them.
zarr-python reads both (the tests compare the bytes with those zarr-python writes).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
from numcodecs import blosc

from .pool import in_runs

MISSING = np.uint64(2**64 - 1)  # a shard index entry of an inner chunk never written

SHUFFLE = {"noshuffle": blosc.NOSHUFFLE, "shuffle": blosc.SHUFFLE, "bitshuffle": blosc.BITSHUFFLE}


def with_crc32c(data: bytes) -> bytes:
    """``data`` followed by its CRC-32C, little-endian: Zarr v3's ``crc32c`` codec."""
    import google_crc32c

    return data + int(google_crc32c.value(data)).to_bytes(4, "little")


# The CRC-32C of any bytes followed by their own CRC-32C (little-endian): checking it needs no copy.
_CRC32C_RESIDUE = 0x48674BC7


def checked(data: bytes, where: str | Callable[[], str]) -> memoryview:
    """``data`` without its trailing CRC-32C, which must match (`ValueError` naming ``where``, a
    string or a function making one, called only on failure); a view, not a copy."""
    from google_crc32c import value

    data = bytes(data)
    if len(data) < 4 or value(data) != _CRC32C_RESIDUE:
        where = where if isinstance(where, str) else where()
        raise ValueError(f"{where}: damaged (its CRC-32C does not match{'; truncated' if len(data) < 4 else ''})")
    return memoryview(data)[:-4]


def _blosc(values: np.ndarray, cname: str, clevel: int, shuffle: str) -> bytes:
    """``values`` as one Blosc frame with the store's settings."""
    return blosc.compress(np.ascontiguousarray(values), cname.encode(), clevel, SHUFFLE[shuffle])


def compressed_size(values: np.ndarray, cname: str, clevel: int, shuffle: str) -> int:
    """Bytes of ``values`` compressed as one Blosc frame with the store's settings."""
    return len(_blosc(values, cname, clevel, shuffle))


def index_bytes(entries: int, crc: bool) -> int:
    """Bytes of a shard's index at its end: 16 per inner chunk, and its CRC-32C."""
    return 16 * entries + (4 if crc else 0)


def shard_index(tail: bytes, size: int, entries: int, crc: bool, where: str) -> np.ndarray:
    """The ``(entries, 2)`` index (offset, length) of a shard of ``size`` bytes, from its last
    `index_bytes`; a `ValueError` naming ``where`` when the shard is shorter than its index, the
    index's CRC-32C fails, or an entry points past the chunks (the shard was cut short)."""
    n = index_bytes(entries, crc)
    if size < n:
        raise ValueError(f"{where}: damaged (truncated to {size} bytes: shorter than its index)")
    index = np.frombuffer(checked(tail, where) if crc else tail, "<u8").reshape(entries, 2)
    present = index[:, 0] != MISSING
    if present.any() and int(index[present].sum(axis=1).max()) > size - n:
        raise ValueError(f"{where}: damaged (its index points past the end of the file: truncated)")
    return index


def encode_chunks(values: np.ndarray, origin: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...],
                  cname: str, clevel: int, shuffle: str, fill_value=0) -> Iterator[tuple[tuple[int, ...], bytes]]:
    """``(chunk index, encoded bytes)`` for every chunk of an unsharded array that ``values`` covers,
    encoded as they are taken: a block's chunks are never all in memory at once.

    ``values`` sits at ``origin`` (a chunk corner) of an array of ``shape`` and covers its chunks
    whole, except at the array's far edges, where chunks are padded with ``fill_value`` as Zarr
    pads them.  The bytes are those zarr-python writes (``bytes`` little-endian + Blosc + ``crc32c``).
    """
    if any(o % c for o, c in zip(origin, chunks)):
        raise ValueError(f"origin {origin} is not on the chunk grid {chunks}")
    if any((o + n) % c and o + n < s for o, n, c, s in zip(origin, values.shape, chunks, shape)):
        raise ValueError(f"values of shape {values.shape} at {origin} end inside a chunk {chunks} of an array of shape {shape}")
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    grid = [range(o // c, -(-(o + n) // c)) for o, n, c in zip(origin, values.shape, chunks)]

    def encode(idx: tuple[int, ...]) -> bytes:
        lo = [i * c - o for i, c, o in zip(idx, chunks, origin)]
        part = values[tuple(slice(a, a + c) for a, c in zip(lo, chunks))]
        if part.shape != chunks:  # at the array's far edge: padded
            padded = np.full(chunks, fill_value, dtype=values.dtype)
            padded[tuple(slice(0, n) for n in part.shape)] = part
            part = padded
        return with_crc32c(_blosc(part, cname, clevel, shuffle))

    return ((idx, encode(idx)) for idx in itertools.product(*grid))


def encode_shard(values: np.ndarray, inner: tuple[int, ...], shard: tuple[int, ...], cname: str, clevel: int,
                 shuffle: str, joined: bool = True) -> bytes | list[bytes]:
    """One ``sharding_indexed`` shard (index at the end, ``bytes`` + ``crc32c``) holding ``values``.

    ``values`` fills the shard from its origin and may be shorter than it along the first
    axis (the array's last shard); inner chunks beyond it are marked missing, as Zarr
    marks chunks never written.  Inner chunks are Blosc-compressed on the read pool's
    threads.  zarr-python pays ~0.5 ms per inner chunk for the same work.  With
    ``joined=False`` the shard comes as its pieces in order, which saves a copy.
    """
    import google_crc32c

    per = tuple(s // i for s, i in zip(shard, inner))
    if any(s % i for s, i in zip(shard, inner)) or values.shape[0] > shard[0] or any(
            not (s - i < n <= s) for n, s, i in zip(values.shape[1:], shard[1:], inner[1:])):
        raise ValueError(f"shard {shard} of inner chunks {inner} cannot hold values of shape {values.shape}")
    values = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False))
    cells = [idx for idx in itertools.product(*map(range, per)) if idx[0] * inner[0] < values.shape[0]]
    parts: list[bytes] = [b""] * len(cells)

    def encode(run: range) -> None:
        for k in run:
            lo = [i * c for i, c in zip(cells[k], inner)]
            part = values[tuple(slice(a, a + c) for a, c in zip(lo, inner))]
            if part.shape[1:] != inner[1:]:  # past the array's far edge (a clip's last frames): padded, as Zarr does
                padded = np.zeros((part.shape[0], *inner[1:]), dtype=values.dtype)
                padded[tuple(slice(0, n) for n in part.shape)] = part
                part = padded
            parts[k] = with_crc32c(_blosc(part, cname, clevel, shuffle))

    in_runs(encode, range(len(cells)), values.nbytes)
    index = np.full((*per, 2), MISSING, dtype="<u8")
    offset = 0
    for idx, p in zip(cells, parts):
        index[idx] = offset, len(p)
        offset += len(p)
    raw_index = index.tobytes()
    parts += [raw_index, int(google_crc32c.value(raw_index)).to_bytes(4, "little")]
    return b"".join(parts) if joined else parts
