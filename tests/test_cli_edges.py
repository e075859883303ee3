"""The command line at its edges: odd paths, Ctrl-C at any moment, closed pipes, small usage slips.

Every case runs the real command in a fresh process, and checks the three things a user sees:
the exit code, one line on stderr, and what is left on disk (nothing, unless the command
succeeded).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import converter
from converter import cli

from .conftest import run_cli
from .test_faults import RESUMES, ROOT, release, start, wait_paused


def snapshot(*roots: Path) -> set[str]:
    """Every path under ``roots`` (files and folders)."""
    return {str(p) for root in roots for p in [root, *root.rglob("*")] if p.exists()}


def one_line(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sensorium-zarr: error: "), r.stderr
    assert "Traceback" not in r.stderr and all(w in lines[0] for w in words), (words, lines[0])


@pytest.fixture(scope="module")
def mouse(tmp_path_factory):
    """A small sample as a folder and as a zip, and its store, in a folder of their own."""
    d = tmp_path_factory.mktemp("edges")
    folder = converter.make_sample(d / "src", trials=40, neurons=10, image_shape=(8, 16))
    zipped = converter.make_sample(d / "zips", trials=40, neurons=10, image_shape=(8, 16), as_zip=True)
    store = converter.convert(zipped, d / "m.zarr", progress=False)
    r = converter.open_mouse(store).sensorium.standardize().responses
    r.to_dataset(name="prediction").to_zarr(d / "pred.zarr", zarr_format=3, consolidated=False)  # perfect predictions
    return folder, zipped, store


# ---- every path argument x odd values ----

def _convert_dest_cases(mouse, tmp: Path):
    folder, zipped, store = mouse
    (tmp / "notes.txt").write_text("my notes")
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("x")
    return [  # (id, DEST, cwd, words in the message)
        ("dot", ".", tmp / "full", ("is not a Zarr store",)),
        ("dot-slash", "./", tmp / "full", ("is not a Zarr store",)),
        ("dot-dot", "..", tmp / "full", ("is not a Zarr store",)),
        ("root", "/", tmp, ("cannot hold a store",)),
        ("a file", tmp / "notes.txt", tmp, ("notes.txt", "is not a Zarr store")),
        ("the source zip", zipped, tmp, (zipped.name, "is not a Zarr store")),
        ("a folder", tmp / "full", tmp, ("full", "is not a Zarr store")),
        ("inside the source", folder / "data", tmp, ("data", "is not a Zarr store")),
        ("inside the source, new", folder / "data" / "x.zarr", tmp, ("inside the dataset",)),
        ("under a file", tmp / "notes.txt" / "x.zarr", tmp, ("is a file",)),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_convert_refuses_every_dest_that_cannot_be_a_store_and_leaves_nothing(mouse, tmp_path, overwrite):
    folder, zipped, _ = mouse
    for name, dest, cwd, words in _convert_dest_cases(mouse, tmp_path):
        src = folder if name.startswith("inside the source") else zipped
        before = snapshot(tmp_path, folder.parent, zipped.parent)
        r = subprocess.run([sys.executable, "-m", "converter.cli", "convert", str(src), str(dest), "--quiet",
                            *(["--overwrite"] if overwrite else [])], capture_output=True, text=True, cwd=cwd,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        one_line(r, 2, *words)
        assert snapshot(tmp_path, folder.parent, zipped.parent) == before, name  # nothing left behind, anywhere


def test_a_dest_that_cannot_be_a_store_is_refused_before_the_conversion_imports_anything_heavy(mouse, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    code = ("import sys; from converter import cli; rc = cli.main(['convert', sys.argv[1], sys.argv[2]]); "
            "print(rc, *[m for m in ('numpy', 'zarr', 'xarray', 'dask') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code, str(mouse[1]), str(tmp_path / "notes.txt")], capture_output=True, text=True)
    assert r.stdout.split() == ["2"] and "notes.txt: exists and is not a Zarr store" in r.stderr, (r.stdout, r.stderr)


def test_info_reads_metadata_without_xarray(make_store, clip_store):
    """`info` needs only the store's metadata: xarray, pandas and dask are not imported for it
    (they are most of its 0.2 s -> 0.4 s start, and more where CuPy comes with dask), nor
    zarr-python or jsonschema (0.58 s -> 0.30-0.37 s for an image scan on the Intel machine; a
    video scan's clip lengths are read through numcodecs: 0.56-0.69 s -> 0.41-0.45 s)."""
    code = ("import sys; from converter import cli; rc = cli.main(['info', sys.argv[1]]); "
            "print(rc, *[m for m in ('xarray', 'pandas', 'dask', 'zarr', 'jsonschema') if m in sys.modules], file=sys.stderr)")
    for store in (make_store(), clip_store):
        r = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True)
        assert r.stderr.split() == ["0"] and "trials" in r.stdout, (r.stdout, r.stderr)


