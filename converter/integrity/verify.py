"""``verify``: re-read every source array and compare dtype, shape and bits with the store.

Source files are matched to store arrays through the arrays' ``source`` attributes,
not through the converter's naming rules, so a naming bug cannot hide a mismatch.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .. import contract
from ..errors import StoreError
from ..progress import Progress
from ..source import Source, open_source, read_array, read_trials, scan, trial_header
from ..source.arrays import Scratch
from ..source.npy import NpyHeader
from ..storage import Location, child, exists, local_path, open_group, portable
from ..write import executors, layout
from .report import VerifyReport, block_trials, damaged, other_files, row_bits  # noqa: F401  (public here)
from ..schema import manifest, read_root


def _text_equal(stored: np.ndarray, src: np.ndarray) -> bool:
    if src.dtype.kind == "S":
        src = contract.text_from_bytes(src)
    return stored.shape == src.shape and bool(np.all(np.asarray(stored, dtype=object) == np.asarray(src, dtype=object)))


def compare(name: str, stored: np.ndarray, src: np.ndarray, recorded_dtype: str, src_dtype: str | None = None,
            row_names: list[str] | None = None) -> str | None:
    """A one-line description of how ``stored`` differs from ``src``, or None.

    ``recorded_dtype`` is the store's ``source_dtype`` attribute; ``src_dtype`` the
    dtype found in the files when ``src`` was already converted to native order.
    ``row_names`` names each row (its source file) in the message.
    """
    src_dtype = src_dtype or src.dtype.str
    if recorded_dtype != src_dtype:
        return f"{name}: dtype {src_dtype} in the source, {recorded_dtype} recorded in the store"
    if stored.shape != src.shape:
        return f"{name}: shape {src.shape} in the source, {stored.shape} in the store"
    if src.dtype.kind in "US":
        return None if _text_equal(stored, src) else f"{name}: text values differ"
    if stored.dtype != src.dtype.newbyteorder("="):
        return f"{name}: stored as {stored.dtype}, source is {src.dtype}"
    stored_bits, src_bits = row_bits(stored), row_bits(src)
    if all(np.array_equal(a, b) for a, b in zip(stored_bits, src_bits)):  # row by row: no mask the block's size
        return None
    diff = (stored_bits != src_bits).any(axis=1)
    if diff.any():
        row = int(np.argmax(diff))
        a, b = src.reshape(len(diff), -1)[row], stored.reshape(len(diff), -1)[row]
        col = int(np.argmax(row_bits(a[None]) != row_bits(b[None])) // src.dtype.itemsize)
        if row_names is not None:
            return f"{row_names[row]}: values differ in {name} (first at element {col}: source {a[col]!r}, store {b[col]!r})"
        return f"{name}: values differ (first at row {row}, element {col}: source {a[col]!r}, store {b[col]!r})"
    return None


def _compare_other_files(source, files: tuple[str, ...], group, attrs: dict) -> list[str]:
    """How the source's non-array files differ from those kept in the store's ``files`` group."""
    try:
        stored = {path: make for path, make, _ in other_files(group, attrs.get("schema_version"))}
    except StoreError as e:
        return [str(e)]
    problems = [f"{rel}: in the store but not in the source" for rel in sorted(set(stored) - set(files))]
    for rel in files:
        if rel not in stored:
            problems.append(f"{rel}: not in the store")
        elif not _same_bytes(stored[rel](), source, rel):
            problems.append(f"{rel}: bytes differ between the source and the store")
    return problems


def _same_bytes(pieces, source, rel: str) -> bool:
    """The stored pieces of a file against the source file, read alongside them in pieces."""
    with source.open(rel) as f:
        for piece in pieces:
            if f.read(len(piece)) != piece:
                return False
        return f.read(1) == b""


def _same_source(source, inv, attrs: dict) -> bool | None:
    """Whether the store's recorded fingerprint is this source's, from the CRC-32s a zip lists in
    its directory (no file read); None when the source lists none (a folder)."""
    crcs = source.directory_crc32s()
    if crcs is None or contract.SOURCE_FINGERPRINT not in attrs:
        return None
    files = [f"meta/trials/{f}.npy" for f in inv.trial_meta] + [f"meta/neurons/{f}.npy" for f in inv.neuron_meta]
    files += [f"meta/statistics/{s}.npy" for s in inv.statistics]
    files += [inv.trial_path(k, i) for k in inv.data_keys for i in range(inv.n_trials)]
    if not all(f in crcs for f in files):
        return None
    return contract.fingerprint({f: crcs[f] for f in files}) == attrs[contract.SOURCE_FINGERPRINT]


def _check_n_frames(stored: np.ndarray, clips: np.ndarray, files: np.ndarray) -> str:
    """The stored ``n_frames`` of a block against its source clips (frames before the first NaN one)."""
    for n, clip, i in zip(stored.tolist(), clips, files.tolist()):
        if n != contract.first_nan_frame(clip):
            return f"{contract.N_FRAMES}: trial {i} has {contract.first_nan_frame(clip)} frames before its first NaN frame, the store says {n}"
    return ""


@dataclass(frozen=True)
class BlockCheck:
    """Compares one block of trials of every data folder with the store, as zarr-python reads it:
    the task `verify` maps over blocks, on threads or worker processes (`converter.write.executors`)."""

    source: Source
    dest: Location
    storage_options: dict | None
    keys: tuple[str, ...]
    trial: np.ndarray  # the file number stored at each position
    recorded: dict[str, str]  # each data variable's ``source_dtype`` attribute
    expect: dict[str, NpyHeader]  # the header every file of a folder shares (trial 0's)
    scratch: Scratch = field(default_factory=Scratch, compare=False, repr=False)  # a block's arrays (`converter.source.arrays.reusing`)

    def __call__(self, block: range, step=None) -> tuple[range, list[tuple[str, dict[str, int]]]]:
        group = open_group(self.dest, self.storage_options)
        found = []
        files = self.trial[block.start : block.stop]
        for key in self.keys:
            arr = group[key]
            copies = [(key, arr)] + [(c, group[c]) for c in (contract.row_copy_path(key),) if c in group]
            tb = read_trials(self.source, key, files.tolist(), self.expect[key], step, partial(self.scratch, "source"))
            paths = [contract.trial_file(key, int(i)) for i in files]
            for name, a in copies:
                if a.shape[1:] != tb.values.shape[1:] or a.shape[0] != len(self.trial):
                    found.append((f"{name}: source trials of shape {tb.values.shape[1:]}, store array {a.shape}", {}))
                    continue
                problem = compare(name, self._read(a, block), tb.values, self.recorded[key], tb.source_dtype, paths)
                found.append((problem or "", dict(zip(paths, tb.crc32.tolist()))))
            if key == contract.VIDEOS and contract.N_FRAMES in group:
                found.append((_check_n_frames(group[contract.N_FRAMES][block.start : block.stop], tb.values, files), {}))
        return block, found

    def _read(self, a, block: range) -> np.ndarray:
        """Rows ``block`` of zarr array ``a``, read by zarr-python into this thread's scratch array."""
        from zarr.core.buffer import default_buffer_prototype

        out = self.scratch("store", (len(block), *a.shape[1:]), a.dtype)
        a.get_basic_selection(slice(block.start, block.stop), out=default_buffer_prototype().nd_buffer.from_numpy_array(out))
        return out

    def __reduce__(self):  # workers may have another working folder
        return (BlockCheck, (self.source, portable(self.dest), self.storage_options, self.keys, self.trial, self.recorded, self.expect,
                             self.scratch))


