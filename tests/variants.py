"""Hypothesis strategies for Sensorium datasets that this project's own sample never writes.

`valid_scans` draws consistent variants of both published layouts (2022 images, 2023 clips):
other shapes, ranks, dtypes and byte orders; channels; which meta files, statistics and
tiers exist; statistics of any shape that broadcasts; NaN padding or none.  `invalid_scans`
draws one of them and breaks one rule that makes a store unusable.  `write_scan` writes a
drawn scan as a folder, with ``np.save`` and nothing of the converter, optionally zipped.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

TIERS_2022 = ("train", "validation", "test", "final_test", "pretrain")
TIERS_2023 = ("train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus", "none")
STATS = ("mean", "std", "min", "max", "median")
FLOATS = ("<f4", ">f4", "<f8")


@dataclass
class Scan:
    """A drawn dataset: every file as an array, by its path relative to the dataset folder."""

    name: str
    dynamic: bool
    n_trials: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    other: dict[str, bytes] = field(default_factory=dict)
    broken: str = ""  # for an invalid scan: the file the refusal must name


def _stat_shape(draw, per_trial: tuple[int, ...], clips: bool) -> tuple[int, ...]:
    """A statistic's shape that broadcasts against one trial, as the loaders apply it."""
    kinds = ["same", "scalar", "keepdims", "trailing"]
    if clips and len(per_trial) >= 2:
        kinds.append("no_frames")
    kind = draw(st.sampled_from(kinds))
    if kind == "same":
        return per_trial
    if kind == "scalar" or not per_trial:
        return ()
    if kind == "keepdims":  # reduced axes kept with length 1
        keep = draw(st.lists(st.booleans(), min_size=len(per_trial), max_size=len(per_trial)))
        return tuple(n if k else 1 for n, k in zip(per_trial, keep))
    if kind == "no_frames":  # reduced over trials and frames: (n_neurons,) for responses
        return per_trial[:-1]
    k = draw(st.integers(1, len(per_trial)))
    return per_trial[-k:]


@st.composite
def valid_scans(draw, dynamic: bool | None = None) -> Scan:
    """A consistent dataset of either kind, small enough to convert in a fraction of a second."""
    if dynamic is None:
        dynamic = draw(st.booleans())
    t = draw(st.integers(2, 7))
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    hexhash = "".join(rng.choice(list("0123456789abcdef"), 32))
    name = f"{'dynamic' if dynamic else 'static'}{draw(st.integers(1, 99999))}-{draw(st.integers(1, 20))}-{draw(st.integers(1, 30))}-" \
           f"{'Video' if dynamic else 'GrayImageNet'}-{hexhash}"
    scan = Scan(name, dynamic, t)
    a = scan.arrays
    tier_names = draw(st.lists(st.sampled_from(TIERS_2023 if dynamic else TIERS_2022), min_size=1, max_size=4, unique=True))
    tiers = np.array([draw(st.sampled_from(tier_names)) for _ in range(t)])
    withheld = set(tier_names) - {"train", "validation", "pretrain", "oracle"}

    per_trial: dict[str, tuple[tuple[int, ...], str]] = {}
    if dynamic:
        frames = draw(st.integers(2, 9))
        h, w = draw(st.integers(1, 4)), draw(st.integers(1, 5))
        lengths = [draw(st.integers(1, frames)) for _ in range(t)]
        pad_all = draw(st.booleans())  # NaN padding in every variable, or in the videos only (zeros elsewhere)
        per_trial["videos"] = ((h, w, frames), draw(st.sampled_from(FLOATS)))
        per_trial["responses"] = ((n, frames), draw(st.sampled_from(FLOATS)))
        if draw(st.booleans()):
            per_trial["behavior"] = ((draw(st.integers(1, 3)), frames), draw(st.sampled_from(FLOATS)))
        if draw(st.booleans()):
            per_trial["pupil_center"] = ((2, frames), draw(st.sampled_from(FLOATS)))
    else:
        rank3 = draw(st.booleans())
        h, w = draw(st.integers(1, 5)), draw(st.integers(1, 6))
        image = (draw(st.integers(1, 2)), h, w) if rank3 else (h, w)
        per_trial["images"] = (image, draw(st.sampled_from(("|u1", *FLOATS))))
        per_trial["responses"] = ((n,), draw(st.sampled_from(FLOATS)))
        if draw(st.booleans()):
            per_trial["behavior"] = ((draw(st.integers(1, 4)),), draw(st.sampled_from(FLOATS)))
        if draw(st.booleans()):
            per_trial["pupil_center"] = ((draw(st.integers(2, 3)),), draw(st.sampled_from(FLOATS)))
        if draw(st.booleans()):
            per_trial["eye_position"] = ((2,), "<f4")  # a folder the data description does not name

    for key, (shape, dtype) in per_trial.items():
        for i in range(t):
            if dtype == "|u1":
                x = rng.integers(0, 256, shape).astype(dtype)
            else:
                x = (rng.gamma(1.0, 2.0, shape) * (100 if key in ("images", "videos") else 1)).astype(dtype)
            if key == "responses" and tiers[i] in withheld:
                x[...] = 0
            if dynamic and lengths[i] < shape[-1]:
                x[..., lengths[i]:] = np.nan if (key == "videos" or pad_all) else 0
            a[f"data/{key}/{i}.npy"] = x

    a["meta/trials/tiers.npy"] = tiers
    if not dynamic and draw(st.booleans()):
        a["meta/trials/frame_image_id.npy"] = rng.integers(0, 4, t).astype(draw(st.sampled_from(("<i8", "<i4", "<u2"))))
    for extra in draw(st.lists(st.sampled_from(("trial_idx", "frame_trial_ts", "condition_hash", "scan_idx", "frame_last_flip")), unique=True, max_size=3)):
        a[f"meta/trials/{extra}.npy"] = {
            "trial_idx": np.arange(t)[::-1].copy(),
            "frame_trial_ts": np.array([f"Timestamp('2019-09-18 15:25:{i:02d}.617000')" for i in range(t)]),
            "condition_hash": np.array([f"{i:032x}".encode() for i in range(t)]),  # bytes, not str
            "scan_idx": np.full(t, 3, dtype=np.int16),
            "frame_last_flip": rng.normal(size=(t, draw(st.integers(1, 3)))),  # 2-d meta
        }[extra]
    unit_ids = rng.choice(np.arange(1, 10 * n + 1), n, replace=False)
    a["meta/neurons/unit_ids.npy"] = np.sort(unit_ids).astype(draw(st.sampled_from(("<i8", "<i4", "<u4"))))
    for extra in draw(st.lists(st.sampled_from(("area", "layer", "cell_motor_coordinates", "scan_idx", "animal_ids")), unique=True, max_size=3)):
        a[f"meta/neurons/{extra}.npy"] = {
            "area": np.array(["V1", "LM"])[rng.integers(0, 2, n)],
            "layer": np.array([b"L2/3", b"L4"])[rng.integers(0, 2, n)],
            "cell_motor_coordinates": rng.normal(size=(n, draw(st.sampled_from((2, 3))))).astype("<f4"),
            "scan_idx": np.full(n, 3, dtype=np.int16),
            "animal_ids": np.full(n, 17, dtype=np.int64),
        }[extra]

    sources = draw(st.lists(st.sampled_from(("all", "stimulus_frame", "Stimulus_Frame")), unique=True, max_size=2))
    for key, (shape, _) in per_trial.items():
        if not draw(st.integers(0, 4)):
            continue  # no statistics for this key
        for src in sources:
            stat_shape = _stat_shape(draw, shape, dynamic)
            for stat in draw(st.lists(st.sampled_from(STATS), unique=True, min_size=1, max_size=5).map(lambda s: sorted({"std", *s}))):
                lo = 0.5 if stat == "std" else -3.0
                value = rng.uniform(lo, 3.0, stat_shape).astype(draw(st.sampled_from(("<f4", "<f8"))))
                a[f"meta/statistics/{key}/{src}/{stat}.npy"] = value

    if draw(st.booleans()):
        scan.other["config.json"] = json.dumps({"links": {}}).encode()
    if draw(st.booleans()):
        scan.other["change.log"] = b"".join(rng.bytes(draw(st.integers(0, 40))) for _ in range(2))
    return scan


