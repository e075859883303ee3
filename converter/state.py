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
                d = json.loads(p.read_text())
            except ValueError:
                continue  # cannot happen with atomic writes; redo the block if it does
            block = range(d["start"], d["stop"])
            out[block.start] = BlockResult(
                block,
                {k: np.asarray(v, dtype=np.uint32) for k, v in d["crc32"].items()},
                {k: {base64.b64decode(h) for h in v} for k, v in d["headers"].items()},
                d["withheld"],
            )
        return out

    def save_block(self, r: BlockResult) -> None:
        _write_json(self.dir / "blocks" / f"{r.block.start}.json", {
            "start": r.block.start,
            "stop": r.block.stop,
            "crc32": {k: v.tolist() for k, v in r.crc32.items()},
            "headers": {k: [base64.b64encode(h).decode() for h in v] for k, v in r.headers.items()},
            "withheld": r.withheld,
        })


def start_over(state: ConversionState) -> None:
    """Forget all work done: an empty store folder, no plan, no block records."""
    shutil.rmtree(state.store, ignore_errors=True)
    shutil.rmtree(state.dir / "blocks", ignore_errors=True)
    (state.dir / "blocks").mkdir()
    (state.dir / "plan.json").unlink(missing_ok=True)
