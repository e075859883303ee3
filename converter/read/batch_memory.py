"""Memory for the batches a `converter.read.device.DeviceLoader` makes: reused, not allocated anew.

A batch of a full-size mouse is about 23 MB.  Fresh memory of that size is mapped page by page
on first touch, which costs more than the work done in it: on the 2-core machine, normalising
128 images into a new tensor took 12 ms and into one used before 1.5 ms (docs/performance.md).
So a loader reads into, and hands out, memory it has used before:

- on the host (the CPU device, and the buffers batches are read into before they go to a GPU),
  arrays kept here and taken again once nothing outside holds them.  Each is owned by one numpy
  array, and every view of it, numpy's or torch's (``torch.from_numpy``), holds that owner: its
  reference count says whether a batch the consumer was given is still in use.  A batch the
  consumer keeps is never overwritten; the next one gets other memory.
- on CUDA, batches are read straight into pinned memory from torch's caching host allocator,
  which reuses a block once the copies made from it are done, and the device tensors come from
  torch's caching allocator.
"""

from __future__ import annotations

import functools
import sys
import threading

import numpy as np

from .batches import Trial  # noqa: F401  first: says how to install torch

import torch  # noqa: E402,I001


def _refs(arrays: list, i: int) -> int:
    return sys.getrefcount(arrays[i])


_UNHELD = _refs([np.empty(0)], 0)  # an array only a list here holds, counted as `take` counts


@functools.lru_cache(maxsize=64)
def dtypes(dtype) -> tuple[np.dtype, torch.dtype]:
    """A dtype given as numpy's or torch's, as both."""
    if isinstance(dtype, torch.dtype):
        return torch.empty(0, dtype=dtype).numpy().dtype, dtype
    dtype = np.dtype(dtype)
    return dtype, torch.from_numpy(np.empty(0, dtype)).dtype


class BatchMemory:
    """Tensors to read batches into (`host`) and to make them in (`device`), reused where that
    is safe.

    Parameters
    ----------
    device : torch.device
        Where the loader's batches arrive.
    depth : int
        Arrays of each shape and dtype kept for reuse: the batches that can be in flight at once
        (prepared ahead, being prepared, held by the consumer).  Beyond them, memory is new.
    """

    def __init__(self, device: torch.device, depth: int) -> None:
        self.device, self.depth = device, depth
        self._kept: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def _recycled(self, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        with self._lock:
            kept = self._kept.setdefault((shape, dtype.str), [])
            for i in range(len(kept)):
                if _refs(kept, i) <= _UNHELD:
                    return torch.from_numpy(kept[i])
            array = np.empty(shape, dtype)
            if len(kept) < self.depth:
                kept.append(array)
        return torch.from_numpy(array)

    def host(self, shape, dtype) -> torch.Tensor:
        """A C-contiguous host tensor to read a batch into: pinned when the batch goes on to CUDA."""
        np_dtype, torch_dtype = dtypes(dtype)
        if self.device.type == "cuda":
            return torch.empty(tuple(shape), dtype=torch_dtype, pin_memory=True)
        return self._recycled(tuple(shape), np_dtype)

    def empty(self, shape, dtype) -> torch.Tensor:
        """A tensor on the device for a batch, or a step of one."""
        np_dtype, torch_dtype = dtypes(dtype)
        if self.device.type != "cpu":
            return torch.empty(tuple(shape), dtype=torch_dtype, device=self.device)
        return self._recycled(tuple(shape), np_dtype)
