"""PyTorch access to stores: a drop-in for ``FileTreeDataset`` and ``static_loaders``.

Install with ``pip install 'sensorium-zarr[torch]'``.  Items are `Trial` objects (a dict
with attribute access), which pickle, so multi-worker loading works under fork and spawn.
``__getitems__`` reads a whole batch with one read per variable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

try:
    import torch
    from torch.utils.data import DataLoader, SubsetRandomSampler
except ImportError as e:  # pragma: no cover - exercised in a subprocess without torch
    raise ImportError(
        "converter.torch needs PyTorch, which is not installed: pip install 'sensorium-zarr[torch]'"
    ) from e

from .. import contract
from ..kinds import kind_of
from ..storage import open_group
from ..store_info import checked_root
from ..zarrlite.reader import into
from .normalize import Normalizer, add_channels
from .statistics import trial_statistics
from .select import labels, one_store_per_key
from .batches import DEFAULT_KEYS, StoreDataset, SubsetSequentialSampler, Trial, as_stores, collate, neuron_positions, tier_mask  # noqa: F401  (public here)
from .device import DeviceLoader, refuse_for_device

# Variables of at most this many bytes a trial (behavior, pupil center) are read whole, once: a
# batch of their rows would decode a chunk of 1024 trials per 128 rows (0.9-1.7 ms of an 18-27 ms batch).
FEW_BYTES = 64


class MouseDataset(StoreDataset):
    """The trials of one store as a PyTorch dataset.

    Parameters
    ----------
    store : str or os.PathLike
        A store written by `converter.convert`.
    tier : str or sequence of str, optional
        ``None``: item ``i`` is the trial of file ``i.npy``.  A tier name, or several: the
        items are that tier's trials in file order (``trial_ids`` names them).
    keys : sequence of str
        Data variables in each item, in this order.
    normalize : bool
        Apply ``NeuroNormalizer`` (statistics ``stats_source``); outputs float32.
    in_memory : bool
        Read each variable whole on first use and serve batches from memory; otherwise
        every batch is read from the store.
    neurons : sequence of int, optional
        Positions on the neuron axis to keep in ``responses`` (``None``: all).
    behavior_channels, pupil_channels : bool
        Append behavior / pupil center to the image as constant channels
        (``AddBehaviorAsChannels`` / ``AddPupilCenterAsChannels``).
    stats_source : str
        The statistics used to normalise: ``statistics/<key>/<stats_source>``.
    float32 : bool, optional
        Cast every output to float32, as the official ``ToTensor`` does; default: only when
        normalising or adding channels (otherwise items keep the source dtypes).
    storage_options : dict, optional
        For a store at a URL, passed to fsspec.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        *,
        tier: str | Sequence[str] | None = None,
        keys: Sequence[str] = DEFAULT_KEYS,
        normalize: bool = False,
        in_memory: bool = False,
        neurons: Sequence[int] | None = None,
        behavior_channels: bool = False,
        pupil_channels: bool = False,
        stats_source: str = "all",
        float32: bool | None = None,
        storage_options: dict | None = None,
    ) -> None:
        self.store = str(store)
        self.storage_options = storage_options
        root = checked_root(store, storage_options)
        attrs = root["attributes"]
        kind = kind_of(attrs)
        if not isinstance(self, kind.part("dataset")):
            raise ValueError(f"{store}: a {kind.name} scan: use converter.torch.{kind.part('dataset').__name__}")
        self._meta = (root.get("consolidated_metadata") or {}).get("metadata") or {}
        self.data_key = attrs["data_key"]
        self.keys = tuple(keys)
        missing = [k for k in self.keys if k not in attrs["data_keys"]]
        if missing:
            raise ValueError(f"{store}: no data variable {missing[0]!r} (has {attrs['data_keys']})")
        group = open_group(self.store, storage_options)
        labels = group[contract.TRIAL][...]  # the file number stored at each position
        tiers = np.asarray(group[contract.TIER][...], dtype=object)
        positions = np.flatnonzero(tier_mask(store, tiers, tier))
        positions = positions[np.argsort(labels[positions], kind="stable")]
        self.trials = positions  # stored position of each item; items in file order
        self.trial_ids = labels[positions]  # the file number of each item
        self.tiers = tiers[positions]
        self.image_ids = group[contract.IMAGE_ID][...][positions] if contract.IMAGE_ID in group else None
        self.unit_ids = group[contract.NEURON][...] if contract.NEURON in group else None
        self.neuron_info = {k: np.asarray(group[k][...], dtype=object) for k in (contract.AREA, contract.LAYER) if k in group}
        self.neurons = None if neurons is None else np.asarray(neurons, dtype=np.intp)
        self.normalizer = Normalizer.from_statistics(trial_statistics(self.store, stats_source, storage_options, self.keys), stats_source) if normalize else None
        self.behavior_channels, self.pupil_channels = behavior_channels, pupil_channels
        for flag, key in ((behavior_channels, "behavior"), (pupil_channels, "pupil_center")):
            if flag and key not in attrs["data_keys"]:
                raise ValueError(f"{store}: no {key} to add as image channels")
        self.float32 = normalize or behavior_channels or pupil_channels if float32 is None else float32
        self.in_memory = in_memory
        self._memory: dict[str, np.ndarray] = {}
        self._readers: dict = {}
        self._pid: int | None = None

    def __repr__(self) -> str:
        mode = "in memory" if self.in_memory else "on disk"
        return f"MouseDataset({self.data_key}, {len(self)} trials, keys={self.keys}, normalize={self.normalizer is not None}, {mode})"

    def load(self) -> MouseDataset:
        """Read every variable this dataset serves into memory now; returns self."""
        for key in self.needed_keys():
            if key not in self._memory:
                self._memory[key] = self._reader(key).read()
        self.in_memory = True
        return self

    def _row_bytes(self, key: str) -> int:
        reader = self._reader(key)
        return int(np.prod(reader.shape[1:], dtype=np.int64)) * np.dtype(reader.dtype).itemsize

    def _read(self, key: str, trials: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``trials`` (any order, repeats allowed) of one variable (into ``out``, when given)."""
        if self.in_memory or key in self._memory or self._row_bytes(key) <= FEW_BYTES:
            if key not in self._memory:  # behavior, pupil center: a few values a trial, read whole once
                self._memory[key] = self._reader(key).read()
            whole = self._memory[key]
            if out is None:
                return whole[trials]  # one gather, one copy
            # "clip" writes straight into ``out`` ("raise" buffers it); trials are this dataset's own positions
            return np.take(whole, trials, axis=0, out=into(out, (len(trials), *whole.shape[1:]), whole.dtype), mode="clip")
        return self._reader(key).read((trials,), out)

    def batch(self, indices: Sequence[int]) -> Trial:
        """Items ``indices`` stacked along a first axis, as numpy arrays."""
        trials = self.trials[np.asarray(indices, dtype=np.intp)]
        raw = {key: self._read(key, trials) for key in self.needed_keys()}
        out = Trial()
        for key in self.keys:  # ``raw`` is new memory: normalised in place
            x = raw[key]
            if self.normalizer is not None:
                x = self.normalizer.in_place(key, x)
            out[key] = x
        if self.channel_keys():
            extra = [out[key] if key in out else (self.normalizer.in_place(key, raw[key]) if self.normalizer else raw[key]) for key in self.channel_keys()]
            out["images"] = add_channels(out["images"], *extra)
        if self.neurons is not None and "responses" in out:
            out["responses"] = out["responses"][:, self.neurons]
        if self.float32:
            for key in out:
                out[key] = out[key].astype(np.float32, copy=False)
        return out


def loaders(
    stores: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    batch_size: int,
    tier: str | None = None,
    normalize: bool = True,
    include_behavior: bool = False,
    add_behavior_as_channels: bool = True,
    include_eye_position: bool = False,
    add_eye_pos_as_channels: bool = False,
    areas: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    neuron_ids: Sequence[Sequence[int] | None] | None = None,
    image_ids: Sequence[Sequence[int] | None] | None = None,
    in_memory: bool = False,
    seed: int | None = None,
    device: str | torch.device | None = None,
    **dataloader_kwargs,
) -> dict[str, dict[str, DataLoader | DeviceLoader]]:
    """``{tier: {data_key: DataLoader}}``, like ``sensorium``'s ``static_loaders``.

    ``train`` is sampled at random, ``validation``, ``test`` and ``final_test`` in order
    (a tier absent from a store is left out).  Items hold ``images`` and ``responses``,
    plus ``behavior`` and ``pupil_center`` when included; behavior and pupil center also
    become extra image channels with ``add_behavior_as_channels`` / ``add_eye_pos_as_channels``.
    ``stores`` is one store or a list of them.  ``neuron_ids`` and ``image_ids`` hold one list
    (or ``None``) per store; ``image_ids`` restricts the ``train`` tier to those images.  Other
    keyword arguments (``num_workers``, ``multiprocessing_context``, ...) go to every `DataLoader`.

    With ``device`` (``"cuda"``, ``"cpu"``, ...) the loaders are `DeviceLoader` s instead: batches
    arrive on that device, normalised there, with the same values; no worker processes
    (``DataLoader`` options, ``image_ids`` and ``in_memory`` do not apply).

    Sensorium 2023 stores get `converter.torch.video_loaders` (clips of ``frames`` frames,
    keyword arguments as there); the image-only options must then keep their defaults.
    """
    stores = as_stores(stores)
    kind = kind_of(checked_root(stores[0], dataloader_kwargs.get("storage_options"))["attributes"]) if stores else None
    if kind is not None and kind.part("loaders") is not loaders:
        image_only = {"add_behavior_as_channels": add_behavior_as_channels is not True, "include_eye_position": include_eye_position,
                      "add_eye_pos_as_channels": add_eye_pos_as_channels, "areas": areas is not None, "layers": layers is not None,
                      "image_ids": image_ids is not None, "in_memory": in_memory}
        given = [k for k, v in image_only.items() if v]
        if given:
            raise ValueError(f"{stores[0]}: a {kind.name} scan; {given[0]} applies to image scans only")
        return kind.part("loaders")(stores, batch_size, tier=tier, normalize=normalize, include_behavior=include_behavior,
                             neuron_ids=neuron_ids, seed=seed, device=device, **dataloader_kwargs)
    if device is not None:
        refuse_for_device(dataloader_kwargs, image_ids=image_ids is not None, in_memory=in_memory)
    keys = ["images", "responses"]
    if include_behavior:
        keys.append("behavior")
    if include_eye_position:
        keys.append("pupil_center")
    tiers = [tier] if tier else list(contract.TIERS)
    out: dict[str, dict[str, DataLoader]] = {t: {} for t in tiers}
    seen: dict[str, object] = {}
    for k, store in enumerate(stores):
        ds = MouseDataset(
            store,
            keys=keys,
            normalize=normalize,
            in_memory=in_memory,
            behavior_channels=include_behavior and add_behavior_as_channels,
            pupil_channels=add_eye_pos_as_channels,
            float32=True,
        )
        one_store_per_key(seen, ds.data_key, store)
        ds.neurons = neuron_positions(ds, areas, layers, neuron_ids[k] if neuron_ids else None)
        ids = labels([int(i) for i in image_ids[k]], what="image_id") if image_ids else None
        if ids is not None and ds.image_ids is None:
            raise ValueError(f"{store}: no image_id coordinate to select images by (the source had no meta/trials/frame_image_id.npy)")
        generator = None if seed is None else torch.Generator().manual_seed(seed + k)
        if tier is not None and tier not in set(ds.tiers.tolist()):
            raise ValueError(f"{store}: no tier {tier!r}; the store has {sorted(set(ds.tiers.tolist()))}")
        for t in tiers:
            subset = np.flatnonzero(ds.tiers == t)
            if t == "train" and ids is not None:
                first = {}
                for pos in np.flatnonzero(np.isin(ds.image_ids, list(ids))):
                    first.setdefault(int(ds.image_ids[pos]), pos)
                missing = [int(i) for i in ids if int(i) not in first]
                if missing:  # as the official loader, never drop requested images silently
                    raise ValueError(f"{store}: no trial shows image_ids {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
                subset = np.array([first[int(i)] for i in ids], dtype=np.intp)
                if np.any(ds.tiers[subset] != "train"):
                    raise ValueError(f"{store}: image_ids contain validation or test images")
            if not len(subset):
                continue
            if device is not None:
                out[t][ds.data_key] = DeviceLoader(store, batch_size=batch_size, tier=t, device=device, seed=(seed or 0) + k, keys=keys,
                                                   normalize=normalize, neurons=ds.neurons, behavior_channels=ds.behavior_channels,
                                                   pupil_channels=ds.pupil_channels)
                continue
            sampler = SubsetRandomSampler(subset.tolist(), generator) if t == "train" else SubsetSequentialSampler(subset.tolist())
            out[t][ds.data_key] = DataLoader(ds, sampler=sampler, batch_size=batch_size, collate_fn=collate, **dataloader_kwargs)
    return {t: d for t, d in out.items() if d}
