"""A conversion in progress: its writer lock and the records that let it resume.

The store is built in ``<DEST>.incomplete/store`` and the state kept beside it, outside
the store, in ``<DEST>.incomplete/state/``: a ``lock`` file held with
``flock`` (the kernel releases it when the process dies, SIGKILL included), ``plan.json``
(written once the skeleton is complete) and one ``blocks/<first trial>.json`` per block
whose chunks are all written.  A record is written atomically (temporary file, then
rename) and only after the data it vouches for, so a record never claims unwritten data.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from .errors import StoreError
from .store import BlockResult

def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class ConversionState:
    """The state of the conversion working in ``work`` (``<DEST>.incomplete``); hold it with ``with``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.store = work / "store"
        self.dir = work / "state"
        self._lock_fd: int | None = None

    def __enter__(self) -> ConversionState:
        (self.dir / "blocks").mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(f"{self.work}: another conversion (pid {holder}) is writing this store; not interfering") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def plan(self) -> dict | None:
        try:
            return json.loads((self.dir / "plan.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def save_plan(self, plan: dict) -> None:
        _write_json(self.dir / "plan.json", plan)

    def done_blocks(self) -> dict[int, BlockResult]:
        """The blocks whose records exist, by first trial."""
        out = {}
        for p in (self.dir / "blocks").glob("*.json"):
            try:
                r = _result(json.loads(p.read_text()))
            except ValueError:
                continue  # cannot happen with atomic writes; redo the block if it does
            out[r.block.start] = r
        return out

    def save_block(self, r: BlockResult) -> None:
        _write_json(self.dir / "blocks" / f"{r.block.start}.json", _record(r))


def start_over(state) -> None:
    """Forget all work done: an empty store, no plan, no block records."""
    if isinstance(state, RemoteConversionState):
        state.start_over()
        return
    shutil.rmtree(state.store, ignore_errors=True)
    shutil.rmtree(state.dir / "blocks", ignore_errors=True)
    (state.dir / "blocks").mkdir()
    (state.dir / "plan.json").unlink(missing_ok=True)


def _record(r: BlockResult) -> dict:
    return {
        "start": r.block.start,
        "stop": r.block.stop,
        "crc32": {k: v.tolist() for k, v in r.crc32.items()},
        "headers": {k: [base64.b64encode(h).decode() for h in v] for k, v in r.headers.items()},
        "withheld": r.withheld,
    }


def _result(d: dict) -> BlockResult:
    return BlockResult(
        range(d["start"], d["stop"]),
        {k: np.asarray(v, dtype=np.uint32) for k, v in d["crc32"].items()},
        {k: {base64.b64decode(h) for h in v} for k, v in d["headers"].items()},
        d["withheld"],
    )


class RemoteConversionState:
    """The state of a conversion into object storage, which has neither rename nor flock.

    The store is written in place at DEST, except its root ``zarr.json``, which is written
    last: until then no Zarr reader opens DEST.  The records live under the sibling prefix
    ``<DEST>.incomplete/state/``.  The lock is an object naming its holder (host, pid) with
    a heartbeat renewed at every block; it is taken over when its holder is a dead process
    on this host, or when its heartbeat is older than `STALE_SECONDS` (another host).
    Object stores give no atomic create-if-absent here, so two writers starting within the
    same moment on different hosts are not excluded; everything else is.
    """

    STALE_SECONDS = 600

    def __init__(self, dest: str, storage_options: dict | None) -> None:
        from .location import filesystem

        self.store = dest.rstrip("/")
        self.storage_options = storage_options
        self.fs, root = filesystem(dest, storage_options)
        self.root = root.rstrip("/")
        self.dir = f"{self.root}.incomplete/state"
        self._me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}

    def _lock_holder(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(f"{self.dir}/lock"))
        except (FileNotFoundError, ValueError):
            return None

    def _heartbeat(self) -> None:
        self.fs.pipe_file(f"{self.dir}/lock", json.dumps({**self._me, "time": time.time()}).encode())

    def __enter__(self) -> RemoteConversionState:
        holder = self._lock_holder()
        if holder is not None and holder.get("token") != self._me["token"]:
            dead_here = holder.get("host") == self._me["host"] and not _alive(holder.get("pid"))
            stale = time.time() - float(holder.get("time", 0)) > self.STALE_SECONDS
            if not (dead_here or stale):
                raise StoreError(f"{self.store}: another conversion (pid {holder.get('pid')} on {holder.get('host')}) "
                                 "is writing this store; not interfering")
        self._heartbeat()
        return self

    def __exit__(self, *exc) -> None:
        holder = self._lock_holder()
        if holder is not None and holder.get("token") == self._me["token"]:
            self.fs.rm_file(f"{self.dir}/lock")

    def plan(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(f"{self.dir}/plan.json"))
        except (FileNotFoundError, ValueError):
            return None

    def save_plan(self, plan: dict) -> None:
        self.fs.pipe_file(f"{self.dir}/plan.json", json.dumps(plan).encode())

    def done_blocks(self) -> dict[int, BlockResult]:
        out = {}
        for path in self.fs.glob(f"{self.dir}/blocks/*.json"):
            r = _result(json.loads(self.fs.cat_file(path)))
            out[r.block.start] = r
        return out

    def save_block(self, r: BlockResult) -> None:
        self.fs.pipe_file(f"{self.dir}/blocks/{r.block.start}.json", json.dumps(_record(r)).encode())
        self._heartbeat()

    def start_over(self) -> None:
        for prefix in (self.root, f"{self.dir}/blocks"):
            if self.fs.exists(prefix):
                self.fs.rm(prefix, recursive=True)
        if self.fs.exists(f"{self.dir}/plan.json"):
            self.fs.rm_file(f"{self.dir}/plan.json")

    def finish(self) -> None:
        """Drop the records once the store's root metadata is written."""
        self.fs.rm(f"{self.root}.incomplete", recursive=True)


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
