"""The Sensorium 2023 metrics on video stores: `frame_scores`, `frame_oracle`.

The competition scores each neuron's correlation between predicted and measured responses
over the frames of every trial of a tier concatenated, after skipping each trial's first
`SKIP_FRAMES` frames (the model's burn-in) and its padding.  Predictions and responses meet by
label (``trial`` file numbers, ``neuron`` unit ids; `converter.read.score` aligns them); frames by position.
"""

from __future__ import annotations

import hashlib

import numpy as np
import xarray as xr

from .. import contract
from . import metrics
from .score_parts import aligned, summary, tier_trials

SKIP_FRAMES = 50


def _frames(ds: xr.Dataset, values: np.ndarray, skip: int) -> np.ndarray:
    """``(trial, neuron, frame)`` values as ``(frames, neuron)``: each trial's frames ``skip`` .. ``n_frames``."""
    return np.concatenate([v[:, skip:n].T for v, n in zip(values, ds[contract.N_FRAMES].values.tolist())])


def score_video(ds: xr.Dataset, predictions: xr.DataArray, tier: str) -> xr.Dataset:
    """`converter.score` for a video scan: predictions ``(trial, neuron, frame)`` aligned by label, then `frame_scores`."""
    ds = tier_trials(ds, tier)
    pred = aligned(predictions, ds[contract.TRIAL].values, ds[contract.NEURON].values, f"tier {tier!r}", ds.sizes[contract.FRAME])
    return frame_scores(ds, pred, tier)


def oracle_video(ds: xr.Dataset, tier: str) -> xr.DataArray:
    """`converter.oracle` for a video scan: repeats are the trials with identical videos (`frame_oracle`)."""
    ds = tier_trials(ds, tier, file_order=False)
    return summary(frame_oracle(ds), ds, tier)


def frame_scores(ds: xr.Dataset, predictions: np.ndarray, tier: str, skip: int = SKIP_FRAMES) -> xr.Dataset:
    """``single_trial_correlation`` per neuron of one tier's trials (already selected in ``ds``), from
    ``predictions`` ``(trial, neuron, frame)`` aligned with them (`converter.read.score.score` aligns)."""
    if (ds[contract.N_FRAMES].values <= skip).all():
        raise ValueError(f"tier {tier!r}: no trial has frames after the first {skip}")
    resp = _frames(ds, np.asarray(ds["responses"].values, dtype=np.float64), skip)
    scored = _frames(ds, predictions, skip)  # the padding and the first frames may hold anything
    trial_of = np.repeat(ds[contract.TRIAL].values, np.maximum(ds[contract.N_FRAMES].values - skip, 0))
    metrics.check_finite(scored, trial_of, ds[contract.NEURON].values)
    values = metrics.corr(scored, resp)
    out = xr.Dataset({"single_trial_correlation": (contract.NEURON, values)}, coords={contract.NEURON: ds[contract.NEURON].values})
    out.attrs = {"tier": tier, "n_trials": ds.sizes[contract.TRIAL], "n_neurons": ds.sizes[contract.NEURON], "n_frames_scored": len(resp),
                 "skipped_frames_per_trial": skip, "single_trial_correlation": float(values.mean())}
    return out


def video_ids(ds: xr.Dataset) -> np.ndarray:
    """An id per trial that equal videos share (the stores keep no clip id): a hash of the valid frames."""
    ids = {}
    out = []
    for t in ds[contract.TRIAL].values.tolist():
        row = ds.sel(trial=t)
        video = np.ascontiguousarray(row[contract.VIDEOS].values[..., : int(row[contract.N_FRAMES])])
        out.append(ids.setdefault(hashlib.sha256(video.tobytes()).hexdigest(), len(ids)))
    return np.array(out)


def frame_oracle(ds: xr.Dataset, skip: int = SKIP_FRAMES) -> np.ndarray:
    """Each neuron's jackknife oracle correlation over the repeats of one tier's clips (``ds``):
    every frame of a repeat against the same frame of the mean of its other repeats."""
    ids = video_ids(ds)
    n = ds[contract.N_FRAMES].values
    resp = np.asarray(ds["responses"].values, dtype=np.float64)
    rows, keys = [], []
    for t, clip in enumerate(ids.tolist()):
        frames = np.arange(skip, int(n[t]))
        rows.append(resp[t][:, frames].T)
        keys.append(clip * resp.shape[-1] + frames)  # one "image" per (clip, frame)
    if not rows or not sum(len(k) for k in keys):
        return np.full(resp.shape[1], np.nan)
    return metrics.oracle_jackknife(np.concatenate(rows), np.concatenate(keys))
