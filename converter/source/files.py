"""Where the source bytes are read: a dataset folder, or the distributed zip in place.

`open_source` gives a `Source`, which reads files by their path relative to the dataset
folder, on disk or in object storage, from a folder or straight out of the zip.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from isal import isal_zlib

from ..errors import SourceError
from ..storage import filesystem, local_path, stamp

# zlib's CRC-32 (a zip's, and the one recorded for each source file) through ISA-L: 10 GB/s here
# against zlib's 1.9 GB/s.  Its inflate is 2x zlib's on the sample zips.
crc32 = isal_zlib.crc32

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


# Bytes `Source.head` reads of a file: a .npy header is 128 bytes unless its shape is long.
HEAD_BYTES = 256
# No array of a Sensorium scan comes near this; a .npy zip entry declaring more is refused (arrays are
# read whole; other files are streamed in pieces, whatever their size).
MAX_MEMBER_BYTES = 2**31
_INFLATE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # read by `ZipSource` itself; other methods through zipfile


class Source:
    """Read-only access to one dataset, by paths relative to its top folder."""

    name: str
    location: str  # as given
    canonical: str  # the same source named the same way from anywhere: absolute and resolved, or the URL
    skipped: tuple[str, ...] | list[str] = ()  # what a scan passes over: our own stores, macOS archive metadata

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def tree(self) -> dict[str, set[str]]:
        """Map each folder (``""`` for the top) to the names of its files and subfolders."""
        raise NotImplementedError

    def head(self, rel: str, n: int = HEAD_BYTES) -> tuple[bytes, int]:
        """The first ``n`` bytes of ``rel`` and its size, without reading the rest: enough to check
        a ``.npy`` header."""
        with self.open(rel) as f:
            try:
                data = f.read(n)
            except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
                raise SourceError(self.where(rel), f"unreadable ({e})") from None
        return data, self.size(rel)

    def open(self, rel: str):
        """A binary file object reading ``rel`` in pieces (for files too large to hold at once)."""
        raise NotImplementedError

    def size(self, rel: str) -> int:
        """Bytes of ``rel``, without reading it."""
        raise NotImplementedError

    def crc32(self, rel: str, data: bytes) -> int:
        """CRC-32 of a file just read; a zip already knows it (and has checked it)."""
        return crc32(data)

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
        self.canonical = str(self.root.resolve())
        self.name = Path(self.canonical).name
        self._stats: list[tuple[str, int, int]] | None = None  # filled by `tree`

    def read(self, rel: str) -> bytes:
        try:
            with open(self.root / rel, "rb") as f:
                return f.read()
        except OSError as e:
            raise SourceError(self.where(rel), e.strerror or str(e)) from None

    def open(self, rel: str):
        try:
            return open(self.root / rel, "rb")
        except OSError as e:
            raise SourceError(self.where(rel), e.strerror or str(e)) from None

    def read_into(self, rel: str, head: bytearray, data: memoryview) -> tuple[int, int]:
        """Read the file into ``head`` then ``data`` with one system call; (bytes read, file size)."""
        try:
            if not hasattr(os, "preadv"):  # Windows, older macOS
                with open(self.root / rel, "rb", buffering=0) as f:
                    return (f.readinto(head) or 0) + (f.readinto(data) or 0), os.fstat(f.fileno()).st_size
            fd = os.open(self.root / rel, os.O_RDONLY)
            try:
                return os.preadv(fd, [head, data], 0), os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as e:
            raise SourceError(self.where(rel), e.strerror or str(e)) from None

    def size(self, rel: str) -> int:
        try:
            return (self.root / rel).stat().st_size
        except OSError as e:
            raise SourceError(self.where(rel), e.strerror or str(e)) from None

    def tree(self) -> dict[str, set[str]]:
        """The folders and their entries; on the way, the ``(path, size, mtime)`` of every file
        (one ``lstat`` each, which also finds symbolic links), for `identity`."""
        out: dict[str, set[str]] = {}
        stats = []
        self.skipped = []
        for dirpath, dirnames, filenames in _walk(self.root, self.skipped):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel
            shown = rel.replace(os.sep, "/")
            for name in dirnames + filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError as e:  # gone since the folder was listed
                    raise SourceError(self.where(f"{shown}/{name}".lstrip("/")), e.strerror or str(e)) from None
                if stat.S_ISLNK(st.st_mode):
                    raise SourceError(self.where(f"{shown}/{name}".lstrip("/")), "is a symbolic link")
                if not stat.S_ISDIR(st.st_mode):
                    stats.append((os.path.join(rel, name), st.st_size, st.st_mtime_ns))
            out[shown] = set(dirnames) | set(filenames)
        self._stats = sorted(stats)
        return out

    @property
    def _file_stats(self) -> list[tuple[str, int, int]]:
        """``(path, size, mtime)`` of every file, from the last walk of the folder (`tree`)."""
        if self._stats is None:
            self.tree()
        return self._stats

    def identity(self) -> str:
        h = hashlib.sha256(str(self.root.resolve()).encode())
        for rel, size, mtime in self._file_stats:
            h.update(f"{rel}\t{size}\t{mtime}\n".encode())
        return h.hexdigest()

    def declared_bytes(self) -> int:
        return sum(size for _, size, _ in self._file_stats)

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
        self.location = self.canonical = url.rstrip("/")
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

    def open(self, rel: str):
        if rel not in self._listing:
            raise SourceError(self.where(rel), "missing")
        return self._fs.open(f"{self._root}/{rel}", "rb")

    def size(self, rel: str) -> int:
        if rel not in self._listing:
            raise SourceError(self.where(rel), "missing")
        return int(self._listing[rel].get("size") or 0)

    def tree(self) -> dict[str, set[str]]:
        return _tree_of(self._listing)

    def identity(self) -> str:
        h = hashlib.sha256(self.location.encode())
        for rel, info in sorted(self._listing.items()):
            h.update(f"{rel}\t{stamp(info)}\n".encode())
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
        local = local_path(path)
        self.path: str | Path = local or str(path)  # absolute: workers in other processes may have another cwd
        self.canonical = str(local.resolve()) if local else str(path)
        try:
            fs, p = filesystem(self.path, storage_options)
            self._file = fs.open(p, "rb")
            self._zf = zipfile.ZipFile(self._file)
        except (OSError, zipfile.BadZipFile) as e:
            getattr(self, "_file", None) and self._file.close()
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
            if info.file_size > MAX_MEMBER_BYTES and name.lower().endswith(".npy"):
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

    def _member(self, rel: str) -> zipfile.ZipInfo:
        info = self._members.get(rel)
        if info is None:
            raise SourceError(self.where(rel), "missing")
        if info.flag_bits & 0x1:
            raise SourceError(self.where(rel), "encrypted zip entry (a zip as published is not encrypted)")
        return info

    def read(self, rel: str) -> bytes:
        info = self._member(rel)
        try:
            if isinstance(self.path, Path) and info.compress_type in _INFLATE and hasattr(os, "pread"):  # not on Windows
                return self._read_member(rel, info)
            return self._zf.read(info)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise SourceError(self.where(rel), f"damaged zip entry ({e})") from None

    def _read_member(self, rel: str, info: zipfile.ZipInfo) -> bytes:
        """A stored or deflated member of a zip on disk, by offset (safe from any thread), inflated
        with ISA-L (2x zlib's speed here) to at most its declared size, its CRC-32 checked."""
        fd = self._file.fileno()  # zipfile's own: `pread` leaves its position alone
        head = os.pread(fd, 30, info.header_offset)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise SourceError(self.where(rel), "damaged zip entry (no local header where the directory points)")
        start = info.header_offset + 30 + int.from_bytes(head[26:28], "little") + int.from_bytes(head[28:30], "little")
        data = os.pread(fd, info.compress_size, start)
        if len(data) < info.compress_size:
            raise SourceError(self.where(rel), "damaged zip entry (the zip ends inside it)")
        if info.compress_type == zipfile.ZIP_DEFLATED:
            inflate = isal_zlib.decompressobj(-15)
            try:
                data = inflate.decompress(data, info.file_size + 1)  # one byte more than declared shows a longer member
            except isal_zlib.error as e:
                raise SourceError(self.where(rel), f"damaged zip entry ({e})") from None
        if len(data) != info.file_size or (info.compress_type == zipfile.ZIP_DEFLATED and not inflate.eof):  # cut short, or longer
            raise SourceError(self.where(rel), f"damaged zip entry (holds other than the {info.file_size} bytes its directory declares)")
        if crc32(data) != info.CRC:
            raise SourceError(self.where(rel), "damaged zip entry (its CRC-32 does not match)")
        return data

    def open(self, rel: str):
        """The member, decompressed as it is read; zipfile checks its CRC-32 at the end."""
        info = self._member(rel)
        try:
            return self._zf.open(info)
        except (zipfile.BadZipFile, zlib.error, OSError) as e:
            raise SourceError(self.where(rel), f"damaged zip entry ({e})") from None

    def size(self, rel: str) -> int:
        if rel not in self._members:
            raise SourceError(self.where(rel), "missing")
        return self._members[rel].file_size

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
        if isinstance(self.path, Path):
            st = self.path.stat()  # nanoseconds: finer than fsspec's local times
            return hashlib.sha256(f"{self.canonical}\t{st.st_size}\t{st.st_mtime_ns}".encode()).hexdigest()
        fs, p = filesystem(self.path, self.storage_options)
        return hashlib.sha256(f"{self.path}\t{stamp(fs.info(p))}".encode()).hexdigest()

    def declared_bytes(self) -> int:
        return sum(i.file_size for i in self._members.values())

    def close(self) -> None:
        self._zf.close()
        self._file.close()  # a ZipFile leaves a file object it was given open

    def __reduce__(self):
        return (ZipSource, (self.path, self.storage_options))


def open_source(path: str | os.PathLike, storage_options: dict | None = None) -> Source:
    """Open a dataset folder or a ``.zip`` for reading: a local path or a URL (``s3://...``)."""
    fs, p = filesystem(path, storage_options)
    if not fs.exists(p):
        raise SourceError(str(path), "does not exist")
    if fs.isdir(p):
        return RemoteFolderSource(path, storage_options) if local_path(path) is None else FolderSource(path)
    if not p.lower().endswith(".zip"):
        with fs.open(p, "rb") as f:
            if not zipfile.is_zipfile(f):
                raise SourceError(str(path), "neither a dataset folder nor a zip file")
    return ZipSource(path, storage_options)


