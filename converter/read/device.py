"""Batches that arrive on the device: no DataLoader workers, normalised where the model runs.

`DeviceLoader` serves one tier of one store, of either kind of scan, as batches of tensors already
on a torch device, normalised there with the same values as the kind's dataset gives on the CPU
(`MouseDataset`, `VideoDataset`; bit for bit: every operation runs in the dtype numpy would use).
Two modes:

- **resident**: the tier's arrays are read once, in their stored dtypes, in pieces of ``PIECE``
  bytes (on CUDA into two pinned buffers, each copied on while the next piece is read), so the
  host holds two pieces, not a variable; batches are gathered on the device, and the windows of
  video trials cut there.
- **streaming**: a background thread reads the upcoming batches through the store's reader
  (windows only, for video) into reused host memory (pinned, for CUDA), moves them to the device
  (on a side stream on CUDA) and finishes them there, ``PREFETCH`` batches ahead of the consumer.

Batches are made in memory used before (`converter.read.batch_memory`): on the CPU device, a
batch the consumer has let go of is the memory of a later one.

``mode="auto"`` takes resident when the tier fits in half the device's free memory.
`MiceCycler` serves several stores at once, as neuralpredictors' ``LongCycler`` does.  A seed
fixes the order and the windows; ``state_dict()`` / ``load_state_dict()`` resume at exactly the
next batch.  What differs between the kinds lives in `converter.read.device_items`.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .batches import Trial  # first: says how to install torch
from .batch_memory import BatchMemory, dtypes
from .device_items import kernels_for
from ..store_info import checked_root
from ..kinds import kind_of

import torch  # noqa: E402,I001

PREFETCH = 3  # batches a streaming loader prepares ahead
PIECE = 64 * 2**20  # bytes per read (and copy through a pinned buffer) when a resident loader fills a device


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def resident(items, key: str, device: torch.device) -> torch.Tensor:
    """Every item's whole trials of one variable, as stored, on ``device``: read in pieces of at
    most ``PIECE`` bytes, on the CPU straight into the result; elsewhere into one of two pinned
    buffers, each copied on while the next piece is read into the other, so the host never holds
    the variable whole."""
    shape, dtype = items.rows(key, len(items))
    _, torch_dtype = dtypes(dtype)
    out = torch.empty(shape, dtype=torch_dtype, device=device)
    rows = max(1, PIECE // max(1, out[:1].numel() * out.element_size()))
    pieces = [np.arange(i, min(i + rows, len(out))) for i in range(0, len(out), rows)]
    if device.type == "cpu":
        for piece in pieces:
            items.whole(key, piece, out[piece[0] : piece[-1] + 1])
        return out
    cuda = device.type == "cuda"
    buffers = [torch.empty((min(rows, len(out)), *shape[1:]), dtype=torch_dtype, pin_memory=cuda) for _ in pieces[:2]]
    copied: list = [None] * len(buffers)  # the event of each buffer's last copy
    for j, piece in enumerate(pieces):
        k = j % len(buffers)
        if copied[k] is not None:
            copied[k].synchronize()  # its last copy is done: it can be read into again
        host = items.whole(key, piece, buffers[k][: len(piece)])
        out[piece[0] : piece[-1] + 1].copy_(host, non_blocking=cuda)
        if cuda:
            copied[k] = torch.cuda.Event()
            copied[k].record(torch.cuda.current_stream(device))
    if cuda:
        torch.cuda.current_stream(device).synchronize()
    return out


def refuse_for_device(dataloader_kwargs: Mapping, **image_only: bool) -> None:
    """A `ValueError` for the first option of ``loaders(..., device=...)`` that a `DeviceLoader` cannot honour."""
    given = [*dataloader_kwargs, *(k for k, v in image_only.items() if v)]
    if given:
        raise ValueError(f"{given[0]} does not apply to loaders on a device (no DataLoader, no worker processes); leave it out or drop device=")


class DeviceLoader:
    """Batches of one tier of one store, on ``device`` and normalised there.

    Parameters
    ----------
    store : str or os.PathLike
        A store of either kind: image scans give `MouseDataset`'s items, video scans
        `VideoDataset`'s windows of ``frames`` frames (``offset=-1``: random windows, drawn
        from ``seed`` and the epoch).
    batch_size : int
        Items per batch.
    tier : str
        The tier served (``train`` by default); items in file order, as the dataset has them.
    device : str or torch.device
        Where batches arrive; ``"cpu"`` gives the same semantics without a GPU.
    mode : {"auto", "resident", "streaming"}
        See the module docstring; ``auto`` chooses by free device memory.
    shuffle : bool, optional
        Random order (default: for ``train`` only), fixed by ``seed`` and the epoch.
    seed : int
        The order (and the windows) of epoch ``e`` are drawn from ``seed + e``.
    drop_last : bool
        Leave out a last, smaller batch.
    run_length : int
        With ``shuffle``, draw the order in runs of this many trials stored next to each other,
        then shuffle it again within each buffer of ``buffer_batches`` batches, which a streaming
        loader reads at once: fewer, larger reads, for stores at a URL.  ``1`` (the default): every
        trial on its own.  See docs/how-to/train.md for what it does to randomness.
    buffer_batches : int
        Batches per buffer, with ``run_length > 1``.
    **dataset_kwargs
        For the dataset (``keys``, ``neurons``, ``behavior_channels``, ``frames``,
        ``storage_options``, ...).  ``normalize`` is True unless given, as in `loaders`:
        batches come normalised as ``NeuroNormalizer`` does.
    """

    def __init__(self, store, *, batch_size: int, tier: str = "train", device="cpu", mode: str = "auto",
                 shuffle: bool | None = None, seed: int = 0, drop_last: bool = False, run_length: int = 1, buffer_batches: int = 8,
                 **dataset_kwargs) -> None:
        if mode not in ("auto", "resident", "streaming"):
            raise ValueError(f"mode must be 'auto', 'resident' or 'streaming', not {mode!r}")
        for name, value in (("batch_size", batch_size), ("run_length", run_length), ("buffer_batches", buffer_batches)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        self.run_length, self.buffer_batches = run_length, buffer_batches
        self.device = torch.device(device)
        kind = kind_of(checked_root(store, dataset_kwargs.get("storage_options"))["attributes"])
        dataset_kwargs.setdefault("normalize", True)
        self.items = kind.part("device")(kind, store, tier=tier, device=self.device, **dataset_kwargs)
        self.dataset = self.items.dataset
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, seed
        self.shuffle = tier == "train" if shuffle is None else shuffle
        self.epoch, self.next_batch = 0, 0
        need = self.items.resident_bytes()
        self.mode = mode if mode != "auto" else ("resident" if need <= _free_bytes(self.device) // 2 else "streaming")
        self._resident = {k: resident(self.items, k, self.device) for k in self.items.keys} if self.mode == "resident" else None
        self.memory = BatchMemory(self.device, depth=PREFETCH + 4)  # queued, blocked on the queue, being read, the consumer's last two
        self.kernels = kernels_for(self.device, self.memory.empty, beside_reads=self.mode == "streaming")

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __repr__(self) -> str:
        return f"DeviceLoader({self.dataset!r}, batch_size={self.batch_size}, {self.mode} on {self.device})"

    def _draw(self, epoch: int) -> tuple[torch.Tensor, np.ndarray | None]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        n = len(self.dataset)
        if not self.shuffle:
            order = torch.arange(n)
        elif self.run_length == 1:
            order = torch.randperm(n, generator=generator)
        else:
            runs = torch.from_numpy(np.argsort(self.dataset.trials, kind="stable")).split(self.run_length)  # items, in stored order
            order = torch.cat([runs[r] for r in torch.randperm(len(runs), generator=generator).tolist()])
            order = torch.cat([part[torch.randperm(len(part), generator=generator)] for part in order.split(self._buffer_items())])
        return order, self.items.starts(order, generator)

    def _buffer_items(self) -> int:
        return self.batch_size * self.buffer_batches if self.shuffle and self.run_length > 1 else self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """The items of ``epoch`` in the order they are served."""
        return self._draw(epoch)[0]

    def state_dict(self) -> dict:
        """Where the loader is: a later `load_state_dict` resumes at exactly the next batch."""
        return {"epoch": self.epoch, "next_batch": self.next_batch, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: Mapping) -> None:
        if state["batch_size"] != self.batch_size:
            raise ValueError(f"the state is of batches of {state['batch_size']}, this loader's are of {self.batch_size}")
        self.epoch, self.next_batch, self.seed = int(state["epoch"]), int(state["next_batch"]), int(state["seed"])

    def batches(self, epoch: int) -> list[tuple[torch.Tensor, np.ndarray | None]]:
        """The items of each batch of ``epoch``, and where their windows start (video scans)."""
        order, starts = self._draw(epoch)
        cut = [slice(b * self.batch_size, (b + 1) * self.batch_size) for b in range(len(self))]
        return [(order[c], None if starts is None else starts[c]) for c in cut]

    def __iter__(self) -> Iterator[Trial]:
        batches = self.batches(self.epoch)
        start = self.next_batch
        source = self._resident_batches if self._resident is not None else self._streamed_batches
        for b, batch in enumerate(source(batches, start), start=start):
            self.next_batch = b + 1
            yield batch
        self.epoch, self.next_batch = self.epoch + 1, 0

    def _resident_batches(self, batches: Sequence[tuple[torch.Tensor, np.ndarray | None]], start: int) -> Iterator[Trial]:
        for idx, starts in batches[start:]:
            idx = idx.to(self.device)
            yield self.items.finish({key: self.items.gather(self._resident[key], idx, starts, self.kernels) for key in self.items.keys}, self.kernels)

    def _buffers(self, batches: Sequence[tuple[torch.Tensor, np.ndarray | None]], start: int,
                 threads: ThreadPoolExecutor) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
        """Per buffer from batch ``start`` on, its batches as stored, on the host: one read per
        variable for the whole buffer (one batch, unless ``run_length > 1``), cut into its batches.
        The variables are read side by side on ``threads``, and the next buffer while this one's
        batches are taken."""
        per = self._buffer_items() // self.batch_size

        def submit(parts: list) -> tuple[list, dict[str, Future]]:
            idx = torch.cat([i for i, _ in parts]).numpy()
            starts = None if parts[0][1] is None else np.concatenate([s for _, s in parts])
            return parts, {k: threads.submit(self.items.read, k, idx, starts, self.memory.host(*self.items.stored(k, len(idx))))
                           for k in self.items.keys}

        def cut(parts: list, reads: dict[str, Future]) -> Iterator[dict[str, torch.Tensor]]:
            whole = {k: f.result() for k, f in reads.items()}
            bounds = np.cumsum([0] + [len(i) for i, _ in parts]).tolist()
            return ({k: v[a:b] for k, v in whole.items()} for a, b in zip(bounds, bounds[1:]))

        ahead: collections.deque = collections.deque()
        for _, group in itertools.groupby(range(start, len(batches)), key=lambda b: b // per):
            ahead.append(submit([batches[b] for b in group]))
            if len(ahead) > 1:
                yield cut(*ahead.popleft())
        while ahead:
            yield cut(*ahead.popleft())

    def _streamed_batches(self, batches: Sequence[tuple[torch.Tensor, np.ndarray | None]], start: int) -> Iterator[Trial]:
        """Batches read, moved and finished by a background thread, ``PREFETCH`` ahead."""
        ready: queue.Queue = queue.Queue(PREFETCH)
        stop = threading.Event()
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None

        def prepare() -> None:
            threads = ThreadPoolExecutor(len(self.items.keys), thread_name_prefix="sensorium-zarr-stream-read")
            try:
                for buffer in self._buffers(batches, start, threads):
                    for host in buffer:
                        if stop.is_set():
                            return
                        if cuda:  # ``host`` is pinned: the copies run alongside, on the side stream
                            with torch.cuda.stream(stream):
                                batch = self.items.finish({k: v.to(self.device, non_blocking=True) for k, v in host.items()}, self.kernels)
                                event = torch.cuda.Event()
                                event.record(stream)
                            ready.put((batch, event))
                        else:  # ``.to`` of the CPU is no copy: there the batch is made in ``host`` itself
                            ready.put((self.items.finish({k: v.to(self.device) for k, v in host.items()}, self.kernels), None))
                ready.put(None)
            except BaseException as e:  # handed to the consumer, who raises it
                ready.put(e)
            finally:
                threads.shutdown(wait=True, cancel_futures=True)

        thread = threading.Thread(target=prepare, name="sensorium-zarr-stream", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                batch, event = item
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for x in batch.values():  # made on the side stream, used and freed on this one
                        x.record_stream(current)
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
