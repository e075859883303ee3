"""A small, fast subset of Zarr v3: the layouts this package writes, read and written by hand.

It handles arrays on a regular chunk grid with the default chunk key encoding, numeric
dtypes, and codecs ``bytes`` (either byte order), then ``blosc`` or ``zstd`` or none, then
optionally ``crc32c``; optionally all inside ``sharding_indexed`` with its index at the end
(``bytes``, optionally ``crc32c``).  Every CRC-32C is checked on read, the shard index's
included.  Local arrays are read with ``pread``; at a URL, only whole rows of shards
(`RemoteRows`, by concurrent range requests).  Anything else (other selections at a URL, other
codecs, an index at the start, transposes) returns None here and goes through zarr-python
(`converter.read.engine.open_reader` picks).

- `codecs`: encoding chunks and shards, CRC-32C, shard indexes;
- `reader`: `ChunkReader` (orthogonal selections) and `read_coordinates` (whole small arrays);
- `remote`: `RemoteRows` (whole rows at a URL, by merged, concurrent range requests);
- `consolidated`: the root ``zarr.json``'s consolidated metadata;
- `pool`: the threads that encode and decode.

Why this is ours and not zarr-python's or tensorstore's, with today's numbers: docs/zarrlite.md.
"""

from .codecs import (
    MISSING,
    checked,
    compressed_size,
    encode_chunks,
    encode_shard,
    index_bytes,
    shard_index,
    with_crc32c,
)
from .consolidated import consolidate
from .reader import CHUNK_COST, ChunkReader, read_coordinates
from .remote import RemoteRows

__all__ = ["CHUNK_COST", "MISSING", "ChunkReader", "RemoteRows", "checked", "compressed_size", "consolidate", "encode_chunks",
           "encode_shard", "index_bytes", "read_coordinates", "shard_index", "with_crc32c"]
