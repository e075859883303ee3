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

SCHEMA_VERSION = "1.0"

# Trials per write block.  Every array's trial chunk divides it, so blocks own
# disjoint chunks and can be written in parallel without coordination.
BLOCK_TRIALS = 1024
# Upper bound on one uncompressed chunk of a per-trial variable.
CHUNK_TARGET_BYTES = 8 * 2**20
# responses are tiled (trials x neurons): one neuron across all trials touches
# n_trials / 1024 chunks, a block of trials touches n_neurons / 256.
RESPONSE_TILE = (BLOCK_TRIALS, 256)

PER_TRIAL_DIMS = {
    ("images", 3): ("channel", "height", "width"),
    ("images", 2): ("height", "width"),
    ("responses", 1): ("neuron",),
    ("behavior", 1): ("behavior_variable",),
    ("pupil_center", 1): ("pupil_axis",),
}
# Label coordinates for per-trial dims whose meaning the data description gives.
LABELS = {
    ("behavior_variable", 3): ("pupil_dilation", "pupil_dilation_derivative", "running_speed"),
    ("pupil_axis", 2): ("horizontal", "vertical"),
}
# meta/trials files that get a shorter coordinate name.
TRIAL_RENAMES = {"tiers": "tier", "frame_image_id": "image_id"}
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
    chunks: tuple[int, ...]
    codec: Codec

    @property
    def per_trial_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def withheld_name(self) -> str:
        return f"{self.key}_withheld"


def data_dims(key: str, per_trial_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Dimension names of a data variable: ``trial`` first, then known or generic names."""
    known = PER_TRIAL_DIMS.get((key, len(per_trial_shape)))
    if known is None:
        known = tuple(f"{key}_dim_{k}" for k in range(len(per_trial_shape)))
    return ("trial", *known)


def trial_chunk(per_trial_nbytes: int, n_trials: int) -> int:
    """Largest power of two <= `BLOCK_TRIALS` whose chunk stays within the byte target."""
    c = BLOCK_TRIALS
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


def plan_data_var(key: str, n_trials: int, per_trial_shape: tuple[int, ...], source_dtype: np.dtype) -> DataVar:
    """Decide dims, chunks and codec for one data folder."""
    dims = data_dims(key, per_trial_shape)
    native = source_dtype.newbyteorder("=")
    if dims[:2] == ("trial", "neuron") and len(dims) == 2:
        chunks = (min(RESPONSE_TILE[0], n_trials), max(1, min(RESPONSE_TILE[1], per_trial_shape[0])))
    else:
        nbytes = int(np.prod(per_trial_shape, dtype=np.int64)) * native.itemsize
        chunks = (trial_chunk(nbytes, n_trials), *(max(1, s) for s in per_trial_shape))
    return DataVar(key, dims, (n_trials, *per_trial_shape), native.str, source_dtype.str, chunks, codec_for(key, native))


def blocks(n_trials: int) -> list[range]:
    """Trial ranges written as one unit each; aligned to every array's trial chunks."""
    return [range(s, min(s + BLOCK_TRIALS, n_trials)) for s in range(0, n_trials, BLOCK_TRIALS)]


def coord_names(trial_meta: tuple[str, ...], neuron_meta: tuple[str, ...], data_keys: tuple[str, ...]) -> dict[str, str]:
    """Map ``meta/trials/<f>`` and ``meta/neurons/<f>`` to coordinate names.

    Names are kept, except ``tiers`` -> ``tier``, ``frame_image_id`` -> ``image_id``
    and ``unit_ids``, which becomes the ``neuron`` dimension coordinate.
    A name that would clash with another meta file, a data variable, a dimension or a
    reserved name gets the prefix ``trial_`` or ``neuron_``.
    """
    reserved = {"trial", "neuron", *data_keys, *(f"{k}_withheld" for k in data_keys)}
    reserved |= {d for dims in PER_TRIAL_DIMS.values() for d in dims}
    trial_names = {f: TRIAL_RENAMES.get(f, f) for f in trial_meta}
    neuron_names = {f: f for f in neuron_meta}
    clash = set(trial_names.values()) & set(neuron_names.values())
    out = {}
    for folder, prefix, names in (("trials", "trial_", trial_names), ("neurons", "neuron_", neuron_names)):
        for f, name in names.items():
            if name in clash or name in reserved:
                name = prefix + name
            out[f"meta/{folder}/{f}"] = name
    if "unit_ids" in neuron_meta:
        out["meta/neurons/unit_ids"] = "neuron"
    return out


def meta_dims(name: str, base: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """Dims of a meta array: its row dimension, then named or generic extra dims."""
    dims = [base]
    for k, size in enumerate(shape[1:], start=1):
        dims.append((k == 1 and META_EXTRA_DIMS.get((name, size))) or f"{name}_dim_{k}")
    return tuple(dims)


def stat_dims(stat: str, shape: tuple[int, ...], data: DataVar | None) -> tuple[str, ...]:
    """Dims of ``statistics/<key>/<source>/<stat>``: the data's per-trial dims when shapes agree."""
    if data is not None and shape == data.per_trial_shape:
        return data.dims[1:]
    return tuple(f"{stat}_dim_{k}" for k in range(len(shape)))


def parse_name(name: str) -> dict[str, object]:
    """Split ``static<animal>-<session>-<scan>-GrayImageNet-<hash>`` into its parts.

    Unrecognised names give only ``data_key`` (the name itself).
    """
    m = re.fullmatch(r"static(\d+)-(\d+)-(\d+)-(\w+?)-([0-9a-f]+)", name)
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
