"""The store layout: pure decisions, no I/O.

Given what a source holds (names, per-trial shapes and dtypes, meta array shapes),
these functions decide every name, dimension, chunk shape and codec in the store,
and which trials go into which write block.  README.md ("Store layout") explains
the measurements behind the numbers here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..contract import FRAME, FRAME_TIME, IMAGE_ID, N_FRAMES, NEURON, TIER, TRIAL, TRIAL_RENAMES, UNIT_IDS, row_copy_path, withheld_name
from ..kinds import IMAGE, KINDS, ScanKind, tier_order

# Trials per write block.  Every array's trial chunk divides it, so blocks own
# disjoint chunks and can be written in parallel without coordination.
BLOCK_TRIALS = 1024
# A block holds its trials in memory while they are written: fewer trials when trials are
# large (a Sensorium 2023 clip is ~12 MB), so memory stays flat whatever the trial size.
BLOCK_TARGET_BYTES = 512 * 2**20
# Upper bound on one uncompressed chunk of a per-trial variable.
CHUNK_TARGET_BYTES = 8 * 2**20
# responses are tiled (trials x neurons): one neuron across all trials touches
# n_trials / 1024 chunks, a block of trials touches n_neurons / 512.  512 rather than 256
# halves the chunks plain xarray (zarr-python, ~0.5 ms per chunk) reads for a tier.
RESPONSE_TILE = (BLOCK_TRIALS, 512)
# A per-trial variable at least this large per trial is stored one trial per inner chunk,
# in shards of one write block: a random batch then decodes only its own trials.
SHARD_MIN_TRIAL_BYTES = 4096
# Clips (frames on the last axis) are cut into inner chunks of this many frames: a random
# 60-frame window then decodes ~80 of a trial's ~300 frames.
FRAME_CHUNK = 20
# (trial, neuron, frame) tiles hold whole clips of this many bytes at most: one neuron across
# all trials then decodes a few tens of MB rather than every response.
CLIP_TILE_BYTES = 2 * 2**20

# Label coordinates for per-trial dims whose meaning the data description gives.
LABELS = {
    ("behavior_variable", 3): ("pupil_dilation", "pupil_dilation_derivative", "running_speed"),
    ("behavior_variable", 2): ("pupil_dilation", "running_speed"),
    ("pupil_axis", 2): ("horizontal", "vertical"),
}
META_EXTRA_DIMS = {("cell_motor_coordinates", 3): "xyz"}


@dataclass(frozen=True)
class Codec:
    """Blosc settings for one array (a Zarr v3 core codec)."""

    cname: str = "lz4"
    clevel: int = 5
    shuffle: str = "shuffle"


@dataclass(frozen=True)
class DataVar:
    """One per-trial data folder as a store array."""

    key: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string as stored (native byte order)
    source_dtype: str  # as found in the files (byte order kept)
    chunks: tuple[int, ...]  # the unit of decoding (the inner chunk when sharded)
    codec: Codec
    shards: tuple[int, ...] | None = None
    name: str | None = None  # path in the store; default: the key

    @property
    def path(self) -> str:
        return self.name or self.key

    @property
    def per_trial_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def withheld_name(self) -> str:
        return withheld_name(self.key)


def data_dims(key: str, per_trial_shape: tuple[int, ...], kind: ScanKind = IMAGE) -> tuple[str, ...]:
    """Dimension names of a data variable: ``trial`` first, then the kind's names or generic ones.

    In a kind whose files end in a frame axis (`ScanKind.frames`) the last axis is ``frame``.
    """
    known = kind.dims.get((key, len(per_trial_shape)))
    if known is None:
        known = tuple(f"{key}_dim_{k}" for k in range(len(per_trial_shape)))
        if kind.frames and known:
            known = (*known[:-1], FRAME)
    return (TRIAL, *known)


def block_trials(per_trial_bytes: int) -> int:
    """Trials per write block: `BLOCK_TRIALS`, halved until a block's trials fit `BLOCK_TARGET_BYTES`."""
    b = BLOCK_TRIALS
    while b > 1 and b * per_trial_bytes > BLOCK_TARGET_BYTES:
        b //= 2
    return b


def trial_chunk(per_trial_nbytes: int, n_trials: int, block: int = BLOCK_TRIALS) -> int:
    """Largest power of two <= ``block`` whose chunk stays within the byte target."""
    c = block
    while c > 1 and c * per_trial_nbytes > CHUNK_TARGET_BYTES:
        c //= 2
    return max(1, min(c, n_trials))


def codec_for(key: str, dtype: np.dtype) -> Codec:
    """Blosc-LZ4 for decode speed; bit-shuffle suits integer-valued float images."""
    if dtype.itemsize == 1:
        return Codec(shuffle="noshuffle")
    if key == "images" and dtype.kind == "f":
        return Codec(shuffle="bitshuffle")
    return Codec()


