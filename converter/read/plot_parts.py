"""Panels and helpers that both overview pages draw with (`converter.read.plot` for image scans,
`converter.read.plot_video` for video scans); it imports neither."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import contract
from ..kinds import tier_order


def _text(values: np.ndarray) -> np.ndarray:
    """Stored text (numpy's StringDType, which refuses ``astype(str)``) as Python strings."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


def _say(ax, text: str, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _histogram(ax, values: np.ndarray, title: str, xlabel: str, ylabel: str = "neurons") -> None:
    """Per-neuron values (NaN left out) as a histogram with their mean marked."""
    ax.hist(values[np.isfinite(values)], bins=30, color="C0")
    ax.axvline(np.nanmean(values), color="k", lw=1, ls="--", label=f"mean {np.nanmean(values):.2f}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def _stacked(ax, x: np.ndarray, traces: list[tuple[str, np.ndarray]], lw: float) -> None:
    """Each ``(label, y)`` z-scored and drawn 5 units above the previous one, named on the y axis."""
    for k, (_, y) in enumerate(traces):
        s = np.nanstd(y)
        ax.plot(x, (y - np.nanmean(y)) / (s if s > 0 else 1) + 5 * k, lw=lw, color=f"C{k}")
    ax.set_yticks([5 * k for k in range(len(traces))], [label for label, _ in traces], fontsize=8)
    ax.set_ylabel("each z-scored, offset")


def _tiers(ax, ds: xr.Dataset) -> None:
    names, counts = np.unique(_text(ds[contract.TIER].values), return_counts=True)
    order = sorted(range(len(names)), key=lambda k: tier_order(names[k]))
    bars = ax.bar([names[k] for k in order], [counts[k] for k in order], color="0.45")
    ax.bar_label(bars, fontsize=8)
    ax.margins(y=0.12)  # room for the tallest bar's label inside the frame
    ax.set_title("trials per tier")
    ax.set_ylabel("trials")
    ax.tick_params(axis="x", labelrotation=30 if len(names) > 4 else 20)
    if len(names) > 4:
        ax.set_xticks(ax.get_xticks(), ax.get_xticklabels(), ha="right", fontsize=8)


def _neuron_order(ds: xr.Dataset) -> tuple[np.ndarray, str]:
    """Neurons sorted by area, then depth (``cell_motor_coordinates`` z), when the store has them."""
    keys, what = [], []
    if "cell_motor_coordinates" in ds.coords and ds["cell_motor_coordinates"].shape[1:] == (3,):
        keys.append(ds["cell_motor_coordinates"].values[:, 2])
        what.append("depth")
    if contract.AREA in ds.coords:
        keys.append(_text(ds[contract.AREA].values))
        what.insert(0, "area")
    if not keys:
        return np.arange(ds.sizes[contract.NEURON]), "unit id"
    return np.lexsort(keys), ", then ".join(what)


def _positions(ax, ds: xr.Dataset) -> None:
    title = "neuron positions"
    if "cell_motor_coordinates" not in ds.coords or ds["cell_motor_coordinates"].shape[1:] != (3,):
        _say(ax, "no cell_motor_coordinates", title)
        return
    xyz = ds["cell_motor_coordinates"].values
    key = contract.AREA if contract.AREA in ds.coords else contract.LAYER if contract.LAYER in ds.coords else None
    labels = _text(ds[key].values) if key else np.array(["neuron"] * len(xyz))
    for k, name in enumerate(sorted(set(labels.tolist()))):
        keep = labels == name
        ax.scatter(xyz[keep, 0], xyz[keep, 1], s=4, label=f"{name} ({keep.sum()})", color=f"C{k}", alpha=0.7, linewidths=0)
    ax.set_title(f"{title}, by {key}" if key else title)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7, markerscale=3, loc="best")
