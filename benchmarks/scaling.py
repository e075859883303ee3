"""The short many-core check: one full-size 2022 mouse, ``convert --workers N`` for N = 1, 2, 4, ...
up to the cores in interleaved rounds, ``info STORE``, and the phases of one conversion with one
worker and with every core.

    python -m benchmarks.scaling               # about 2 minutes on 16 cores
    python -m benchmarks.scaling --size tiny   # the same code in seconds

It is the part of ``python -m benchmarks.conversion`` that a borrowed machine's few minutes
allow.  Results go to ``benchmarks/results/scaling-<size>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .conversion import CLI, np_load_all, phases, timed
from .run import HERE, dataset, machine

SIZES = {"full": {"trials": 6955, "neurons": 7776, "rounds": 2}, "tiny": {"trials": 300, "neurons": 40, "rounds": 1}}


def run(size: str = "full", data: Path = HERE / "data", out: Path = HERE / "results") -> dict:
    s = SIZES[size]
    cores = os.cpu_count() or 1
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n < cores] + [cores]
    src = dataset(data, s["trials"], s["neurons"], "float32")
    work = data / "work" / f"scaling-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = [{"workload": "np.load every data file, one thread", "seconds": np_load_all(src, 1)}]
    for rnd in range(s["rounds"]):
        for n in counts:
            shutil.rmtree(work / "m.zarr", ignore_errors=True)
            subprocess.run(["sync"], check=True)
            rows.append({"workload": "convert", "workers": n, "round": rnd,
                         **timed([*CLI, "convert", str(src), str(work / "m.zarr"), "--quiet", "--workers", str(n)])})
            print(rows[-1], file=sys.stderr)
    rows.append({"workload": "sensorium-zarr info STORE", **timed([*CLI, "info", str(work / "m.zarr")], 3)})
    for n in sorted({1, cores}):
        rows.append({"workload": "phases", "workers": n, "phases": phases(src, work / "phases.zarr", n)})
    shutil.rmtree(work, ignore_errors=True)
    result = {"size": size, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scaling-{size}.json").write_text(json.dumps(result, indent=1))
    (out / f"scaling-{size}.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    m, rows = result["machine"], result["rows"]
    conv = [r for r in rows if r["workload"] == "convert"]
    counts = sorted({r["workers"] for r in conv})
    rounds = sorted({r["round"] for r in conv})
    at = {(r["workers"], r["round"]): r for r in conv}
    one = min(r["seconds"] for r in conv if r["workers"] == 1)
    lines = [f"Measured {result['date']} ({result['size']} size): {m['cpu']}, {m['cores']} cores, Python {m['python']}, zarr {m['zarr']}, "
             f"sensorium-zarr {m['converter']}; warm page cache, fresh process per command, rounds interleaved."
             + (f" Code: {result['code']}." if "code" in result else ""), "",
             "| workers | " + " | ".join(f"round {k + 1}" for k in rounds) + " | best vs 1 worker | cores busy (best) |",
             "|---|" + "---|" * len(rounds) + "---|---|"]
    for n in counts:
        best = min((at[n, k] for k in rounds), key=lambda r: r["seconds"])
        lines.append(f"| {n} | " + " | ".join(f"{at[n, k]['seconds']:.2f} s" for k in rounds)
                     + f" | {one / best['seconds']:.2f}x | {best['cpu_s'] / best['seconds']:.2f} |")
    load = next(r["seconds"] for r in rows if r["workload"].startswith("np.load"))
    info = next(r["seconds"] for r in rows if r["workload"].startswith("sensorium-zarr info"))
    lines += ["", f"`np.load` of every data file, one thread: {load:.2f} s. `sensorium-zarr info STORE`: {info:.2f} s.", "",
              "| phase | " + " | ".join(f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in rows if r["workload"] == "phases") + " |",
              "|---|" + "---|" * sum(r["workload"] == "phases" for r in rows)]
    ph = [r["phases"] for r in rows if r["workload"] == "phases"]
    lines += [f"| {k} | " + " | ".join(f"{p[k]:.2f} s" for p in ph) + " |" for k in ph[0]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=list(SIZES), default="full")
    p.add_argument("--data", type=Path, default=HERE / "data", help="where sample data and stores go (git-ignored)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    run(args.size, args.data, args.out)
    print((args.out / f"scaling-{args.size}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
