"""The competition's metrics on plain arrays: pure functions, no store, no labels.

Definitions as in neuralpredictors' ``measures/np_functions.py`` and sensorium's
``utility/metrics.py``: ``(trials, neurons)`` arrays, one value per neuron.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8  # added to each standard deviation, as neuralpredictors' ``corr`` does
FEV_THRESHOLD = 0.15  # neurons below it are left out of the summary FEVE


def check_finite(predictions: np.ndarray, trials: np.ndarray, neurons: np.ndarray) -> None:
    """The one rule for missing predictions, the same for every metric: none may be NaN (or
    infinite) where it is scored.  ``predictions`` is ``(samples, neurons)``, ``trials`` the trial
    of each sample; a `ValueError` counts the bad values and names the first."""
    bad = ~np.isfinite(predictions)
    if bad.any():
        s, k = np.argwhere(bad)[0]
        raise ValueError(f"predictions: {int(bad.sum())} values are NaN or infinite, in {int(bad.any(axis=0).sum())} of "
                         f"{bad.shape[1]} neurons (first: trial {trials[s]}, neuron {neurons[k]}); every scored "
                         "prediction must be a number")


def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column correlation of two ``(samples, neurons)`` arrays: z-scores with ``ddof=0``
    and `EPS` added to each standard deviation, then the mean of their product."""
    za = (a - a.mean(axis=0, keepdims=True)) / (a.std(axis=0, keepdims=True) + EPS)
    zb = (b - b.mean(axis=0, keepdims=True)) / (b.std(axis=0, keepdims=True) + EPS)
    return (za * zb).mean(axis=0)


def groups(image_ids: np.ndarray) -> list[np.ndarray]:
    """Row positions of each image's repeats, images in ascending id order."""
    ids, inverse = np.unique(image_ids, return_inverse=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse.reshape(-1), minlength=len(ids)))[:-1])


def correlation_to_average(responses: np.ndarray, predictions: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Correlation of the per-image means of responses and predictions, per neuron."""
    rows = groups(image_ids)
    return corr(np.stack([responses[g].mean(axis=0) for g in rows]), np.stack([predictions[g].mean(axis=0) for g in rows]))


def fev(responses: np.ndarray, predictions: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(FEV, FEVE)`` per neuron, over the images shown at least twice.

    Total variance with ``ddof=1`` over all their trials; noise variance the mean of the
    per-image variances (``ddof=1``); FEVE ``= 1 - (MSE - noise) / (total - noise)``.
    """
    rows = [g for g in groups(image_ids) if len(g) > 1]
    if not rows:
        nan = np.full(responses.shape[1], np.nan)
        return nan, nan.copy()
    everything = np.concatenate(rows)
    total = responses[everything].var(axis=0, ddof=1)
    noise = np.mean([responses[g].var(axis=0, ddof=1) for g in rows], axis=0)
    mse = ((responses[everything] - predictions[everything]) ** 2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (total - noise) / total, 1 - (mse - noise) / (total - noise)


def oracle_jackknife(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Correlation of each repeat with the mean of the other repeats of its image, per neuron
    (neuralpredictors' ``oracle_corr_jackknife``), over the images shown at least twice."""
    rows = [g for g in groups(image_ids) if len(g) > 1]
    if not rows:
        return np.full(responses.shape[1], np.nan)
    own = np.concatenate([responses[g] for g in rows])
    others = np.concatenate([(responses[g].sum(axis=0, keepdims=True) - responses[g]) / (len(g) - 1) for g in rows])
    return corr(own, others)
