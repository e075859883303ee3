"""Bad input: exit 2, one line naming the file, no traceback, nothing left at DEST."""

from __future__ import annotations

import argparse

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import converter

from .conftest import load_source, run_cli, sigint_as_at_a_terminal


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def remove_trial(f: Path):
    os.remove(f / "data/behavior/17.npy")
    return "data/behavior"


def gap_in_every_folder(f: Path):
    for key in ("images", "responses", "behavior", "pupil_center"):
        os.rename(f / f"data/{key}/59.npy", f / f"data/{key}/60.npy")
    return "data/images/59.npy: missing"


def extra_trial(f: Path):
    shutil.copy(f / "data/responses/0.npy", f / "data/responses/60.npy")
    return "data/responses: has 61 trial files but data/images has 60"


def non_integer_name(f: Path):
    shutil.copy(f / "data/images/0.npy", f / "data/images/abc.npy")
    return "data/images/abc.npy: not a trial file"


def negative_name(f: Path):
    shutil.copy(f / "data/images/0.npy", f / "data/images/-1.npy")
    return "data/images/-1.npy: not a trial file"


def leading_zero_name(f: Path):
    os.rename(f / "data/pupil_center/7.npy", f / "data/pupil_center/007.npy")
    return "data/pupil_center/007.npy: not a trial file"


def empty_folder(f: Path):
    shutil.rmtree(f / "data/behavior")
    (f / "data/behavior").mkdir()
    return "data/behavior: empty folder"


def shape_differs(f: Path):
    np.save(f / "data/responses/33.npy", np.zeros(41, np.float32))
    return "data/responses/33.npy: shape (41,)"


def dtype_differs(f: Path):
    np.save(f / "data/behavior/40.npy", np.zeros(3, np.float64))
    return "data/behavior/40.npy: shape (3,) dtype <f8 differs"


def truncated(f: Path):
    p = f / "data/images/12.npy"
    p.write_bytes(p.read_bytes()[:-100])
    return "data/images/12.npy: truncated"


def not_npy(f: Path):
    (f / "data/responses/3.npy").write_text("<html>404 Not Found</html>")
    return "data/responses/3.npy: not a .npy file"


def meta_length(f: Path):
    np.save(f / "meta/trials/tiers.npy", load_source(f, "meta/trials/tiers.npy")[:-1])
    return "meta/trials/tiers.npy: has 59 rows, expected one row per trial (60)"


def neuron_meta_length(f: Path):
    np.save(f / "meta/neurons/area.npy", load_source(f, "meta/neurons/area.npy")[:30])
    return "meta/neurons/area.npy: has 30 rows, expected one row per neuron (40)"


def pickled_meta(f: Path):
    np.save(f / "meta/trials/frame_image_class.npy", np.array(["a", None] * 30, dtype=object), allow_pickle=True)
    return "meta/trials/frame_image_class.npy: holds Python objects"


def missing_tiers(f: Path):
    os.remove(f / "meta/trials/tiers.npy")
    return "meta/trials/tiers.npy: missing"


def not_a_dataset(f: Path):
    shutil.rmtree(f / "meta")
    return "meta: missing"


CASES = [remove_trial, gap_in_every_folder, extra_trial, non_integer_name, negative_name, leading_zero_name,
         empty_folder, shape_differs, dtype_differs, truncated, not_npy, meta_length, neuron_meta_length,
         pickled_meta, missing_tiers, not_a_dataset]


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_bad_folder(dataset_copy, tmp_path, damage):
    folder = dataset_copy()
    expected = damage(folder)
    dest = tmp_path / "out" / "m.zarr"
    r = run_cli("convert", folder, dest)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert expected in r.stderr and str(folder) in r.stderr, r.stderr
    assert not dest.exists() and not Path(str(dest) + ".incomplete").exists()


