"""Where the source bytes are read: a dataset folder, or the distributed zip in place.

`open_source` gives a `Source`; `scan` lists what it holds and checks file names and
trial indices; `read_array` and `read_trials` are the only places `.npy` bytes are decoded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import SourceError
from .location import filesystem, is_url
from .npy import NpyHeader, array_from_header, parse_header

KNOWN_KEYS = ("images", "responses", "behavior", "pupil_center")
_TRIAL_FILE = re.compile(r"(0|[1-9][0-9]*)\.npy")
_IGNORED_TOP = ("__MACOSX",)  # macOS archive metadata: not part of any dataset


def is_own_output(name: str) -> bool:
    """A Zarr store or a conversion's working folder: never part of the source around it."""
    return name.endswith((".zarr", ".zarr.incomplete", ".incomplete"))


def _walk(root: Path, skipped: list[str] | None = None):
    """`os.walk` of a dataset folder, skipping (and listing in ``skipped``) stores written inside it."""
    for dirpath, dirnames, filenames in os.walk(root):
        if skipped is not None:
            skipped += [os.path.relpath(os.path.join(dirpath, d), root).replace(os.sep, "/") + "/" for d in dirnames if is_own_output(d)]
        dirnames[:] = [d for d in dirnames if not is_own_output(d)]
        yield dirpath, dirnames, filenames
# No file of a Sensorium scan comes near this; a zip entry declaring more is refused.
MAX_MEMBER_BYTES = 2**31


class Source:
    """Read-only access to one dataset, by paths relative to its top folder."""

    name: str
    location: str
    skipped: tuple[str, ...] | list[str] = ()  # what a scan passes over: our own stores, macOS archive metadata

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def tree(self) -> dict[str, set[str]]:
        """Map each folder (``""`` for the top) to the names of its files and subfolders."""
        raise NotImplementedError

    def crc32(self, rel: str, data: bytes) -> int:
        """CRC-32 of a file just read; a zip already knows it (and has checked it)."""
        return zlib.crc32(data)

    def where(self, rel: str) -> str:
        """How to name ``rel`` in an error message."""
        return f"{self.location}/{rel}"

    def identity(self) -> str:
        """Changes whenever any file of the source changes (names, sizes, times)."""
        raise NotImplementedError

    def declared_bytes(self) -> int:
        """Bytes the source's files hold (a zip: as its directory declares them)."""
        raise NotImplementedError

    def directory_crc32s(self) -> dict[str, int] | None:
        """CRC-32 of every file, where known without reading the files (a zip's directory)."""
        return None

    def close(self) -> None:
        pass


class FolderSource(Source):
    """A dataset unpacked on disk (the folder that holds ``data/`` and ``meta/``)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.location = str(root)
        self.root = Path(root).absolute()  # workers in other processes may have another cwd
        self.name = self.root.resolve().name

    def read(self, rel: str) -> bytes:
        try:
            with open(self.root / rel, "rb") as f:
                return f.read()
        except OSError as e:
            raise SourceError(self.where(rel), e.strerror or str(e)) from None

    def tree(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        self.skipped = []
        for dirpath, dirnames, filenames in _walk(self.root, self.skipped):
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel = "" if rel == "." else rel
            for name in dirnames + filenames:
                if os.path.islink(os.path.join(dirpath, name)):
                    raise SourceError(self.where(f"{rel}/{name}".lstrip("/")), "is a symbolic link")
            out[rel] = set(dirnames) | set(filenames)
        return out

    @functools.cached_property
    def _stats(self) -> list[tuple[str, int, int]]:
        """``(path, size, mtime)`` of every file, taken once per opened source."""
        out = []
        for dirpath, _, filenames in _walk(self.root):
            for name in filenames:
                st = os.stat(os.path.join(dirpath, name))
                out.append((os.path.relpath(os.path.join(dirpath, name), self.root), st.st_size, st.st_mtime_ns))
        return sorted(out)

    def identity(self) -> str:
        h = hashlib.sha256(str(self.root.resolve()).encode())
        for rel, size, mtime in self._stats:
            h.update(f"{rel}\t{size}\t{mtime}\n".encode())
        return h.hexdigest()

    def declared_bytes(self) -> int:
        return sum(size for _, size, _ in self._stats)

    def __reduce__(self):
        return (FolderSource, (self.root,))


def _tree_of(files) -> dict[str, set[str]]:
    """The folder tree (as `Source.tree` gives it) of a list of relative file paths."""
    out: dict[str, set[str]] = {"": set()}
    for rel in files:
        parts = rel.split("/")
        for depth in range(len(parts)):
            out.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    return out


class RemoteFolderSource(Source):
    """A dataset folder in object storage (any fsspec URL), read file by file."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.location = url.rstrip("/")
        self.storage_options = storage_options
        self._fs, root = filesystem(url, storage_options)
        self._root = root.rstrip("/")
        self.name = self._root.rsplit("/", 1)[-1]

    @functools.cached_property
    def _listing(self) -> dict[str, dict]:
        found = self._fs.find(self._root, detail=True)
        out = {}
        for p, info in found.items():
            rel = p[len(self._root) + 1 :]
            if info.get("type") != "directory" and not any(is_own_output(part) for part in rel.split("/")[:-1]):
                out[rel] = info
        return out

    def read(self, rel: str) -> bytes:
        try:
            return self._fs.cat_file(f"{self._root}/{rel}")
        except FileNotFoundError:
            raise SourceError(self.where(rel), "missing") from None

    def tree(self) -> dict[str, set[str]]:
        return _tree_of(self._listing)

    def identity(self) -> str:
        h = hashlib.sha256(self.location.encode())
        for rel, info in sorted(self._listing.items()):
            h.update(f"{rel}\t{info.get('size')}\t{info.get('ETag') or info.get('LastModified') or info.get('mtime')}\n".encode())
        return h.hexdigest()

    def declared_bytes(self) -> int:
        return sum(int(info.get("size") or 0) for info in self._listing.values())

    def __reduce__(self):
        return (RemoteFolderSource, (self.location, self.storage_options))


