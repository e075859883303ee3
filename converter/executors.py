"""Where blocks of trials are written: threads in this process, or a dask.distributed cluster.

An executor is a function ``run(source, store, data_vars, expect, blocks, progress, storage_options, order)`` that
writes every block (each with `write_block`) and yields each `BlockResult` as it finishes.
Blocks own disjoint chunks, so they may run anywhere, in any order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .location import is_url
from .store import BlockResult, write_block

Executor = Callable[..., Iterator[BlockResult]]


def _files(order, block: range) -> list[int] | None:
    """File numbers of the trials stored at positions ``block``."""
    return None if order is None else [int(i) for i in order[block.start : block.stop]]


def threads(workers: int | None = None) -> Executor:
    """Blocks on a pool of threads in this process (one per core by default)."""

    def run(source, store, data_vars, expect, blocks: list[range], progress, storage_options=None, order=None) -> Iterator[BlockResult]:
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            yield from pool.map(lambda b: write_block(source, store, data_vars, expect, b, progress, storage_options, _files(order, b)), blocks)

    return run


def dask(client) -> Executor:
    """Blocks as tasks of a dask.distributed ``client``: each worker reads its trials and
    writes its chunks itself, so sources and stores must be reachable from every worker."""

    def run(source, store, data_vars, expect, blocks: list[range], progress, storage_options=None, order=None) -> Iterator[BlockResult]:
        from distributed import as_completed

        store = store if is_url(store) else Path(store).absolute()
        futures = [client.submit(write_block, source, store, data_vars, expect, b, None, storage_options, _files(order, b), pure=False,
                                 key=f"sensorium-zarr-{source.name}-{b.start}") for b in blocks]
        try:
            for future in as_completed(futures):
                r = future.result()
                if progress is not None:
                    progress(len(r.block) * len(data_vars))
                yield r
        finally:
            client.cancel(futures)  # on an error, stop the blocks still queued

    return run