def rewrite_zip(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for name, new in edit(info.filename, data):
                zout.writestr(name, new)
    return dst


def flip_crc(src: Path, dst: Path) -> Path:
    """Corrupt one member's stored data so that its CRC no longer matches."""
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/responses/4.npy"))
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    with open(dst, "r+b") as f:
        f.seek(start + info.compress_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    return dst


def edit_entry(src: Path, dst: Path, member: str, flags: int = 0, size_delta: int = 0) -> Path:
    """Set general-purpose ``flags`` bits and change the declared uncompressed size of one member,
    in its local header and in the central directory alike."""
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member))
        directory = zf.start_dir
    data = bytearray(dst.read_bytes())
    # its directory record: "version made by", then the local header's fields from "version needed to extract"
    central = data.index(data[info.header_offset + 4 : info.header_offset + 26], directory) - 6
    assert data[central : central + 4] == b"PK\x01\x02"
    for header, flag_at, size_at in ((info.header_offset, 6, 22), (central, 8, 24)):
        data[header + flag_at] |= flags
        size = int.from_bytes(data[header + size_at : header + size_at + 4], "little") + size_delta
        data[header + size_at : header + size_at + 4] = size.to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda s, d: rewrite_zip(s, d, lambda n, b: [(n, b)] + ([("../evil.npy", b)] if n.endswith("/images/0.npy") else [])),
         "../evil.npy: unsafe path in zip"),
        (lambda s, d: rewrite_zip(s, d, lambda n, b: [(n, b)] + ([("/tmp/abs.npy", b)] if n.endswith("/images/0.npy") else [])),
         "/tmp/abs.npy: unsafe path in zip"),
        (lambda s, d: rewrite_zip(s, d, lambda n, b: [(n, b[:-10] if n.endswith("responses/9.npy") else b)]),
         "data/responses/9.npy: truncated"),
        (flip_crc, "data/responses/4.npy: damaged zip entry"),
        (lambda s, d: edit_entry(s, d, "data/responses/5.npy", size_delta=-1),
         "data/responses/5.npy: damaged zip entry (holds other than"),
        (lambda s, d: edit_entry(s, d, "data/responses/6.npy", size_delta=+1),
         "data/responses/6.npy: damaged zip entry (holds other than"),
        (lambda s, d: edit_entry(s, d, "data/responses/7.npy", flags=0x1), "data/responses/7.npy: encrypted zip entry"),
        (lambda s, d: (d.write_bytes(s.read_bytes()[:1000]), d)[1], "bad.zip: cannot open as a zip"),
    ],
    ids=["dotdot", "absolute", "truncated_member", "bad_crc", "longer_than_declared", "shorter_than_declared", "encrypted",
         "truncated_zip"],
)
def test_bad_zip(make_dataset, tmp_path, make, expected):
    bad = make(make_dataset("none", True), tmp_path / "bad.zip")
    dest = tmp_path / "m.zarr"
    r = run_cli("convert", bad, dest)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert expected in r.stderr, r.stderr
    assert not dest.exists() and not Path(str(dest) + ".incomplete").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.zip"]


def test_pickled_data_file_is_refused_without_running_its_payload(dataset_copy, tmp_path):
    folder = dataset_copy()
    marker = tmp_path / "payload-ran"
    payload = (
        "import numpy as np, sys\n"
        "class P:\n"
        "    def __reduce__(self):\n"
        f"        return (open, ({str(marker)!r}, 'w'))\n"
        "np.save(sys.argv[1], np.array([P()], dtype=object), allow_pickle=True)\n"
    )
    subprocess.run([sys.executable, "-c", payload, str(folder / "data/responses/30.npy")], check=True)
    assert not marker.exists()
    r = run_cli("convert", folder, tmp_path / "m.zarr")
    assert r.returncode == 2 and "data/responses/30.npy: holds Python objects (pickled data); refusing to unpickle" in r.stderr
    assert not marker.exists() and not (tmp_path / "m.zarr").exists()
    r = run_cli("verify", folder, tmp_path / "m.zarr")
    assert r.returncode == 2 and not marker.exists()


def test_missing_source_and_existing_dest(make_store, make_dataset, tmp_path):
    r = run_cli("convert", tmp_path / "nope", tmp_path / "m.zarr")
    assert r.returncode == 2 and "nope: does not exist" in r.stderr
    store = make_store()
    r = run_cli("convert", make_dataset(seed=3), store)  # another mouse into an existing store
    assert r.returncode == 2 and "already exists (use --overwrite" in r.stderr
    r = run_cli("convert", make_dataset(), store)  # its own source again: nothing to do
    assert r.returncode == 0 and "already complete" in r.stdout, r.stderr


def test_bad_arguments_exit_2():
    r = run_cli("convert")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli("sample", "/tmp/x", "--trials", "3")
    assert r.returncode == 2 and "too few" in r.stderr


