"""What `converter.read.device.DeviceLoader` asks of each kind of scan: how its items are read on
the host, gathered from a resident copy on the device, and finished there.

An image scan's item is a trial (`Rows`); a video scan's is a window of a trial's valid frames
(`Windows`).  Both finish a batch with the operations of their dataset's ``batch``, in the dtypes
numpy uses there, so the values are the same bit for bit.  They read into tensors the loader
gives them (`converter.read.batch_memory`), and gather and finish with its `Kernels`: torch's on
a GPU, numpy's on the CPU, normalising in place.  Each kind names its class as its ``"device"``
part (`converter.kinds`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .batches import StoreDataset, Trial  # first: says how to install torch
from .normalize import UFUNCS
from ..kinds import ScanKind

import torch  # noqa: E402,I001

Empty = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]  # a new tensor for a batch, or a step of one


class Kernels:
    """The steps that make a batch, as torch operations where the batch is, into tensors from
    ``empty`` (or in place).  Each is one IEEE operation, or a copy, per element."""

    def __init__(self, empty: Empty) -> None:
        self.empty = empty

    def apply(self, op: str, x: torch.Tensor, c: torch.Tensor) -> None:
        """``x = x <op> c``, in place (``op`` of `Normalizer.steps`)."""
        getattr(x, f"{op}_")(c)

    def cast(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``x`` in ``dtype``: itself, or a converted copy."""
        return x if x.dtype == dtype else self.empty(tuple(x.shape), dtype).copy_(x)

    def _out(self, like: torch.Tensor, axis: int, n: int) -> torch.Tensor:
        shape = list(like.shape)
        shape[axis] = n
        return self.empty(tuple(shape), like.dtype)

    def cat(self, parts: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.cat(parts, dim=axis, out=self._out(parts[0], axis, sum(p.shape[axis] for p in parts)))

    def take(self, x: torch.Tensor, idx: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.index_select(x, axis, idx, out=self._out(x, axis, len(idx)))

    def stack(self, parts: list[torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out = self.empty(shape, dtype)
        if parts:
            torch.stack(parts, out=out)
        return out


class HostKernels(Kernels):
    """The same steps on the CPU, in numpy on the tensors' memory: the same bits, on the calling
    thread alone.  torch's intra-op threads wait for each other: beside threads that decode,
    normalising 128 images in place took 14.7 ms in torch and 2.1 ms in numpy (1.1 ms in torch alone)."""

    def apply(self, op: str, x: torch.Tensor, c: torch.Tensor) -> None:
        UFUNCS[op](x.numpy(), c.numpy(), out=x.numpy())

    def cast(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if x.dtype == dtype:
            return x
        out = self.empty(tuple(x.shape), dtype)
        np.copyto(out.numpy(), x.numpy(), casting="unsafe")
        return out

    def cat(self, parts: list[torch.Tensor], axis: int) -> torch.Tensor:
        out = self._out(parts[0], axis, sum(p.shape[axis] for p in parts))
        np.concatenate([p.numpy() for p in parts], axis=axis, out=out.numpy())
        return out

    def take(self, x: torch.Tensor, idx: torch.Tensor, axis: int) -> torch.Tensor:
        out = self._out(x, axis, len(idx))
        np.take(x.numpy(), idx.numpy(), axis=axis, out=out.numpy(), mode="clip")  # "raise" copies through a buffer; idx is checked
        return out

    def stack(self, parts: list[torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out = self.empty(shape, dtype)
        if parts:
            np.stack([p.numpy() for p in parts], out=out.numpy())
        return out


def kernels_for(device: torch.device, empty: Empty, beside_reads: bool) -> Kernels:
    """The kernels that make batches on ``device``: numpy's on the CPU ``beside_reads`` (threads
    decoding at the same time), torch's otherwise (alone, on 2 cores, gathering and normalising 128
    images took 2.8 ms in torch and 4.4 ms in numpy)."""
    return HostKernels(empty) if device.type == "cpu" and beside_reads else Kernels(empty)


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

    def __call__(self, key: str, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        """``x`` normalised, in place where its dtype is the steps' (``x`` is the caller's to overwrite)."""
        for op, c in self.ops.get(key, []):
            x = kernels.cast(x, c.dtype)
            kernels.apply(op, x, c)
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

    def rows(self, key: str, n: int) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of ``n`` items' whole trials of one variable, as stored."""
        reader = self.dataset._reader(key)
        return (n, *reader.shape[1:]), np.dtype(reader.dtype).newbyteorder("=")

    def whole(self, key: str, items: np.ndarray, out: torch.Tensor) -> torch.Tensor:
        """Items ``items``' whole trials of one variable, as stored, read into ``out`` (on the
        host): what a resident loader holds."""
        self.dataset._reader(key).read((self.dataset.trials[items],), out.numpy())
        return out

    def stored(self, key: str, n: int) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of ``n`` items of one variable as `read` gives them."""
        return self.rows(key, n)

    def _stimulus(self, x: torch.Tensor) -> torch.Tensor:
        """The stimulus as its dataset serves it, from the stored axis order."""
        return x

    def finish(self, raw: dict[str, torch.Tensor], kernels: Kernels) -> Trial:
        """A batch as the dataset's ``batch`` makes it, from the variables as stored (``raw``,
        which it overwrites)."""
        ds = self.dataset
        norm = {k: self.norm(k, x, kernels) for k, x in raw.items()}
        out = Trial()
        for key in ds.keys:
            x = kernels.cast(norm[key], torch.float32)
            if key == self.stimulus:
                x = self._stimulus(x)
                extra = [_as_channels(norm[k], x, self.channel_axis) for k in ds.channel_keys()]
                x = kernels.cat([x, *extra], self.channel_axis) if extra else x
            elif key == "responses" and ds.neurons is not None:
                x = kernels.take(x, torch.as_tensor(ds.neurons, device=x.device), 1)
            out[key] = x
        return out


class Rows(_Items):
    """Image scans (`MouseDataset`): an item is one trial, a batch its rows."""

    stimulus, channel_axis = "images", -3

    def __init__(self, kind: ScanKind, store, *, tier, device: torch.device, **kwargs) -> None:
        super().__init__(kind.part("dataset")(store, tier=tier, float32=True, **kwargs), device)

    def starts(self, items: torch.Tensor, generator: torch.Generator) -> None:
        return None

    def read(self, key: str, items: np.ndarray, starts: None, out: torch.Tensor) -> torch.Tensor:
        """Items ``items`` of one variable, as stored, read into ``out``."""
        self.dataset._read(key, self.dataset.trials[items], out.numpy())
        return out

    def gather(self, whole: torch.Tensor, items: torch.Tensor, starts: None, kernels: Kernels) -> torch.Tensor:
        return kernels.take(whole, items, 0)


class Windows(_Items):
    """Video scans (`VideoDataset`): an item is a window of ``frames`` valid frames of a trial."""

    stimulus, channel_axis = "videos", 1

    def __init__(self, kind: ScanKind, store, *, tier, device: torch.device, **kwargs) -> None:
        super().__init__(kind.part("dataset")(store, tier=tier, **kwargs), device)

    def starts(self, items: torch.Tensor, generator: torch.Generator) -> np.ndarray:
        """The first frame of each window, for the items in the order they are served."""
        return self.dataset.offsets(items.numpy(), generator)

    def stored(self, key: str, n: int) -> tuple[tuple[int, ...], np.dtype]:
        shape, dtype = self.rows(key, n)
        return (*shape[:-1], self.dataset.frames), dtype

    def read(self, key: str, items: np.ndarray, starts: np.ndarray, out: torch.Tensor) -> torch.Tensor:
        """The windows of items ``items`` at ``starts`` of one variable, as stored, read into ``out``."""
        self.dataset.read(key, items, starts, out.numpy())
        return out

    def gather(self, whole: torch.Tensor, items: torch.Tensor, starts: np.ndarray, kernels: Kernels) -> torch.Tensor:
        """The windows cut from resident trials ``(trials, ..., frames)`` on the device."""
        f = self.dataset.frames  # one slice per window, stacked: faster than one advanced index, on the CPU 1.3-3x
        parts = [whole[i, ..., s : s + f] for i, s in zip(items.tolist(), np.asarray(starts).tolist())]
        return kernels.stack(parts, (len(items), *whole.shape[1:-1], f), whole.dtype)

    def _stimulus(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(-1, 1)[:, None]  # (batch, channel, frames, height, width)
