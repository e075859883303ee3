"""Reading a store's statistics: as stored, or placed on the axes of one trial for normalising."""

from __future__ import annotations

import os

import numpy as np

from .. import contract
from ..storage import open_group
from .normalize import NEEDED, align


def read_statistics(path: str | os.PathLike, source: str = "all", storage_options: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{key: {stat: array}}`` from ``statistics/<key>/<source>/`` of a store, as stored."""
    return {key: {stat: arr[...] for stat, arr in arrays.items()} for key, arrays in _arrays(path, source, storage_options)[0].items()}


def trial_statistics(path: str | os.PathLike, source: str = "all", storage_options: dict | None = None,
                     keys=None) -> dict[str, dict[str, np.ndarray]]:
    """The statistics `Normalizer` uses, each shaped to broadcast against one trial of its key.

    Only keys the store holds as data variables (of ``keys``, if given) and only the statistics
    normalising needs are read.  A statistic no rule places on a trial's axes is a `ValueError`
    that names it (`converter.read.normalize.align`).
    """
    found, group = _arrays(path, source, storage_options)
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, arrays in found.items():
        if key not in NEEDED or key not in group or (keys is not None and key not in keys):
            continue
        data = group[key]
        trial_dims = tuple(data.metadata.dimension_names or ())[1:]
        out[key] = {stat: align(arrays[stat][...], tuple(arrays[stat].metadata.dimension_names or ()), key, trial_dims,
                                data.shape[1:], f"{contract.STATISTICS_GROUP}/{key}/{source}/{stat}")
                    for stat in NEEDED[key] if stat in arrays}
    return out


def _arrays(path, source: str, storage_options: dict | None):
    """``{key: {stat: zarr array}}`` of one statistics source, and the store's root group."""
    group = open_group(path, storage_options)
    if contract.STATISTICS_GROUP not in group:
        return {}, group
    return {key: dict(per_key[source].arrays()) for key, per_key in group[contract.STATISTICS_GROUP].groups() if source in per_key}, group