def test_every_option_of_the_parser_is_in_the_readme_synopsis():
    import re

    from converter.cli import build_parser

    readme = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "command-line.md").read_text()
    synopsis = readme.split("# Command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    documented: dict[str, set[str]] = {}
    for line in re.split(r"\n(?=sensorium-zarr )", synopsis.strip()):
        words = line.split()
        documented[words[1]] = set(re.findall(r"--[a-z][a-z-]*", line))
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == set(documented)
    for name, p in sub.choices.items():
        shown = [a for a in p._actions if a.help != argparse.SUPPRESS]
        options = {o for a in shown for o in a.option_strings if o.startswith("--")} - {"--help", "--storage-option"}
        assert options == documented[name], name
        for renamed in (o for a in p._actions if a.help == argparse.SUPPRESS for o in a.option_strings):
            assert f"`{renamed}`, its name until" in readme, renamed  # a hidden old name is still explained
    assert "--storage-option KEY=VALUE" in readme


@pytest.mark.parametrize("args,problem", [(["--trials", "-5"], "at least 1"), (["--neurons", "0"], "at least 1"),
                                          (["--seed", "-1"], "at least 0"), (["--trials", "3"], "too few")])
def test_sample_refuses_bad_values_before_writing(tmp_path, args, problem):
    r = run_cli("sample", tmp_path / "s", *args)
    assert r.returncode == 2 and problem in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_sample_refuses_to_mix_two_datasets_and_is_whole_or_absent(tmp_path):
    import signal
    import time

    first = run_cli("sample", tmp_path, "--trials", "60", "--quiet")
    assert first.returncode == 0
    path = Path(first.stdout.strip())
    r = run_cli("sample", tmp_path, "--trials", "100", "--quiet")
    assert r.returncode == 2 and "already exists (use --overwrite" in r.stderr
    assert len(list((path / "data/images").iterdir())) == 60
    assert run_cli("sample", tmp_path, "--trials", "100", "--overwrite", "--quiet").returncode == 0
    assert len(list((path / "data/images").iterdir())) == 100  # no trial files of the old sample left over
    proc = subprocess.Popen([sys.executable, "-m", "converter.cli", "sample", str(tmp_path / "z"), "--zip", "--trials", "3000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_at_a_terminal)
    end = time.monotonic() + 60
    while not any(p.name.endswith(".partial") for p in (tmp_path / "z").glob(".*")) and time.monotonic() < end:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.endswith("interrupted\n"), err
    assert not (tmp_path / "z").exists()  # nothing under the final name, nor a partial file, nor the folder it made


@pytest.mark.parametrize("writer", ["sample", "export"])
def test_a_ctrl_c_inside_zipfile_open_leaves_nothing_and_stays_a_ctrl_c(writer, make_store, tmp_path, monkeypatch):
    # The one window a real SIGINT hit in CI: after ZipFile.open marked a member as being written, before
    # it returned the member's handle. ZipFile.close then refuses, and that ValueError hid the Ctrl-C.
    real, calls = zipfile._ZipWriteFile.__init__, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real(self, *args, **kwargs)

    monkeypatch.setattr(zipfile._ZipWriteFile, "__init__", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        if writer == "sample":
            converter.make_sample(out, trials=20, as_zip=True)
        else:
            converter.export(make_store(), out, as_zip=True)
    assert len(calls) == 5 and not out.exists() and list(tmp_path.iterdir()) == []


def test_a_zip_of_two_datasets_or_a_folder_around_one_says_what_it_found(make_dataset, tmp_path):
    a, b = make_dataset(), make_dataset(seed=1)
    both = tmp_path / "both.zip"
    with zipfile.ZipFile(both, "w") as zf:
        for folder in (a, b):
            for p in sorted(folder.rglob("*.npy")):
                zf.write(p, f"{folder.name}/{p.relative_to(folder)}")
    r = run_cli("convert", both, tmp_path / "m.zarr")
    assert r.returncode == 2 and "found 2 datasets" in r.stderr and a.name in r.stderr, r.stderr
    around = tmp_path / "downloads"
    shutil.copytree(a, around / a.name)
    r = run_cli("convert", around, tmp_path / "m.zarr")
    assert r.returncode == 2 and f"the dataset is in the subfolder {a.name}/" in r.stderr, r.stderr
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "m.zarr.incomplete").exists()


def test_a_store_given_as_source_or_a_zip_given_as_store(make_dataset, make_store, tmp_path):
    r = run_cli("convert", make_store(), tmp_path / "m.zarr")
    assert r.returncode == 2 and "a Zarr store, not a dataset folder or zip (arguments swapped?)" in r.stderr, r.stderr
    for command in ("info", "validate", "export"):
        r = run_cli(command, make_dataset("none", True), *([tmp_path / "out"] if command == "export" else []))
        assert r.returncode == 2 and "not a Zarr store (a file, not a folder): a dataset zip, convert it first" in r.stderr, r.stderr
        assert "Errno" not in r.stderr


def test_local_outputs_refuse_urls(make_store, tmp_path):
    for argv in (["sample", "s3://bucket/x"], ["export", make_store(), "s3://bucket/out"]):
        r = run_cli(*argv)
        assert r.returncode == 2 and "a local folder is needed here, not a URL" in r.stderr, r.stderr
    assert not any(p.name.startswith("s3:") for p in Path.cwd().iterdir())


def test_a_symbolic_link_in_the_source_folder_is_refused_in_one_line(dataset_copy, tmp_path):
    src = dataset_copy()
    (src / "data" / "responses" / "3.npy").unlink()
    (src / "data" / "responses" / "3.npy").symlink_to(src / "data" / "responses" / "4.npy")
    r = run_cli("convert", src, tmp_path / "m.zarr")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "data/responses/3.npy: is a symbolic link" in r.stderr, r.stderr
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "m.zarr.incomplete").exists()


def test_a_file_gone_while_the_folder_is_walked_is_a_source_error_naming_it(make_dataset, monkeypatch):
    import errno

    from converter.source import open_source

    lstat = os.lstat

    def gone(path, *args, **kwargs):
        if os.fspath(path).endswith(os.path.join("responses", "3.npy")):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", os.fspath(path))
        return lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", gone)
    with pytest.raises(converter.SourceError, match=r"data/responses/3\.npy: No such file or directory"):
        open_source(make_dataset(), None).tree()
