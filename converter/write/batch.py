"""``convert-all``: every dataset of a folder, on a dask.distributed cluster.

Mice are converted one after another; the blocks of each are spread over all workers, so
several workers write one mouse in parallel (blocks own disjoint chunks).  A store that is
already complete and valid is skipped; a partial one resumes; one failure does not stop
the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from ..errors import SourceError, StorageError, StoreError
from ..schema import validate
from ..progress import Progress
from ..source import open_source
from ..storage import Location, check_creatable, check_store_dest, child, exists, filesystem, listing, make_folder, name, tree_bytes
from .convert import run_planned
from .plan import plan


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
    from distributed import Client, LocalCluster

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
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                               silence_logs=logging.CRITICAL)
    with cluster, Client(cluster) as client:
        yield client


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
        Local folders or URLs (``s3://...``; ``storage_options`` go to fsspec).
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
    with contextlib.ExitStack() as opened:  # each source stays open from its plan to its conversion
        rows, todo, total = [], [], 0
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
                source = open_source(src, so)
                opened.enter_context(contextlib.closing(source))
                p = plan(source)  # once: the conversion below takes this plan
                row.trials, row.neurons = p.n_trials, p.n_neurons
                total += p.n_trials * len(p.data_vars)
                todo.append((source, p, dest, row))
            except (SourceError, StoreError, OSError) as e:
                row.status, row.reason = "failed", str(e)
        if todo:
            with _client(scheduler, workers) as client, Progress(total, "convert-all", progress) as bar:
                make_folder(dest_dir)  # only once the cluster is there: a failed start leaves nothing
                for source, p, dest, row in todo:
                    t = time.perf_counter()
                    try:
                        run_planned(source, p, dest, executor=client, progress=bar, storage_options=so)
                        row.status, row.size_bytes = "converted", tree_bytes(dest, so)
                    except (SourceError, StoreError, OSError) as e:
                        row.status, row.reason = "failed", str(e)
                    row.seconds = time.perf_counter() - t
        return rows


def format_summary(rows: list[MouseResult]) -> str:
    """The summary table printed at the end of ``convert-all``."""
    lines = [f"{'mouse':<60} {'trials':>7} {'neurons':>8} {'seconds':>8} {'size MB':>9}  status"]
    for r in rows:
        size = f"{r.size_bytes / 1e6:.1f}" if r.size_bytes else "-"
        lines.append(f"{r.mouse:<60} {r.trials or '-':>7} {r.neurons or '-':>8} {r.seconds:>8.1f} {size:>9}  {r}")
    stores = [r for r in rows if r.status != "skipped"]
    lines.append(f"{sum(r.ok for r in stores)} of {len(stores)} stores complete")
    return "\n".join(lines)
