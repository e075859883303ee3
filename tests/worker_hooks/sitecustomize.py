"""On the ``PYTHONPATH`` of the commands tests/test_processes.py runs, so that their worker
processes, which inherit it, load tests/slow_blocks.py too (its flag file in
``SENSORIUM_ZARR_SLOW_BLOCKS`` makes each block wait while it exists)."""

import os

if os.environ.get("SENSORIUM_ZARR_SLOW_BLOCKS"):
    import tests.slow_blocks  # noqa: F401
