"""Scoring predictions with the competition's metrics, from the store alone: `score`, `oracle`.

Predictions and responses meet by label (``trial`` file numbers, ``neuron`` unit ids), never by
position.  Responses are the competition's standardised ones (``ds.sensorium.standardize()``).
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from .. import contract
from . import metrics
from .dataset import open_mouse
from .score_parts import aligned, summary, tier_trials


def _dataset(store_or_dataset, storage_options: dict | None = None) -> xr.Dataset:
    if isinstance(store_or_dataset, xr.Dataset):
        return store_or_dataset
    return open_mouse(store_or_dataset, storage_options=storage_options)


def score(store_or_dataset, predictions: xr.DataArray, tier: str | None = None, *,
          storage_options: dict | None = None) -> xr.Dataset:
    """The competition's metrics of ``predictions`` on one tier, per neuron and in summary.

    Parameters
    ----------
    store_or_dataset : str, os.PathLike or xarray.Dataset
        A store, or a dataset opened with `open_mouse` (possibly a selection of neurons).
    predictions : xarray.DataArray
        Dims ``(trial, neuron)`` labelled with file numbers and unit ids, in any order and as any
        superset of the tier, in the units of ``ds.sensorium.standardize().responses``.
    tier : str, optional
        The tier to score (default ``test``; ``oracle`` for a Sensorium 2023 store).

    Returns
    -------
    xarray.Dataset
        ``single_trial_correlation``, ``correlation_to_average``, ``fev`` and ``feve`` on
        ``neuron``; ``attrs`` hold the summaries (means over neurons; for ``feve`` over the
        neurons with ``fev >= 0.15``) and the numbers of trials and neurons scored.  A
        Sensorium 2023 store takes predictions ``(trial, neuron, frame)`` and gives its
        competition's metric, `frame_scores`.
    """
    ds = _dataset(store_or_dataset, storage_options)
    kind = ds.sensorium.kind
    return kind.part("score")(ds, predictions, tier or kind.default_tier)


def score_images(ds: xr.Dataset, predictions: xr.DataArray, tier: str) -> xr.Dataset:
    """`score` for an image scan: the Sensorium 2022 metrics."""
    ds.sensorium._image_ids()  # the metrics average over an image's repeats: refuse early without ids
    ds = tier_trials(ds, tier).sensorium.standardize()
    trials, neurons = ds[contract.TRIAL].values, ds[contract.NEURON].values
    pred = aligned(predictions, trials, neurons, f"tier {tier!r}")
    metrics.check_finite(pred, trials, neurons)
    resp = np.asarray(ds["responses"].values, dtype=np.float64)
    ids = ds[contract.IMAGE_ID].values
    fev, feve = metrics.fev(resp, pred, ids)
    out = xr.Dataset(
        {
            "single_trial_correlation": (contract.NEURON, metrics.corr(pred, resp)),
            "correlation_to_average": (contract.NEURON, metrics.correlation_to_average(resp, pred, ids)),
            "fev": (contract.NEURON, fev),
            "feve": (contract.NEURON, feve),
        },
        coords={contract.NEURON: neurons},
    )
    kept = fev >= metrics.FEV_THRESHOLD
    out.attrs = {
        "tier": tier,
        "n_trials": len(trials),
        "n_neurons": len(neurons),
        "single_trial_correlation": float(out["single_trial_correlation"].mean()),
        "correlation_to_average": float(out["correlation_to_average"].mean()),
        "feve": float(feve[kept].mean()) if kept.any() else float("nan"),
        "feve_neurons": int(kept.sum()),
    }
    return out


def oracle(store_or_dataset, tier: str | None = None, *, storage_options: dict | None = None) -> xr.DataArray:
    """Each neuron's jackknife oracle correlation on ``tier``: every repeat of an image against the
    mean of its other repeats.  An upper bound for a model, needing none; ``attrs["mean"]`` is
    the mean over neurons.  In a Sensorium 2023 store (default tier ``oracle``) repeats are the
    trials with identical videos, compared frame by frame (`frame_oracle`)."""
    ds = _dataset(store_or_dataset, storage_options)
    kind = ds.sensorium.kind
    return kind.part("oracle")(ds, tier or kind.default_tier)


def oracle_images(ds: xr.Dataset, tier: str) -> xr.DataArray:
    """`oracle` for an image scan: every repeat of an image against the mean of its others."""
    ds.sensorium._image_ids()  # repeats are trials of one image: refuse without ids
    ds = tier_trials(ds, tier, file_order=False)  # the jackknife pairs each repeat with its own image's others: any order
    values = metrics.oracle_jackknife(np.asarray(ds["responses"].values, dtype=np.float64), ds[contract.IMAGE_ID].values)
    return summary(values, ds, tier)


def read_predictions(path: str | os.PathLike, store_or_dataset=None, storage_options: dict | None = None) -> xr.DataArray:
    """Predictions from a file: a Zarr store or NetCDF file with a ``prediction`` variable
    ``(trial, neuron)``, or the competition's submission CSV (columns ``trial_indices``,
    ``image_ids``, ``prediction``, ``neuron_ids``; trials named by ``trial_idx``, which the
    store maps to file numbers)."""
    path = str(path)
    if "://" not in path and not os.path.exists(path):
        raise ValueError(f"{path}: does not exist")
    if path.lower().endswith(".csv"):
        return _from_csv(path, _dataset(store_or_dataset, storage_options))
    try:
        if path.lower().endswith((".nc", ".nc4", ".netcdf")):
            opened = xr.open_dataset(path)
        else:
            opened = xr.open_zarr(path, consolidated=False)  # no warning about missing consolidated metadata
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: cannot read predictions ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if "prediction" not in opened:
        raise ValueError(f"{path}: no 'prediction' variable (has {sorted(opened.data_vars)})")
    return opened["prediction"]


def _from_csv(path: str, ds: xr.Dataset) -> xr.DataArray:
    import csv
    import json

    if "trial_idx" not in ds.coords:
        raise ValueError(f"{path}: the store has no trial_idx to match the CSV's trial_indices with")
    by_idx = {str(v): int(t) for v, t in zip(ds["trial_idx"].values.tolist(), ds[contract.TRIAL].values.tolist())}
    trials, rows, neurons = [], [], None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"trial_indices", "prediction", "neuron_ids"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: not a submission CSV (needs columns {sorted(need)}, has {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            try:
                ids, values = json.loads(row["neuron_ids"]), json.loads(row["prediction"])
            except ValueError:
                raise ValueError(f"{path}:{line}: prediction and neuron_ids must be lists like [1, 2, 3]") from None
            neurons = ids if neurons is None else neurons
            if ids != neurons or len(values) != len(ids):
                raise ValueError(f"{path}:{line}: neuron_ids differ from the first row's, or do not match the predictions")
            key = str(row["trial_indices"])
            if key not in by_idx:
                raise ValueError(f"{path}:{line}: trial_indices {key} is not a trial_idx of {ds.attrs.get('dataset', 'the store')}")
            trials.append(by_idx[key])
            rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return xr.DataArray(np.asarray(rows, dtype=np.float64), coords={contract.TRIAL: trials, contract.NEURON: neurons},
                        dims=(contract.TRIAL, contract.NEURON), name="prediction")