def _trial_files(scan: Scan, key: str | None = None) -> list[str]:
    return sorted(p for p in scan.arrays if p.startswith("data/") and (key is None or p.split("/")[1] == key))


@st.composite
def invalid_scans(draw, dynamic: bool | None = None) -> Scan:
    """A valid scan with one rule broken: the refusal must name ``scan.broken``."""
    scan = draw(valid_scans(dynamic))
    a = scan.arrays
    key = draw(st.sampled_from(sorted({p.split("/")[1] for p in _trial_files(scan)})))
    last = f"data/{key}/{scan.n_trials - 1}.npy"
    how = draw(st.sampled_from(("shape", "dtype", "byteorder", "missing_trial", "trial_meta_rows", "neuron_meta_rows",
                                "missing_tiers", "missing_unit_ids", "duplicate_unit_ids")))
    x = a[last]
    if how == "shape":  # one trial of a folder with another shape (one element more on the first axis)
        a[last] = np.concatenate([x, x[:1]]) if x.ndim else np.zeros(2, x.dtype)
        scan.broken = last
    elif how == "dtype":
        a[last] = np.nan_to_num(x).astype("<f2" if x.dtype.kind == "u" else "|u1")
        scan.broken = last
    elif how == "byteorder":  # the same values, the other byte order: still not the folder's dtype
        a[last] = x.astype(x.dtype.newbyteorder("S")) if x.dtype.itemsize > 1 else x.astype("<i2")
        scan.broken = last
    elif how == "missing_trial":
        victim = draw(st.integers(0, scan.n_trials - 2))
        del a[f"data/{key}/{victim}.npy"]
        scan.broken = f"data/{key}/{victim}.npy"
    elif how == "trial_meta_rows":
        rel = draw(st.sampled_from(sorted(p for p in a if p.startswith("meta/trials/"))))
        a[rel] = np.concatenate([a[rel], a[rel][:1]])
        scan.broken = rel
    elif how == "neuron_meta_rows":
        rel = draw(st.sampled_from(sorted(p for p in a if p.startswith("meta/neurons/"))))
        a[rel] = np.concatenate([a[rel], a[rel][:1]])
        scan.broken = rel
    elif how == "missing_tiers":
        del a["meta/trials/tiers.npy"]
        scan.broken = "meta/trials/tiers.npy"
    elif how == "missing_unit_ids":
        del a["meta/neurons/unit_ids.npy"]
        scan.broken = "meta/neurons/unit_ids.npy"
    else:
        u = a["meta/neurons/unit_ids.npy"]
        if len(u) < 2:
            a["meta/neurons/unit_ids.npy"] = np.concatenate([u, u])  # also one row too many
        else:
            u[-1] = u[0]
        scan.broken = "meta/neurons/unit_ids.npy"
    return scan


def write_scan(scan: Scan, where: Path, as_zip: bool = False) -> Path:
    """Write the dataset folder ``where/<name>`` (or ``where/<name>.zip`` holding it); return it."""
    folder = where / scan.name
    for rel, x in scan.arrays.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, x, allow_pickle=False)
    for rel, data in scan.other.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    if not as_zip:
        return folder
    out = where / f"{scan.name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(where).as_posix())
    return out
