"""A scan at a glance: `overview`, one page drawn from the store alone.

Needs matplotlib (``pip install 'sensorium-zarr[plot]'``).  Reads little: four images, the
responses of at most `MAX_TRIALS` trials, the small per-trial variables and, for the
reliability panel, the test responses; so it stays quick for a full-size scan or one in S3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .. import contract
from . import metrics
from .plot_parts import _histogram, _neuron_order, _positions, _say, _stacked, _text, _tiers

try:
    from matplotlib.figure import Figure  # no pyplot: no backend or global state is touched
except ImportError as e:  # pragma: no cover - exercised in a subprocess without matplotlib
    raise ImportError("converter.plot needs matplotlib, which is not installed: pip install 'sensorium-zarr[plot]'") from e


def figure_path(out) -> Path:
    """Where ``show --out OUT`` writes: OUT, with ``.png`` added when it has no suffix.

    Refused in one line (`StoreError`) before anything is drawn: an existing folder, or a format
    matplotlib does not write.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from ..errors import StoreError

    out = Path(out)
    if out.is_dir():
        raise StoreError(f"{out}: is a folder; give the file to write, such as {out / 'overview.png'}")
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:
        raise StoreError(f"{out}: matplotlib does not write {out.suffix} figures; name a .png, .pdf or .svg file "
                         f"(or any of {', '.join(sorted(formats))})")
    return out


MAX_TRIALS = 200  # rows of the population-response panel
N_IMAGES = 4
REPEATED_TIERS = ("test", "final_test")


def _images(fig, cell, ds: xr.Dataset) -> np.ndarray:
    """A few stimuli, one per tier where possible; returns their trial labels."""
    tiers = _text(ds[contract.TIER].values)
    picks = []
    for t in [*contract.TIERS, *sorted(set(tiers) - set(contract.TIERS))]:
        picks += ds[contract.TRIAL].values[tiers == t][:1].tolist()
    for t in ds[contract.TRIAL].values.tolist():
        if len(picks) >= N_IMAGES:
            break
        if t not in picks:
            picks.append(t)
    picks = picks[:N_IMAGES]
    grid = cell.subgridspec(1, len(picks), wspace=0.05)
    images = ds["images"].sel(trial=picks).values if "images" in ds else None
    hidden = ds.sensorium.withheld("images").sel(trial=picks).values
    for k, t in enumerate(picks):
        ax = fig.add_subplot(grid[0, k])
        row = ds.sel(trial=t)
        title = f"{f'image {row[contract.IMAGE_ID].item()}' if contract.IMAGE_ID in row.coords else f'trial {t}'}\n{row[contract.TIER].item()}"
        if images is None or hidden[k]:
            _say(ax, "withheld", title)
            continue
        img = images[k]
        ax.imshow(img[0] if img.ndim == 3 else img, cmap="gray")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return np.array(picks)


def _population(fig, ax, ds: xr.Dataset) -> None:
    scored = ds[contract.TRIAL].values[~ds.sensorium.withheld("responses").values]
    title = "population response"
    if not len(scored) or "responses" not in ds:
        _say(ax, "responses withheld for every trial", title)
        return
    trials = scored[:MAX_TRIALS]
    order, by = _neuron_order(ds)
    values = ds["responses"].sel(trial=trials).values[:, order]
    std = values.std(axis=0, keepdims=True)
    z = (values - values.mean(axis=0, keepdims=True)) / np.where(std > 0, std, 1)
    im = ax.imshow(z, aspect="auto", cmap="magma", vmin=-1, vmax=3, interpolation="nearest")
    tier = _text(ds[contract.TIER].sel(trial=trials).values)
    ax.set_title(f"{title}: {len(trials)} trials ({', '.join(sorted(set(tier.tolist())))})")
    ax.set_xlabel(f"neuron (sorted by {by})")
    ax.set_ylabel("trial (stored order)")
    fig.colorbar(im, ax=ax, label="response (z-score per neuron)", fraction=0.04)


def _reliability(ax, ds: xr.Dataset) -> None:
    title = "reliability (oracle correlation)"
    tiers = _text(ds[contract.TIER].values)
    for t in REPEATED_TIERS:
        trials = ds[contract.TRIAL].values[tiers == t]
        if len(trials) and contract.IMAGE_ID in ds.coords and "responses" in ds and not ds.sensorium.withheld("responses").sel(trial=trials).any():
            sel = ds.sel(trial=trials)
            values = metrics.oracle_jackknife(np.asarray(sel["responses"].values, np.float64), sel[contract.IMAGE_ID].values)
            if np.isfinite(values).any():
                _histogram(ax, values, f"{title}, {t} repeats", "oracle correlation (jackknife)")
                return
    _say(ax, "no repeats with responses\n(withheld, no test tier, or no image ids)", title)


def _behavior(ax, ds: xr.Dataset) -> None:
    title = "behavior and pupil over trials"
    series = []
    for key in ("behavior", "pupil_center"):
        if key in ds:
            labels = ds[key].dims[1]
            for j, name in enumerate(_text(ds[labels].values) if labels in ds.coords else range(ds.sizes[labels])):
                series.append((f"{key}: {name}", key, j))
    if not series:
        _say(ax, "no behavior or pupil data", title)
        return
    idx = ds["trial_idx"].values if "trial_idx" in ds.coords else None
    timed = idx is not None and idx.dtype.kind in "iuf"
    order = np.argsort(idx, kind="stable") if timed else np.argsort(ds[contract.TRIAL].values, kind="stable")
    cache = {key: ds[key].values[order] for key in {k for _, k, _ in series}}
    drawn = []
    for label, key, j in series:
        y = cache[key][:, j].astype(np.float64)
        y[ds.sensorium.withheld(key).values[order]] = np.nan  # withheld trials are gaps, never zeros
        if np.isfinite(y).any():
            drawn.append((label, y))
    if not drawn:
        _say(ax, "withheld for every trial", title)
        return
    _stacked(ax, np.arange(len(order)), drawn, lw=0.5)
    ax.set_xlabel("trial, in time order (trial_idx)" if timed else "trial, in file order (trial_idx is hashed)")
    ax.set_title(title)


def overview(ds: xr.Dataset) -> Figure:
    """One page about one scan, the page of its kind (`converter.kinds`): for an image scan
    `image_overview`, for a video scan `converter.read.plot_video.video_overview`.

    ``ds`` is a dataset opened with `converter.open_mouse` (lazy: only what is drawn is read).
    Withheld data is drawn as withheld, never as zeros.
    """
    return ds.sensorium.kind.part("overview")(ds)


def image_overview(ds: xr.Dataset) -> Figure:
    """The page of an image scan: tiers, stimuli, responses, neuron positions, reliability, behavior."""
    fig = Figure(figsize=(15, 10), layout="constrained")
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1.25, 1])
    _tiers(fig.add_subplot(grid[0, 0]), ds)
    _images(fig, grid[0, 1:], ds)
    _population(fig, fig.add_subplot(grid[1, :2]), ds)
    _positions(fig.add_subplot(grid[1, 2]), ds)
    _reliability(fig.add_subplot(grid[2, 0]), ds)
    _behavior(fig.add_subplot(grid[2, 1:]), ds)
    a = ds.attrs
    fig.suptitle(f"{a.get('dataset', '')}   ({a.get('n_trials')} trials, {a.get('n_neurons')} neurons)", fontsize=12)
    return fig
