"""Where blocks of trials are written: worker processes or threads on this machine, or a
dask.distributed cluster.

An `Executor` maps one picklable callable over items, ``executor(task, items, progress)``,
and yields each result as it finishes, in any order.  A conversion's items are its `Part`s (one
data variable of one block of trials: `BlockWriter.parts`), `verify`'s are blocks.  Ours hand
every item out before they return (`started_now`): the parts run while the caller writes the
store's skeleton.  The task is called as ``task(item, step)``; ``step(n)`` reports ``n`` units
of work done and is where a stopped item gives up.  Parts own disjoint chunks, so they may run
anywhere.  When the caller stops early (an error, Ctrl-C), items not yet started never start
and running ones stop at their next step; what was yielded stays valid.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..source import Source
from ..source.arrays import Scratch, reusing
from ..source.npy import NpyHeader
from ..storage import Location, portable
from .layout import DataVar
from .block import BlockResult, Part, write_block

Progress = Callable[[int], None] | None
Executor = Callable[[Callable, Sequence, Progress], Iterator]


@dataclass(frozen=True)
class BlockWriter:
    """Writes one data variable for one block of stored positions (a `Part`): the task an
    executor maps."""

    source: Source
    store: Location
    data_vars: dict[str, DataVar]
    expect: dict[str, NpyHeader]
    order: np.ndarray  # the file number stored at each position
    storage_options: dict | None = None
    scratch: Scratch = field(default_factory=Scratch, compare=False, repr=False)  # a part's trials (`reusing`)

    def __call__(self, part: Part, step: Progress = None) -> BlockResult:
        files = [int(i) for i in self.order[part.block.start : part.block.stop]]
        return write_block(self.source, self.store, {part.key: self.data_vars[part.key]}, self.expect, part.block, step,
                           self.storage_options, files, partial(self.scratch, "source"))

    def parts(self, blocks: Sequence[range]) -> list[Part]:
        """The tasks that write ``blocks``: one per block and data variable, block by block."""
        return [Part(b, key) for b in blocks for key in self.data_vars]

    def units(self, part: Part) -> int:
        """Work units one part reports through ``step``: its trials."""
        return len(part.block)

    def __reduce__(self):  # workers may have another working folder
        return (BlockWriter, (self.source, portable(self.store), self.data_vars, self.expect, self.order, self.storage_options, self.scratch))


def threads(workers: int | None = None) -> Executor:
    """Blocks on a pool of threads in this process (one per core by default)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")

    def run(task: Callable, blocks: Sequence[range], progress: Progress = None) -> Iterator[BlockResult]:
        stop = threading.Event()

        def step(n: int) -> None:
            if stop.is_set():
                raise CancelledError
            if progress is not None:
                progress(n)

        pool = ThreadPoolExecutor(workers or os.cpu_count() or 1)
        task = reusing(task)  # its memory goes with the run
        futures = [pool.submit(task, b, step) for b in blocks]
        try:
            yield None  # every block handed out (`started_now`)
            for future in as_completed(futures):
                yield future.result()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    return lambda task, blocks, progress=None: started_now(run(task, blocks, progress))


def started_now(results: Iterator) -> Iterator:
    """``results``, a generator of an executor, run to its first ``yield None``, by which it has
    handed every block out: they run while the caller goes on, and closing it stops them even
    before a result is taken."""
    next(results)
    return results


def dask(client) -> Executor:
    """Blocks as tasks of a dask.distributed ``client``: each worker reads its trials and
    writes its chunks itself, so sources and stores must be reachable from every worker."""

    def run(task: Callable, blocks: Sequence[range], progress: Progress = None) -> Iterator[BlockResult]:
        from distributed import as_completed

        name = getattr(getattr(task, "source", None), "name", "blocks")
        run_id = uuid.uuid4().hex[:12]  # keys unique per conversion: two stores from one source may run at once
        futures = {client.submit(task, b, pure=False, key=f"sensorium-zarr-{name}-{run_id}-{i}"): b for i, b in enumerate(blocks)}
        try:
            yield None  # every block handed out (`started_now`)
            for future in as_completed(list(futures)):
                r = future.result()
                if progress is not None:
                    progress(task.units(futures[future]) if hasattr(task, "units") else len(futures[future]))
                yield r
        finally:
            client.cancel(list(futures))  # on an error, stop the blocks still queued

    return lambda task, blocks, progress=None: started_now(run(task, blocks, progress))


def resolve(executor: int | Executor | object | None) -> Executor | int:
    """The ``executor`` argument of `convert`, checked: a number of workers (``None``: one per
    core), or the `Executor` for a ``distributed.Client`` or given itself.  `started` turns a
    number into an executor once the conversion's size is known."""
    if executor is None:
        return os.cpu_count() or 1
    if isinstance(executor, int) and not isinstance(executor, bool):
        if executor < 1:
            raise ValueError(f"workers must be at least 1, not {executor}")
        return executor
    if type(executor).__module__.startswith("distributed") and hasattr(executor, "submit"):
        return dask(executor)
    if callable(executor):
        return executor
    raise TypeError(f"executor must be None, a number of threads, a distributed.Client or an Executor, not {executor!r}")


def uses_processes(workers: int, blocks: int, local: bool) -> bool:
    """Whether ``workers`` on this machine should be processes rather than threads: when more
    than one would be busy (``blocks`` to write) and the source and the store are on local disks.
    A block's work holds the interpreter lock most of the time, so threads of one process do
    not add up; with object storage the work is waiting on the network, which threads do well."""
    return workers > 1 and blocks > 1 and local and bool(sys.executable)  # an embedded Python may have no interpreter to start


@contextlib.contextmanager
def started(executor: Executor | int, blocks: int, local: bool, tasks: int | None = None) -> Iterator[Executor]:
    """The executor that writes ``blocks`` blocks (in ``tasks`` tasks; default: one per block),
    for what `resolve` gave: a number of workers becomes processes (started now, while the caller
    writes the skeleton) or threads (`uses_processes`); an executor is itself.  Worker processes
    end when the context does."""
    if not isinstance(executor, int):
        yield executor
    elif uses_processes(executor, blocks, local):
        from .processes import Workers

        n = min(executor, tasks or blocks)
        with Workers(n, threads=max(1, (os.cpu_count() or 1) // n)) as workers:
            yield workers
    else:
        yield threads(executor)
