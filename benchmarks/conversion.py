"""Conversion at the machine's speed: cores, start-up, and what bounds it, side by side in one run.

    python -m benchmarks.conversion               # full size (about 4 minutes here, once its samples exist)
    python -m benchmarks.conversion --size tiny   # the same code in seconds; the tests run it

Every command runs as a user runs it, in a fresh process (``sensorium-zarr ...``), timed with its
peak resident memory, warm page cache, against the physical references measured in the same run:

- start-up: ``sensorium-zarr --help``, ``sensorium-zarr info STORE``, ``import converter``;
- a full-size 2022 mouse (6955 trials x 7776 neurons, 27,820 files): ``convert --workers N`` for
  N = 1, 2, 4, ... up to the cores, against one thread doing ``np.load`` on every data file;
  from the zip against ``unzip -q``; ``verify SRC DEST``;
- where the time of one conversion goes, phase by phase (in a child process that wraps the
  phases of `converter.write.convert` with timers): imports, plan, the blocks (with the skeleton
  and other files written meanwhile in the main process), finishing;
- a full-size 2023 mouse (720 clips x 7900 neurons x 300 frames): ``convert`` and ``verify``
  against ``np.load`` of every file;
- ``convert-all`` of several 2022 mice on a local dask cluster, for 1, 2, 4, ... workers.

Results go to ``benchmarks/results/conversion-<size>.{md,json}``; ``--update-readme`` copies the
tables into docs/performance.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .run import HERE, command, dataset, machine
from .video import dataset as video_dataset

SIZES = {
    "full": {"trials": 6955, "neurons": 7776, "video": (720, 7900, 300), "mice": 3, "repeat": 3, "startup": 5, "every_count": True},
    # tiny: the same code, each kind of run once (one worker count for phases and convert-all)
    "tiny": {"trials": 300, "neurons": 40, "video": (40, 20, 80), "mice": 2, "repeat": 1, "startup": 1, "every_count": False},
    # full size, each run once, for a borrowed many-core machine: seven mice as the issue has them,
    # convert-all with 4 workers and with every core, a quarter-size 2023 mouse with 1 worker and all
    "many-core": {"trials": 6955, "neurons": 7776, "video": (180, 7900, 300), "mice": 7, "repeat": 1, "startup": 3, "every_count": True,
                  "mice_workers": [4], "video_workers": [1]},
}
_SCRIPT = Path(sys.executable).parent / "sensorium-zarr"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "converter.cli"]  # as users run it


def timed(cmd: list[str], repeat: int = 1, cwd: Path | None = None) -> dict:
    """Best wall time of ``cmd`` in a fresh process, and that run's peak resident memory and CPU
    time (user + system: how many cores it kept busy).

    Through ``/usr/bin/time`` where there is one: its child starts from a small process.  Else
    from ``wait4``, whose peak also counts this process's memory at the ``fork`` (~50-80 MB):
    only commands smaller than that read high.
    """
    best = None
    gnu = ["/usr/bin/time", "-f", "%M %U %S", "-o"] if os.path.exists("/usr/bin/time") else None
    for _ in range(repeat):
        with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as report:
            t = time.perf_counter()
            p = subprocess.Popen([*gnu, report.name, *cmd] if gnu else cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
            _, status, usage = os.wait4(p.pid, 0)
            seconds = time.perf_counter() - t
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err.read().decode(errors='replace').strip()[-400:]}")
            if gnu:
                kb, user, system = report.read().split()[-3:]
                peak_mb, cpu_s = int(kb) / 1024, float(user) + float(system)
            else:
                peak_mb, cpu_s = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
        if best is None or seconds < best["seconds"]:
            best = {"seconds": seconds, "peak_mb": peak_mb, "cpu_s": cpu_s}
    return best


COPY = "cp -r of the source folder (the disk's write speed)"


def copied(folder: Path, work: Path) -> dict:
    """``cp -r`` of a source folder to the disk the store goes to: what writing its bytes costs
    here.  Neither it nor ``convert`` syncs; earlier writes are synced first, so that flushing
    them is not counted."""
    dest = work / "copy"
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    got = timed(["cp", "-r", str(folder), str(dest)])
    shutil.rmtree(dest)
    return got


def np_load_all(folder: Path, repeat: int) -> float:
    """One thread doing ``np.load`` on every data file (the reference the targets use)."""
    files = sorted((folder / "data").rglob("*.npy"))
    best = float("inf")
    for _ in range(repeat + 1):  # the first run warms the page cache
        t = time.perf_counter()
        for f in files:
            np.load(f)
        best = min(best, time.perf_counter() - t)
    return best


_PHASES_CHILD = r"""
import contextlib, json, sys, time
t0 = time.perf_counter()
import converter.write.convert as C
from converter.write import executors
imported = time.perf_counter() - t0
spent = {}
def timer(name, fn):
    def wrapped(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
    return wrapped
C.plan = timer("plan (the tree, one header per folder, meta arrays)", C.plan)
C.create_skeleton = timer("meanwhile, in the main process: skeleton (metadata, coordinates)", C.create_skeleton)
C.write_files = timer("meanwhile, in the main process: other files", C.write_files)
real = executors.started
@contextlib.contextmanager
def started(*args):
    t = time.perf_counter()
    with real(*args) as run:
        spent["start workers"] = time.perf_counter() - t
        def blocks(task, todo, bar):
            t, results = time.perf_counter(), run(task, todo, bar)  # handed out now, as convert does
            def timed():
                yield from results
                spent["blocks (read, encode, write), on the workers"] = time.perf_counter() - t
            return timed()
        yield blocks
C.executors.started = started
t = time.perf_counter()
C.convert(sys.argv[1], sys.argv[2], executor=int(sys.argv[3]), progress=False)
total = time.perf_counter() - t
spent["finish (flags, checksums, consolidate, validate, rename)"] = total - sum(v for k, v in spent.items() if not k.startswith("meanwhile"))
order = sorted(spent, key=lambda k: (k.startswith("finish"), k.startswith("meanwhile")))  # stable: the rest as they came
print(json.dumps({"imports": imported, **{k: spent[k] for k in order}, "total": imported + total}))
"""


def phases(src: Path, dest: Path, workers: int) -> dict:
    """Seconds of each phase of one conversion in a fresh process."""
    shutil.rmtree(dest, ignore_errors=True)
    p = subprocess.run([sys.executable, "-c", _PHASES_CHILD, str(src), str(dest), str(workers)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def convert(src: Path, dest: Path, workers: int | None, repeat: int, command: str = "convert") -> dict:
    def once():
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["sync"], check=True)
        return timed([*CLI, command, str(src), str(dest), "--quiet", *(["--workers", str(workers)] if workers else [])])
    runs = [once() for _ in range(repeat)]
    return min(runs, key=lambda r: r["seconds"])


def run(size: str = "full", data: Path = HERE / "data", out: Path = HERE / "results") -> dict:
    s = SIZES[size]
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, *range(4, cores + 1, 4), cores}) if cores > 1 else [1]
    work = data / "work" / f"conversion-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows: list[dict] = []

    def row(**r):
        rows.append(r)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, file=sys.stderr)

    folder = dataset(data, s["trials"], s["neurons"], "float32")
    zipped = dataset(data, s["trials"], s["neurons"], "float32", as_zip=True)
    store = work / "mouse.zarr"
    label = f"2022 mouse, {s['trials']} x {s['neurons']}"
    row(workload="np.load every data file, one thread", dataset=label, seconds=np_load_all(folder, s["repeat"]))
    row(workload=COPY, dataset=label, **copied(folder, work))
    for n in counts if s["every_count"] else [1]:
        row(workload="convert", dataset=label, workers=n, **convert(folder, store, n, s["repeat"]))
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        row(workload="unzip -q", dataset=label, **timed(["unzip", "-q", "-o", str(zipped), "-d", tmp]))
    row(workload="convert from the zip", dataset=label, workers=cores, **convert(zipped, work / "zip.zarr", None, s["repeat"]))
    row(workload="verify SRC DEST", dataset=label, **timed([*CLI, "verify", str(folder), str(store), "--quiet"], s["repeat"]))
    for n in sorted({1, cores}) if s["every_count"] else [1]:
        row(workload="phases of one conversion", dataset=label, workers=n, phases=phases(folder, work / "phases.zarr", n))
    row(workload="sensorium-zarr --help", **timed([*CLI, "--help"], s["startup"]))
    row(workload="sensorium-zarr info STORE", **timed([*CLI, "info", str(store)], s["startup"]))
    row(workload="import converter", **timed([sys.executable, "-c", "import converter"], s["startup"]))
    row(workload="python itself", **timed([sys.executable, "-c", "pass"], s["startup"]))

    t, n_neurons, f = s["video"]
    video = video_dataset(data, t, n_neurons, f)
    vlabel = f"2023 mouse, {t} clips x {n_neurons} x {f} frames"
    row(workload="np.load every data file, one thread", dataset=vlabel, seconds=np_load_all(video, 1))
    row(workload=COPY, dataset=vlabel, **copied(video, work))
    for n in [*s.get("video_workers", []), cores]:
        row(workload="convert", dataset=vlabel, workers=n, **convert(video, work / "video.zarr", None if n == cores else n, 1))
    row(workload="verify SRC DEST", dataset=vlabel, **timed([*CLI, "verify", str(video), str(work / "video.zarr"), "--quiet"]))
    shutil.rmtree(work / "video.zarr", ignore_errors=True)

    mice = work / "mice"
    mice.mkdir()
    for seed in range(s["mice"]):
        src = dataset(data, s["trials"], s["neurons"], "float32", seed=seed)
        os.symlink(src, mice / src.name)
    mlabel = f"{s['mice']} 2022 mice"
    row(workload="np.load every data file, one thread", dataset=mlabel,
        seconds=sum(np_load_all(m, 0) for m in sorted(mice.iterdir())))
    mice_counts = sorted({*s["mice_workers"], cores}) if "mice_workers" in s else (counts if s["every_count"] else counts[-1:])
    for n in mice_counts:
        shutil.rmtree(work / "stores", ignore_errors=True)
        row(workload="convert-all", dataset=mlabel, workers=n,
            **timed([*CLI, "convert-all", str(mice), str(work / "stores"), "--quiet", "--workers", str(n)]))
    shutil.rmtree(work, ignore_errors=True)

    result = {"size": size, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": rows, "targets": targets(rows, cores)}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"conversion-{size}.json").write_text(json.dumps(result, indent=1))
    (out / f"conversion-{size}.md").write_text(markdown(result))
    return result


def _get(rows, workload, dataset=None, workers=None) -> float:
    return next(r["seconds"] for r in rows if r["workload"] == workload and (dataset is None or r.get("dataset") == dataset)
                and (workers is None or r.get("workers") == workers))


def targets(rows: list[dict], cores: int) -> list[dict]:
    """Issue 24's targets, each with the measured value."""
    out = []

    def add(target, value, met):
        out.append({"target": target, "value": value, "met": bool(met)})

    mouse = next(r["dataset"] for r in rows if r["workload"] == "convert" and r["dataset"].startswith("2022"))
    conv = sorted((r for r in rows if r["workload"] == "convert" and r["dataset"] == mouse), key=lambda r: r["workers"])
    one = conv[0]["seconds"]
    for r in conv[1:]:
        need = 1.7 if r["workers"] == 2 else (6 if r["workers"] >= 16 else None)
        if need:
            add(f"convert --workers {r['workers']} >= {need}x --workers 1", f"{one / r['seconds']:.2f}x", one / r["seconds"] >= need)
    times = [r["seconds"] for r in conv]
    add("never slower as N grows (within 5%)", " / ".join(f"{t:.2f} s" for t in times),
        all(b <= a * 1.05 for a, b in zip(times, times[1:])))
    load = _get(rows, "np.load every data file, one thread", mouse)
    add("a full-size mouse <= 1.0x np.load of every file", f"{min(times) / load:.2f}x", min(times) <= load)
    add("from the zip <= 0.5x unzip -q", f"{_get(rows, 'convert from the zip', mouse) / _get(rows, 'unzip -q', mouse):.2f}x",
        _get(rows, "convert from the zip", mouse) <= 0.5 * _get(rows, "unzip -q", mouse))
    add("verify SRC DEST <= 1.0x np.load", f"{_get(rows, 'verify SRC DEST', mouse) / load:.2f}x", _get(rows, "verify SRC DEST", mouse) <= load)
    video = next(r["dataset"] for r in rows if r.get("dataset", "").startswith("2023"))
    vload = _get(rows, "np.load every data file, one thread", video)
    vconv = min(r["seconds"] for r in rows if r["workload"] == "convert" and r["dataset"] == video)
    add("a 2023 mouse <= 1.0x np.load", f"{vconv / vload:.2f}x", vconv <= vload)
    for data in (mouse, video):
        add(f"({data}) convert <= 1.0x cp -r of the source (the disk)", f"{min(r['seconds'] for r in rows if r['workload'] == 'convert' and r['dataset'] == data) / _get(rows, COPY, data):.2f}x",
            min(r["seconds"] for r in rows if r["workload"] == "convert" and r["dataset"] == data) <= _get(rows, COPY, data))
    add("2023 verify SRC DEST <= 1.0x np.load", f"{_get(rows, 'verify SRC DEST', video) / vload:.2f}x", _get(rows, "verify SRC DEST", video) <= vload)
    help_, info = _get(rows, "sensorium-zarr --help"), _get(rows, "sensorium-zarr info STORE")
    add("sensorium-zarr --help <= 0.3 s", f"{help_:.2f} s", help_ <= 0.3)
    add("sensorium-zarr info STORE <= 0.6 s", f"{info:.2f} s", info <= 0.6)
    ca = sorted((r for r in rows if r["workload"] == "convert-all"), key=lambda r: r["workers"])
    if len(ca) > 1:
        add(f"convert-all faster with {ca[-1]['workers']} workers than with {ca[-2]['workers']}",
            f"{ca[-2]['seconds']:.1f} s -> {ca[-1]['seconds']:.1f} s", ca[-1]["seconds"] < ca[-2]["seconds"])
    return out


def markdown(result: dict) -> str:
    m, rows = result["machine"], result["rows"]
    lines = [f"Measured {result['date']} ({result['size']} size): {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, "
             f"Python {m['python']}, zarr {m['zarr']}, sensorium-zarr {m['converter']}; warm page cache, fresh process per command."
             + (f" Note: {result['note']}" if "note" in result else ""),
             "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |" for t in result["targets"]]
    lines += ["", "| workload | data | workers | wall time | cores busy (CPU time / wall) | peak memory |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "phases" in r:
            continue
        peak = f"{r['peak_mb']:.0f} MB" if "peak_mb" in r else ""
        busy = f"{r['cpu_s'] / r['seconds']:.2f}" if "cpu_s" in r else ""
        lines.append(f"| {r['workload']} | {r.get('dataset', '')} | {r.get('workers', '')} | {r['seconds']:.2f} s | {busy} | {peak} |")
    for r in rows:
        if "phases" in r:
            lines += ["", f"Where the time of one conversion goes, {r['workers']} worker{'s' if r['workers'] > 1 else ''} ({r['dataset']}):",
                      "", "| phase | seconds |", "|---|---|"]
            lines += [f"| {k} | {v:.2f} |" for k, v in r["phases"].items()]
    return "\n".join(lines) + "\n"


main = command(__doc__, SIZES, run, "conversion", "performance.md", "conversion")


if __name__ == "__main__":
    sys.exit(main())
