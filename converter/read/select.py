"""Selections shared by the xarray accessor and the torch datasets: pure functions on labels."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import contract


def as_list(values) -> list:
    """One value or several, as a list."""
    return [values] if isinstance(values, (str, int, np.integer)) else list(values)


def labels(*values, what: str = "label") -> list:
    """Labels given one by one, as lists, or mixed (``"a", ["b", "c"]``), as one flat list.

    A label given twice is a `ValueError` that names it.
    """
    flat = [v for value in values for v in as_list(value)]
    seen = set()
    for v in flat:
        if v in seen:
            raise ValueError(f"{what} {v!r} given twice")
        seen.add(v)
    return flat


def one_store_per_key(seen: dict, key: str, store) -> None:
    """Record that ``store`` holds data key ``key``; a second store of one key is a `ValueError`
    (loaders are keyed by data key: one of the two would be dropped)."""
    if key in seen:
        raise ValueError(f"{store}: holds data key {key!r}, as {seen[key]} does; give each mouse once")
    seen[key] = store


def neurons_where(info: Mapping[str, np.ndarray], n_neurons: int, area=None, layer=None) -> np.ndarray:
    """Positions of the neurons in any of the given areas and any of the given layers.

    ``info`` maps ``area`` and ``layer`` to one value per neuron; ``None`` selects all.
    """
    keep = np.ones(n_neurons, dtype=bool)
    for name, wanted in ((contract.AREA, area), (contract.LAYER, layer)):
        if wanted is None:
            continue
        if name not in info:
            raise ValueError(f"cannot select neurons by {name}: this store has no {name} coordinate")
        keep &= np.isin(np.asarray(info[name], dtype=object), labels(wanted, what=name))
    return np.flatnonzero(keep)
