"""What `converter.read.device.DeviceLoader` asks of each kind of scan: how its items are read on
the host, gathered from a resident copy on the device, and finished there.

An image scan's item is a trial (`Rows`); a video scan's is a window of a trial's valid frames
(`Windows`).  Both finish a batch with the operations of their dataset's ``batch``, in the dtypes
numpy uses there, so the values are the same bit for bit.  Each kind names its class as its
``"device"`` part (`converter.kinds`).
"""

from __future__ import annotations

import numpy as np

from .batches import StoreDataset, Trial  # first: says how to install torch
from .normalize import OPERATIONS
from ..kinds import ScanKind

import torch  # noqa: E402,I001


class OnDevice:
    """The normaliser's steps (`Normalizer.steps`) with their constants as device tensors,
    applied in the dtypes numpy would use."""

    def __init__(self, ds: StoreDataset, device: torch.device) -> None:
        self.ops: dict[str, list[tuple[str, torch.Tensor]]] = {}
        if ds.normalizer is None:
            return
        for key in ds.needed_keys():
            dtype = np.dtype(ds._meta[key]["data_type"])
            ops = []
            for op, c in ds.normalizer.steps(key):
                c = np.asarray(c)
                dtype = np.result_type(dtype, c)
                ops.append((op, torch.from_numpy(np.ascontiguousarray(c.astype(dtype))).to(device)))
            self.ops[key] = ops

    def __call__(self, key: str, x: torch.Tensor) -> torch.Tensor:
        for op, c in self.ops.get(key, []):
            x = OPERATIONS[op](x.to(c.dtype), c)
        return x


def _as_channels(values: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-item values ``(batch, k[, frames])`` as ``k`` constant float32 channels shaped as
    ``like`` on every axis but ``axis``.  The official loaders fill these in float64 and cast to
    float32 at the end; casting first gives the same bits."""
    v = values.to(torch.float32)
    v = v.reshape(*v.shape, *([1] * (like.dim() - v.dim())))
    shape = list(like.shape)
    shape[axis] = values.shape[1]
    return v.expand(shape)


class _Items:
    """What both kinds share: the dataset, its normaliser on the device, and the stored rows."""

    def __init__(self, dataset: StoreDataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device
        self.keys = dataset.needed_keys()
        self.norm = OnDevice(dataset, device)

    def __len__(self) -> int:
        return len(self.dataset)

    def resident_bytes(self) -> int:
        """Bytes the tier's variables take on the device, whole trials in their stored dtypes."""
        total = 0
        for key in self.keys:
            meta = self.dataset._meta[key]
            total += int(np.prod(meta["shape"][1:], dtype=np.int64)) * np.dtype(meta["data_type"]).itemsize
        return total * len(self.dataset)

    def whole(self, key: str) -> np.ndarray:
        """Every item's trial of one variable, as stored: what a resident loader holds."""
        return self.dataset._reader(key).read((self.dataset.trials,))

    def _stimulus(self, x: torch.Tensor) -> torch.Tensor:
        """The stimulus as its dataset serves it, from the stored axis order."""
        return x

    def finish(self, raw: dict[str, torch.Tensor]) -> Trial:
        """A batch as the dataset's ``batch`` makes it, from the variables as stored."""
        ds = self.dataset
        norm = {k: self.norm(k, x) for k, x in raw.items()}
        out = Trial()
        for key in ds.keys:
            x = norm[key].to(torch.float32)
            if key == self.stimulus:
                x = self._stimulus(x)
                extra = [_as_channels(norm[k], x, self.channel_axis) for k in ds.channel_keys()]
                x = torch.cat([x, *extra], dim=self.channel_axis) if extra else x
            elif key == "responses" and ds.neurons is not None:
                x = x[:, torch.as_tensor(ds.neurons, device=x.device)]
            out[key] = x
        return out


class Rows(_Items):
    """Image scans (`MouseDataset`): an item is one trial, a batch its rows."""

    stimulus, channel_axis = "images", -3

    def __init__(self, kind: ScanKind, store, *, tier, device: torch.device, **kwargs) -> None:
        super().__init__(kind.part("dataset")(store, tier=tier, float32=True, **kwargs), device)

    def starts(self, items: torch.Tensor, generator: torch.Generator) -> None:
        return None

    def read(self, key: str, items: np.ndarray, starts: None) -> np.ndarray:
        return self.dataset._read(key, self.dataset.trials[items])

    def gather(self, whole: torch.Tensor, items: torch.Tensor, starts: None) -> torch.Tensor:
        return whole.index_select(0, items)


class Windows(_Items):
    """Video scans (`VideoDataset`): an item is a window of ``frames`` valid frames of a trial."""

    stimulus, channel_axis = "videos", 1

    def __init__(self, kind: ScanKind, store, *, tier, device: torch.device, **kwargs) -> None:
        super().__init__(kind.part("dataset")(store, tier=tier, **kwargs), device)

    def starts(self, items: torch.Tensor, generator: torch.Generator) -> np.ndarray:
        """The first frame of each window, for the items in the order they are served."""
        return self.dataset.offsets(items.numpy(), generator)

    def read(self, key: str, items: np.ndarray, starts: np.ndarray) -> np.ndarray:
        return self.dataset.read(key, items, starts)

    def gather(self, whole: torch.Tensor, items: torch.Tensor, starts: np.ndarray) -> torch.Tensor:
        """The windows cut from resident trials ``(trials, ..., frames)`` on the device."""
        if not len(items):
            return whole[:0, ..., : self.dataset.frames]
        f = self.dataset.frames  # one slice per window, stacked: faster than one advanced index, on the CPU 1.3-3x
        return torch.stack([whole[i, ..., s : s + f] for i, s in zip(items.tolist(), np.asarray(starts).tolist())])

    def _stimulus(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(-1, 1)[:, None]  # (batch, channel, frames, height, width)
