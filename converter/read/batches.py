"""What the PyTorch datasets of both kinds of scan share: items, batches, samplers, tiers, neurons.

`converter.read.torch` (image scans) and `converter.read.video` (video scans) build on this module;
it imports neither.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset, Sampler
    from torch.utils.data import default_collate
except ImportError as e:  # pragma: no cover - exercised in a subprocess without torch
    raise ImportError(
        "converter.torch needs PyTorch, which is not installed: pip install 'sensorium-zarr[torch]'"
    ) from e

from .. import contract
from .engine import open_reader
from .select import labels, neurons_where

DEFAULT_KEYS = contract.DATA_KEYS


class Trial(dict):
    """One trial, or a batch of them: ``item.images`` and ``item["images"]`` alike."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Batch(Sequence):
    """The items of one `MouseDataset.__getitems__` call: views of one batch, made on demand."""

    def __init__(self, batch: Trial, n: int) -> None:
        self.batch, self._n = batch, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(self._n))]
        if not -self._n <= j < self._n:
            raise IndexError(j)
        return Trial({k: v[j] for k, v in self.batch.items()})


def collate(items):
    """Collate for `DataLoader`: a batch read at once is returned as is, without a copy."""
    if isinstance(items, _Batch):
        return items.batch
    return default_collate(items)


class SubsetSequentialSampler(Sampler[int]):
    """The given indices, in order (neuralpredictors' sampler of the same name)."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def tier_mask(store, tiers: np.ndarray, tier: str | Sequence[str] | None) -> np.ndarray:
    """Which stored trials belong to ``tier`` (one name or several; ``None``: all); a tier the
    store does not have is a `ValueError` that lists the ones it has."""
    if tier is None:
        return np.ones(len(tiers), bool)
    wanted = [tier] if isinstance(tier, str) else list(tier)
    unknown = sorted(set(wanted) - set(tiers.tolist()))
    if unknown:
        raise ValueError(f"{store}: no tier {unknown[0]!r}; the store has {sorted(set(tiers.tolist()))}")
    return np.isin(tiers, wanted)


class StoreDataset(Dataset):
    """What `MouseDataset` and `converter.torch.VideoDataset` share: one reader per variable and
    process, pickling without them, and items and batches made by the subclass's ``batch``.

    Subclasses set ``store``, ``storage_options``, ``keys``, ``behavior_channels``,
    ``pupil_channels``, ``trials`` (the stored position of each
    item), ``_meta`` (the consolidated metadata), ``_readers``, ``_memory`` and ``_pid``.
    """

    def __len__(self) -> int:
        return len(self.trials)

    def channel_keys(self) -> list[str]:
        """The variables added to the stimulus as channels (``behavior_channels``, ``pupil_channels``), in order."""
        return [k for k, f in (("behavior", self.behavior_channels), ("pupil_center", self.pupil_channels)) if f]

    def needed_keys(self) -> list[str]:
        """The variables read for an item: ``keys``, then those added as channels."""
        return list(dict.fromkeys([*self.keys, *self.channel_keys()]))

    def __getstate__(self) -> dict:
        # open arrays and in-memory copies stay behind; each worker opens its own
        return {**self.__dict__, "_memory": {}, "_readers": {}, "_pid": None}

    def _reader(self, key: str):
        if self._pid != os.getpid():  # a zarr event loop (stores at URLs) must not cross a fork
            self._readers, self._pid = {}, os.getpid()
        if key not in self._readers:
            copy = contract.row_copy_path(key)  # whole trials, and windows of one, read fastest from the trial-major copy
            name = copy if copy in self._meta else key
            self._readers[key] = open_reader(self.store, name, self.storage_options, self._meta.get(name))
        return self._readers[key]

    def batch(self, indices: Sequence[int]) -> Trial:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Trial:
        b = self.batch([i])
        return Trial({k: torch.from_numpy(np.ascontiguousarray(v[0])) for k, v in b.items()})

    def __getitems__(self, indices: Sequence[int]) -> _Batch:
        b = Trial({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.batch(indices).items()})
        return _Batch(b, len(indices))


def as_stores(stores: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """The stores a loader function was given: one path, or a sequence of them (a path is not
    read as a sequence of one-letter stores)."""
    return [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)


def neuron_positions(ds: StoreDataset, areas, layers, neuron_ids) -> np.ndarray | None:
    """Neuron positions as ``static_loader`` selects them: ids in the order given, else area/layer."""
    if neuron_ids is not None:
        if areas is not None or layers is not None:
            raise ValueError("neuron_ids cannot be combined with areas or layers")
        pos = {int(u): k for k, u in enumerate(ds.unit_ids)}
        try:
            return np.array([pos[int(u)] for u in labels([int(u) for u in neuron_ids], what="neuron id")], dtype=np.intp)
        except KeyError as e:
            raise ValueError(f"{ds.store}: no neuron with unit id {e.args[0]}") from None
    if areas is None and layers is None:
        return None
    return neurons_where(ds.neuron_info, len(ds.unit_ids), areas, layers)
