"""Where stores and sources live: every location goes through fsspec.

A location is a local path or an fsspec URL such as ``s3://bucket/path``; `filesystem`
gives its fsspec filesystem for both (``url_to_fs`` handles local paths too).  For a URL
the endpoint and credentials come from ``storage_options`` or, for S3, from the standard
AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

Storages differ in one way that matters here: a local disk renames atomically, object
storage cannot rename at all.  `renames` says which; the conversion state
(`converter.write.state`) and `write_bytes` are the places that act on it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .errors import StoreError

Location = str | os.PathLike


def is_url(path: Location) -> bool:
    return isinstance(path, str) and "://" in path


def filesystem(path: Location, storage_options: dict | None = None):
    """The fsspec filesystem of ``path`` (a local path or a URL) and the path within it."""
    import fsspec

    url = os.fspath(path)
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}) if is_url(url) else {})
    except ImportError as e:
        raise StoreError(f"{url}: reading {url.split('://', 1)[0]}:// needs a package that is not installed ({e})") from None
    except ValueError as e:
        if "protocol" not in str(e).lower():
            raise
        raise StoreError(f"{url}: {e}") from None


def location(path: Location) -> Location:
    """A URL stays a string; anything else becomes a `Path`."""
    return path if is_url(path) else Path(path)


def renames(path: Location) -> bool:
    """True where a whole folder can be renamed atomically (a local disk), False in object storage."""
    return not is_url(path)


def local_path(path: Location) -> Path | None:
    """``path`` as an absolute local path, or None for object storage."""
    return None if is_url(path) else Path(path).absolute()


def portable(path: Location) -> Location:
    """``path`` as another process (a dask worker with another working folder) must see it."""
    return local_path(path) or path


def child(path: Location, rel: str) -> Location:
    """``rel`` inside ``path``, of the same kind (a `Path` stays a `Path`, a URL a string)."""
    return Path(path) / rel if isinstance(path, os.PathLike) else f"{str(path).rstrip('/')}/{rel}"


def name(path: Location) -> str:
    """The last component of ``path``."""
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1]


def check_creatable(path: Location) -> None:
    """Refuse, in one line, a local ``path`` that cannot be created because a file sits where a folder must."""
    base = local_path(path)
    for parent in base.parents if base is not None else ():
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"{path}: cannot be created: {parent} is a file, not a folder")
            return


def check_store_dest(dest: Location, src: Location | None = None) -> None:
    """Refuse, in one line and before anything is written, a local ``dest`` that can never hold a
    store: the root of the file system, an existing file, a folder that holds something other
    than a Zarr store (``.``, ``..``, a dataset), a path under a file, or a place inside the
    ``data/`` or ``meta/`` folder of the source being converted."""
    base = local_path(dest)
    if base is None:
        return
    here = Path(os.path.abspath(base))
    if here.parent == here:
        raise StoreError(f"{dest}: cannot hold a store (it is the root of the file system)")
    if os.path.basename(os.path.normpath(os.fspath(dest))) in ("", ".", ".."):  # the folder we are in, or above it
        raise StoreError(f"{dest}: the folder {here} is not a Zarr store; name the store, such as {Path(os.fspath(dest)) / 'mouse.zarr'}")
    if here.is_file():
        raise StoreError(f"{dest}: exists and is not a Zarr store (a file); choose another place for the store")
    if here.is_dir() and not (here / "zarr.json").exists() and any(here.iterdir()):
        raise StoreError(f"{dest}: exists and is not a Zarr store (a folder with other files); choose another place for the store")
    source = local_path(src) if src is not None else None
    if source is not None and Path(source).is_dir():
        for part in ("data", "meta"):
            inside = Path(os.path.abspath(source)) / part
            if here == inside or inside in here.parents:
                raise StoreError(f"{dest}: inside the dataset's {part}/ folder; choose a place outside {source}")
    check_creatable(dest)


def first_missing(path: Location) -> Path | None:
    """The outermost folder of a local ``path`` that does not exist yet (what creating it makes,
    and what to remove when the work fails), or None when it exists."""
    base = local_path(path)
    if base is None or base.exists():
        return None
    return next(p for p in [base, *base.parents] if not p.exists() and p.parent.exists())


def discard_zip(zf: zipfile.ZipFile, path: Path) -> None:
    """Close ``zf``, a zip being written to the local ``path``, and delete it, at any point of its
    writing: also after a Ctrl-C that landed inside `zipfile.ZipFile.open`."""
    try:
        zf.close()
    except ValueError:
        # The interrupt came after ZipFile.open marked a member as being written and before it returned
        # the member's handle, so no handle can ever be closed and ZipFile.close refuses.  The file is
        # thrown away: only the flag stands between it and being closed.
        zf._writing = False
        zf.close()
    path.unlink(missing_ok=True)


def make_folder(path: Location) -> None:
    """Create ``path`` and its parents where folders exist (object storage has none: nothing to do)."""
    if renames(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def zarr_kwargs(path: Location, storage_options: dict | None) -> dict:
    """Keyword arguments that let zarr and xarray open ``path`` (local or URL)."""
    return {"storage_options": storage_options} if is_url(path) and storage_options else {}


def zarr_store(path: Location, storage_options: dict | None = None):
    """A zarr-python store object for ``path``."""
    import zarr

    if is_url(path):
        return zarr.storage.FsspecStore.from_url(str(path), storage_options=storage_options)
    return zarr.storage.LocalStore(str(path))


def open_group(path: Location, storage_options: dict | None = None, mode: str = "r"):
    """The Zarr v3 group at ``path``."""
    import zarr

    return zarr.open_group(str(path), mode=mode, zarr_format=3, **zarr_kwargs(path, storage_options))


def open_array(path: Location, rel: str, storage_options: dict | None = None, mode: str = "r"):
    """The Zarr v3 array ``rel`` of the store at ``path``, opened on its own (no root group needed)."""
    import zarr

    return zarr.open_array(str(child(path, rel)), mode=mode, zarr_format=3, **zarr_kwargs(path, storage_options))


def read_bytes(path: Location, storage_options: dict | None = None) -> bytes:
    """A whole file; `FileNotFoundError` when there is none."""
    fs, p = filesystem(path, storage_options)
    return fs.cat_file(p)


def write_bytes(path: Location, data: bytes | list[bytes], storage_options: dict | None = None) -> None:
    """Write a whole file from bytes or a list of pieces, never leaving a partial file under its name.

    Object storage writes each object whole; a disk writes a temporary name and renames it.
    """
    pieces = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    if not renames(path):
        fs, p = filesystem(path, storage_options)
        fs.pipe_file(p, b"".join(pieces))
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for piece in pieces:
                f.write(piece)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_objects(path: Location, rels: list[str], storage_options: dict | None = None) -> dict[str, bytes]:
    """Many whole files under ``path`` (relative names), read at once: concurrently in object storage."""
    if not rels:
        return {}
    fs, p = filesystem(path, storage_options)
    p = p.rstrip("/")
    found = fs.cat([f"{p}/{rel}" for rel in rels])
    return {rel: found[f"{p}/{rel}"] for rel in rels}


def write_objects(path: Location, objects: dict[str, bytes], storage_options: dict | None = None) -> None:
    """Write many small files under ``path`` (relative name -> bytes), each whole.

    In object storage they go out as one concurrent round of PUTs: written through zarr-python
    or xarray, each array's metadata costs about eight requests, one after another.
    """
    if not renames(path):
        fs, p = filesystem(path, storage_options)
        fs.pipe({f"{p.rstrip('/')}/{rel}": data for rel, data in objects.items()})
        return
    for rel, data in objects.items():
        write_bytes(child(Path(path), rel), data)


def exists(path: Location, storage_options: dict | None = None) -> bool:
    fs, p = filesystem(path, storage_options)
    return fs.exists(p)


def tree_bytes(path: Location, storage_options: dict | None = None) -> int:
    """Bytes of every file under ``path`` (0 when there is nothing)."""
    fs, p = filesystem(path, storage_options)
    return int(fs.du(p)) if fs.exists(p) else 0


def listing(folder: Location, storage_options: dict | None = None) -> list[tuple[Location, bool]]:
    """``(entry, is_folder)`` for each entry directly inside ``folder``, by name; entries are
    locations of the same kind as ``folder``."""
    fs, p = filesystem(folder, storage_options)
    entries = sorted(fs.ls(p.rstrip("/"), detail=True), key=lambda e: e["name"])
    return [(child(folder, name(e["name"])), e["type"] == "directory" or bool(e.get("islink")) and fs.isdir(e["name"]))
            for e in entries if e["name"].rstrip("/") != p.rstrip("/")]


def stamp(info: dict) -> str:
    """What changes when a file changes, from fsspec's ``info``: size and ETag, else modification time."""
    return f"{info.get('size')}\t{info.get('ETag') or info.get('LastModified') or info.get('mtime')}"
