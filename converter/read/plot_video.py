"""A Sensorium 2023 scan at a glance: `video_overview`, drawn from the store alone.

Reads little: a few frames of one clip, the responses and behavior of that trial, and
the small per-trial and per-neuron coordinates.  `converter.plot.overview` calls it for
stores with a frame axis.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .. import contract
from .plot import _neuron_order, _positions, _say, _text, _tiers

N_FRAMES_SHOWN = 5


def _example(ds: xr.Dataset) -> int:
    """The trial drawn: the first training trial with responses (one with padding, if any), else the first trial."""
    tiers = _text(ds[contract.TIER].values)
    ok = tiers == "train"
    if contract.withheld_name("responses") in ds.coords:
        ok &= ~ds[contract.withheld_name("responses")].values
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
    ax.set_title(f"valid frames per trial (padded to {ds.sizes[contract.FRAME]})")
    ax.set_xlabel("frames before the NaN padding")
    ax.set_ylabel("trials")


def _behavior(ax, ds: xr.Dataset, trial: int) -> None:
    title = f"behavior and pupil, trial {trial}"
    drawn = 0
    t = ds[contract.FRAME_TIME].values if contract.FRAME_TIME in ds.coords else np.arange(ds.sizes[contract.FRAME])
    for key in ("behavior", "pupil_center"):
        if key not in ds:
            continue
        labels = ds[key].dims[1]
        names = _text(ds[labels].values) if labels in ds.coords else [str(j) for j in range(ds.sizes[labels])]
        values = ds[key].sel(trial=trial).values.astype(np.float64)
        for j, name in enumerate(names):
            y = values[j]
            s = np.nanstd(y)
            ax.plot(t, (y - np.nanmean(y)) / (s if s > 0 else 1) + 5 * drawn, lw=0.8, color=f"C{drawn}", label=f"{key}: {name}")
            drawn += 1
    if not drawn:
        _say(ax, "no behavior or pupil data", title)
        return
    n = int(ds[contract.N_FRAMES].sel(trial=trial))
    if n < len(t):
        ax.axvspan(t[n], t[-1], color="0.9", label="padding (NaN)")
    ax.set_yticks([])
    ax.set_ylabel("each z-scored, offset")
    ax.set_xlabel("time (s)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right", ncol=2)


def video_overview(ds: xr.Dataset) -> Figure:
    """One page about one 2023 scan: tiers, a clip, its population response, valid frames,
    neuron positions, behavior over the clip."""
    trial = _example(ds)
    fig = Figure(figsize=(15, 10), layout="constrained")
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1.25, 1])
    _tiers(fig.add_subplot(grid[0, 0]), ds)
    _clip(fig, grid[0, 1:], ds, trial)
    _population(fig, fig.add_subplot(grid[1, :2]), ds, trial)
    _positions(fig.add_subplot(grid[1, 2]), ds)
    _lengths(fig.add_subplot(grid[2, 0]), ds)
    _behavior(fig.add_subplot(grid[2, 1:]), ds, trial)
    a = ds.attrs
    fig.suptitle(f"{a.get('dataset', '')}   ({a.get('n_trials')} trials, {a.get('n_neurons')} neurons, "
                 f"{a.get('n_frames_padded')} frames per clip)", fontsize=12)
    return fig
