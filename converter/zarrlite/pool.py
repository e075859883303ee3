"""The threads that encode and decode chunks: one small pool per process, made on first use."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

# A job of fewer items, or fewer decoded bytes, runs on the calling thread: handing work to the
# pool costs ~0.7 ms, which 128 rows of 31 KB (1.5 ms on one thread) do not repay, and 64 images
# of 147 KB (2.5 ms) do (measured on 2 cores; docs/zarrlite.md).
_POOL_MIN = 8
_POOL_MIN_BYTES = 8 << 20
_THREADS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()
_on_pool = threading.local()  # set on the pool's threads: a job started there runs there


def _executor() -> ThreadPoolExecutor:
    """This process's pool: one inherited through ``fork`` has no threads behind it, so a forked
    child (a ``DataLoader`` worker) makes its own."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="sensorium-zarr-read", initializer=setattr, initargs=(_on_pool, "busy", True))
            _pool_pid = os.getpid()
        return _pool


def set_threads(n: int) -> None:
    """Use ``n`` threads (1: none, every job on its calling thread) from now on; for a process
    that is one of many on the machine (`converter.write.processes`)."""
    global _THREADS, _pool
    with _pool_lock:
        old, _THREADS, _pool = _pool, max(1, n), None
    if old is not None:
        old.shutdown(wait=False)


def in_runs(fn: Callable[[Sequence], object], items: Sequence, nbytes: int | None = None) -> None:
    """``fn(run)`` for runs of neighbouring ``items``: a few runs per thread on the pool, or one
    run on the calling thread when too few items, or too few bytes (``nbytes``: what the job
    decodes or encodes), would not pay for the pool.  A job started on the pool's own threads
    runs where it is: waiting there for the pool could leave no thread to do the work."""
    if _THREADS == 1 or len(items) < _POOL_MIN or (nbytes is not None and nbytes < _POOL_MIN_BYTES) or getattr(_on_pool, "busy", False):
        fn(items)
        return
    n = min(len(items), 4 * _THREADS)
    for _ in _executor().map(fn, [items[len(items) * j // n : len(items) * (j + 1) // n] for j in range(n)]):
        pass
