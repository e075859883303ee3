"""``convert``: one dataset (folder or zip) into one store, atomically.

DEST never holds a partial store: on disk the store is built beside it and renamed into
place; in object storage it is built in place with its root metadata written last (see
`converter.write.state`).  An interrupted conversion resumes from its records; run again
on a finished store, it finds the store made from this very source and does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import shutil

import numpy as np
from typing import NamedTuple

from ..errors import SourceError, StorageError, StoreError, storage_error
from ..progress import Progress
from ..source import Source, open_source
from ..storage import Location, check_store_dest, local_path, tree_bytes
from . import executors, layout
from .block import BlockResult
from .executors import BlockWriter, Executor
from .plan import Plan, estimate_bytes, made_from, plan, plan_record, root_attrs
from .state import ConversionState, state_for
from .store import create_skeleton, sweep_temporaries, write_checksums, write_files, write_flags


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _check_space(source: Source, p: Plan, dest: Location, state: ConversionState) -> None:
    """Refuse before writing when the store, as estimated, cannot fit on the disk it is written to."""
    where = local_path(dest)
    if where is None:
        return  # object storage has no free space to ask about
    usage = shutil.disk_usage(where.parent)
    if usage.total == 0:
        return  # a pseudo-file-system that reports no sizes: the write itself will tell
    need = estimate_bytes(source, p) - tree_bytes(state.store)
    if need > usage.free:
        raise StorageError(f"{where.parent}: not enough room for the store: it needs about {_size(need)} "
                           f"(estimated from a few trials), and {_size(usage.free)} is free there", errno.ENOSPC)


def _build(source: Source, p: Plan, state: ConversionState, executor: Executor | int, bar, record: dict) -> None:
    """Write (or finish writing) the store at ``state.store`` and publish it; resumable at any point."""
    store, so = state.store, state.storage_options
    fresh = state.plan() != record
    if fresh:
        state.start_over()
    done = state.done_blocks()
    task = BlockWriter(source, store, p.data_vars, p.expect, p.order, so)
    blocks = [b for b in layout.blocks(p.n_trials, p.block) if b.start not in done]
    todo = task.parts(blocks)
    local = local_path(source.location) is not None and local_path(store) is not None
    bar(sum(len(r.block) for r in done.values()) * len(p.data_vars))
    written: dict[int, list[BlockResult]] = {}  # the parts of each block written so far
    with executors.started(executor, len(blocks), local, len(todo)) as run_blocks, \
            contextlib.closing(run_blocks(task, todo, bar)) as finished:  # closed at once on any error: queued parts never run
        if fresh:  # written while the blocks are: their chunks and the metadata are separate files
            files = {rel: source.size(rel) for rel in p.inventory.other_files}
            create_skeleton(store, p.data_vars, p.order, p.neuron_coord, p.meta, p.labels, p.statistics, files, so, n_frames=p.n_frames)
            write_files(store, source, files, so)
            state.save_plan(record)
        for r in finished:
            parts = written.setdefault(r.block.start, [])
            parts.append(r)
            if len(parts) == len(p.data_vars):  # only after every chunk of the block is written, and the plan
                done[r.block.start] = BlockResult.merged(written.pop(r.block.start))
                state.save_block(done[r.block.start])
    results = [done[b.start] for b in layout.blocks(p.n_trials, p.block)]
    crcs = {k: np.concatenate([r.crc32[k] for r in results]) for k in p.data_vars}
    headers = {k: set().union(*(r.headers[k] for r in results)) for k in p.data_vars}
    sweep_temporaries(store)  # what writers killed half-way left: the store must equal an uninterrupted one
    write_flags(store, results, so)
    write_checksums(store, crcs, headers, so)
    state.finish(root_attrs(source, p, results))


@contextlib.contextmanager
def _storage_errors(where):
    """A failing disk or bucket becomes one line that names it and says whether a rerun helps."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        err = storage_error(e, str(where))
        if err is None:
            raise
        raise err from None


def _bar(progress: bool | Progress | None, p: Plan):
    if isinstance(progress, Progress):
        return contextlib.nullcontext(progress)
    return Progress(p.n_trials * len(p.data_vars), f"convert {p.inventory.name[:40]}", progress)


class Outcome(NamedTuple):
    """What `run` did: the store's location, and ``"converted"`` or ``"complete"`` (already there)."""

    dest: Location
    status: str


