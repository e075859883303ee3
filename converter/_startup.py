"""Ctrl-C while the command line starts: one line and exit 130, as at any later moment.

The imports take a second.  A `KeyboardInterrupt` raised in them can land in an import-lock
callback, where Python prints "Exception ignored" and carries on, so the command line takes
SIGINT with its own handler until `main` begins.  Other programs importing us are left alone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_previous = None


def _exit_interrupted(signum, frame) -> None:
    # Nothing has been written before main() begins, so leaving at once is safe.
    os.write(2, b"sensorium-zarr: interrupted\n")
    os._exit(130)


def is_command_line() -> bool:
    """True when this process is the ``sensorium-zarr`` command itself."""
    return os.path.basename(sys.argv[0]) == "sensorium-zarr" or sys.orig_argv[1:3] == ["-m", "converter.cli"]


def begin() -> None:
    """Take SIGINT while the command line imports (only when this process is the command line)."""
    global _previous
    if is_command_line() and threading.current_thread() is threading.main_thread():
        _previous = signal.signal(signal.SIGINT, _exit_interrupted)


def end() -> None:
    """Give SIGINT back to the handler it had, so a Ctrl-C raises `KeyboardInterrupt` again."""
    if _previous is not None and signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, _previous)
