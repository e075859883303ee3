"""PyTorch access to Sensorium 2023 stores: a drop-in for ``MovieFileTreeDataset`` with the
transforms of sensorium 2023's ``mouse_video_loader``, and `video_loaders` shaped like it.

An item is one trial cut to a window of ``frames`` valid frames, as the official chain
(``NeuroNormalizer``, ``CutVideos``, ``Subsequence``, ``ExpandChannels``, ``AddBehaviorAsChannels``,
``ToTensor``) gives it: ``videos`` ``(channels, frames, height, width)``, ``responses``
``(neurons, frames)``, ``behavior`` and ``pupil_center`` ``(2, frames)``, all float32.  Only the
window is read: its few inner chunks, not the trial's file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, SubsetRandomSampler

from .. import contract
from ..kinds import kind_of
from ..storage import open_group
from ..zarrlite.pool import in_runs
from ..zarrlite.reader import into
from ..store_info import checked_root
from .normalize import Normalizer
from .statistics import trial_statistics
from .select import one_store_per_key
from .batches import StoreDataset, SubsetSequentialSampler, Trial, as_stores, collate, neuron_positions, tier_mask
from .device import DeviceLoader, refuse_for_device


# A variable this small (behavior, pupil center: ~2 MB for a full mouse) is read whole on first
# use and served from memory: one read per item costs more than the whole variable.
SMALL_BYTES = 64 * 2**20


def _nbytes(reader) -> int:
    return int(np.prod(reader.shape, dtype=np.int64)) * np.dtype(reader.dtype).itemsize


class VideoDataset(StoreDataset):
    """The trials of one Sensorium 2023 store, each served as a window of ``frames`` valid frames.

    Parameters
    ----------
    store : str or os.PathLike
        A store `converter.convert` wrote from a 2023 scan.
    tier : str or sequence of str, optional
        Only these tiers' trials (``None``: every trial).  Items are in file order;
        ``trial_ids`` names them.
    frames : int
        Frames per item.  Trials with fewer valid frames (``n_frames``) than the window
        needs are left out (the official ``Subsequence`` fails on them); ``skipped`` names them.
    offset : int
        First frame of the window; ``-1``: uniformly random over every window that fits in
        the trial's valid frames, drawn anew for each item.
    keys : sequence of str
        Data variables in each item, in this order.
    normalize : bool
        ``NeuroNormalizer`` with statistics ``stats_source``, except the keys in ``exclude``.
    behavior_channels, pupil_channels : bool
        Append behavior / pupil center per frame to the video as channels
        (``AddBehaviorAsChannels`` / ``AddPupilCenterAsChannels``).
    neurons : sequence of int, optional
        Positions on the neuron axis to keep (``None``: all).
    seed : int, optional
        Seed of the random windows (``None``: torch's generator, seeded per worker).  With a seed
        the windows are the same on every run with the same ``num_workers``; each worker draws
        from its own stream (the seed and its id).
    storage_options : dict, optional
        For a store at a URL, passed to fsspec.
    """

    def __init__(self, store: str | os.PathLike, *, tier: str | Sequence[str] | None = None, frames: int = 50,
                 offset: int = -1, keys: Sequence[str] = contract.VIDEO_DATA_KEYS, normalize: bool = True,
                 exclude: Sequence[str] = (), behavior_channels: bool = False, pupil_channels: bool = False,
                 neurons: Sequence[int] | None = None, stats_source: str = "all", seed: int | None = None,
                 storage_options: dict | None = None) -> None:
        self.store, self.storage_options = str(store), storage_options
        root = checked_root(store, storage_options)
        attrs = root["attributes"]
        kind = kind_of(attrs)
        if not isinstance(self, kind.part("dataset")):
            raise ValueError(f"{store}: a {kind.name} scan: use converter.torch.{kind.part('dataset').__name__}")
        if frames < 1 or offset < -1:
            raise ValueError(f"need frames >= 1 and offset >= -1 (got {frames}, {offset})")
        self._meta = (root.get("consolidated_metadata") or {}).get("metadata") or {}
        self.data_key, self.keys, self.frames, self.offset = attrs["data_key"], tuple(keys), frames, offset
        self.behavior_channels, self.pupil_channels = behavior_channels, pupil_channels
        for k in self.needed_keys():
            if k not in attrs["data_keys"]:
                raise ValueError(f"{store}: no data variable {k!r} (has {attrs['data_keys']})")
        group = open_group(self.store, storage_options)
        labels = group[contract.TRIAL][...]
        tiers = np.asarray(group[contract.TIER][...], dtype=object)
        n_frames = group[contract.N_FRAMES][...]
        chosen = tier_mask(store, tiers, tier)
        fits = n_frames >= max(offset, 0) + frames
        self.skipped = np.sort(labels[chosen & ~fits])  # file numbers of trials too short for one window
        positions = np.flatnonzero(chosen & fits)
        self.trials = positions[np.argsort(labels[positions], kind="stable")]  # stored position of each item
        self.trial_ids, self.tiers, self.n_frames = labels[self.trials], tiers[self.trials], n_frames[self.trials]
        self.unit_ids = group[contract.NEURON][...] if contract.NEURON in group else None
        self.neurons = None if neurons is None else np.asarray(neurons, dtype=np.intp)
        keys = [k for k in attrs["data_keys"] if k not in set(exclude)]
        self.normalizer = Normalizer.from_statistics(trial_statistics(self.store, stats_source, storage_options, keys), stats_source) if normalize else None
        self.seed = seed
        self._generator: tuple[int | None, torch.Generator] | None = None  # made in each process that draws
        self._readers: dict = {}
        self._memory: dict[str, np.ndarray] = {}
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_generator": None}

    def __repr__(self) -> str:
        return f"VideoDataset({self.data_key}, {len(self)} trials, {self.frames} frames, keys={self.keys})"

    def offsets(self, indices: Sequence[int], generator: torch.Generator | None = None) -> np.ndarray:
        """The first frame of each item's window: ``offset``, or a fresh random one per item
        (drawn from ``generator``, by default `generator`)."""
        indices = np.asarray(indices, dtype=np.intp)
        if self.offset >= 0:
            return np.full(len(indices), self.offset, dtype=np.int64)
        room = torch.from_numpy(self.n_frames[indices] - self.frames + 1)  # windows that fit: 0 .. n - frames
        draw = self.generator() if generator is None else generator
        return (torch.rand(len(indices), generator=draw, dtype=torch.float64) * room).long().numpy()

    def generator(self) -> torch.Generator | None:
        """The random windows' generator: from ``seed`` and the DataLoader worker's id, made in the
        process that draws (a generator is never pickled into a worker: under ``spawn`` torch would
        put its state in shared memory).  ``None`` without a seed: torch's own, seeded per worker."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker = None if info is None else info.id
        if self._generator is None or self._generator[0] != worker:
            self._generator = (worker, torch.Generator().manual_seed(self.seed + 1_000_003 * (0 if worker is None else worker + 1)))
        return self._generator[1]

    def read(self, key: str, indices: Sequence[int], starts: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """The windows of items ``indices`` at ``starts`` of one variable, as stored:
        ``(items, ..., frames)`` in the stored dtype (into ``out``, when given)."""
        reader = self._reader(key)
        rest = (slice(None),) * (len(reader.shape) - 2)
        windows = [(int(self.trials[i]), int(s)) for i, s in zip(np.asarray(indices).tolist(), np.asarray(starts).tolist())]
        shape = (len(windows), *reader.shape[1:-1], self.frames)
        if key in self._memory or _nbytes(reader) <= SMALL_BYTES:
            if key not in self._memory:  # behavior, pupil center: a few MB per mouse, read once
                self._memory[key] = reader.read()
            whole = self._memory[key]
            out = into(out, shape, whole.dtype)
            if windows:
                np.stack([whole[p, ..., s : s + self.frames] for p, s in windows], out=out)
            return out
        out = into(out, shape, np.dtype(reader.dtype).newbyteorder("="))

        def fill(ks) -> None:
            for k in ks:
                p, s = windows[k]
                reader.read((np.array([p]), *rest, slice(s, s + self.frames)), out[k : k + 1])

        in_runs(fill, range(len(windows)), out.nbytes)  # the windows' inner chunks decode on the pool's threads
        return out

    def batch(self, indices: Sequence[int], offsets: Sequence[int] | None = None) -> Trial:
        """Items ``indices`` stacked along a first axis, as numpy arrays (windows at ``offsets``)."""
        indices = np.asarray(indices, dtype=np.intp)
        starts = self.offsets(indices) if offsets is None else np.asarray(offsets, dtype=np.int64)
        raw = {key: self.read(key, indices, starts) for key in self.needed_keys()}
        norm = {k: (self.normalizer.in_place(k, v) if self.normalizer is not None else v) for k, v in raw.items()}
        out = Trial()
        for key in self.keys:
            x = norm[key]
            if key == contract.VIDEOS:
                extra = [norm[k] for k in self.channel_keys()]
                x = _channels(np.moveaxis(x, -1, 1), extra)
            elif key == "responses" and self.neurons is not None:
                x = x[:, self.neurons]
            out[key] = x.astype(np.float32, copy=False)
        return out


def _channels(video: np.ndarray, extra: list[np.ndarray]) -> np.ndarray:
    """``(batch, channels, frames, height, width)`` float32: the clip, then each row of ``extra``
    per frame as a constant channel.  The official ``AddBehaviorAsChannels`` computes these in
    float64 before ``ToTensor``'s float32 cast; a float32 value survives that round trip
    exactly, so filling float32 directly gives the same bits without the float64 copies."""
    b, f, h, w = video.shape
    out = np.empty((b, 1 + sum(e.shape[1] for e in extra), f, h, w), dtype=np.float32)
    out[:, 0] = video
    c = 1
    for e in extra:
        out[:, c : c + e.shape[1]] = e.astype(np.float32, copy=False)[..., None, None]
        c += e.shape[1]
    return out


def video_loaders(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    batch_size: int,
    *,
    frames: int = 50,
    offset: int = -1,
    normalize: bool = True,
    exclude: Sequence[str] | None = None,
    include_behavior: bool = True,
    include_pupil_centers: bool = True,
    include_pupil_centers_as_channels: bool = False,
    tier: str | None = None,
    neuron_ids: Sequence[Sequence[int] | None] | None = None,
    seed: int | None = None,
    storage_options: dict | None = None,
    device: str | torch.device | None = None,
    **dataloader_kwargs,
) -> dict[str, dict[str, DataLoader | DeviceLoader]]:
    """``{tier: {data_key: DataLoader}}``, like sensorium 2023's ``mouse_video_loader``.

    ``train`` is sampled at random, every other tier in order.  Items hold ``videos`` and
    ``responses``, plus ``behavior`` (also as video channels) and ``pupil_center`` (as
    channels too with ``include_pupil_centers_as_channels``).  ``paths`` is one store or a list
    of them; ``neuron_ids`` holds one list of unit ids (or ``None``) per store.  Other keyword
    arguments go to every `DataLoader`.
    With ``device``, the loaders are `DeviceLoader` s: windows cut and normalised on the device.
    """
    paths = as_stores(paths)
    if device is not None:
        refuse_for_device(dataloader_kwargs)
    keys = [contract.VIDEOS, "responses"]
    if include_behavior:
        keys.append("behavior")
    if include_pupil_centers:
        keys.append("pupil_center")
    out: dict[str, dict[str, DataLoader]] = {}
    seen: dict[str, object] = {}
    for k, path in enumerate(paths):
        ds = VideoDataset(path, frames=frames, offset=offset, keys=keys, normalize=normalize, exclude=exclude or (),
                         behavior_channels=include_behavior, pupil_channels=include_pupil_centers and include_pupil_centers_as_channels,
                         seed=None if seed is None else seed + k, storage_options=storage_options)
        one_store_per_key(seen, ds.data_key, path)
        ds.neurons = neuron_positions(ds, None, None, neuron_ids[k] if neuron_ids else None)
        present = sorted(set(ds.tiers.tolist()), key=lambda t: (contract.VIDEO_TIERS + (t,)).index(t))
        if tier is not None and tier not in present:
            raise ValueError(f"{path}: no tier {tier!r} with trials of at least {frames} frames; it has {present}")
        generator = None if seed is None else torch.Generator().manual_seed(seed + k)
        for t in [tier] if tier else present:
            if device is not None:
                out.setdefault(t, {})[ds.data_key] = DeviceLoader(
                    path, batch_size=batch_size, tier=t, device=device, seed=(seed or 0) + k, frames=frames, offset=offset, keys=keys,
                    normalize=normalize, exclude=exclude or (), behavior_channels=ds.behavior_channels, pupil_channels=ds.pupil_channels,
                    neurons=ds.neurons, storage_options=storage_options)
                continue
            subset = np.flatnonzero(ds.tiers == t).tolist()
            sampler = SubsetRandomSampler(subset, generator) if t == "train" else SubsetSequentialSampler(subset)
            out.setdefault(t, {})[ds.data_key] = DataLoader(ds, sampler=sampler, batch_size=batch_size, collate_fn=collate,
                                                            **dataloader_kwargs)
    return out
