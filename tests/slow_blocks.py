"""Preloaded into the workers of tests/test_distributed.py's cluster (``dask worker --preload``).

While the file named by ``SENSORIUM_ZARR_SLOW_BLOCKS`` exists, every block of trials a worker
writes first waits 1 s: long enough for a test to interrupt the client mid-conversion.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from converter.write import executors

_FLAG = Path(os.environ["SENSORIUM_ZARR_SLOW_BLOCKS"])
_write_block = getattr(executors.write_block, "__wrapped__", executors.write_block)  # dask may import this twice


@functools.wraps(_write_block)
def _slow_write_block(*args, **kwargs):
    if _FLAG.exists():
        time.sleep(1.0)
    return _write_block(*args, **kwargs)


executors.write_block = _slow_write_block
