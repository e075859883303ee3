"""What scoring a scan of either kind needs: a tier's trials, and predictions aligned with them by label."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import contract


def tier_trials(ds: xr.Dataset, tier: str, file_order: bool = True) -> xr.Dataset:
    """The tier's trials (in file order, or as stored: one contiguous read), refusing withheld
    responses (never scored as zeros)."""
    name = ds.attrs.get("dataset", "this store")
    if contract.TIER not in ds.coords or tier not in set(ds[contract.TIER].values.tolist()):
        have = sorted(set(ds[contract.TIER].values.tolist())) if contract.TIER in ds.coords else []
        raise ValueError(f"{name}: no tier {tier!r} to score (it has {have})")
    sel = ds.sensorium.tier(tier)
    sel = sel.sortby(contract.TRIAL) if file_order else sel
    withheld = int(sel.sensorium.withheld("responses").sum())
    if withheld:
        raise ValueError(f"{name}: the responses of tier {tier!r} are withheld ({withheld} of {sel.sizes[contract.TRIAL]} "
                         "trials all zero); they cannot be scored here, only by the competition")
    return sel


def aligned(predictions: xr.DataArray, trials: np.ndarray, neurons: np.ndarray, name: str,
             frames: int | None = None) -> np.ndarray:
    """``predictions`` as a ``(trial, neuron)`` array in the order of ``trials`` and ``neurons``;
    with ``frames``, a ``(trial, neuron, frame)`` one whose frame axis has that length."""
    dims = (contract.TRIAL, contract.NEURON) + ((contract.FRAME,) if frames is not None else ())
    if predictions.ndim != len(dims) or set(predictions.dims) != set(dims):
        raise ValueError(f"predictions: expected dims {dims}, found {predictions.dims}")
    if frames is not None and predictions.sizes[contract.FRAME] != frames:
        raise ValueError(f"predictions: {predictions.sizes[contract.FRAME]} frames per trial, the store's clips have "
                         f"{frames} (padding included)")
    for dim, wanted in ((contract.TRIAL, trials), (contract.NEURON, neurons)):
        if dim not in predictions.coords:
            raise ValueError(f"predictions: no {dim} labels (a {dim!r} coordinate of file numbers or unit ids)")
        have = predictions.indexes[dim]
        if not have.is_unique:
            raise ValueError(f"predictions: {dim} labels repeat")
        missing = [v for v in wanted.tolist() if v not in have]
        if missing:
            raise ValueError(f"predictions: no prediction for {len(missing)} {dim}s of {name} (first: {missing[0]})")
    out = predictions.sel({contract.TRIAL: trials, contract.NEURON: neurons}).transpose(*dims)
    return np.asarray(out.values, dtype=np.float64)


def summary(values: np.ndarray, ds: xr.Dataset, tier: str) -> xr.DataArray:
    """Per-neuron oracle correlations as a DataArray on ``neuron``, their mean in ``attrs``."""
    return xr.DataArray(values, coords={contract.NEURON: ds[contract.NEURON].values}, dims=(contract.NEURON,), name="oracle_correlation",
                        attrs={"tier": tier, "mean": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")})