def test_the_python_api_refuses_the_same_in_one_line(mouse, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(converter.StoreError, match="is not a Zarr store"):
        converter.convert(mouse[1], ".")
    assert list(tmp_path.iterdir()) == []


def test_convert_into_a_missing_parent_creates_it(mouse, tmp_path):
    r = run_cli("convert", mouse[1], tmp_path / "new" / "deeper" / "m.zarr", "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (tmp_path / "new" / "deeper" / "m.zarr" / "zarr.json").exists()


@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_export_refuses_an_out_that_cannot_be_a_folder(mouse, tmp_path, case):
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" if case == "a file" else tmp_path / "notes.txt" / "out"
    before = snapshot(tmp_path)
    one_line(run_cli("export", mouse[2], out), 2, "notes.txt")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("out,words", [("x.txt", ("x.txt", "png")), ("py.zarr", ("py.zarr", "png")),
                                       ("newdir/x.txt", ("x.txt",)), ("existing", ("existing", "folder"))])
def test_show_refuses_an_out_it_cannot_write_and_leaves_nothing(mouse, tmp_path, out, words):
    pytest.importorskip("matplotlib")
    (tmp_path / "existing").mkdir()
    before = snapshot(tmp_path)
    one_line(run_cli("show", mouse[2], "--out", tmp_path / out), 2, *words)
    assert snapshot(tmp_path) == before


def test_show_names_the_file_it_wrote(mouse, tmp_path):
    pytest.importorskip("matplotlib")
    r = run_cli("show", mouse[2], "--out", tmp_path / "page", "--dpi", "30")
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "page.png") and (tmp_path / "page.png").exists()


def test_sample_refuses_a_file_as_dest(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    before = snapshot(tmp_path)
    one_line(run_cli("sample", tmp_path / "notes.txt", "--trials", "40"), 2, "notes.txt")
    assert snapshot(tmp_path) == before


# ---- Ctrl-C at any moment: one line, exit 130, nothing half-written ----

def _commands(mouse, out: Path):
    folder, zipped, store = mouse
    return {  # id: (argv, [(wrapped function, nth call), ...], paths that must not exist afterwards)
        "sample": (["sample", out / "s", "--trials", "40", "--neurons", "5"], [("converter.sample:_image", 3)], [out / "s"]),
        "convert": (["convert", zipped, out / "c.zarr"], [("converter.write.convert:plan", 1), ("converter.write.executors:write_block", 1)],
                    [out / "c.zarr"]),
        "verify SRC DEST": (["verify", zipped, store], [("converter.integrity.verify:compare", 20)], []),
        "verify DEST": (["verify", store], [("converter.integrity.export:file_bytes", 20)], []),
        "export": (["export", store, out / "e"], [("converter.integrity.export:file_bytes", 20)], [out / "e"]),
        "export --zip": (["export", store, out / "z", "--zip"], [("converter.integrity.export:file_bytes", 20)], [out / "z"]),
        "info": (["info", store], [("converter.store_info:tree_bytes", 2)], []),
        "validate": (["validate", store], [("converter.schema:cross_check", 1)], []),
        "score": (["score", store, store.parent / "pred.zarr"], [("converter.read.score:score", 1)], []),
        "show": (["show", store, "--out", out / "page.png", "--dpi", "30"], [("converter.read.plot:overview", 1)], [out / "page.png"]),
        "convert-all": (["convert-all", zipped.parent, out / "all", "--workers", "1", "--quiet"],
                        [("distributed:as_completed", 1)], []),  # the client waits while the workers convert
    }


AFTER_THE_WORK = ("converter.cli:_report", 1)  # the work is done, its result not yet printed
CTRL_C = [(cmd, point) for cmd in ("sample", "convert", "verify SRC DEST", "verify DEST", "export", "export --zip", "info", "validate",
                                    "score", "show", "convert-all") for point in ("during", "after")]


@pytest.mark.slow
@pytest.mark.parametrize("cmd,point", CTRL_C, ids=[f"{c}-{p}" for c, p in CTRL_C])
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(mouse, tmp_path, cmd, point):
    if cmd == "show":
        pytest.importorskip("matplotlib")
    argv, during, gone = _commands(mouse, tmp_path)[cmd]
    for k, (target, nth) in enumerate(during if point == "during" else [AFTER_THE_WORK]):
        flag = tmp_path / f"flag{k}"
        proc = start(target, "pause", flag, *argv, nth=nth)
        wait_paused(proc, flag)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)  # delivered while paused: in the work, or between the work and its report
        r = release(proc, flag)
        said = RESUMES if (cmd, point) in (("convert", "during"), ("convert-all", "after"), ("convert-all", "during")) and not \
            target.endswith(":plan") else "sensorium-zarr: interrupted\n"
        assert r.returncode == 130 and r.stderr == said, (target, r.returncode, r.stderr[-2000:])
        assert r.stdout.strip() == "", r.stdout  # no result claimed (no "OK", no path)
        for p in gone:  # nothing half-written that could pass for complete, and no empty folder
            assert not p.with_name(p.name + ".partial").exists(), p
            if point == "during":
                assert not p.exists(), p
            elif p.suffix == ".zarr":  # interrupted once the work was done: the result is whole
                converter.validate(p)


# ---- pipes, exit codes, usage ----

def test_a_closed_pipe_ends_the_output_quietly(mouse):
    r = subprocess.run(f"{sys.executable} -m converter.cli info {mouse[2]} | head -1", shell=True, capture_output=True,
                       text=True, cwd=ROOT, executable="/bin/bash")
    assert r.stderr == "" and r.stdout.count("\n") == 1
    r = subprocess.run(f"set -o pipefail; {sys.executable} -m converter.cli info {mouse[2]} | head -1", shell=True,
                       capture_output=True, text=True, cwd=ROOT, executable="/bin/bash")
    assert r.returncode == 0, r.stderr


def test_missing_inputs_are_bad_input_and_say_so(mouse, tmp_path):
    one_line(run_cli("info", tmp_path / "nothere.zarr"), 2, "nothere.zarr", "does not exist")
    one_line(run_cli("score", mouse[2], tmp_path / "nothere.csv"), 2, "nothere.csv", "does not exist")
    one_line(run_cli("verify", tmp_path / "nothere.zip", mouse[2]), 2, "nothere.zip", "does not exist")


def test_no_command_prints_the_usage(tmp_path):
    r = run_cli()
    assert r.returncode == 2 and "usage: sensorium-zarr" in r.stderr and "convert" in r.stderr


def test_verify_usage_names_its_arguments_once():
    r = run_cli("verify", "--help")
    usage = r.stdout.split("\n\n")[0]
    assert "[SRC] DEST" in usage and "[[SRC]" not in usage


def test_frames_without_dynamic_is_refused(tmp_path):
    one_line(run_cli("sample", tmp_path, "--frames", "5"), 2, "--frames", "--video")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_npy_file_is_called_empty(mouse, tmp_path):
    src = tmp_path / mouse[0].name
    shutil.copytree(mouse[0], src)
    (src / "data/responses/3.npy").write_bytes(b"")
    one_line(run_cli("convert", src, tmp_path / "m.zarr"), 2, "data/responses/3.npy", "empty file")


def test_verify_against_another_mouse_says_so(mouse, tmp_path):
    other = converter.make_sample(tmp_path, trials=40, neurons=10, image_shape=(8, 16), seed=7, as_zip=True)
    r = run_cli("verify", other, mouse[2])
    assert r.returncode == 1 and "made from another source" in r.stdout, r.stdout


def test_info_names_chunks_and_shards(mouse):
    r = run_cli("info", mouse[2])
    header = next(line for line in r.stdout.splitlines() if line.startswith("array"))
    assert "chunk" in header and "shard" in header
    rows = next(line for line in r.stdout.splitlines() if line.startswith("by_trial/responses "))
    assert rows.split()[4:6] == ["(1,", "10)"] and rows.split()[6:8] == ["(40,", "10)"]  # chunk, then shard
    tiles = next(line for line in r.stdout.splitlines() if line.startswith("responses "))
    assert tiles.split()[6] == "-"  # not sharded


@pytest.mark.slow
def test_convert_all_is_quiet_when_port_8787_is_taken(mouse, tmp_path):
    import socket

    (tmp_path / "in").mkdir()
    shutil.copy(mouse[1], tmp_path / "in")
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        except OSError:
            pass  # already taken by something else: the same situation
        r = run_cli("convert-all", tmp_path / "in", tmp_path / "out", "--workers", "1", "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_every_command_imports_its_modules_while_ctrl_c_still_ends_it_at_once():
    """What a command imports before its work begins is imported under the start-up handler
    (cli._COMMAND_MODULES): a command missing there would take Ctrl-C inside its imports."""
    import argparse
    import importlib.util

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(cli._COMMAND_MODULES) == set(sub.choices)
    for modules in cli._COMMAND_MODULES.values():
        for m in modules:
            assert importlib.util.find_spec(m, "converter") is not None, m


_SWALLOWED = r"""
import os, signal, sys, time
from converter.cli import _Interrupts

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the handler raises here, where Python can only print it
        for _ in range(1000):
            pass

with _Interrupts():
    try:
        Finalized()
        time.sleep(30)  # a blocking call: woken for it
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(SIGINT) of oneself")
def test_a_ctrl_c_that_lands_in_a_finalizer_is_raised_again_and_not_printed():
    """zarr-python's event loop runs weakref callbacks in the main thread: a Ctrl-C there was
    printed as "Exception ignored in ..." with a traceback, and the command went on to the end.
    It is now raised again once the callback returns, and nothing is printed."""
    r = subprocess.run([sys.executable, "-c", _SWALLOWED], capture_output=True, text=True, cwd=ROOT, timeout=20)
    assert r.stdout == "interrupted\n" and r.stderr == "", (r.stdout, r.stderr)