def convert(
    src: Location,
    dest: Location,
    *,
    overwrite: bool = False,
    executor: int | Executor | object | None = None,
    progress: bool | Progress | None = None,
    storage_options: dict | None = None,
) -> Location:
    """Convert one dataset folder or zip into a consolidated Zarr v3 store at ``dest``.

    If a conversion is interrupted (killed, out of disk space), running the same call
    again resumes it: finished blocks of trials are not written again.  Run again once
    the store is complete, it finds the store made from this very source and does nothing.

    Parameters
    ----------
    src : str or os.PathLike
        The dataset folder (holding ``data/`` and ``meta/``) or its ``.zip``; either may be
        a URL such as ``s3://bucket/x.zip`` (``storage_options`` go to fsspec).
    dest : str or os.PathLike
        The store to create.  On disk it is built in ``<dest>.incomplete`` and renamed to
        ``dest`` once complete and valid; in object storage (no rename) it is written in
        place with its root metadata last (README, "Object storage").
    overwrite : bool
        Replace an existing store at ``dest`` (on disk only once the new one is complete).
    executor : int, distributed.Client or Executor, optional
        Who writes the blocks of trials: by default a worker per core; an integer: that
        many workers (processes when more than one block is written from and to local
        disks, else threads: `converter.write.executors.uses_processes`); a
        ``distributed.Client``: its workers; or any `converter.write.executors.Executor`.
    progress : bool or Progress, optional
        Draw a progress bar on stderr; default: only when stderr is a terminal.  A
        `Progress` instance is advanced instead (one bar over several conversions).
    storage_options : dict, optional
        For URLs, passed to fsspec.

    Returns
    -------
    str or os.PathLike
        ``dest``, the finished store, as given.

    Raises
    ------
    SourceError
        The source is malformed (the message names the file); nothing is left.
    StoreError
        ``dest`` exists and was made from another source (without ``overwrite``), another
        conversion is writing it, or the result is invalid.
    StorageError
        The disk or bucket failed; the message says whether a rerun resumes.
    """
    return run(src, dest, overwrite=overwrite, executor=executor, progress=progress, storage_options=storage_options).dest


def run(src: Location, dest: Location, *, overwrite: bool = False, executor=None, progress=None,
        storage_options: dict | None = None) -> Outcome:
    """`convert`, also telling whether it converted or found the store already complete."""
    run_blocks = executors.resolve(executor)  # a wrong executor is refused before anything is opened
    check_store_dest(dest, src)
    source = open_source(src, storage_options)
    try:
        return run_planned(source, plan(source), dest, overwrite=overwrite, executor=run_blocks, progress=progress,
                           storage_options=storage_options)
    finally:
        source.close()


def run_planned(source: Source, p: Plan, dest: Location, *, overwrite: bool = False, executor=None, progress=None,
                storage_options: dict | None = None) -> Outcome:
    """`run` on an open ``source`` and its plan ``p``, for a ``dest`` already checked (`convert-all`
    plans every mouse before it starts)."""
    run_blocks = executors.resolve(executor)
    state = state_for(dest, storage_options)
    if state.occupied() and not overwrite and not state.started():  # decided without touching anything
        if made_from(dest, source, p, storage_options):
            return Outcome(dest, "complete")
        raise StoreError(f"{dest}: already exists (use --overwrite to replace it)")
    with _storage_errors(state.where), state:  # from here on, this process alone may delete or rename
        record = plan_record(source, p)
        if state.plan() == record and state.finishing():  # killed while publishing the finished store
            state.finish()
            return Outcome(dest, "converted")
        if state.occupied():
            if not overwrite and made_from(dest, source, p, storage_options):
                state.discard()
                return Outcome(dest, "complete")
            if not overwrite:
                if state.plan() is None:
                    state.discard()  # made by this call: nothing to resume
                raise StoreError(f"{dest}: already exists (use --overwrite to replace it)")
            state.replace_existing()
        try:
            _check_space(source, p, dest, state)
        except (SourceError, StorageError):
            if state.plan() is None:
                state.discard()  # refused before writing: leave nothing behind
            raise
        with _bar(progress, p) as bar:
            try:
                _build(source, p, state, run_blocks, bar, record)
            except SourceError:
                state.start_over()  # bad input: nothing worth resuming
                state.discard()
                raise
    return Outcome(dest, "converted")
