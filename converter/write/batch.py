"""``convert-all``: every dataset of a folder, on a dask.distributed cluster.

The client only decides and waits: every mouse is planned, then converted, by a task on a
worker, all mice at once.  A mouse's task spreads its blocks of trials over the whole
cluster from there (`distributed.worker_client`), so several workers write one mouse in
parallel (blocks own disjoint chunks), and the serial parts of each mouse (its plan, the
store's skeleton, the final metadata) run beside the others' instead of one after another
in the client.  A store that is already complete and valid is skipped; a partial one
resumes; one failure does not stop the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import SourceError, StorageError, StoreError
from ..schema import validate
from ..progress import Progress
from ..source import open_source
from ..storage import (Location, check_creatable, check_store_dest, child, exists, filesystem, listing, make_folder, name,
                       portable, tree_bytes)
from . import executors
from .convert import run_planned
from .plan import Plan, plan


def discover(src_dir: Location, storage_options: dict | None = None) -> list[Location]:
    """Dataset folders (holding ``data/`` and ``meta/``) and zips directly inside ``src_dir``."""
    fs, path = filesystem(src_dir, storage_options)
    if not fs.isdir(path):
        raise SourceError(str(src_dir), "not a folder")
    found = []
    for entry, is_folder in listing(src_dir, storage_options):
        if is_folder and all(exists(child(entry, f), storage_options) for f in ("data", "meta")):
            found.append(entry)
        elif not is_folder and name(entry).lower().endswith(".zip"):
            found.append(entry)
    if not found:
        raise SourceError(str(src_dir), "no dataset folders or zips in it")
    return found


def _name(src: Location) -> str:
    n = name(src)
    return n[:-4] if n.lower().endswith(".zip") else n


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None):
    import dask
    from distributed import Client, LocalCluster

    from .processes import worker_environ

    if scheduler:
        try:
            client = Client(scheduler)
        except ValueError as e:
            raise StoreError(f"--scheduler {scheduler}: not a dask scheduler address ({e})") from None
        except OSError as e:
            raise StorageError(f"{scheduler}: cannot reach the dask scheduler ({e})") from None
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with _workers_ignore_ctrl_c():
        # its HTTP server on a free loopback port: 8787 may be another cluster's, and a warning would say so.
        # Its own logs stay quiet: what fails in a mouse comes back as that mouse's result, and a worker
        # that outlives its scheduler after a Ctrl-C would log the lost heartbeat as an error.
        # dask sets its workers' start-up variables in this process's environment to spawn them
        spawn = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in worker_environ().items()}
        with dask.config.set(spawn), _environ_restored():
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                                   silence_logs=logging.CRITICAL)
    with cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _environ_restored():
    """This process's environment variables as they were before, whatever the block changed."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for k in set(os.environ) - set(saved):
            del os.environ[k]
        os.environ.update(saved)


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start worker processes with SIGINT ignored (they inherit it), then restore our handler.

    Ctrl-C in a terminal reaches every process of the group; the workers would each print
    a traceback. This way only we see it, and shut the cluster down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class MouseResult:
    """What `convert_all` did with one dataset.

    ``status`` is ``converted``, ``complete`` (already there), ``skipped`` (a zip whose
    unzipped folder is also in the source folder: converted once, from the folder) or
    ``failed``; ``reason`` says why for the last two.
    """

    mouse: str
    status: str = "pending"
    reason: str = ""
    trials: int | None = None
    neurons: int | None = None
    seconds: float = 0.0
    size_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("converted", "complete", "skipped")

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


STOP_SECONDS = 60  # the longest a stopped run waits for its mice to stop: each stops at its next finished block


class _Stopped(Exception):
    """The client has gone (an error, a Ctrl-C): a mouse still converting on a worker stops."""


class _Relay(Progress):
    """The progress of one mouse converted on a worker: sent to the client's bar, and where the
    mouse stops once the client has set ``stop``."""

    def __init__(self, stop, queue) -> None:
        super().__init__(1, "", enabled=False)
        self.stop, self.queue = stop, queue

    def __call__(self, n: int = 1) -> None:
        if self.queue is not None:
            self.queue.put(n)
        if self.stop.is_set():
            raise _Stopped


def _spread(task, blocks, progress) -> Iterator:
    """The executor of a mouse converted on a worker: its blocks go to the whole cluster, and
    while they run this task's thread leaves the worker's pool, free for them."""
    from distributed import worker_client

    with worker_client() as client:
        yield from executors.dask(client)(task, blocks, progress)


def _plan_mouse(src: Location, storage_options: dict | None) -> Plan | str:
    """On a worker: the plan of one dataset, or the one line that says why it cannot be converted."""
    try:
        with contextlib.closing(open_source(src, storage_options)) as source:
            return plan(source)
    except (SourceError, StoreError, OSError) as e:
        return str(e)


def _convert_mouse(src: Location, p: Plan, dest: Location, storage_options: dict | None, stop, queue) -> tuple:
    """On a worker: one planned dataset into its store; ``(status, reason, size in bytes, seconds)``."""
    start = time.perf_counter()
    try:
        if stop.is_set():  # started after the client stopped the run
            raise _Stopped
        with contextlib.closing(open_source(src, storage_options)) as source:
            run_planned(source, p, dest, executor=_spread, progress=_Relay(stop, queue), storage_options=storage_options)
        return "converted", "", tree_bytes(dest, storage_options), time.perf_counter() - start
    except (SourceError, StoreError, OSError) as e:
        return "failed", str(e), None, time.perf_counter() - start
    except _Stopped:
        return "failed", "stopped", None, time.perf_counter() - start


