"""The original files, rebuilt from a store: exact export, and the self-check of ``verify DEST``.

Every array from a source file carries that file's ``.npy`` header (``npy_header``) and
CRC-32; per-trial data keep one header per folder and a CRC-32 per file under
``checksums/data/<key>``.  Header + values in the source dtype and memory order give back
the file byte for byte, and its CRC-32 proves it.
"""

from __future__ import annotations

import base64
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .. import contract
from ..errors import StorageError, StoreError
from ..progress import Progress
from ..source.files import crc32
from ..source.npy import parse_header
from ..storage import check_creatable, discard_zip, first_missing, open_group
from ..write.layout import blocks, to_file_order
from ..schema import manifest, read_root
from .report import Pieces, VerifyReport, block_trials, damaged, other_files, row_bits  # noqa: F401


def file_bytes(values: np.ndarray, header: bytes, name: str) -> bytes:
    """The ``.npy`` file ``header`` + ``values`` (converted back to the header's dtype and order)."""
    h = parse_header(header, name)
    values = np.asarray(values)
    if h.dtype.kind == "U":
        arr = np.array(values.tolist(), dtype=h.dtype)
    elif h.dtype.kind == "S":
        arr = contract.bytes_from_text(values, h.dtype)
    else:
        arr = values.astype(h.dtype, copy=False)
    if arr.shape != h.shape:
        raise StoreError(f"{name}: stored shape {arr.shape} does not match the recorded header's {h.shape}")
    return header + arr.tobytes(order="F" if h.fortran_order else "C")


def source_files(dest: str | os.PathLike, progress: bool | None = None, storage_options: dict | None = None) -> Iterator[tuple[str, Pieces, int]]:
    """``(path, its bytes in pieces, its recorded CRC-32)`` for every source file a store keeps.

    ``.npy`` files come back as one piece; other files in pieces of `PIECE` bytes.
    """
    m = manifest(read_root(dest, storage_options))
    group = open_group(dest, storage_options)
    trial = group[contract.TRIAL][...]  # the file number stored at each position
    per_trial = {}
    for path, a in m["arrays"].items():
        src = a["attributes"].get(contract.SOURCE)
        if src is None:
            continue
        if contract.TRIAL_FIELD in src:
            per_trial[path] = src
            continue
        attrs = a["attributes"]
        by_trial = (a["dims"] or [None])[0] == contract.TRIAL  # rows stored in trial order, written in file order
        yield src, (lambda path=path, attrs=attrs, src=src, by_trial=by_trial: iter([file_bytes(
            to_file_order(group[path][...], trial) if by_trial else group[path][...], base64.b64decode(attrs[contract.NPY_HEADER]), src)])), \
            attrs[contract.SOURCE_CRC32]
    yield from other_files(group, m["attributes"].get("schema_version"))
    n = len(trial) * len(per_trial)
    with Progress(n, "rebuild", progress) as bar:
        for key, src in per_trial.items():
            checks = group[contract.checksums_path(key)]
            if contract.NPY_HEADER not in checks.attrs:
                raise StoreError(f"{dest}/{key}: its source files had different .npy headers; they cannot be rebuilt exactly")
            header = base64.b64decode(checks.attrs[contract.NPY_HEADER])
            crcs = checks[...]
            arr = group[key]
            for b in blocks(len(trial), block_trials(m["arrays"], [key])):
                rows = arr[b.start : b.stop]
                for j, pos in enumerate(b):
                    name = src.replace(contract.TRIAL_FIELD, str(int(trial[pos])))
                    yield name, (lambda rows=rows, j=j, name=name: iter([file_bytes(rows[j], header, name)])), int(crcs[pos])
                bar(len(b))


def self_check(dest: str | os.PathLike, *, progress: bool | None = None, limit: int = 20, storage_options: dict | None = None) -> VerifyReport:
    """Re-check every stored array against the CRC-32 of the file it came from."""
    report = VerifyReport(limit=limit, against="their checksums recorded at conversion")
    if damaged(report, dest, read_root(dest, storage_options), storage_options):
        return report
    for name, make, crc in source_files(dest, progress, storage_options):
        report.files_checked += 1
        try:
            got = 0
            for piece in make():
                got = crc32(piece, got)
        except StoreError as e:
            report.add(str(e))
            continue
        if got != crc:
            report.add(f"{name}: stored values no longer give the source file (CRC-32 {got:08x}, recorded {crc:08x}): bit rot or tampering")
    for problem in _check_copies(dest, storage_options):
        report.add(problem)
    return report


