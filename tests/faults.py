"""Run the ``sensorium-zarr`` command with one function made to fail (for tests/test_faults.py).

Usage: ``python -m tests.faults MODULE:ATTR ACTION N ARG FLAG [command arguments...]``

At the N-th call of ``MODULE.ATTR`` (``ATTR`` may be ``Class.method``) whose positional
argument ``ARG`` (``"i=value"``; empty: any call) matches, ACTION happens before the call:
``kill`` sends this process SIGKILL; ``pause`` creates ``FLAG.ready`` and waits for
``FLAG.go``.  Then the command runs as ``sensorium-zarr`` would.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import threading
import time
from pathlib import Path


def wrap(target: str, action: str, nth: int, arg: str, flag: Path) -> None:
    module_name, attr = target.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    index, _, value = arg.partition("=")
    calls = {"n": 0}
    lock = threading.Lock()

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if not arg or (len(args) > int(index) and str(args[int(index)]) == value):
            with lock:
                calls["n"] += 1
                hit = calls["n"] == nth
            if hit and action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if hit and action == "pause":
                flag.with_suffix(".ready").touch()
                while not flag.with_suffix(".go").exists():
                    time.sleep(0.01)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    target, action, nth, arg, flag, *argv = sys.argv[1:]
    wrap(target, action, int(nth), arg, Path(flag))
    from converter import cli

    sys.argv[0] = "sensorium-zarr"  # this process stands for the command
    sys.exit(cli.main(argv))