@contextlib.contextmanager
def _relayed(client, bar: Progress):
    """What the mice's tasks need: an event that stops them, and, when ``bar`` is drawn, a queue
    for their progress, drained into it here by a thread."""
    from distributed import Event, Queue

    run = uuid.uuid4().hex[:12]
    stop = Event(f"sensorium-zarr-stop-{run}", client=client)
    queue = Queue(f"sensorium-zarr-progress-{run}", client=client) if bar.enabled else None
    finished = threading.Event()

    def drain() -> None:
        while not finished.is_set():
            try:
                bar(queue.get(timeout=0.2))
            except TimeoutError:
                pass

    reader = threading.Thread(target=drain, daemon=True, name="sensorium-zarr-progress") if queue is not None else None
    if reader is not None:
        reader.start()
    try:
        yield stop, queue
    finally:
        finished.set()
        if reader is not None:
            reader.join()
            with contextlib.suppress(Exception):
                bar(sum(queue.get(batch=True)))  # what came after the thread's last look
                queue.close()


def _stop(client, futures: list, stop) -> None:
    """Stop the mice still converting (each at its next finished block) and wait until they have:
    a worker closed under a running mouse would print its client's errors."""
    from distributed import wait

    with contextlib.suppress(Exception):
        stop.set()
        wait(futures, timeout=STOP_SECONDS)
    client.cancel(futures)


def convert_all(
    src_dir: Location,
    dest_dir: Location,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    storage_options: dict | None = None,
) -> list[MouseResult]:
    """Convert every dataset in ``src_dir`` to ``dest_dir/<dataset name>.zarr``.

    Parameters
    ----------
    src_dir, dest_dir : str or os.PathLike
        Local folders or URLs (``s3://...``; ``storage_options`` go to fsspec).  Every worker
        reads the sources and writes the stores itself: they must be reachable from each.
    scheduler : str, optional
        Address of a running dask scheduler (e.g. ``tcp://host:8786``); by default a local
        cluster of ``workers`` processes (one per core) is started.
    progress : bool, optional
        One bar over all mice on stderr; default: only on a terminal.

    Returns
    -------
    list of MouseResult
        One per dataset, in the order of `discover`.
    """
    so = storage_options
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    check_creatable(dest_dir)
    sources = discover(src_dir, so)
    folders = {_name(s) for s in sources if not name(s).lower().endswith(".zip")}
    rows, todo = [], []
    for src in sources:
        dest = child(dest_dir, f"{_name(src)}.zarr")
        row = MouseResult(_name(src))
        rows.append(row)
        if name(src).lower().endswith(".zip") and _name(src) in folders:  # unzipped beside its zip: once, from the folder
            row.mouse, row.status, row.reason = f"{_name(src)}.zip", "skipped", f"the same dataset as the folder {_name(src)}/"
            continue
        try:
            if exists(child(dest, "zarr.json"), so):
                attrs = validate(dest, so)["attributes"]
                row.trials, row.neurons, row.size_bytes, row.status = attrs["n_trials"], attrs["n_neurons"], tree_bytes(dest, so), "complete"
                continue
            check_store_dest(dest, src)
            todo.append((portable(src), portable(dest), row))
        except (SourceError, StoreError, OSError) as e:
            row.status, row.reason = "failed", str(e)
    if todo:
        with _client(scheduler, workers) as client:
            run = uuid.uuid4().hex[:12]  # task keys unique per run: two runs may share a scheduler
            ready = _plan_all(client, todo, so, run)
            if ready:
                make_folder(dest_dir)  # only once the cluster is there: a failed start leaves nothing
                _convert_planned(client, ready, so, run, progress)
    return rows


def _plan_all(client, todo: list, storage_options: dict | None, run: str) -> list:
    """Every mouse of ``todo`` planned at once on the workers; those that can be converted, with
    their plans (the others' rows say why not)."""
    planned = [client.submit(_plan_mouse, src, storage_options, key=f"convert-all-plan-{row.mouse}-{run}", pure=False)
               for src, _, row in todo]
    try:
        plans = client.gather(planned)
    finally:
        client.cancel(planned)
    ready = []
    for (src, dest, row), p in zip(todo, plans):
        if isinstance(p, str):
            row.status, row.reason = "failed", p
        else:
            row.trials, row.neurons = p.n_trials, p.n_neurons
            ready.append((src, p, dest, row))
    return ready


def _convert_planned(client, ready: list, storage_options: dict | None, run: str, progress: bool | None) -> None:
    """Every planned mouse converted at once on the workers, its row filled in as it ends."""
    from distributed import as_completed

    total = sum(p.n_trials * len(p.data_vars) for _, p, _, _ in ready)
    with Progress(total, "convert-all", progress) as bar, _relayed(client, bar) as (stop, queue):
        futures = {client.submit(_convert_mouse, src, p, dest, storage_options, stop, queue,
                                 key=f"convert-all-{row.mouse}-{run}", pure=False): row for src, p, dest, row in ready}
        try:
            for future in as_completed(list(futures)):
                row = futures[future]
                row.status, row.reason, row.size_bytes, row.seconds = future.result()
        except BaseException:
            _stop(client, list(futures), stop)
            raise


def format_summary(rows: list[MouseResult]) -> str:
    """The summary table printed at the end of ``convert-all``."""
    lines = [f"{'mouse':<60} {'trials':>7} {'neurons':>8} {'seconds':>8} {'size MB':>9}  status"]
    for r in rows:
        size = f"{r.size_bytes / 1e6:.1f}" if r.size_bytes else "-"
        lines.append(f"{r.mouse:<60} {r.trials or '-':>7} {r.neurons or '-':>8} {r.seconds:>8.1f} {size:>9}  {r}")
    stores = [r for r in rows if r.status != "skipped"]
    lines.append(f"{sum(r.ok for r in stores)} of {len(stores)} stores complete")
    return "\n".join(lines)
