"""Our read engine against the maintained Zarr libraries, row by row, and whether each survives a fork.

    python -m benchmarks.engines                  # full size: 6955 trials x 7776 neurons
    python -m benchmarks.engines --size tiny      # the same code in seconds

Every engine reads the same store and the same selections, and must return the same bytes:

- ``converter.zarrlite`` (this package's reader);
- zarr-python with its default pipeline, and with ``FusedCodecPipeline`` where the installed
  zarr has it (3.3 and later; Python 3.12 here);
- tensorstore with default settings, and tuned: one context per process (no cache pool, data
  copy and file I/O concurrency set from the cores, cached metadata and data not rechecked);
- zarrs (zarr-python's Rust pipeline), when installed.

Each time is the best of ``repeat`` warm-cache reads.  The fork check opens each engine in a
fresh process, reads with it, then forks ``DataLoader`` workers (torch) or a ``fork`` pool
(without torch: the same ``os.fork``) that read through the same objects; a worker that hangs
for 60 s or returns other bytes fails it.  The rule (docs/zarrlite.md): a library replaces our
reader where it is within 1.2x of it on every row and safe in forked workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .run import HERE, dataset, machine, parser, replace_between
from .workloads import best

SIZES = {
    "full": {"trials": 6955, "neurons": 7776, "repeat": 5, "fork_timeout": 60},
    "tiny": {"trials": 300, "neurons": 40, "repeat": 1, "fork_timeout": 10},
}
RULE = 1.2  # a library within this factor of our reader on every row, and fork-safe, replaces it
OURS = "converter.zarrlite"
Read = Callable[[tuple], np.ndarray]


# -- engines: each makes, for an array of the store, a function from an orthogonal selection to values


def _ours(store: Path, name: str) -> Read:
    from converter.zarrlite import ChunkReader

    return ChunkReader.from_path(store / name).read


def _zarr(pipeline: str | None) -> Callable[[Path, str], Read]:
    def make(store: Path, name: str) -> Read:
        import zarr

        conf = {"codec_pipeline.path": pipeline} if pipeline else {}
        # zarr's configuration is process-wide: set it around this engine's calls only
        with zarr.config.set(conf):
            arr = zarr.open_array(store / name, mode="r")

        def read(sel: tuple) -> np.ndarray:
            with zarr.config.set(conf):
                return arr.get_orthogonal_selection(sel)
        return read
    return make


_TS_CONTEXT = None


def _tensorstore(tuned: bool) -> Callable[[Path, str], Read]:
    def make(store: Path, name: str) -> Read:
        global _TS_CONTEXT
        import tensorstore as ts

        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / name)}}
        kw = {}
        if tuned:
            if _TS_CONTEXT is None:  # opened once per process, shared by every array
                cores = os.cpu_count() or 1
                _TS_CONTEXT = ts.Context({"cache_pool": {"total_bytes_limit": 0},
                                          "data_copy_concurrency": {"limit": cores},
                                          "file_io_concurrency": {"limit": max(8, 4 * cores)}})
            kw = {"context": _TS_CONTEXT, "recheck_cached_data": "open", "recheck_cached_metadata": "open"}
        t = ts.open(spec, read=True, **kw).result()
        return lambda sel: t.oindex[tuple(sel) + (slice(None),) * (t.ndim - len(sel))].read().result()
    return make


def engines() -> dict[str, Callable[[Path, str], Read]]:
    """Every engine installed here, by name."""
    import zarr

    found: dict[str, Callable[[Path, str], Read]] = {OURS: _ours, "zarr-python": _zarr(None)}
    try:
        from zarr.core.codec_pipeline import FusedCodecPipeline  # noqa: F401  (zarr >= 3.3)

        found["zarr-python, fused pipeline"] = _zarr("zarr.core.codec_pipeline.FusedCodecPipeline")
    except ImportError:
        pass
    try:
        import tensorstore  # noqa: F401

        found["tensorstore"] = _tensorstore(False)
        found["tensorstore, tuned"] = _tensorstore(True)
    except ImportError:
        pass
    try:
        import zarrs  # noqa: F401

        found["zarrs"] = _zarr("zarrs.ZarrsCodecPipeline")
    except ImportError:
        pass
    del zarr
    return found


# -- the rows: the selections users make


def selections(n_trials: int, n_neurons: int, seed: int = 0) -> dict[str, tuple[str, tuple]]:
    """Row name -> (array, orthogonal selection)."""
    rng = np.random.default_rng(seed)
    batch = np.sort(rng.choice(n_trials, size=min(128, n_trials), replace=False))
    test = slice(n_trials // 2, n_trials // 2 + min(1000, n_trials // 2))
    neuron = np.array([n_neurons // 2])
    return {
        "all responses (tiles)": ("responses", ()),
        "all responses (by_trial copy)": ("by_trial/responses", ()),
        "128 random response rows (by_trial copy)": ("by_trial/responses", (batch,)),
        "128 random response rows (tiles)": ("responses", (batch,)),
        "one neuron (tiles)": ("responses", (slice(None), neuron)),
        "1000 contiguous trials (tiles)": ("responses", (test,)),
        "128 random images (sharded)": ("images", (batch,)),
    }


def timings(store: Path, repeat: int) -> list[dict]:
    """Every engine on every row; the bytes must agree with ours."""
    import zarr

    shape = zarr.open_array(store / "responses", mode="r").shape
    rows = []
    for row, (name, sel) in selections(*shape).items():
        ref = None
        for engine, make in engines().items():
            read = make(store, name)
            got = np.asarray(read(sel))
            ref = got if ref is None else ref
            if got.shape != ref.shape or got.tobytes() != ref.tobytes():
                raise AssertionError(f"{engine} read other values than {OURS} for {row}")
            rows.append({"row": row, "engine": engine, "seconds": best(lambda: read(sel), repeat)})
            print(f"{row:45s} {engine:30s} {rows[-1]['seconds'] * 1e3:8.1f} ms", file=sys.stderr)
    return rows


# -- the fork check, in a child process per engine

_READ: Read | None = None


def _rows(sel: np.ndarray) -> bytes:
    return np.asarray(_READ((sel,))).tobytes()


class _Rows:
    """A map-style dataset: item k is rows ``parts[k]`` of the images."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, k: int) -> bytes:
        return _rows(self.parts[k])


