#!/usr/bin/env bash
# The checks that need the GPU machine a session may be lent (one H200, 16 cores; Python 3.12 with
# PyTorch, but without zarr and most of this project's dependencies), as one prepared run that fits
# its few minutes: the CUDA tests, the training benchmark with the reference model, and the
# conversion on every core.
#
#   bash benchmarks/device.sh wheels     # here, first: the wheels that machine lacks, into .whl/
#                                        # (ignored by git through .git/info/exclude)
#   then the device tool: run with carry [".whl"], timeout_s 580, command "bash benchmarks/device.sh run"
#   bash benchmarks/device.sh run tiny   # the same steps at the tiny size: tries the script anywhere
#
# What comes back, under $OUT: log.txt (every step, timed), and the two benchmarks' results,
# {training,scaling}-<size>.{md,json}, for benchmarks/results/ here as *-h200.*.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS="zarr numcodecs google-crc32c crc32c isal donfig msgspec typing-extensions dask distributed flox numpy-groupies
        xarray jsonschema jsonschema-specifications referencing rpds-py tblib zict tornado partd locket"

case "${1:-}" in
wheels)
    mkdir -p .git/info
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl $WHEELS || exit 1
    du -sh .whl
    ;;
run)
    size=${2:-full}
    OUT=${OUT:-/tmp/device-out}
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
    step() { echo "== $(date +%T) $*"; }
    {
        step "the machine"
        nvidia-smi -L 2>/dev/null
        python3 -c "import os, torch, zarr, converter; print(os.cpu_count(), 'cores; torch', torch.__version__, 'cuda', torch.cuda.is_available(), '; zarr', zarr.__version__, '; sensorium-zarr', converter.__version__)"
        step "the sources, side by side"
        python3 -c "import sys; from benchmarks.run import HERE; from benchmarks.training import sources; sources(sys.argv[1], HERE / 'data')" "$size"
        step "tests/test_device.py (its CUDA cases run here)"
        timeout 150 python3 -m pytest -p no:cacheprovider -n 0 -q -rs tests/test_device.py
        step "python -m benchmarks.training --model --workers 0,8,16"
        timeout 330 python3 -m benchmarks.training --size "$size" --model --workers 0,8,16 --out "$OUT" > /dev/null
        step "python -m benchmarks.scaling"
        timeout 150 python3 -m benchmarks.scaling --size "$size" --out "$OUT" > /dev/null
        step "done"
    } 2>&1 | tee "$OUT/log.txt"
    ;;
*)
    echo "usage: bash benchmarks/device.sh wheels | run [full|tiny]" >&2
    exit 2
    ;;
esac
