"""Faults as a matrix: `convert` killed at each phase, and every pair of commands that meet on one DEST.

A real ``sensorium-zarr`` process runs with one function wrapped (tests/faults.py): at
its n-th call the process kills itself with SIGKILL, or pauses until the test lets it go.
Every case must end in one of two states: DEST complete and verifying, or DEST absent
with (at most) a resumable ``DEST.incomplete``.  The reliability page (docs/reliability.md) lists
these cases.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import converter
from converter import cli

from .conftest import run_cli, sigint_as_at_a_terminal
from .test_robustness import chunk_files

pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parent.parent
RESUMES = "sensorium-zarr: interrupted; the work done so far is kept: run the same command again to resume\n"


@pytest.fixture(scope="module")
def two_blocks(tmp_path_factory):
    """A dataset of two write blocks, and another mouse whose store is in the way."""
    d = tmp_path_factory.mktemp("two")
    src = converter.make_sample(d / "a", trials=1100, neurons=30, image_shape=(24, 32))
    other = converter.make_sample(d / "b", trials=60, neurons=30, image_shape=(24, 32), seed=1)
    reference = converter.convert(src, d / "ref.zarr", progress=False)
    old = converter.convert(other, d / "old.zarr", progress=False)
    return src, other, reference, old


def start(target: str, action: str, flag: Path, *argv, nth: int = 1, arg: str = "") -> subprocess.Popen:
    """``sensorium-zarr *argv`` with ``target`` wrapped to ``action`` (kill or pause) at its ``nth`` call."""
    return subprocess.Popen([sys.executable, "-m", "tests.faults", target, action, str(nth), arg, str(flag), *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=sigint_as_at_a_terminal)


def wait_paused(proc: subprocess.Popen, flag: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not flag.with_suffix(".ready").exists():
        if proc.poll() is not None:
            raise AssertionError(f"finished before its pause point: {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("never reached its pause point")
        time.sleep(0.01)


def release(proc: subprocess.Popen, flag: Path) -> subprocess.CompletedProcess:
    flag.with_suffix(".go").touch()
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_allowed_state(dest: Path, old_src: Path | None = None, new_src: Path | None = None) -> str:
    """DEST complete and verifying (the old store or the new one), or absent; nothing else."""
    if not dest.exists():
        return "absent"
    converter.validate(dest)
    assert converter.self_check(dest).ok
    assert any(s is not None and converter.verify(s, dest).ok for s in (old_src, new_src))
    return "complete"


CONVERT_PHASES = [  # (phase, wrapped function, nth call, positional argument that must match, modes)
    ("plan", "converter.write.convert:plan", 1, "", ("new", "overwrite")),
    ("skeleton", "converter.write.convert:create_skeleton", 1, "", ("new", "overwrite")),
    ("other files", "converter.write.convert:write_files", 1, "", ("new", "overwrite")),
    ("block 1", "converter.write.executors:write_block", 1, "", ("new", "overwrite")),
    ("block 1, its second part", "converter.write.executors:write_block", 2, "", ("new", "overwrite")),
    ("block 2", "converter.write.executors:write_block", 5, "", ("new", "overwrite")),  # each block: 4 parts, one per folder
    ("checksums", "converter.write.convert:write_checksums", 1, "", ("new", "overwrite")),
    ("final metadata", "converter.write.state:finalize", 1, "", ("new", "overwrite")),
    ("validation", "converter.schema:validate", 1, "", ("new", "overwrite")),
    ("old store aside", "os:replace", 1, "0=DEST", ("overwrite",)),
    ("rename", "os:replace", 1, "1=DEST", ("new", "overwrite")),
    ("cleanup", "converter.write.state:LocalState.discard", 1, "", ("new", "overwrite")),
]
CASES = [(mode, *c[:4]) for c in CONVERT_PHASES for mode in c[4]]


@pytest.mark.parametrize("mode,phase,target,nth,arg", CASES, ids=[f"{c[1]}-{c[0]}" for c in CASES])
def test_killed_at_each_phase_then_rerun(two_blocks, tmp_path, mode, phase, target, nth, arg):
    src, other, reference, old = two_blocks
    dest = tmp_path / "m.zarr"
    flags = ["--overwrite"] if mode == "overwrite" else []
    if flags:
        shutil.copytree(old, dest)  # the store to replace, made from another mouse
    proc = start(target, "kill", tmp_path / "flag", "convert", src, dest, "--workers", "1", "--quiet", *flags,
                 nth=nth, arg=arg.replace("DEST", str(dest)))
    proc.communicate(timeout=300)
    assert proc.returncode == -9, f"{phase}: the fault was not reached"
    state = assert_allowed_state(dest, other if flags else None, src)
    partial = tmp_path / "m.zarr.incomplete" / "store" / "responses"
    publishing = (tmp_path / "m.zarr.incomplete" / "state" / "publish").exists()  # the store was finished and swept
    if partial.exists() and not publishing:  # what a write killed half-way leaves: zarr's temporary name, and ours
        (partial / f"zarr.json.{'0' * 32}.partial").write_bytes(b"{")
        (partial / ".zarr.json.4242.tmp").write_bytes(b"{")
    if state == "absent" and phase != "plan":
        assert (tmp_path / "m.zarr.incomplete" / "state").exists()
    if state == "absent":
        r = run("info", dest)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert cli.main(["convert", str(src), str(dest), "--workers", "1", "--quiet", *flags]) == 0
    assert not (tmp_path / "m.zarr.incomplete").exists()
    assert chunk_files(dest) == chunk_files(reference), "a resumed store differs from an uninterrupted one"
    assert converter.verify(src, dest).ok


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "converter.cli", *map(str, argv)], capture_output=True, text=True)


def open_mouse(dest: Path) -> subprocess.CompletedProcess:
    code = f"import converter; print(int(converter.open_mouse({str(dest)!r}).responses.sum() != 0))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


SECOND = {  # the second command, run while a conversion into DEST is paused in its first block
    "convert": lambda src, other, dest, out: run("convert", src, dest, "--quiet"),
    "convert --overwrite": lambda src, other, dest, out: run("convert", src, dest, "--overwrite", "--quiet"),
    "verify": lambda src, other, dest, out: run("verify", other, dest, "--quiet"),
    "info": lambda src, other, dest, out: run("info", dest),
    "export": lambda src, other, dest, out: run("export", dest, out, "--quiet"),
    "open_mouse": lambda src, other, dest, out: open_mouse(dest),
}


@pytest.mark.parametrize("second", list(SECOND))
@pytest.mark.parametrize("first", ["convert", "convert --overwrite"])
def test_a_command_meets_a_running_conversion(two_blocks, tmp_path, first, second):
    src, other, reference, old = two_blocks
    dest, flag, out = tmp_path / "m.zarr", tmp_path / "flag", tmp_path / "out"
    replacing = first == "convert --overwrite"
    if replacing:
        shutil.copytree(old, dest)  # the store being replaced, made from `other`
    proc = start("converter.write.executors:write_block", "pause", flag, *first.split(), src, dest, "--workers", "1", "--quiet")
    wait_paused(proc, flag)
    r = SECOND[second](src, other, dest, out)
    if second.startswith("convert"):
        assert r.returncode == 2 and "another conversion" in r.stderr, r.stderr  # refused, nothing touched
    elif replacing:
        assert r.returncode == 0, r.stderr  # the old store serves readers until it is replaced
        assert "Traceback" not in r.stderr
    else:
        assert r.returncode != 0 and "no complete store here" in r.stderr, r.stderr
        assert second == "open_mouse" or r.stderr.count("\n") == 1  # a Python caller gets the StoreError
        assert not out.exists()
    done = release(proc, flag)
    assert done.returncode == 0, done.stderr
    assert assert_allowed_state(dest, None, src) == "complete"
    assert chunk_files(dest) == chunk_files(reference) and not (tmp_path / "m.zarr.incomplete").exists()


def test_a_reader_meets_the_replacement_of_its_store(two_blocks, tmp_path):
    """`export` paused half-way while `convert --overwrite` replaces the store under it."""
    src, other, reference, old = two_blocks
    dest, flag, out = tmp_path / "m.zarr", tmp_path / "flag", tmp_path / "out"
    shutil.copytree(reference, dest)
    reader = start("converter.integrity.export:file_bytes", "pause", flag, "export", dest, out, "--quiet", nth=50)
    wait_paused(reader, flag)
    assert run("convert", other, dest, "--overwrite", "--quiet").returncode == 0
    r = release(reader, flag)
    # either the reader finished from files it had open, or it stops with one line and leaves nothing
    if r.returncode != 0:
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert not out.exists() or not any(out.iterdir())
    assert converter.verify(other, dest).ok


def test_a_failing_record_stops_the_blocks_still_queued(four_blocks, tmp_path, monkeypatch):
    import errno

    from converter.write import executors
    from converter.write.state import LocalState

    src = four_blocks
    dest = tmp_path / "m.zarr"

    def full(self, r):
        raise OSError(errno.ENOSPC, "No space left on device")

    def slow(*args, **kwargs):  # each block (4 parts) outlasts the skeleton, written meanwhile: blocks 3 and 4 are still queued
        time.sleep(0.3)
        return write_block(*args, **kwargs)

    write_block = executors.write_block
    monkeypatch.setattr(executors, "write_block", slow)
    monkeypatch.setattr(LocalState, "save_block", full)
    with pytest.raises(converter.StorageError, match="No space left"):
        converter.convert(src, dest, executor=1, progress=False)
    time.sleep(3.0)  # a block still running on, and the next one, would have written by now
    assert not (tmp_path / "m.zarr.incomplete" / "store" / "responses" / "c" / "2").exists()


def test_ctrl_c_stops_queued_blocks_and_keeps_the_work(four_blocks, tmp_path):
    import signal

    src = four_blocks
    dest, flag = tmp_path / "m.zarr", tmp_path / "flag"
    proc = start("converter.write.executors:write_block", "pause", flag, "convert", src, dest, "--workers", "1", "--quiet", nth=5)
    wait_paused(proc, flag)  # block 1's four parts are done, block 2's first is running, the rest are queued
    records = tmp_path / "m.zarr.incomplete" / "state" / "blocks"
    end = time.monotonic() + 60
    while not any(records.glob("*.json")) and time.monotonic() < end:  # block 1's record, written by the main thread
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    r = release(proc, flag)
    assert r.returncode == 130 and r.stderr == RESUMES, r.stderr
    work = tmp_path / "m.zarr.incomplete"
    assert len(list((work / "state" / "blocks").glob("*.json"))) == 1  # what was recorded is kept
    assert not (work / "store" / "responses" / "c" / "2").exists()  # the queued blocks never started
    assert not (work / "store" / "responses" / "c" / "1").exists()  # the running one stopped at its next step
    assert cli.main(["convert", str(src), str(dest), "--quiet"]) == 0 and converter.verify(src, dest).ok


def interrupt_group(argv, ready, timeout: float = 120) -> subprocess.CompletedProcess:
    """Ctrl-C as a terminal sends it (to the whole process group) once ``ready()``."""
    import os
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "converter.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=sigint_as_at_a_terminal)
    end = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_while_starting_and_during_convert_all_is_one_line(two_blocks, tmp_path):
    src = two_blocks[0]
    start = time.monotonic()
    # 0.15 s: the interpreter has started and the command is importing what it needs (about a second)
    r = interrupt_group(["convert", src, tmp_path / "a.zarr"], lambda: time.monotonic() > start + 0.15)
    assert r.returncode == 130 and r.stderr == "sensorium-zarr: interrupted\n", r.stderr
    (tmp_path / "in").mkdir()
    shutil.copytree(src, tmp_path / "in" / src.name)
    work = tmp_path / "out" / f"{src.name}.zarr.incomplete" / "state" / "plan.json"
    r = interrupt_group(["convert-all", tmp_path / "in", tmp_path / "out", "--workers", "2", "--quiet"], work.exists)
    assert r.returncode == 130 and r.stderr == RESUMES, r.stderr  # no worker tracebacks


def test_killed_after_the_skeleton_in_s3_then_rerun(s3, two_blocks, tmp_path):
    """A SIGKILL leaves the skeleton's root zarr.json in object storage; the rerun knows it is its own."""
    endpoint, fs = s3
    src, *_ = two_blocks
    url = f"s3://data/killed/{tmp_path.name}/m.zarr"
    proc = start("converter.write.convert:write_files", "kill", tmp_path / "flag", "convert", src, url, "--quiet")
    proc.communicate(timeout=300)
    assert proc.returncode == -9, "the fault was not reached"
    assert fs.exists(f"{url.removeprefix('s3://')}.incomplete/state/building")
    r = subprocess.run([sys.executable, "-m", "converter.cli", "convert", str(src), url, "--quiet"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert converter.verify(src, url).ok and not fs.exists(f"{url.removeprefix('s3://')}.incomplete")


def test_video_scan_killed_after_its_first_block_then_rerun(make_dataset, tmp_path):
    """Clips of 17.7 MB make write blocks of 16 trials: a 20-trial 2023 scan is two blocks."""
    from converter.write import layout

    from .conftest import CLIPS

    src = make_dataset(**{**CLIPS, "trials": 20, "frames": 120, "video_shape": (144, 256)})
    assert layout.block_trials(144 * 256 * 120 * 4 + (30 + 4) * 120 * 4) == 16
    reference = converter.convert(src, tmp_path / "ref.zarr", progress=False)
    dest = tmp_path / "m.zarr"
    proc = start("converter.write.state:LocalState.save_block", "kill", tmp_path / "flag", "convert", src, dest,
                 "--workers", "1", "--quiet", nth=2)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and not dest.exists()
    blocks = list((tmp_path / "m.zarr.incomplete" / "state" / "blocks").glob("*.json"))
    assert [b.name for b in blocks] in (["0.json"], ["16.json"])  # killed while recording the second block: the first is kept
    r = run_cli("convert", src, dest, "--quiet")
    assert r.returncode == 0, r.stderr
    assert chunk_files(dest) == chunk_files(reference)
    assert converter.verify(src, dest, progress=False).ok
