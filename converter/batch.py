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
import zipfile
from pathlib import Path

from .convert import convert, plan
from .errors import SourceError, StorageError, StoreError
from .progress import Progress
from .location import check_creatable, child, exists, filesystem, is_url, tree_bytes
from .schema import validate
from .source import open_source


def discover(src_dir: str | os.PathLike, storage_options: dict | None = None) -> list:
    """Dataset folders (holding ``data/`` and ``meta/``) and zips directly inside ``src_dir``."""
    if is_url(src_dir):
        fs, root = filesystem(src_dir, storage_options)
        protocol = str(src_dir).split("://", 1)[0]
        found = []
        for entry in sorted(fs.ls(root.rstrip("/"), detail=True), key=lambda e: e["name"]):
            name = entry["name"]
            if entry["type"] == "directory" and fs.exists(f"{name}/data") and fs.exists(f"{name}/meta"):
                found.append(f"{protocol}://{name}")
            elif entry["type"] != "directory" and name.lower().endswith(".zip"):
                found.append(f"{protocol}://{name}")
        if not found:
            raise SourceError(str(src_dir), "no dataset folders or zips in it")
        return found
    root = Path(src_dir)
    if not root.is_dir():
        raise SourceError(str(root), "not a folder")
    found = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and (p / "data").is_dir() and (p / "meta").is_dir():
            found.append(p)
        elif p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
            found.append(p)
    if not found:
        raise SourceError(str(root), "no dataset folders or zips in it")
    return found


def _name(src) -> str:
    name = str(src).rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".zip") else name


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
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
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


def convert_all(
    src_dir: str | os.PathLike,
    dest_dir: str | os.PathLike,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    storage_options: dict | None = None,
) -> list[dict]:
    """Convert every dataset in ``src_dir`` to ``dest_dir/<dataset name>.zarr``.

    Parameters
    ----------
    scheduler : address of a running dask scheduler (e.g. ``tcp://host:8786``); by default
        a local cluster of ``workers`` processes (one per core) is started.
    storage_options : for ``s3://`` (or other fsspec) URLs as ``src_dir`` or ``dest_dir``.
    progress : one bar over all mice on stderr; default: only on a terminal.

    Returns
    -------
    One row per dataset: ``mouse``, ``trials``, ``neurons``, ``seconds``, ``size_bytes``,
    ``status`` (``converted``, ``complete`` (already there), ``skipped: ...`` (a zip whose
    unzipped folder is also in ``src_dir``: converted once, from the folder) or
    ``failed: <reason>``).
    """
    so = storage_options
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    check_creatable(dest_dir)
    sources = discover(src_dir, so)
    folders = {_name(s) for s in sources if not str(s).lower().endswith(".zip")}
    rows, todo, total = [], [], 0
    for src in sources:
        dest = child(dest_dir, f"{_name(src)}.zarr")
        row = {"mouse": _name(src), "trials": None, "neurons": None, "seconds": 0.0, "size_bytes": None, "status": ""}
        rows.append(row)
        if str(src).lower().endswith(".zip") and _name(src) in folders:  # unzipped beside its zip: once, from the folder
            row.update(mouse=f"{_name(src)}.zip", status=f"skipped: the same dataset as the folder {_name(src)}/")
            continue
        try:
            if exists(child(dest, "zarr.json"), so):
                attrs = validate(dest, so)["attributes"]
                row.update(trials=attrs["n_trials"], neurons=attrs["n_neurons"], size_bytes=tree_bytes(dest, so), status="complete")
                continue
            source = open_source(src, so)
            try:
                p = plan(source)
            finally:
                source.close()
            row.update(trials=p.n_trials, neurons=p.n_neurons)
            total += p.n_trials * len(p.data_vars)
            todo.append((src, dest, row))
        except (SourceError, StoreError, OSError) as e:
            row["status"] = f"failed: {e}"
    if todo:
        with _client(scheduler, workers) as client, Progress(total, "convert-all", progress) as bar:
            if not is_url(dest_dir):  # only once the cluster is there: a failed start leaves nothing
                Path(dest_dir).mkdir(parents=True, exist_ok=True)
            for src, dest, row in todo:
                t = time.perf_counter()
                try:
                    convert(src, dest, client=client, progress=bar, storage_options=so)
                    row.update(status="converted", size_bytes=tree_bytes(dest, so))
                except (SourceError, StoreError, OSError) as e:
                    row["status"] = f"failed: {e}"
                row["seconds"] = time.perf_counter() - t
    return rows


def format_summary(rows: list[dict]) -> str:
    """The summary table printed at the end of ``convert-all``."""
    lines = [f"{'mouse':<60} {'trials':>7} {'neurons':>8} {'seconds':>8} {'size MB':>9}  status"]
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.1f}" if r["size_bytes"] else "-"
        lines.append(f"{r['mouse']:<60} {r['trials'] or '-':>7} {r['neurons'] or '-':>8} {r['seconds']:>8.1f} {size:>9}  {r['status']}")
    stores = [r for r in rows if not r["status"].startswith("skipped")]
    ok = sum(not r["status"].startswith("failed") for r in stores)
    lines.append(f"{ok} of {len(stores)} stores complete")
    return "\n".join(lines)
