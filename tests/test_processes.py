"""One conversion on worker processes (`converter.write.processes`): the same bytes as threads,
progress, and every way it can stop (Ctrl-C, the command killed, a worker killed, bad input in a
later block) ends every worker and leaves a resumable conversion or nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import converter
from converter.progress import Progress
from converter.write import executors
from converter.write.processes import MALLOC, WORKER_ENVIRON, ZARR, Workers

from .conftest import sigint_as_at_a_terminal
from .test_faults import RESUMES
from .test_robustness import chunk_files

ROOT = Path(__file__).resolve().parent.parent
linux = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")


def test_worker_processes_are_chosen_where_they_pay():
    assert executors.uses_processes(2, 4, local=True)
    assert not executors.uses_processes(1, 4, local=True)  # one worker: a thread, no start-up
    assert not executors.uses_processes(8, 1, local=True)  # one block: one busy worker
    assert not executors.uses_processes(8, 4, local=False)  # object storage: waiting on the network


def test_worker_processes_write_what_threads_write(four_blocks, tmp_path):
    threads = converter.convert(four_blocks, tmp_path / "threads.zarr", executor=executors.threads(2), progress=False)
    bar = Progress(4000 * 4, "test", enabled=False)
    with executors.started(2, 4, local=True) as workers:
        assert isinstance(workers, Workers)
        processes = converter.convert(four_blocks, tmp_path / "processes.zarr", executor=workers, progress=bar)
    assert bar.done == 4000 * 4  # every trial of every variable, reported as the workers read them
    assert chunk_files(processes) == chunk_files(threads)
    assert converter.verify(four_blocks, processes).ok


class Command:
    """``sensorium-zarr *argv`` whose blocks wait while ``flag`` exists (tests/slow_blocks.py, loaded in
    its worker processes by tests/worker_hooks), every process of it tagged in its environment."""

    def __init__(self, tmp_path: Path, *argv) -> None:
        self.flag, self.tag = tmp_path / "slow", uuid.uuid4().hex
        self.flag.touch()
        path = os.pathsep.join([str(ROOT / "tests" / "worker_hooks"), str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "SENSORIUM_ZARR_SLOW_BLOCKS": str(self.flag), "SENSORIUM_ZARR_TEST_RUN": self.tag}
        self.proc = subprocess.Popen([sys.executable, "-m", "converter.cli", *map(str, argv)], env=env, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=sigint_as_at_a_terminal)

    def workers(self) -> list[int]:
        """Live processes of this command other than itself (a zombie's environment reads empty)."""
        found = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != self.proc.pid:
                try:
                    env = (d / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"SENSORIUM_ZARR_TEST_RUN={self.tag}".encode() in env:
                    found.append(int(d.name))
        return found

    def wait_for_workers(self, n: int, timeout: float = 60) -> list[int]:
        end = time.monotonic() + timeout
        while len(found := self.workers()) < n:
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < end, "the worker processes never started"
            time.sleep(0.02)
        time.sleep(0.5)  # past their imports: each is in its first block, waiting on the flag
        return found

    def finish(self) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(timeout=120)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def no_workers_within(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while self.workers():
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True


def resumed(src: Path, dest: Path, reference: Path) -> bool:
    """The same command run again finishes the store, equal to one converted without a stop."""
    r = subprocess.run([sys.executable, "-m", "converter.cli", "convert", str(src), str(dest), "--quiet", "--workers", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return chunk_files(dest) == chunk_files(reference) and converter.verify(src, dest).ok


@pytest.fixture(scope="module")
def reference(four_blocks, tmp_path_factory):
    return converter.convert(four_blocks, tmp_path_factory.mktemp("ref") / "ref.zarr", executor=1, progress=False)


def converting(src: Path, tmp_path: Path) -> tuple[Command, Path, list[int]]:
    """``convert SRC DEST --workers 2`` started, its two workers in their first blocks."""
    dest = tmp_path / "m.zarr"
    c = Command(tmp_path, "convert", src, dest, "--workers", "2", "--quiet")
    return c, dest, c.wait_for_workers(2)


@linux
@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_keeps_the_work(four_blocks, reference, tmp_path):
    c, dest, workers = converting(four_blocks, tmp_path)
    assert len(workers) == 2
    c.proc.send_signal(signal.SIGINT)
    r = c.finish()
    assert r.returncode == 130 and r.stderr == RESUMES, r.stderr
    assert not c.workers(), "a worker process outlived its command"
    assert (tmp_path / "m.zarr.incomplete" / "state").exists() and not dest.exists()
    assert resumed(four_blocks, dest, reference)


@linux
@pytest.mark.slow
def test_a_killed_command_leaves_no_worker_behind(four_blocks, reference, tmp_path):
    c, dest, _ = converting(four_blocks, tmp_path)
    c.proc.kill()
    c.finish()
    assert c.no_workers_within(30), "worker processes outlived their killed command"  # each stops at its next step
    c.flag.unlink()
    assert resumed(four_blocks, dest, reference)


@linux
@pytest.mark.slow
def test_a_killed_worker_is_one_line_and_a_rerun_resumes(four_blocks, reference, tmp_path):
    c, dest, workers = converting(four_blocks, tmp_path)
    os.kill(workers[0], signal.SIGKILL)  # as the kernel's out-of-memory killer would
    r = c.finish()
    assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
    assert "a worker process ended unexpectedly (killed by signal 9) on data/" in r.stderr
    assert "run the same command again (a conversion resumes from the work done so far)" in r.stderr
    assert not c.workers()
    c.flag.unlink()
    assert resumed(four_blocks, dest, reference)


@pytest.mark.slow
def test_bad_input_found_by_a_worker_is_one_line_and_leaves_nothing(four_blocks, tmp_path):
    src = Path(shutil.copytree(four_blocks, tmp_path / four_blocks.name))
    np.save(src / "data/responses/3500.npy", np.zeros(7, np.float32))  # in the last block
    dest = tmp_path / "out" / "m.zarr"
    r = subprocess.run([sys.executable, "-m", "converter.cli", "convert", str(src), str(dest), "--workers", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "data/responses/3500.npy: shape (7,) dtype <f4 differs from data/responses/0.npy's" in r.stderr
    assert not any((tmp_path / "out").iterdir())


def test_verify_on_worker_processes_reports_what_one_thread_does(four_blocks, reference, tmp_path):
    src = Path(shutil.copytree(four_blocks, tmp_path / four_blocks.name))
    for i in (100, 3900):  # in two blocks
        values = np.load(src / f"data/responses/{i}.npy")
        np.save(src / f"data/responses/{i}.npy", values + 1)
    on_processes = converter.verify(src, reference, workers=2, progress=False)
    on_a_thread = converter.verify(src, reference, workers=1, progress=False)
    assert not on_processes.ok and on_processes.mismatches == on_a_thread.mismatches
    named = [line for line in on_processes.mismatches if "values differ in responses" in line]
    assert sorted(line.split(":")[0] for line in named) == ["data/responses/100.npy", "data/responses/3900.npy"]
    assert converter.verify(four_blocks, reference, workers=2, progress=False).ok


def test_a_worker_and_a_conversion_before_its_skeleton_import_neither_xarray_nor_zarr():
    """What a worker process imports, and what a conversion imports before its blocks are handed
    out: xarray and zarr-python come later, in the main process, while the workers write."""
    code = ("import sys; import converter.write.processes, converter.write.executors, converter.write.convert; "
            "print(sorted(m for m in ('xarray', 'zarr', 'pandas', 'dask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class WhoRuns:
    """A task that says which process ran each item, and how many copies of itself that process
    has made (each unpickling makes one)."""

    made = 0

    def __init__(self) -> None:
        WhoRuns.made += 1

    def __reduce__(self):
        return (WhoRuns, ())

    def __call__(self, item, step=None):
        return item, os.getpid(), WhoRuns.made


def test_a_worker_unpickles_its_task_once_however_many_items():
    """The task (a zip source reads its directory of ~28,000 entries when unpickled) goes to each
    worker once; then only the items."""
    with Workers(2) as workers:
        ran = list(workers(WhoRuns(), list(range(12))))
    assert sorted(item for item, _, _ in ran) == list(range(12))
    assert {made for _, _, made in ran} == {1} and os.getpid() not in {pid for _, pid, _ in ran}


class Environ:
    def __call__(self, key, step=None):
        return key, os.environ.get(key)


def test_workers_keep_the_memory_they_encode_in_unless_the_user_said_otherwise(monkeypatch):
    """Their malloc settings (page faults of memory handed back and taken again cost a 2023
    mouse 40% of its system time), one BLAS thread, zarr's batches; a value in the caller's
    environment wins."""
    for k in WORKER_ENVIRON:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4096")
    with Workers(1) as workers:
        got = dict(workers(Environ(), list(WORKER_ENVIRON)))
    assert got == {**WORKER_ENVIRON, "MALLOC_TRIM_THRESHOLD_": "4096"}
    assert got["MALLOC_MMAP_THRESHOLD_"] == MALLOC["MALLOC_MMAP_THRESHOLD_"] and got["OPENBLAS_NUM_THREADS"] == "1"
    assert not any(k in os.environ for k in WORKER_ENVIRON if k != "MALLOC_TRIM_THRESHOLD_")  # the caller's own is left alone


class ZarrBatch:
    def __call__(self, item, step=None):
        import zarr

        return zarr.config.get("codec_pipeline.batch_size")


def test_zarr_in_a_worker_decodes_in_batches_and_in_the_caller_as_it_was(monkeypatch):
    """Worker processes start with `ZARR`, which zarr-python reads as its codec pipeline's batch
    size (verify's reads of a block, half the CPU time); the caller's zarr config is untouched."""
    import zarr

    for k in WORKER_ENVIRON:
        monkeypatch.delenv(k, raising=False)
    before = zarr.config.get("codec_pipeline.batch_size")
    with Workers(1) as workers:
        (got,) = workers(ZarrBatch(), [0])
    assert got == int(ZARR["ZARR_CODEC_PIPELINE__BATCH_SIZE"]) != before
    assert zarr.config.get("codec_pipeline.batch_size") == before
    monkeypatch.setenv("ZARR_CODEC_PIPELINE__BATCH_SIZE", "3")
    with Workers(1) as workers:
        assert list(workers(ZarrBatch(), [0])) == [3]


class Sleepy:
    def __call__(self, item, step=None):
        time.sleep(1.0)
        return item


def test_an_idle_worker_that_dies_leaves_the_busy_ones_be():
    with Workers(2) as workers:
        results = workers(Sleepy(), [7])  # the first worker has it; the second has nothing to do
        os.kill(workers._procs[1].pid, signal.SIGKILL)
        assert list(results) == [7]


def test_workers_import_this_package_not_a_namesake_in_the_working_folder(four_blocks, reference, tmp_path):
    """A command run where a folder named ``converter`` sits (someone's own project) starts workers
    that still import the package the command runs: they do not put their working folder first."""
    decoy = tmp_path / "converter"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the namesake in the working folder')\n")
    dest = tmp_path / "out" / "m.zarr"
    r = subprocess.run([sys.executable, "-P", "-m", "converter.cli", "convert", str(four_blocks), str(dest), "--workers", "2", "--quiet"],
                       cwd=tmp_path, capture_output=True, text=True)  # -P: the command itself as its script would run it
    assert r.returncode == 0, r.stderr
    assert chunk_files(dest) == chunk_files(reference)