def _inner(dims: tuple[str, ...], whole: tuple[int, ...]) -> tuple[int, ...]:
    """One trial per inner chunk; a clip cut into `FRAME_CHUNK` frames."""
    return (1, *(min(FRAME_CHUNK, n) if d == FRAME else n for d, n in zip(dims[1:], whole)))


def _shard(block: int, inner: tuple[int, ...], whole: tuple[int, ...]) -> tuple[int, ...]:
    """A write block of whole trials, its frame axis rounded up to whole inner chunks."""
    return (block, *(-(-n // c) * c for n, c in zip(whole, inner[1:])))


def plan_data_var(key: str, n_trials: int, per_trial_shape: tuple[int, ...], source_dtype: np.dtype,
                  block: int = BLOCK_TRIALS, kind: ScanKind = IMAGE) -> DataVar:
    """Decide dims, chunks, shards and codec for one data folder.

    ``(trial, neuron[, frame])`` arrays are tiled (one neuron across all trials is a few
    chunks) and get a trial-major copy (`row_copy`); large per-trial arrays are sharded by
    write block with one trial (of a clip: `FRAME_CHUNK` frames) per inner chunk; small ones
    are chunked by write block.
    """
    dims = data_dims(key, per_trial_shape, kind)
    native = source_dtype.newbyteorder("=")
    shape = (n_trials, *per_trial_shape)
    whole = tuple(max(1, s) for s in per_trial_shape)
    block = min(block, n_trials)
    codec = codec_for(key, native)
    if is_tiled(dims):
        per_neuron = block * int(np.prod(whole[1:], dtype=np.int64)) * native.itemsize
        tile = RESPONSE_TILE[1]
        while len(dims) > 2 and tile > 1 and tile * per_neuron > CLIP_TILE_BYTES:
            tile //= 2
        return DataVar(key, dims, shape, native.str, source_dtype.str, (block, max(1, min(tile, whole[0])), *whole[1:]), codec)
    nbytes = int(np.prod(per_trial_shape, dtype=np.int64)) * native.itemsize
    if nbytes >= SHARD_MIN_TRIAL_BYTES:
        inner = _inner(dims, whole)
        return DataVar(key, dims, shape, native.str, source_dtype.str, inner, codec, shards=_shard(block, inner, whole))
    return DataVar(key, dims, shape, native.str, source_dtype.str, (trial_chunk(nbytes, n_trials, block), *whole), codec)


def is_tiled(dims: tuple[str, ...]) -> bool:
    """``(trial, neuron)`` and ``(trial, neuron, frame)`` variables are tiled and keep a trial-major copy."""
    return dims in ((TRIAL, NEURON), (TRIAL, NEURON, FRAME))


def row_copy(v: DataVar) -> DataVar | None:
    """The trial-major copy of a tiled variable: ``by_trial/<key>``, one trial per inner chunk."""
    if not is_tiled(v.dims):
        return None
    whole = tuple(max(1, s) for s in v.per_trial_shape)
    inner = _inner(v.dims, whole)
    return DataVar(v.key, v.dims, v.shape, v.dtype, v.source_dtype, inner, v.codec,
                   shards=_shard(v.chunks[0], inner, whole), name=row_copy_path(v.key))


def write_chunks(v: DataVar) -> tuple[int, ...]:
    """The unit a writer must fill whole: the shard when sharded, else the chunk."""
    return v.shards or v.chunks


def trial_order(tiers: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """File numbers in stored order: clustered by tier, then ``image_id``, then file number.

    A tier, and the repeats of one image, are then one contiguous run of the trial axis
    (a database would say: the table is clustered on its most common predicate).  The
    ``trial`` coordinate keeps the file numbers, so labels, not positions, name trials.
    """
    names, inverse = np.unique(np.asarray(tiers).astype(str), return_inverse=True)
    order = sorted(range(len(names)), key=lambda k: tier_order(names[k]))
    rank = np.argsort(order)[inverse.reshape(-1)]
    files = np.arange(len(tiers))
    return np.lexsort((files, np.asarray(image_ids), rank)).astype(np.int64)


def to_file_order(values: np.ndarray, trial: np.ndarray) -> np.ndarray:
    """Rows of a trial-first array stored in `trial_order` back in file order (row i: file i)."""
    return values[np.argsort(trial, kind="stable")]


def blocks(n_trials: int, size: int = BLOCK_TRIALS) -> list[range]:
    """Trial ranges of ``size`` written as one unit each; aligned to every array's trial chunks."""
    return [range(s, min(s + size, n_trials)) for s in range(0, n_trials, size)]


def coord_names(trial_meta: tuple[str, ...], neuron_meta: tuple[str, ...], data_keys: tuple[str, ...]) -> dict[str, str]:
    """Map ``meta/trials/<f>`` and ``meta/neurons/<f>`` to coordinate names.

    Names are kept, except ``tiers`` -> ``tier``, ``frame_image_id`` -> ``image_id``
    and ``unit_ids``, which becomes the ``neuron`` dimension coordinate.
    A name that would clash with another meta file, a data variable, a dimension or a
    reserved name gets the prefix ``trial_`` or ``neuron_``.  ``tier`` and ``image_id``
    always name the renamed trial files, which every reader relies on.
    """
    reserved = {TRIAL, NEURON, FRAME, FRAME_TIME, N_FRAMES, *data_keys, *(withheld_name(k) for k in data_keys)}
    reserved |= {d for kind in KINDS for dims in kind.dims.values() for d in dims}
    trial_names = {f: TRIAL_RENAMES.get(f, f) for f in trial_meta}
    neuron_names = {f: f for f in neuron_meta}
    clash = set(trial_names.values()) & set(neuron_names.values())
    out = {}
    for folder, prefix, names in (("trials", "trial_", trial_names), ("neurons", "neuron_", neuron_names)):
        for f, name in names.items():
            renamed = folder == "trials" and f in TRIAL_RENAMES
            taken = name in reserved or (name in clash and not renamed) or (folder == "trials" and not renamed and name in (TIER, IMAGE_ID))
            out[f"meta/{folder}/{f}"] = prefix + name if taken else name
    if UNIT_IDS in neuron_meta:
        out[f"meta/neurons/{UNIT_IDS}"] = NEURON
    return out


def meta_dims(name: str, base: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """Dims of a meta array: its row dimension, then named or generic extra dims."""
    dims = [base]
    for k, size in enumerate(shape[1:], start=1):
        dims.append((k == 1 and META_EXTRA_DIMS.get((name, size))) or f"{name}_dim_{k}")
    return tuple(dims)


def stat_dims(name: str, shape: tuple[int, ...], data: DataVar | None) -> tuple[str, ...]:
    """Dims of ``statistics/<key>/<source>/<stat>`` (``name``): where its axes sit on one trial of ``<key>``.

    The loaders apply a statistic to one trial by broadcasting, and these rules say how,
    first match wins:

    1. the trial's own shape: the trial's dims;
    2. the same rank, each axis the trial's or 1 (reduced, kept): the trial's dims, a reduced
       one named ``<key>_<dim>_reduced``;
    3. a clip's shape without its frame axis (reduced over trials and frames, ``(n_neurons,)``
       for responses): the trial's dims but ``frame``;
    4. the trial's last axes (numpy broadcasting): those dims;
    5. anything else is recorded as found, with dims named after the file:
       ``<key>_<source>_<stat>_dim_<k>``.
    """
    if data is not None:
        dims, trial = data.dims[1:], data.per_trial_shape
        if shape == trial:
            return dims
        if shape and len(shape) == len(trial) and all(n in (m, 1) for n, m in zip(shape, trial)):
            return tuple(d if n == m else f"{data.key}_{d}_reduced" for d, n, m in zip(dims, shape, trial))
        if dims and dims[-1] == FRAME and shape == trial[:-1]:
            return dims[:-1]
        if 0 < len(shape) < len(trial) and shape == trial[len(trial) - len(shape):]:
            return dims[len(dims) - len(shape):]
    stem = name.removeprefix("statistics/").replace("/", "_")
    return tuple(f"{stem}_dim_{k}" for k in range(len(shape)))


def identity(name: str, animal_id: np.ndarray | None, session: np.ndarray | None, scan_idx: np.ndarray | None) -> dict[str, object]:
    """Which scan this is: from ``meta/trials/{animal_id,session,scan_idx}.npy`` when each holds
    one integer value, else from the dataset's name (`parse_name`); ``identity_from`` says which."""
    out = parse_name(name)
    found = [v for v in (animal_id, session, scan_idx) if v is not None and v.ndim == 1 and v.size and v.dtype.kind in "iu"]
    if len(found) == 3 and all(len(np.unique(v)) == 1 for v in found):
        a, s, c = (int(v[0]) for v in found)
        out.update(data_key=f"{a}-{s}-{c}", animal_id=a, session=s, scan_idx=c, identity_from="meta/trials")
    else:
        out["identity_from"] = "name"
    return out


def parse_name(name: str) -> dict[str, object]:
    """Split ``static<animal>-<session>-<scan>-GrayImageNet-<hash>`` into its parts.

    Unrecognised names give only ``data_key`` (the name itself).
    """
    m = re.fullmatch(r"(?:static|dynamic)(\d+)-(\d+)-(\d+)-(\w+?)-([0-9a-f]+)", name)
    if not m:
        return {"data_key": name}
    return {
        "data_key": f"{m[1]}-{m[2]}-{m[3]}",
        "animal_id": int(m[1]),
        "session": int(m[2]),
        "scan_idx": int(m[3]),
        "stimulus": m[4],
        "hash": m[5],
    }