def verify(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool | None = None,
    limit: int = 20,
    storage_options: dict | None = None,
) -> VerifyReport:
    """Compare every array of the source dataset ``src`` with the store ``dest``.

    Either may be a URL (``storage_options`` then go to fsspec).  Returns a `VerifyReport`;
    raises `SourceError` if the source itself is malformed and `StoreError` if ``dest``
    is not a complete store.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if not exists(child(dest, "zarr.json"), storage_options) and exists(child(src, "zarr.json"), storage_options):
        raise StoreError(f"{dest} is not a store but {src} is: arguments swapped? (verify SRC DEST)")
    root = read_root(dest, storage_options)
    m = manifest(root)
    by_source = {a["attributes"][contract.SOURCE]: path for path, a in m["arrays"].items() if contract.SOURCE in a["attributes"]}
    report = VerifyReport(limit=limit)
    source = open_source(src, storage_options)
    try:
        inv = scan(source)
        blocks = layout.blocks(inv.n_trials, block_trials(m["arrays"], inv.data_keys))
        local = local_path(src) is not None and local_path(dest) is not None
        # the workers start now, and import while this process looks for damage and compares the meta arrays
        with executors.started(executors.resolve(workers), len(blocks), local) as run:
            _verify(report, src, source, inv, dest, root, m, by_source, blocks, run, progress, storage_options)
    finally:
        source.close()
    return report


def _verify(report: VerifyReport, src, source: Source, inv, dest: Location, root: dict, m: dict, by_source: dict[str, str],
            blocks: list[range], run, progress: bool | None, storage_options: dict | None) -> None:
    """`verify`, once its workers are starting: the store's damage first, then every array."""
    if damaged(report, dest, root, storage_options):
        return
    group = open_group(dest, storage_options)
    trial = group[contract.TRIAL][...]  # the file number stored at each position
    made_from = m["attributes"].get("dataset", "?")
    if sorted(trial.tolist()) != list(range(inv.n_trials)) or _same_source(source, inv, m["attributes"]) is False:
        report.add(f"the store was made from another source ({made_from}, {len(trial)} trials), not from {inv.name} "
                   f"({inv.n_trials} trials): its files' checksums or trial numbers differ")
        return
    crcs: dict[str, int] = {}
    meta_files = [f"meta/trials/{f}.npy" for f in inv.trial_meta]
    meta_files += [f"meta/neurons/{f}.npy" for f in inv.neuron_meta]
    meta_files += [f"meta/statistics/{s}.npy" for s in inv.statistics]
    for rel in meta_files:
        values, crcs[rel], _ = read_array(source, rel)
        report.files_checked += 1
        path = by_source.pop(rel, None)
        if path is None:
            report.add(f"{rel}: not in the store")
            continue
        stored = group[path][...]
        if (m["arrays"][path]["dims"] or [None])[0] == contract.TRIAL:
            stored = layout.to_file_order(stored, trial)
        problem = compare(rel, stored, values, m["arrays"][path]["attributes"].get(contract.SOURCE_DTYPE, ""))
        if problem:
            report.add(problem)

    for problem in _compare_other_files(source, inv.other_files, group, m["attributes"]):
        report.add(problem)
    report.files_checked += len(inv.other_files)

    keys = [k for k in inv.data_keys if by_source.pop(contract.data_source(k), None) == k]
    for k in inv.data_keys:
        if k not in keys:
            report.add(f"data/{k}: not in the store")
    for extra in by_source:
        report.add(f"{extra}: in the store but not in the source")

    check = BlockCheck(source, dest, storage_options, tuple(keys), trial,
                       {k: m["arrays"][k]["attributes"].get(contract.SOURCE_DTYPE, "") for k in keys},
                       {k: trial_header(source, k) for k in keys})
    found: dict[int, list] = {}
    with Progress(inv.n_trials * len(keys), "verify", progress) as bar, contextlib.closing(run(check, blocks, bar)) as results:
        for block, problems in results:
            found[block.start] = problems
    for b in blocks:  # mismatches in the order of the trials, whichever block finished first
        for problem, block_crcs in found[b.start]:
            if problem:
                report.add(problem)
            crcs.update(block_crcs)
    report.files_checked += len(keys) * inv.n_trials
    if len(keys) == len(inv.data_keys) and contract.fingerprint(crcs) != m["attributes"].get("source_fingerprint"):
        if report.ok:
            report.add("source fingerprint differs: same values, but the files are not the ones the store was made from")
        else:  # said first: every mismatch below follows from it
            report.mismatches.insert(0, f"source fingerprint differs: {src} is not the dataset this store was made from "
                                        f"({m['attributes'].get('dataset')})")
