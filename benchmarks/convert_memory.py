"""Peak memory and wall time of `convert` as the number of trials grows.

Usage: python benchmarks/convert_memory.py SRC [SRC ...]
Each conversion runs in a fresh process that reports its own peak resident memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
import converter
t = time.perf_counter()
store = converter.convert(sys.argv[1], sys.argv[2], progress=False)
wall = time.perf_counter() - t
n = converter.info(store)["n_trials"]
print(json.dumps({"trials": n, "wall_s": round(wall, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def measure(src: str) -> dict:
    with tempfile.TemporaryDirectory(dir=Path(src).parent) as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, src, f"{tmp}/m.zarr"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    rows = [measure(src) for src in sys.argv[1:]]
    print(f"{'trials':>8} {'wall s':>8} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['trials']:>8} {r['wall_s']:>8} {r['peak_rss_mb']:>12}")