def fork_check(engine: str, store: Path, timeout: float) -> dict:
    """Open ``engine`` here, read, then read through it in forked workers: same bytes, no hang."""
    global _READ
    import zarr

    n = zarr.open_array(store / "images", mode="r").shape[0]
    _READ = engines()[engine](store, "images")
    rng = np.random.default_rng(1)
    parts = [np.sort(rng.choice(n, size=min(16, n), replace=False)) for _ in range(8)]
    want = [_rows(p) for p in parts]  # the parent has read: its threads, loops and caches exist
    try:
        from torch.utils.data import DataLoader

        loader = DataLoader(_Rows(parts), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=timeout)
        how = "torch DataLoader, 2 workers, fork"
        got = list(loader)
    except ImportError:
        import multiprocessing

        how = "multiprocessing fork pool, 2 workers (no torch)"
        with multiprocessing.get_context("fork").Pool(2) as pool:
            got = pool.map_async(_rows, parts).get(timeout)
    return {"engine": engine, "how": how, "ok": got == want, "detail": "same bytes" if got == want else "other bytes"}


def fork_checks(store: Path, timeout: float = 60) -> list[dict]:
    """`fork_check` of every engine (``timeout``: seconds a worker may take), each in its own process (a hung one is killed), all at once."""
    names = list(engines())
    limit = 2 * timeout + 20
    procs = {e: subprocess.Popen([sys.executable, "-m", "benchmarks.engines", "--fork-check", e, str(store), str(timeout)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=HERE.parent, start_new_session=True) for e in names}
    out = []
    for engine, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=limit)
            last = (stdout.strip().splitlines() or [""])[-1]
            if p.returncode == 0 and last.startswith("{"):
                out.append(json.loads(last))
            else:
                why = (stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
                out.append({"engine": engine, "ok": False, "detail": why[:160]})
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            out.append({"engine": engine, "ok": False, "detail": f"hung (no answer in {limit:.0f} s)"})
        print(out[-1], file=sys.stderr)
    return out


# -- the verdict and the report


def verdict(rows: list[dict], forks: list[dict]) -> list[dict]:
    """Per library: its worst ratio to our reader over the rows, its fork check, and the rule's answer."""
    ours = {r["row"]: r["seconds"] for r in rows if r["engine"] == OURS}
    safe = {f["engine"]: f["ok"] for f in forks}
    out = []
    for engine in dict.fromkeys(r["engine"] for r in rows):
        if engine == OURS:
            continue
        ratios = {r["row"]: r["seconds"] / ours[r["row"]] for r in rows if r["engine"] == engine}
        worst = max(ratios, key=ratios.get)
        switch = ratios[worst] <= RULE and safe.get(engine, False)
        out.append({"engine": engine, "worst_ratio": ratios[worst], "worst_row": worst, "fork_safe": safe.get(engine),
                    "replaces_ours": switch})
    return out


def _plain(detail: str) -> str:
    """A failed fork check in words."""
    if "TimeoutError" in detail or "timed out" in detail or detail.startswith("hung"):
        return "hangs"
    if "exited unexpectedly" in detail:
        return "workers die"
    return detail


def markdown(result: dict) -> str:
    m = result["machine"]
    rows, names = result["rows"], list(dict.fromkeys(r["engine"] for r in result["rows"]))
    lines = [f"Measured {result['date']} ({result['size']} size): {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
             f"zarr {m['zarr']}, numcodecs {m['numcodecs']}"
             + (f", tensorstore {m['tensorstore']}" if m.get("tensorstore") else "")
             + (f", zarrs {m['zarrs']}" if m.get("zarrs") else "")
             + f"; {result['shape'][0]} trials x {result['shape'][1]} neurons, images float32; best of {result['repeat']}, warm page cache.",
             "", "| read (ms) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in dict.fromkeys(r["row"] for r in rows):
        t = {r["engine"]: r["seconds"] for r in rows if r["row"] == row}
        lines.append(f"| {row} | " + " | ".join(f"{t[e] * 1e3:.1f}" if e in t else "" for e in names) + " |")
    forks = {f["engine"]: f for f in result["forks"]}
    lines.append("| read in forked workers | " + " | ".join(
        ("yes" if forks[e]["ok"] else f"**no**, {_plain(forks[e]['detail'])}") if e in forks else "" for e in names) + " |")
    lines += ["", f"| library | worst ratio to {OURS} | on | fork-safe | replaces ours (within {RULE}x on every row, fork-safe) |",
              "|---|---|---|---|---|"]
    for v in result["verdict"]:
        lines.append(f"| {v['engine']} | {v['worst_ratio']:.2f}x | {v['worst_row']} | {'yes' if v['fork_safe'] else 'no'} | "
                     f"{'**yes**' if v['replaces_ours'] else 'no'} |")
    how = {f.get("how") for f in result["forks"]} - {None}
    if how:
        lines += ["", "Fork check: " + "; ".join(sorted(how)) + "."]
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    out = {}
    for name in ("tensorstore", "zarrs"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # noqa: BLE001  (not installed)
            pass
    return out


def run(size: str = "full", data: Path = HERE / "data", out: Path = HERE / "results") -> dict:
    import converter

    s = SIZES[size]
    folder = dataset(data, s["trials"], s["neurons"], "float32")
    store = data / "work" / f"engines-{size}" / f"{folder.name}.zarr"
    store.parent.mkdir(parents=True, exist_ok=True)
    converter.convert(folder, store, progress=False)
    import zarr

    rows = timings(store, s["repeat"])
    forks = fork_checks(store, s["fork_timeout"])
    result = {"size": size, "date": time.strftime("%Y-%m-%d"), "machine": {**machine(), **_versions()},
              "shape": list(zarr.open_array(store / "responses", mode="r").shape), "repeat": s["repeat"],
              "rows": rows, "forks": forks, "verdict": verdict(rows, forks)}
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{size}-py{sys.version_info.major}{sys.version_info.minor}"
    (out / f"engines-{tag}.json").write_text(json.dumps(result, indent=1))
    (out / f"engines-{tag}.md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--fork-check"]:
        print(json.dumps(fork_check(argv[1], Path(argv[2]), float(argv[3]))))
        return 0
    args = parser(__doc__, SIZES, "copy the table into docs/zarrlite.md").parse_args(argv)
    result = run(args.size, args.data, args.out)
    md = markdown(result)
    if args.update_readme:
        replace_between(HERE.parent / "docs" / "zarrlite.md", f"engines-py{sys.version_info.major}{sys.version_info.minor}", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