class ZipSource(Source):
    """The distributed zip (a local path or a URL), read member by member without extracting it."""

    def __init__(self, path: str | os.PathLike, storage_options: dict | None = None) -> None:
        self.location = str(path)
        self.storage_options = storage_options
        try:
            if is_url(path):
                import fsspec

                self.path: str | Path = str(path)
                self._zf = zipfile.ZipFile(fsspec.open(self.path, "rb", **(storage_options or {})).open())
            else:
                self.path = Path(path).absolute()
                self._zf = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as e:
            raise SourceError(self.location, f"cannot open as a zip ({e})") from None
        self._members, self.prefix = self._index(self._zf.infolist())
        self.name = self.prefix.rstrip("/") or PurePosixPath(str(self.path)).stem

    def _index(self, infos: list[zipfile.ZipInfo]) -> tuple[dict[str, zipfile.ZipInfo], str]:
        members: dict[str, zipfile.ZipInfo] = {}
        self.skipped: list[str] = []
        self.directory_entries = any(info.is_dir() for info in infos)
        for info in infos:
            name = info.filename
            parts = name.rstrip("/").split("/")
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\\" in name:
                raise SourceError(f"{self.location}:{name}", "unsafe path in zip (absolute or '..')")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SourceError(f"{self.location}:{name}", "symbolic link in zip")
            if parts[0] in _IGNORED_TOP:
                self.skipped.append(name)
                continue
            if info.is_dir():
                continue
            if name in members:
                raise SourceError(f"{self.location}:{name}", "duplicate entry in zip")
            if info.file_size > MAX_MEMBER_BYTES:
                raise SourceError(f"{self.location}:{name}", f"declares {info.file_size} bytes uncompressed; refusing (a zip bomb or a damaged directory)")
            members[name] = info
        tops = {n.split("/", 1)[0] for n in members}
        if len(tops) == 1 and all("/" in n for n in members):
            prefix = tops.pop() + "/"
        else:
            prefix = ""
        return {n[len(prefix) :]: i for n, i in members.items()}, prefix

    def where(self, rel: str) -> str:
        return f"{self.location}:{self.prefix}{rel}"

    def read(self, rel: str) -> bytes:
        try:
            info = self._members[rel]
        except KeyError:
            raise SourceError(self.where(rel), "missing") from None
        try:
            return self._zf.read(info)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise SourceError(self.where(rel), f"damaged zip entry ({e})") from None

    def crc32(self, rel: str, data: bytes) -> int:
        return self._members[rel].CRC

    def directory_crc32s(self) -> dict[str, int]:
        return {rel: info.CRC for rel, info in self._members.items()}

    def layout(self) -> dict:
        """How the zip wraps the dataset: its top folder (``""``: none) and whether it lists folders."""
        return {"top_folder": self.prefix.rstrip("/"), "directory_entries": self.directory_entries}

    def tree(self) -> dict[str, set[str]]:
        return _tree_of(self._members)

    def identity(self) -> str:
        if is_url(self.path):
            fs, p = filesystem(self.path, self.storage_options)
            info = fs.info(p)
            stamp = f"{info.get('size')}\t{info.get('ETag') or info.get('LastModified') or info.get('mtime')}"
            return hashlib.sha256(f"{self.path}\t{stamp}".encode()).hexdigest()
        st = self.path.stat()
        return hashlib.sha256(f"{self.path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode()).hexdigest()

    def declared_bytes(self) -> int:
        return sum(i.file_size for i in self._members.values())

    def close(self) -> None:
        self._zf.close()

    def __reduce__(self):
        return (ZipSource, (self.path, self.storage_options))


def open_source(path: str | os.PathLike, storage_options: dict | None = None) -> Source:
    """Open a dataset folder or a ``.zip`` for reading: a local path or a URL (``s3://...``)."""
    if is_url(path):
        fs, p = filesystem(path, storage_options)
        if not fs.exists(p):
            raise SourceError(str(path), "no such file or folder")
        return RemoteFolderSource(path, storage_options) if fs.isdir(p) else ZipSource(path, storage_options)
    p = Path(path)
    if not p.exists():
        raise SourceError(str(p), "no such file or folder")
    if p.is_dir():
        return FolderSource(p)
    if p.suffix.lower() == ".zip" or zipfile.is_zipfile(p):
        return ZipSource(p)
    raise SourceError(str(p), "neither a dataset folder nor a zip file")


@dataclass(frozen=True)
class Inventory:
    """What a source holds, checked for consistent names and trial indices."""

    name: str
    n_trials: int
    data_keys: tuple[str, ...]
    trial_meta: tuple[str, ...]
    neuron_meta: tuple[str, ...]
    statistics: tuple[str, ...]  # "<key>/<source>/<stat>"
    other_files: tuple[str, ...] = field(default=())  # every other file, kept byte for byte
    ignored: tuple[str, ...] = field(default=())  # passed over: stores inside the source, __MACOSX/

    def trial_path(self, key: str, i: int) -> str:
        return f"data/{key}/{i}.npy"


def _files_under(tree: dict[str, set[str]], rel: str) -> list[str]:
    """``rel`` if it is a file, else every file below it."""
    if rel not in tree:
        return [rel]
    return [f for entry in sorted(tree[rel]) for f in _files_under(tree, f"{rel}/{entry}".lstrip("/"))]


def _npy_names(tree: dict[str, set[str]], folder: str, other: list[str]) -> tuple[str, ...]:
    """The arrays (``<name>.npy`` files) of ``folder``; anything else goes to ``other``."""
    names = []
    for entry in sorted(tree.get(folder, ())):
        rel = f"{folder}/{entry}"
        if entry.endswith(".npy") and rel not in tree:
            names.append(entry[:-4])
        else:
            other += _files_under(tree, rel)
    return tuple(names)


def _trial_indices(source: Source, tree: dict[str, set[str]], folder: str, other: list[str]) -> list[int]:
    """Sorted trial numbers of ``data/<key>/``; files that are not ``.npy`` (``.DS_Store``) go to ``other``."""
    idx = []
    for entry in tree[folder]:
        rel = f"{folder}/{entry}"
        m = _TRIAL_FILE.fullmatch(entry)
        if m is not None and rel not in tree:
            idx.append(int(m.group(1)))
        elif rel not in tree and not entry.lower().endswith(".npy"):
            other.append(rel)
        else:
            raise SourceError(source.where(rel), "not a trial file (expected <non-negative integer>.npy)")
    if not idx:
        raise SourceError(source.where(folder), "no trial files (expected <non-negative integer>.npy)")
    return sorted(idx)


def scan(source: Source) -> Inventory:
    """List and check the dataset's files; raise `SourceError` on the first problem."""
    tree = source.tree()
    if "zarr.json" in tree[""] and "data" not in tree[""]:
        raise SourceError(source.location, "a Zarr store, not a dataset folder or zip (arguments swapped?)")
    for folder in ("data", "meta"):
        if folder not in tree:
            raise SourceError(source.where(folder), _missing_top(tree))
    other: list[str] = []
    keys = []
    for entry in tree["data"]:
        if f"data/{entry}" in tree:
            keys.append(entry)
        else:
            other.append(f"data/{entry}")
    keys.sort(key=lambda k: (KNOWN_KEYS.index(k) if k in KNOWN_KEYS else len(KNOWN_KEYS), k))
    if not keys:
        raise SourceError(source.where("data"), "no data folders")
    n_trials = None
    first = None
    for key in keys:
        folder = f"data/{key}"
        if not tree[folder]:
            raise SourceError(source.where(folder), "empty folder")
        idx = _trial_indices(source, tree, folder, other)
        if idx[-1] != len(idx) - 1:
            missing = next(i for i, v in enumerate(idx) if i != v)
            raise SourceError(source.where(f"{folder}/{missing}.npy"), f"missing: trial indices have gaps (found {len(idx)} files up to {idx[-1]}.npy)")
        if n_trials is None:
            n_trials, first = len(idx), key
        elif len(idx) != n_trials:
            raise SourceError(source.where(folder), f"has {len(idx)} trial files but data/{first} has {n_trials}")
    for f in sorted(tree[""]):
        if f not in ("data", "meta"):
            other += _files_under(tree, f)
    trial_meta = _npy_names(tree, "meta/trials", other)
    neuron_meta = _npy_names(tree, "meta/neurons", other)
    stats = []
    for key in sorted(tree.get("meta/statistics", ())):
        if f"meta/statistics/{key}" not in tree:
            other.append(f"meta/statistics/{key}")
            continue
        for src in sorted(tree[f"meta/statistics/{key}"]):
            folder = f"meta/statistics/{key}/{src}"
            if folder in tree:
                stats += [f"{key}/{src}/{s}" for s in _npy_names(tree, folder, other)]
            else:
                other.append(folder)
    for f in sorted(tree["meta"]):
        if f not in ("trials", "neurons", "statistics"):
            other += _files_under(tree, f"meta/{f}")
    for required in ("tiers", "frame_image_id"):
        if required not in trial_meta:
            raise SourceError(source.where(f"meta/trials/{required}.npy"), "missing")
    return Inventory(source.name, n_trials, tuple(keys), trial_meta, neuron_meta, tuple(stats),
                     tuple(sorted(other)), tuple(source.skipped))


def _missing_top(tree: dict[str, set[str]]) -> str:
    """Why ``data/`` or ``meta/`` is not at the top: say what was found instead."""
    nested = sorted(t for t in tree[""] if t in tree and {"data", "meta"} <= tree[t])
    if len(nested) > 1:
        return f"missing: found {len(nested)} datasets ({', '.join(nested[:3])}); give one at a time"
    if nested:
        return f"missing: the dataset is in the subfolder {nested[0]}/; give that folder"
    return "missing (not a Sensorium dataset folder)"


def read_array(source: Source, rel: str) -> tuple[np.ndarray, int, bytes]:
    """One whole ``.npy`` file: the array (source byte order kept), CRC-32, header bytes."""
    buf = source.read(rel)
    path = source.where(rel)
    h = parse_header(buf, path)
    return array_from_header(buf, h, path), source.crc32(rel, buf), bytes(buf[: h.offset])


@dataclass
class TrialBlock:
    """Per-trial files of one data folder for a run of trials, stacked in native order."""

    values: np.ndarray
    crc32: np.ndarray
    headers: set[bytes]
    source_dtype: str  # as in the files, byte order kept


def read_trials(
    source: Source,
    key: str,
    trials: Iterable[int],
    expect: NpyHeader | None,
    progress: Callable[[int], None] | None = None,
) -> TrialBlock:
    """Read ``data/<key>/<i>.npy`` for each trial, checking every one against ``expect``.

    ``expect`` carries the shape and dtype (byte order included) that every trial of
    this folder must have; ``None`` takes the first trial read as the reference.
    """
    trials = list(trials)
    crcs = np.empty(len(trials), dtype=np.uint32)
    headers: set[bytes] = set()
    out = None
    for j, i in enumerate(trials):
        rel = f"data/{key}/{i}.npy"
        buf = source.read(rel)
        path = source.where(rel)
        h = parse_header(buf, path)
        if expect is None:
            expect = h
        if h.shape != expect.shape or h.dtype != expect.dtype:
            raise SourceError(path, f"shape {h.shape} dtype {h.dtype.str} differs from other trials' shape {expect.shape} dtype {expect.dtype.str}")
        if out is None:
            out = np.empty((len(trials), *expect.shape), dtype=expect.dtype.newbyteorder("="))
        out[j] = array_from_header(buf, h, path)
        crcs[j] = source.crc32(rel, buf)
        headers.add(bytes(buf[: h.offset]))
        if progress is not None and j % 64 == 63:
            progress(64)
    if progress is not None and len(trials) % 64:
        progress(len(trials) % 64)
    assert out is not None
    return TrialBlock(out, crcs, headers, expect.dtype.str)
