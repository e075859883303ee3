"""Where blocks of trials are written: threads in this process, or a dask.distributed cluster.

An executor is a function ``run(source, store, data_vars, expect, blocks, progress, storage_options, order)`` that
writes every block (each with `write_block`) and yields each `BlockResult` as it finishes,
in any order.  Blocks own disjoint chunks, so they may run anywhere.  When the caller stops
early (an error, Ctrl-C), blocks not yet started never start and running ones stop at
their next step; what was yielded stays valid.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from pathlib import Path

from .location import is_url
from .store import BlockResult, write_block

Executor = Callable[..., Iterator[BlockResult]]


def _files(order, block: range) -> list[int] | None:
    """File numbers of the trials stored at positions ``block``."""
    return None if order is None else [int(i) for i in order[block.start : block.stop]]


def threads(workers: int | None = None) -> Executor:
    """Blocks on a pool of threads in this process (one per core by default)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")

    def run(source, store, data_vars, expect, blocks: list[range], progress, storage_options=None, order=None) -> Iterator[BlockResult]:
        stop = threading.Event()

        def step(n: int) -> None:  # called every few trials read: where a stopped block gives up
            if stop.is_set():
                raise CancelledError
            if progress is not None:
                progress(n)

        pool = ThreadPoolExecutor(workers or os.cpu_count() or 1)
        futures = [pool.submit(write_block, source, store, data_vars, expect, b, step, storage_options, _files(order, b))
                   for b in blocks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    return run


def dask(client) -> Executor:
    """Blocks as tasks of a dask.distributed ``client``: each worker reads its trials and
    writes its chunks itself, so sources and stores must be reachable from every worker."""

    def run(source, store, data_vars, expect, blocks: list[range], progress, storage_options=None, order=None) -> Iterator[BlockResult]:
        from distributed import as_completed

        store = store if is_url(store) else Path(store).absolute()
        run_id = uuid.uuid4().hex[:12]  # keys unique per conversion: two stores from one source may run at once
        futures = [client.submit(write_block, source, store, data_vars, expect, b, None, storage_options, _files(order, b), pure=False,
                                 key=f"sensorium-zarr-{source.name}-{run_id}-{b.start}") for b in blocks]
        try:
            for future in as_completed(futures):
                r = future.result()
                if progress is not None:
                    progress(len(r.block) * len(data_vars))
                yield r
        finally:
            client.cancel(futures)  # on an error, stop the blocks still queued

    return run
