"""Nothing lost: interrupted conversions resume, one writer, self-checking stores, exact export."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import converter
from converter import cli

from .conftest import bits
from .conftest import run_cli


@pytest.fixture(scope="session")
def reference_store(four_blocks, tmp_path_factory):
    return converter.convert(four_blocks, tmp_path_factory.mktemp("ref") / "ref.zarr", progress=False)


def chunk_files(store: Path) -> dict[str, bytes]:
    """Every file of a store but the root metadata (which records the creation time)."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file() and p.name != "zarr.json"}


def start_convert(src, dest) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "converter.cli", "convert", str(src), str(dest), "--workers", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("conversion neither reached the kill point nor finished")


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume(four_blocks, reference_store, tmp_path):
    dest = tmp_path / "m.zarr"
    state = tmp_path / "m.zarr.incomplete" / "state"
    records = lambda: len(list((state / "blocks").glob("*.json")))
    killed_at, kept = [], None  # kept: a recorded block's first response tile, and its time
    for k in (0, 1, 3, 4):  # after the skeleton, after 1 and 3 blocks, after all (during the finish)
        proc = start_convert(four_blocks, dest)
        if kill_when(proc, lambda: (state / "plan.json").exists() and records() >= k):
            killed_at.append(records())
            assert not dest.exists()  # never anything at DEST that could pass for complete
            r = run_cli("info", dest)
            assert r.returncode == 2 and "no complete store here" in r.stderr
            if kept is None and records() >= 1:  # blocks finish in any order: whichever was recorded
                start = int(next((state / "blocks").glob("*.json")).stem)
                tile = f"responses/c/{start // 1024}/0"
                kept = tile, (tmp_path / "m.zarr.incomplete" / "store" / tile).stat().st_mtime_ns
    assert len(killed_at) >= 2, f"too few kill points reached: {killed_at}"
    r = subprocess.run([sys.executable, "-m", "converter.cli", "convert", str(four_blocks), str(dest), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "m.zarr.incomplete").exists()
    if kept is not None:  # the finished block was not written again
        assert (dest / kept[0]).stat().st_mtime_ns == kept[1]
    assert chunk_files(dest) == chunk_files(reference_store)  # identical to an uninterrupted run
    assert converter.verify(four_blocks, dest).ok


def test_a_second_writer_is_refused(make_dataset, tmp_path):
    from converter.write.state import LocalState

    src, dest = make_dataset(), tmp_path / "m.zarr"
    with LocalState(dest):  # this process is "the conversion that is running"
        r = run_cli("convert", src, dest)
        assert r.returncode == 2 and f"another conversion (pid {os.getpid()}) is writing" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not dest.exists()
    r = run_cli("convert", src, dest)  # the lock is gone with its holder
    assert r.returncode == 0, r.stderr
    assert converter.verify(src, dest).ok


@pytest.mark.parametrize("where", ["/images/c/", "/responses/c/", "/checksums/data/"])  # a shard, a chunk we encode; zarr writes the checksums
def test_disk_full_then_resume(make_dataset, tmp_path, monkeypatch, capsys, disk_full, where):
    src, dest = make_dataset(), tmp_path / "m.zarr"
    disk_full(where, after=1)
    assert cli.main(["convert", str(src), str(dest), "--quiet"]) == cli.EXIT_STORAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "run the same command again to resume" in err
    assert not dest.exists() and (tmp_path / "m.zarr.incomplete").exists()
    monkeypatch.undo()
    assert cli.main(["convert", str(src), str(dest), "--quiet"]) == 0
    assert converter.verify(src, dest).ok and not (tmp_path / "m.zarr.incomplete").exists()


def test_a_source_changed_between_an_interrupted_run_and_its_rerun_is_converted_afresh(tmp_path, monkeypatch):
    """The rerun must not reuse blocks written from the files as they were: the source's identity
    (every file's size and time) no longer matches the recorded plan, so the work starts over."""
    import numpy as np

    from converter.write.state import LocalState

    src = converter.make_sample(tmp_path / "src", trials=1100, neurons=30, image_shape=(24, 32))  # two write blocks
    dest, saved, calls = tmp_path / "m.zarr", LocalState.save_block, []

    def full_after_the_first(self, r):  # whichever block finishes first is recorded
        calls.append(r.block.start)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved(self, r)

    monkeypatch.setattr(LocalState, "save_block", full_after_the_first)
    with pytest.raises(converter.StorageError):
        converter.convert(src, dest, executor=1, progress=False)
    monkeypatch.undo()
    assert list((tmp_path / "m.zarr.incomplete" / "state" / "blocks").glob("*.json"))  # a block to resume from
    for f in (src / "data" / "responses").glob("*.npy"):  # new values, same shapes and sizes
        np.save(f, np.load(f) + 1)
    converter.convert(src, dest, progress=False)
    assert converter.verify(src, dest).ok


def test_permission_denied_names_the_place_and_the_cure(make_dataset, tmp_path, monkeypatch, capsys):
    import converter.write.block as block_module

    src, dest = make_dataset(), tmp_path / "m.zarr"

    def denied(path, data, storage_options=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(block_module, "write_bytes", denied)
    assert cli.main(["convert", str(src), str(dest), "--quiet"]) == cli.EXIT_STORAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied while writing" in err and "fix the permissions" in err
    assert re.search(r"m\.zarr\.incomplete/store/\w+/c/0\b", err) and "the work done so far is kept" not in err  # a chunk of the first part to fail
    monkeypatch.undo()
    assert cli.main(["convert", str(src), str(dest), "--quiet"]) == 0 and converter.verify(src, dest).ok


def test_free_space_is_checked_against_the_estimated_store(make_dataset, tmp_path, monkeypatch, capsys):
    convert_module = sys.modules["converter.write.convert"]  # the package's `convert` is the function
    src = make_dataset("none", True)
    real = shutil.disk_usage
    reference = converter.convert(src, tmp_path / "ref" / "m.zarr", progress=False)
    store_bytes = sum(f.stat().st_size for f in reference.rglob("*") if f.is_file())
    with zipfile.ZipFile(src) as zf:
        declared = sum(i.file_size for i in zf.infolist())
    assert store_bytes * 1.2 < declared  # room for the store, not for the uncompressed source
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda p: real(p)._replace(free=int(store_bytes * 1.2)))
    assert cli.main(["convert", str(src), str(tmp_path / "fits" / "m.zarr"), "--quiet"]) == 0
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda p: real(p)._replace(free=int(store_bytes * 0.5)))
    assert cli.main(["convert", str(src), str(tmp_path / "full" / "m.zarr")]) == cli.EXIT_STORAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'full'}: not enough room for the store: it needs about" in err, err
    assert os.listdir(tmp_path / "full") == []
    monkeypatch.setattr(convert_module.shutil, "disk_usage", lambda p: real(p)._replace(total=0, free=0))  # /proc-like
    assert cli.main(["convert", str(src), str(tmp_path / "pseudo" / "m.zarr"), "--quiet"]) == 0


