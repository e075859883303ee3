"""A conversion in progress: its writer lock and the records that let it resume.

Every state follows `ConversionState`: `plan` / `save_plan` record the decided layout once
the skeleton is written, `done_blocks` / `save_block` one record per block of trials whose
chunks are all written, `start_over` forgets the work, and `finish` publishes the finished
store at DEST.  A record is written only after the data it vouches for, so a record never
claims unwritten data.  Only the holder of the lock deletes or renames anything.

Storages differ in one way, and it sits here: on a disk (`LocalState`) the store is built
in ``<DEST>.incomplete/store`` and renamed to DEST when finished; object storage
(`ObjectStoreState`) cannot rename, so the store is built in place and its root
``zarr.json`` (which makes it a store to any reader) is hidden until `finish` writes it.
`state_for` picks the state for a DEST.
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
from typing import Protocol

import numpy as np

from ..errors import StoreError
from ..storage import Location, filesystem, renames, write_bytes
from .. import schema
from .store import BlockResult, finalize


class ConversionState(Protocol):
    """What a conversion driver needs from the state of one DEST; hold it with ``with`` (the lock)."""

    store: Location  # where the store is written
    where: Location  # how messages name the conversion's working place
    storage_options: dict | None  # for fsspec, where the store is at a URL

    def __enter__(self) -> ConversionState: ...
    def __exit__(self, *exc) -> None: ...
    def occupied(self) -> bool:
        """DEST holds something (a finished store, or anything else in the way)."""
    def started(self) -> bool:
        """An earlier conversion into DEST left records (it may be resumed)."""
    def plan(self) -> dict | None: ...
    def save_plan(self, plan: dict) -> None: ...
    def done_blocks(self) -> dict[int, BlockResult]: ...
    def save_block(self, r: BlockResult) -> None: ...
    def start_over(self) -> None: ...
    def replace_existing(self) -> None:
        """Make way for a new store where DEST holds one (``--overwrite``)."""
    def finishing(self) -> bool:
        """A finished store is being published (a rerun completes that)."""
    def finish(self, attrs: dict) -> None:
        """Write the root metadata (``attrs``), validate, publish the store at DEST, drop the records."""
    def discard(self) -> None:
        """Drop the records and anything unfinished outside DEST."""


def state_for(dest: Location, storage_options: dict | None = None) -> ConversionState:
    """The state of a conversion into ``dest``: `LocalState` where folders rename, else `ObjectStoreState`."""
    if renames(dest):
        return LocalState(Path(dest))
    return ObjectStoreState(str(dest), storage_options)


def _write_json(path: Path, obj) -> None:
    write_bytes(path, json.dumps(obj).encode())  # through a temporary name, then renamed


class LocalState:
    """A conversion on disk: the store is built in ``<DEST>.incomplete/store`` and renamed to DEST.

    The records live beside it in ``<DEST>.incomplete/state/``: a ``lock`` file held with
    ``flock`` (the kernel releases it when the process dies, SIGKILL included),
    ``plan.json``, ``blocks/<first trial>.json``, and ``publish`` while the finished store
    is being moved to DEST.  Records are written atomically (temporary file, then rename).
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        full = Path(os.path.abspath(dest))  # "." and "x/" name their folder
        self.work = self.where = full.with_name(full.name + ".incomplete")
        self.store = self.work / "store"
        self.dir = self.work / "state"
        self.storage_options = None
        self._lock_fd: int | None = None

    def __enter__(self) -> LocalState:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
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

    def occupied(self) -> bool:
        return self.dest.exists()

    def started(self) -> bool:
        return self.work.exists()

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

    def finishing(self) -> bool:
        return (self.dir / "publish").exists()

    def replace_existing(self) -> None:
        """Refuse to replace anything that is not a Zarr store; the old store stays until `finish`."""
        d = self.dest
        if not (d.is_dir() and ((d / "zarr.json").exists() or not any(d.iterdir()))):
            raise StoreError(f"{d}: exists and is not a Zarr store; refusing to delete it")

    def finish(self, attrs: dict | None = None) -> None:
        """Finalize and validate the store (unless a rerun finds it finished), then move it to DEST.

        Resumable at every step: ``publish`` is recorded first, and the old store goes to
        ``old/`` before the new one takes its place, so DEST never holds a half-deleted store:
        it holds the old store, then (for an instant) nothing, then the new one.
        """
        if not self.finishing():
            finalize(self.store, attrs)
            schema.validate(self.store)
            _write_json(self.dir / "publish", {"dest": str(self.dest)})
        old = self.work / "old"
        if self.store.exists():
            if self.dest.exists() and not old.exists():
                os.replace(self.dest, old)
            os.replace(self.store, self.dest)
        self.discard()

    def start_over(self) -> None:
        """Forget all work done: an empty store, no plan, no block records."""
        shutil.rmtree(self.store, ignore_errors=True)
        shutil.rmtree(self.dir / "blocks", ignore_errors=True)
        (self.dir / "blocks").mkdir()
        for name in ("plan.json", "publish"):
            (self.dir / name).unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete the working folder, records and lock file included (the lock stays held until exit)."""
        shutil.rmtree(self.work, ignore_errors=True)


def _record(r: BlockResult) -> dict:
    return {
        "start": r.block.start,
        "stop": r.block.stop,
        "crc32": {k: v.tolist() for k, v in r.crc32.items()},
        "headers": {k: [base64.b64encode(h).decode() for h in v] for k, v in r.headers.items()},
        "flags": {k: v.tolist() for k, v in r.flags.items()},
    }


def _result(d: dict) -> BlockResult:
    return BlockResult(
        range(d["start"], d["stop"]),
        {k: np.asarray(v, dtype=np.uint32) for k, v in d["crc32"].items()},
        {k: {base64.b64decode(h) for h in v} for k, v in d["headers"].items()},
        {k: np.asarray(v, dtype=bool if k.endswith("_withheld") else np.int64) for k, v in d.get("flags", {}).items()},
    )


class ObjectStoreState:
    """A conversion into object storage, which has neither rename nor flock.

    The store is written in place at DEST, except its root ``zarr.json``, which is written
    last: until then no Zarr reader opens DEST.  The records live under the sibling prefix
    ``<DEST>.incomplete/state/``.  The lock is an object naming its holder (host, pid) with
    a heartbeat renewed at every block; it is taken over when its holder is a dead process
    on this host, or when its heartbeat is older than `STALE_SECONDS` (another host).

    On S3 the lock is created with a conditional write (``If-None-Match: *``), taken over
    and renewed only if unchanged since read (``If-Match``), so of two writers starting at
    the same instant exactly one wins, and a writer whose lock was taken over stops at its
    next block.  Other filesystems get the same rules checked by read-then-write, which
    two writers starting within the same moment can both pass.
    """

    STALE_SECONDS = 600

    def __init__(self, dest: str, storage_options: dict | None) -> None:
        self.store = self.where = dest.rstrip("/")
        self.storage_options = storage_options
        self.fs, root = filesystem(dest, storage_options)
        self.root = root.rstrip("/")
        self.dir = f"{self.root}.incomplete/state"
        self._lock = f"{self.dir}/lock"
        self._building = f"{self.dir}/building"  # present while DEST holds an unfinished store of ours
        self._me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        self._etag: str | None = None  # of our lock object, where the store reports one
        self._conditional = "s3" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def _lock_holder(self) -> tuple[dict | None, str | None]:
        try:
            etag = self.fs.info(self._lock).get("ETag") if self._conditional else None
            return json.loads(self.fs.cat_file(self._lock)), etag
        except (FileNotFoundError, ValueError):
            return None, None

    def _write_lock(self, **condition) -> None:
        """Write our lock object; `FileExistsError` (or a refused precondition) when the condition fails."""
        body = json.dumps({**self._me, "time": time.time()}).encode()
        if not self._conditional:
            if condition.get("mode") == "create" and self.fs.exists(self._lock):
                raise FileExistsError(self._lock)
            self.fs.pipe_file(self._lock, body)
            return
        out = self.fs.pipe_file(self._lock, body, **condition)
        self._etag = (out or {}).get("ETag") if isinstance(out, dict) else None
        self.fs.invalidate_cache(self._lock)

    def _busy(self, holder: dict, what: str = "is writing this store; not interfering") -> StoreError:
        return StoreError(f"{self.store}: another conversion (pid {holder.get('pid')} on {holder.get('host')}) {what}")

    def __enter__(self) -> ObjectStoreState:
        try:
            self._write_lock(mode="create")
            return self
        except FileExistsError:
            pass
        holder, etag = self._lock_holder()
        if holder is not None:
            dead_here = holder.get("host") == self._me["host"] and not _alive(holder.get("pid"))
            stale = time.time() - float(holder.get("time", 0)) > self.STALE_SECONDS
            if not (dead_here or stale):
                raise self._busy(holder)
        try:  # take over a dead or stale holder's lock, unless someone else just did
            self._write_lock(**({"IfMatch": etag} if etag else {"mode": "create"} if holder is None else {}))
        except (FileExistsError, OSError):
            raise self._busy(self._lock_holder()[0] or {}) from None
        return self

    def _heartbeat(self) -> None:
        try:
            self._write_lock(**({"IfMatch": self._etag} if self._etag else {}))
        except (FileExistsError, OSError):
            holder = self._lock_holder()[0] or {}
            if holder.get("token") != self._me["token"]:
                raise self._busy(holder, "took over this store's lock; stopped") from None
            raise

    def __exit__(self, *exc) -> None:
        if self.fs.exists(self._building):  # stopped half-way: whatever wrote a root zarr.json, no reader may open it
            self._hide_root()
        holder, _ = self._lock_holder()
        if holder is not None and holder.get("token") == self._me["token"]:
            self.fs.rm_file(self._lock)

    def _hide_root(self) -> None:
        self.fs.invalidate_cache(self.root)  # zarr wrote it through another client: a cached listing may not know
        try:
            self.fs.rm_file(f"{self.root}/zarr.json")
        except FileNotFoundError:
            pass

    def plan(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(f"{self.dir}/plan.json"))
        except (FileNotFoundError, ValueError):
            return None

    def occupied(self) -> bool:
        """A store's root is at DEST and it is not this conversion's unfinished one."""
        return self.fs.exists(f"{self.root}/zarr.json") and not self.fs.exists(self._building)

    def started(self) -> bool:
        return self.fs.exists(f"{self.root}.incomplete")

    def save_plan(self, plan: dict) -> None:
        """Record the plan, once the root ``zarr.json`` that writing the skeleton left is gone.

        The steps before the plan are the only ones that write root metadata (block and
        checksum arrays are created at their own paths), so from here on no reader takes
        the store for a finished one until `finish`.
        """
        self._hide_root()
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
        """Forget all work done, the store at DEST included (no rename keeps an old one aside)."""
        for prefix in (self.root, f"{self.dir}/blocks"):
            if self.fs.exists(prefix):
                self.fs.rm(prefix, recursive=True)
        if self.fs.exists(f"{self.dir}/plan.json"):
            self.fs.rm_file(f"{self.dir}/plan.json")
        self.fs.pipe_file(self._building, b"")  # from here on, what DEST holds is this conversion's

    def replace_existing(self) -> None:
        """Delete the old store now: without rename, nothing keeps it aside."""
        self.start_over()

    def finishing(self) -> bool:
        return False  # `finish` is one write of the root metadata: nothing to complete

    def finish(self, attrs: dict) -> None:
        """Write the root metadata last: only now is DEST a store to any reader."""
        finalize(self.store, attrs, self.storage_options)
        schema.validate(self.store, self.storage_options)
        self.discard()

    def discard(self) -> None:
        """Drop the records (the lock object last, by `__exit__`)."""
        for path in self.fs.find(f"{self.root}.incomplete"):
            if path.rstrip("/") != self._lock:
                self.fs.rm_file(path)


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
