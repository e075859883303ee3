"""A Sensorium 2023 scan at a glance: `video_overview`, drawn from the store alone.

Reads little: a few frames of one clip, the responses and behavior of that trial, the
repeated clips of the ``oracle`` tier with the responses of at most `MAX_NEURONS` neurons,
and the small per-trial and per-neuron coordinates.  `converter.plot.overview` calls it for
stores with a frame axis.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .. import contract
from .plot_parts import _histogram, _neuron_order, _positions, _say, _stacked, _text, _tiers
from .score_video import SKIP_FRAMES, frame_oracle

N_FRAMES_SHOWN = 5
MAX_NEURONS = 512  # of the reliability panel: the first ones in stored order, a few tiles of the store
REPEATED_TIER = "oracle"


def _example(ds: xr.Dataset) -> int:
    """The trial drawn: the first training trial with responses (one with padding, if any), else the first trial."""
    tiers = _text(ds[contract.TIER].values)
    ok = (tiers == "train") & ~ds.sensorium.withheld("responses").values
    padded = ok & (ds[contract.N_FRAMES].values < ds.sizes[contract.FRAME])
    trials = ds[contract.TRIAL].values
    for pick in (padded, ok, np.ones(len(trials), bool)):
        if pick.any():
            return int(np.sort(trials[pick])[0])
    raise ValueError("a store without trials")


def _clip(fig, cell, ds: xr.Dataset, trial: int) -> None:
    n = int(ds[contract.N_FRAMES].sel(trial=trial))
    picks = np.unique(np.linspace(0, max(n - 1, 0), N_FRAMES_SHOWN).astype(int))
    frames = ds[contract.VIDEOS].sel(trial=trial).isel(frame=picks).values
    times = ds[contract.FRAME_TIME].values[picks] if contract.FRAME_TIME in ds.coords else picks
    grid = cell.subgridspec(1, len(picks), wspace=0.05)
    for k, f in enumerate(picks.tolist()):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(frames[..., k], cmap="gray")
        ax.set_title(f"trial {trial}, frame {f}\nt = {times[k]:.2f} s", fontsize=8)
        ax.axis("off")


def _population(fig, ax, ds: xr.Dataset, trial: int) -> None:
    title = f"population response, trial {trial}"
    if "responses" not in ds:
        _say(ax, "no responses", title)
        return
    order, by = _neuron_order(ds)
    values = ds["responses"].sel(trial=trial).values[order]
    n = int(ds[contract.N_FRAMES].sel(trial=trial))
    mean, std = np.nanmean(values, axis=1, keepdims=True), np.nanstd(values, axis=1, keepdims=True)
    z = (values - mean) / np.where(std > 0, std, 1)
    im = ax.imshow(z, aspect="auto", cmap="magma", vmin=-1, vmax=3, interpolation="nearest")
    if n < values.shape[1]:
        ax.axvline(n - 0.5, color="c", lw=1, label=f"padding from frame {n}")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title)
    ax.set_xlabel("frame")
    ax.set_ylabel(f"neuron (sorted by {by})")
    fig.colorbar(im, ax=ax, label="response (z-score per neuron)", fraction=0.04)


def _lengths(ax, ds: xr.Dataset) -> None:
    n = ds[contract.N_FRAMES].values
    ax.hist(n, bins=min(30, max(1, len(np.unique(n)))), color="0.45")
    ax.set_title(f"valid frames (padded to {ds.sizes[contract.FRAME]})")
    ax.set_xlabel("frames before the NaN padding")
    ax.set_ylabel("trials")


def _reliability(ax, ds: xr.Dataset) -> None:
    title = "reliability"  # short: three panels share the row
    tiers = _text(ds[contract.TIER].values)
    oracle = ds.isel(trial=np.flatnonzero(tiers == REPEATED_TIER), neuron=slice(0, MAX_NEURONS))
    if not oracle.sizes[contract.TRIAL] or "responses" not in ds or oracle.sensorium.withheld("responses").any():
        _say(ax, f"no repeats with responses\n(no {REPEATED_TIER} tier, or withheld)", title)
        return
    if (oracle[contract.N_FRAMES].values <= SKIP_FRAMES).all():
        _say(ax, f"{REPEATED_TIER} clips end within the first {SKIP_FRAMES} frames,\nwhich scoring skips", title)
        return
    values = frame_oracle(oracle)
    if not np.isfinite(values).any():
        _say(ax, f"no clip repeated in the {REPEATED_TIER} tier", title)
        return
    shown = oracle.sizes[contract.NEURON]
    _histogram(ax, values, f"{title}, {REPEATED_TIER} repeats", "oracle correlation (jackknife, per frame)",
               "neurons" if shown == ds.sizes[contract.NEURON] else f"neurons (first {shown} of {ds.sizes[contract.NEURON]})")


def _behavior(ax, ds: xr.Dataset, trial: int) -> None:
    title = f"behavior and pupil, trial {trial}"
    traces = []
    t = ds[contract.FRAME_TIME].values if contract.FRAME_TIME in ds.coords else np.arange(ds.sizes[contract.FRAME])
    for key in ("behavior", "pupil_center"):
        if key not in ds:
            continue
        labels = ds[key].dims[1]
        names = _text(ds[labels].values) if labels in ds.coords else [str(j) for j in range(ds.sizes[labels])]
        values = ds[key].sel(trial=trial).values.astype(np.float64)
        traces += [(f"{key}: {name}", values[j]) for j, name in enumerate(names)]
    if not traces:
        _say(ax, "no behavior or pupil data", title)
        return
    _stacked(ax, t, traces, lw=0.8)
    n = int(ds[contract.N_FRAMES].sel(trial=trial))
    if n < len(t):
        ax.axvspan(t[n], t[-1], color="0.9")
        ax.text((t[n] + t[-1]) / 2, 0.5, "padding (NaN)", rotation=90, ha="center", va="center", fontsize=8,
                color="0.35", transform=ax.get_xaxis_transform())
    ax.set_xlabel("time (s)")
    ax.set_title(title)


def video_overview(ds: xr.Dataset) -> Figure:
    """One page about one 2023 scan: tiers, a clip, its population response, neuron positions,
    valid frames, reliability over the repeated clips, behavior over the clip."""
    trial = _example(ds)
    fig = Figure(figsize=(15, 10), layout="constrained")
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1.25, 1])
    _tiers(fig.add_subplot(grid[0, 0]), ds)
    _clip(fig, grid[0, 1:], ds, trial)
    _population(fig, fig.add_subplot(grid[1, :2]), ds, trial)
    _positions(fig.add_subplot(grid[1, 2]), ds)
    bottom = grid[2, :].subgridspec(1, 3, width_ratios=[1, 1, 2])
    _lengths(fig.add_subplot(bottom[0, 0]), ds)
    _reliability(fig.add_subplot(bottom[0, 1]), ds)
    _behavior(fig.add_subplot(bottom[0, 2]), ds, trial)
    a = ds.attrs
    fig.suptitle(f"{a.get('dataset', '')}   ({a.get('n_trials')} trials, {a.get('n_neurons')} neurons, "
                 f"{a.get('n_frames_padded')} frames per clip)", fontsize=12)
    return fig