def _check_copies(dest, storage_options: dict | None) -> Iterator[str]:
    """Every second layout of an array (``by_trial/<key>``) holds the same bits as the original."""
    m = manifest(read_root(dest, storage_options))
    group = open_group(dest, storage_options)
    for path, a in m["arrays"].items():
        original = a["attributes"].get(contract.COPY_OF)
        if original is None:
            continue
        copy, orig = group[path], group[original]
        if copy.shape != orig.shape or copy.dtype != orig.dtype:
            yield f"{path}: shape or dtype differs from {original}"
            continue
        for b in blocks(copy.shape[0], block_trials(m["arrays"], [original])):
            x, y = copy[b.start : b.stop], orig[b.start : b.stop]
            rows = np.flatnonzero((row_bits(x) != row_bits(y)).any(axis=1)) if x.size else []
            if len(rows):
                yield f"{path}: differs from {original} at trial {int(group['trial'][b.start + int(rows[0])])} (bit rot or tampering)"
                break


def _add_folders(zf: zipfile.ZipFile, done: set[str], member: str) -> None:
    """Directory entries for every folder above ``member``, once each, as distributed zips have them."""
    parts = member.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = "/".join(parts[:depth]) + "/"
        if folder not in done:
            done.add(folder)
            zf.writestr(folder, b"")


def _write(pieces: Iterator[bytes], zf: zipfile.ZipFile | None, member: str, path: Path) -> int:
    """Write one file from its pieces, as a zip member or on disk; return its CRC-32."""
    first = next(pieces, b"")
    second = next(pieces, None)
    if zf is not None and second is None:
        zf.writestr(member, first)  # an array: one piece
        return crc32(first)
    crc = 0
    if zf is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with (zf.open(member, "w", force_zip64=True) if zf is not None else open(path, "wb")) as f:
        for piece in (first, *(() if second is None else (second,))):
            f.write(piece)
            crc = crc32(piece, crc)
        for piece in pieces:
            f.write(piece)
            crc = crc32(piece, crc)
    return crc


def export(dest: str | os.PathLike, out: str | os.PathLike, *, as_zip: bool = False, progress: bool | None = None,
           storage_options: dict | None = None) -> Path:
    """Rebuild the original dataset folder (or its zip) from a store, every file byte for byte.

    Writes ``out/<dataset>/`` (or ``out/<dataset>.zip`` holding that folder); refuses an
    existing target.  Each file is checked against its recorded CRC-32 as it is written.
    """
    attrs = contract.decode_attrs(read_root(dest, storage_options)["attributes"])
    name = attrs["dataset"]
    zip_layout = attrs.get("source_zip", {"top_folder": name, "directory_entries": True})
    out = Path(out)
    target = out / (f"{name}.zip" if as_zip else name)
    if target.exists():
        raise StoreError(f"{target}: already exists")
    check_creatable(target)
    created = first_missing(out)  # removed again if the export fails
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{out}: cannot be created ({e.strerror or e})", e.errno) from None
    partial = target.with_name(target.name + ".partial")
    zf = zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) if as_zip else None
    top = f"{zip_layout['top_folder']}/" if zip_layout["top_folder"] else ""
    folders: set[str] = set()
    try:
        for rel, make, crc in source_files(dest, progress, storage_options):
            if zf is not None and zip_layout["directory_entries"]:
                _add_folders(zf, folders, f"{top}{rel}")
            if _write(make(), zf, f"{top}{rel}", partial / rel) != crc:
                raise StoreError(f"{dest}: {rel} does not rebuild to the source file (CRC-32 mismatch); run verify")
    except BaseException:
        if zf is not None:
            discard_zip(zf, partial)
        else:
            shutil.rmtree(partial, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)  # the folders this call made, now empty again
        raise
    if zf is not None:
        zf.close()
    os.replace(partial, target)
    return target