def test_zip_bomb_member_is_refused(make_dataset, tmp_path, monkeypatch):
    import converter.source.files as source_module

    monkeypatch.setattr(source_module, "MAX_MEMBER_BYTES", 1000)  # stands for 2 GiB: images are larger
    with pytest.raises(converter.SourceError, match="declares .* bytes uncompressed; refusing"):
        converter.convert(make_dataset("none", True), tmp_path / "m.zarr")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["symlink", "duplicate"])
def test_zip_symlinks_and_duplicates_are_refused(make_dataset, tmp_path, kind):
    src = make_dataset("none", True)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        top = zin.namelist()[0].split("/")[0]
        if kind == "symlink":
            link = zipfile.ZipInfo(f"{top}/meta/trials/evil.npy")
            link.external_attr = 0o120777 << 16
            zout.writestr(link, "/etc/passwd")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zipfile warns about the very thing we build
                zout.writestr(f"{top}/data/images/0.npy", zin.read(f"{top}/data/images/0.npy"))
    r = run_cli("convert", bad, tmp_path / "m.zarr")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert ("symbolic link in zip" if kind == "symlink" else "duplicate entry in zip") in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.zip"]


def test_self_check_detects_bit_rot_without_the_source(make_store, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(make_store("sensorium"), store)
    r = run_cli("verify", store)
    assert r.returncode == 0 and r.stdout.startswith("OK: 299 source files match their checksums"), r.stdout
    pos = int(np.flatnonzero(zarr.open_array(store / "trial")[...] == 11)[0])  # where file 11 is stored
    arr = zarr.open_array(store / "behavior", mode="r+")
    row = arr[pos]
    row[1] = np.float32(1.0)
    arr[pos] = row
    area = zarr.open_array(store / "area", mode="r+")
    values = area[...]
    values[3] = "XX"
    area[...] = values
    r = run_cli("verify", store)
    assert r.returncode == 1
    assert "data/behavior/11.npy: stored values no longer give the source file" in r.stdout
    assert "meta/neurons/area.npy: stored values no longer give the source file" in r.stdout


def sha(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.npy"))}


@pytest.mark.parametrize("competition", ["none", "sensorium"])
def test_export_reproduces_every_file(make_dataset, make_store, competition, tmp_path):
    src = make_dataset(competition)
    r = run_cli("export", make_store(competition), tmp_path)
    assert r.returncode == 0, r.stderr
    assert sha(Path(r.stdout.strip())) == sha(src)
    zipped = converter.export(make_store(competition), tmp_path / "z", as_zip=True)
    with zipfile.ZipFile(zipped) as zf:
        got = {n.split("/", 1)[1]: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist() if not n.endswith("/")}
    assert got == sha(src)
    assert converter.verify(zipped, make_store(competition)).ok  # the exported zip converts back


dtypes = st.sampled_from(["<f4", ">f4", "<f8", ">i2", "<u2", "u1", "<i8", ">c8", "?"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), dtype=dtypes, fortran=st.booleans())
def test_store_round_trip_of_any_per_trial_shape_dtype_and_order(make_dataset, tmp_path_factory, data, dtype, fortran):
    folder = tmp_path_factory.mktemp("hyp") / "static90000-1-1-GrayImageNet-x"
    shutil.copytree(make_dataset(), folder)
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    for i in range(60):
        a = data.draw(hnp.arrays(np.dtype(dtype), shape)) if i < 3 else np.zeros(shape, dtype)
        np.save(folder / f"data/behavior/{i}.npy", np.asfortranarray(a) if fortran else a)
    dest = tmp_path_factory.mktemp("rt") / "m.zarr"
    converter.convert(folder, dest, progress=False)
    import xarray as xr

    stored = xr.open_zarr(dest).sortby("trial")["behavior"].values
    for i in range(60):
        assert bits(stored[i]) == bits(np.load(folder / f"data/behavior/{i}.npy"))
    assert converter.verify(folder, dest).ok and converter.self_check(dest).ok
    out = converter.export(dest, tmp_path_factory.mktemp("ex"))
    assert sha(out) == sha(folder)
    shutil.rmtree(folder)


PADDING = 16  # pieces of 16 MiB: 256 MiB


@pytest.mark.slow
def test_memory_does_not_depend_on_the_size_of_other_files(make_dataset, tmp_path):
    """A zip of a few MB whose other files unpack to 256 MiB, four times the 64 MB the
    test allows, converts, verifies and exports with the same peak memory as without them: they
    are streamed in pieces, never held whole."""
    src = make_dataset("none", True)
    big = tmp_path / src.name
    shutil.copy(src, big)
    with zipfile.ZipFile(big, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        top = zf.namelist()[0].split("/")[0]
        with zf.open(f"{top}/data/responses/padding.bin", "w", force_zip64=True) as f:
            zeros = bytes(1 << 24)
            for _ in range(PADDING):
                f.write(zeros)
    assert big.stat().st_size < 20e6

    def peak_rss(*commands: list[str]) -> float:
        """Peak memory (MB) of the commands, each run as the CLI in a process of its own."""
        code = ("import resource, subprocess, sys, json\n"
                "for c in json.loads(sys.argv[1]):\n"
                "    subprocess.run([sys.executable, '-m', 'converter.cli', *c], check=True)\n"
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
        r = subprocess.run([sys.executable, "-c", code, json.dumps([list(map(str, c)) for c in commands])],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return float(r.stdout.strip().splitlines()[-1])

    def work(zip_path, name):
        dest = tmp_path / f"{name}.zarr"
        return [["convert", zip_path, dest, "--quiet"], ["verify", zip_path, dest, "--quiet"],
                ["export", dest, tmp_path / f"{name}-out", "--zip", "--quiet"]]

    baseline = peak_rss(*work(src, "plain"))
    with_padding = peak_rss(*work(big, "padded"))
    print(f"peak RSS: {baseline:.0f} MB without, {with_padding:.0f} MB with {PADDING * 16} MiB of other files")
    assert with_padding < baseline + 64, (baseline, with_padding)  # 256 MiB held at once would show
    with zipfile.ZipFile(tmp_path / "padded-out" / big.name) as zf:
        info = zf.getinfo(f"{top}/data/responses/padding.bin")
        crc = 0
        for _ in range(PADDING):
            crc = zlib.crc32(zeros, crc)
        assert info.file_size == PADDING << 24 and info.CRC == crc
