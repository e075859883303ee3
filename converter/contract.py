"""The store's contract: every name and rule that writers, readers and checkers share.

The writer (`converter.write`), the readers (`converter.read`), `verify`, `export` and the
schema check import these names rather than spelling them, so a rename happens here once.
README.md ("The store") describes the same contract for people.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

SCHEMA = "sensorium-zarr"
SCHEMA_VERSION = "2.3"
# Sensorium 2023 video scans follow a sibling schema, schemas/store-dynamic-1.2.json. Its identifier
# keeps the name it was published under (the release's own folders are dynamic<...>): stores carry it.
VIDEO_SCHEMA_VERSION = "dynamic-1.2"
VIDEO_SCHEMA_VERSIONS = ("dynamic-1.0", "dynamic-1.1", VIDEO_SCHEMA_VERSION)
# Versions whose stores this package still reads.
READABLE_SCHEMA_VERSIONS = ("1.0", "2.0", "2.1", "2.2", SCHEMA_VERSION, *VIDEO_SCHEMA_VERSIONS)
# Root attributes holding an object: JSON-encoded strings since schemas 2.2 and dynamic-1.1, so
# that every attribute is of a type netCDF takes (``ds.to_netcdf`` on any opened store).
JSON_ATTRS = ("tier_counts", "withheld_trials", "source_zip")
# Versions written before the `files` group existed: their stores keep no non-array files.
WITHOUT_FILES_GROUP = ("1.0", "2.0")

# The per-trial data folders of a Sensorium 2022 scan, in the order the store lists them.
DATA_KEYS = ("images", "responses", "behavior", "pupil_center")
# Those of a Sensorium 2023 scan: a clip per trial, frames on the last axis of every file.
VIDEOS = "videos"
RESPONSES = "responses"
VIDEO_DATA_KEYS = (VIDEOS, "responses", "behavior", "pupil_center")

# The tiers of a Sensorium 2022 scan, in the order the store keeps them; any other tier follows.
TIERS = ("train", "validation", "test", "final_test")
# The tiers of a Sensorium 2023 scan, likewise.
VIDEO_TIERS = ("train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus", "none")

# Dimension and coordinate names.
TRIAL, NEURON = "trial", "neuron"
TIER, IMAGE_ID = "tier", "image_id"
AREA, LAYER = "area", "layer"
# Sensorium 2023: the frame axis, its time in seconds, and each trial's frames before the padding.
FRAME, FRAME_TIME, N_FRAMES = "frame", "frame_time", "n_frames"
FRAME_RATE_HZ = 30.0  # the release's frame rate: not in the files (README, "Sensorium 2023")
# meta/trials files that get a shorter coordinate name; no other file may take these names.
TRIAL_RENAMES = {"tiers": TIER, "frame_image_id": IMAGE_ID}
# meta/neurons/unit_ids.npy becomes the `neuron` dimension coordinate.
UNIT_IDS = "unit_ids"

# Attributes of an array read from one source file.
SOURCE = "source"  # path of the file, relative to the dataset folder
SOURCE_DTYPE = "source_dtype"  # numpy dtype string of the file, byte order kept
NPY_HEADER = "npy_header"  # the file's .npy header bytes, base64
SOURCE_CRC32 = "source_crc32"  # CRC-32 of the whole file
COPY_OF = "copy_of"
SOURCE_FINGERPRINT = "source_fingerprint"  # root attribute: see `fingerprint`  # on a second layout of an array: the array it copies
# Where the per-trial file number goes in a data variable's `source` attribute.
TRIAL_FIELD = "{trial}"

# Groups.
FILES_GROUP = "files"  # every source file that is not an array (schema 2.1)
ROW_COPY_GROUP = "by_trial"  # trial-major copies (one trial per inner chunk) of tiled variables
CHECKSUMS_GROUP = "checksums/data"  # one CRC-32 per source file of each data folder
STATISTICS_GROUP = "statistics"




def encode_attrs(attrs: dict) -> dict:
    """Root attributes as stored: `JSON_ATTRS` as JSON text, no ``None`` values."""
    return {k: json.dumps(v, sort_keys=True) if k in JSON_ATTRS else v for k, v in attrs.items() if v is not None}


def decode_attrs(attrs: dict) -> dict:
    """Root attributes as Python values, whichever schema wrote them (`JSON_ATTRS` decoded)."""
    return {k: json.loads(v) if k in JSON_ATTRS and isinstance(v, str) else v for k, v in attrs.items()}


def written_whole(attrs: dict) -> bool:
    """Arrays this package fills chunk by chunk, every chunk (the per-trial data and their
    trial-major copies): a chunk missing there is damage, never the fill value."""
    return TRIAL_FIELD in str(attrs.get(SOURCE, "")) or COPY_OF in attrs


def first_nan_frame(clip: np.ndarray) -> int:
    """Frames of one clip (frames on the last axis) before its first frame holding a NaN."""
    if clip.dtype.kind not in "fc":
        return clip.shape[-1]
    bad = np.isnan(clip).reshape(-1, clip.shape[-1]).any(axis=0)
    return int(np.argmax(bad)) if bad.any() else clip.shape[-1]


def trial_file(key: str, i: int) -> str:
    """The source file of trial ``i`` of data folder ``key``."""
    return f"data/{key}/{i}.npy"


def data_source(key: str) -> str:
    """The ``source`` attribute of data variable ``key``: its files, with `TRIAL_FIELD`."""
    return f"data/{key}/{TRIAL_FIELD}.npy"


def withheld_name(key: str) -> str:
    """The boolean ``trial`` coordinate that marks the withheld (all-zero) trials of ``key``."""
    return f"{key}_withheld"


def checksums_path(key: str) -> str:
    """The array of per-file CRC-32s of data folder ``key``."""
    return f"{CHECKSUMS_GROUP}/{key}"


def row_copy_path(key: str) -> str:
    """Where the trial-major copy of a tiled variable ``key`` lives in the store."""
    return f"{ROW_COPY_GROUP}/{key}"


def fingerprint(crcs: dict[str, int]) -> str:
    """The ``source_fingerprint`` attribute: SHA-256 over sorted ``path<TAB>crc32`` lines.

    ``crcs`` holds the CRC-32 of every source ``.npy`` file; the same content gives the
    same fingerprint from a folder or from its zip.
    """
    h = hashlib.sha256()
    for rel in sorted(crcs):
        h.update(f"{rel}\t{crcs[rel]:08x}\n".encode())
    return "sha256:" + h.hexdigest()


def text_from_bytes(values: np.ndarray) -> np.ndarray:
    """A bytes array (numpy ``S``) as the store keeps it: strings, each byte one character (latin-1)."""
    if not values.size:
        return values.astype(object)
    return np.vectorize(lambda b: b.decode("latin-1"), otypes=[object])(values)


def bytes_from_text(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Undo `text_from_bytes`: the stored strings as the source's bytes array of ``dtype``."""
    values = np.asarray(values)
    return np.array([v.encode("latin-1") for v in values.ravel().tolist()], dtype=dtype).reshape(values.shape)
