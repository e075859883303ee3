"""Batches that arrive on the device: no DataLoader workers, normalised where the model runs.

`DeviceLoader` serves one tier of one image store as batches of tensors already on a torch
device, normalised there with the same values as `MouseDataset` gives on the CPU (bit for bit:
every operation runs in the dtype numpy would use).  Two modes:

- **resident**: the tier's arrays are read once, in their stored dtypes, and moved to the
  device variable by variable (through pinned memory on CUDA), so the host holds one variable
  at a time; batches are gathered on the device.
- **streaming**: a background thread reads the upcoming batches through the store's reader into
  reused buffers and copies them to the device a few batches ahead (on a side stream on CUDA).

``mode="auto"`` takes resident when the tier fits in half the device's free memory.
`MiceCycler` serves several stores at once, as neuralpredictors' ``LongCycler`` does.  A seed
fixes the order; ``state_dict()`` / ``load_state_dict()`` resume at exactly the next batch.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from .batches import Trial  # first: says how to install torch
from .normalize import OPERATIONS
from .torch import MouseDataset

import torch  # noqa: E402,I001

PREFETCH = 3  # batches a streaming loader reads ahead


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


class _OnDevice:
    """`Normalizer.steps` with their constants as device tensors, applied in the dtypes numpy would use."""

    def __init__(self, ds: MouseDataset, device: torch.device) -> None:
        self.ops: dict[str, list[tuple[str, torch.Tensor]]] = {}
        if ds.normalizer is None:
            return
        for key in ds.keys:
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


class DeviceLoader:
    """Batches of one tier of one image store, on ``device`` and normalised there.

    Parameters
    ----------
    store : str or os.PathLike
        An image store (Sensorium 2022).
    batch_size : int
        Trials per batch.
    tier : str
        The tier served (``train`` by default); items in file order, as `MouseDataset` has them.
    device : str or torch.device
        Where batches arrive; ``"cpu"`` gives the same semantics without a GPU.
    mode : {"auto", "resident", "streaming"}
        See the module docstring; ``auto`` chooses by free device memory.
    shuffle : bool, optional
        Random order (default: for ``train`` only), fixed by ``seed`` and the epoch.
    seed : int
        The order of epoch ``e`` is a permutation drawn from ``seed + e``.
    drop_last : bool
        Leave out a last, smaller batch.
    **dataset_kwargs
        For `MouseDataset` (``keys``, ``normalize``, ``neurons``, ``stats_source``, ...).
    """

    def __init__(self, store, *, batch_size: int, tier: str = "train", device="cpu", mode: str = "auto",
                 shuffle: bool | None = None, seed: int = 0, drop_last: bool = False, **dataset_kwargs) -> None:
        if mode not in ("auto", "resident", "streaming"):
            raise ValueError(f"mode must be 'auto', 'resident' or 'streaming', not {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if dataset_kwargs.get("behavior_channels") or dataset_kwargs.get("pupil_channels"):
            raise ValueError("behavior and pupil as image channels are not served on the device yet; use loaders")
        self.dataset = MouseDataset(store, tier=tier, float32=True, **dataset_kwargs)
        self.device = torch.device(device)
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, seed
        self.shuffle = tier == "train" if shuffle is None else shuffle
        self.epoch, self.next_batch = 0, 0
        self._norm = _OnDevice(self.dataset, self.device)
        need = sum(self._row_bytes(k) for k in self.dataset.keys) * len(self.dataset)
        self.mode = mode if mode != "auto" else ("resident" if need <= _free_bytes(self.device) // 2 else "streaming")
        self._resident = self._load() if self.mode == "resident" else None

    def _row_bytes(self, key: str) -> int:
        meta = self.dataset._meta[key]
        return int(np.prod(meta["shape"][1:], dtype=np.int64)) * np.dtype(meta["data_type"]).itemsize

    def _load(self) -> dict[str, torch.Tensor]:
        """Every variable of the tier on the device, one at a time through (pinned) host memory."""
        out = {}
        for key in self.dataset.keys:
            host = torch.from_numpy(self.dataset._read(key, self.dataset.trials))
            if self.device.type == "cuda":
                host = host.pin_memory()
            out[key] = host.to(self.device, non_blocking=True)
            del host
        return out

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The items of ``epoch`` in the order they are served."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def state_dict(self) -> dict:
        """Where the loader is: a later `load_state_dict` resumes at exactly the next batch."""
        return {"epoch": self.epoch, "next_batch": self.next_batch, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: Mapping) -> None:
        if state["batch_size"] != self.batch_size:
            raise ValueError(f"the state is of batches of {state['batch_size']}, this loader's are of {self.batch_size}")
        self.epoch, self.next_batch, self.seed = int(state["epoch"]), int(state["next_batch"]), int(state["seed"])

    def _finish(self, raw: dict[str, torch.Tensor]) -> Trial:
        out = Trial()
        for key, x in raw.items():
            x = self._norm(key, x)
            if key == "responses" and self.dataset.neurons is not None:
                x = x[:, torch.as_tensor(self.dataset.neurons, device=x.device)]
            out[key] = x.to(torch.float32)
        return out

    def _batches(self) -> list[torch.Tensor]:
        order = self.order(self.epoch)
        return [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]

    def __iter__(self) -> Iterator[Trial]:
        batches = self._batches()
        start = self.next_batch
        source = self._resident_batches(batches, start) if self._resident is not None else self._streamed_batches(batches, start)
        for b, raw in enumerate(source, start=start):
            self.next_batch = b + 1
            yield self._finish(raw)
        self.epoch, self.next_batch = self.epoch + 1, 0

    def _resident_batches(self, batches: Sequence[torch.Tensor], start: int) -> Iterator[dict[str, torch.Tensor]]:
        for idx in batches[start:]:
            idx = idx.to(self.device)
            yield {key: self._resident[key].index_select(0, idx) for key in self.dataset.keys}

    def _streamed_batches(self, batches: Sequence[torch.Tensor], start: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches read by a background thread, ``PREFETCH`` ahead, then moved to the device."""
        ready: queue.Queue = queue.Queue(PREFETCH)
        stop = threading.Event()
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None

        def read() -> None:
            try:
                for idx in batches[start:]:
                    if stop.is_set():
                        return
                    rows = self.dataset.trials[idx.numpy()]
                    host = {k: torch.from_numpy(self.dataset._read(k, rows)) for k in self.dataset.keys}
                    if cuda:
                        with torch.cuda.stream(stream):
                            moved = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in host.items()}
                            event = torch.cuda.Event()
                            event.record(stream)
                        ready.put((moved, event))
                    else:
                        ready.put((host, None))
                ready.put(None)
            except BaseException as e:  # handed to the consumer, who raises it
                ready.put(e)

        thread = threading.Thread(target=read, name="sensorium-zarr-stream", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                batch, event = item
                if event is not None:
                    torch.cuda.current_stream(self.device).wait_event(event)
                yield batch
        finally:
            stop.set()
            while thread.is_alive():  # let a reader blocked on a full queue finish
                try:
                    ready.get_nowait()
                except queue.Empty:
                    thread.join(0.01)


class MiceCycler:
    """``(data_key, batch)`` from several loaders, as neuralpredictors' ``LongCycler``: every
    round takes one batch of each mouse, in an order drawn from ``seed`` and the round; a mouse
    whose epoch ends starts its next one; the cycle lasts the longest mouse's batches x mice."""

    def __init__(self, loaders: Mapping[str, DeviceLoader], seed: int = 0) -> None:
        if not loaders:
            raise ValueError("no loaders to cycle through")
        self.loaders, self.seed, self.step = dict(loaders), seed, 0

    def __len__(self) -> int:
        return max(len(dl) for dl in self.loaders.values()) * len(self.loaders)

    def _round(self, r: int) -> list[str]:
        keys = list(self.loaders)
        perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(self.seed + r)).tolist()
        return [keys[k] for k in perm]

    def state_dict(self) -> dict:
        return {"step": self.step, "loaders": {k: dl.state_dict() for k, dl in self.loaders.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        self.step = int(state["step"])
        for k, s in state["loaders"].items():
            self.loaders[k].load_state_dict(s)

    def __iter__(self) -> Iterator[tuple[str, Trial]]:
        its: dict[str, Iterator[Trial]] = {}
        n = len(self.loaders)
        while self.step < len(self):
            key = self._round(self.step // n)[self.step % n]
            try:
                batch = next(its[key]) if key in its else None
            except StopIteration:
                batch = None
            if batch is None:
                its[key] = iter(self.loaders[key])
                batch = next(its[key])
            self.step += 1
            yield key, batch
        self.step = 0
