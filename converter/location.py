"""Where stores and sources live: local paths, or fsspec URLs such as ``s3://bucket/path``.

For a URL, the endpoint and credentials come from ``storage_options`` (passed to fsspec)
or, for S3, from the standard AWS environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path


def is_url(path: str | os.PathLike) -> bool:
    return isinstance(path, str) and "://" in path


def check_creatable(path: str | os.PathLike) -> None:
    """Refuse, in one line, a local ``path`` that cannot be created because a file sits where a folder must."""
    from .errors import StoreError

    if is_url(path):
        return
    for parent in Path(path).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"{path}: cannot be created: {parent} is a file, not a folder")
            return


def filesystem(url: str, storage_options: dict | None = None):
    """The fsspec filesystem of ``url`` and the path within it."""
    import fsspec

    from .errors import StoreError

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as e:
        raise StoreError(f"{url}: reading {url.split('://', 1)[0]}:// needs a package that is not installed ({e})") from None
    except ValueError as e:
        if "protocol" not in str(e).lower():
            raise
        raise StoreError(f"{url}: {e}") from None


def zarr_kwargs(path: str | os.PathLike, storage_options: dict | None) -> dict:
    """Keyword arguments that let zarr and xarray open ``path`` (local or URL)."""
    return {"storage_options": storage_options} if is_url(path) and storage_options else {}


def open_group(path: str | os.PathLike, storage_options: dict | None = None, mode: str = "r"):
    """The Zarr v3 group at ``path`` (a local path or a URL)."""
    import zarr

    return zarr.open_group(str(path), mode=mode, zarr_format=3, **zarr_kwargs(path, storage_options))


def open_array(path: str | os.PathLike, rel: str, storage_options: dict | None = None, mode: str = "r"):
    """The Zarr v3 array ``rel`` of the store at ``path``, opened on its own (no root group needed)."""
    import zarr

    return zarr.open_array(str(child(path, rel)), mode=mode, zarr_format=3, **zarr_kwargs(path, storage_options))


def child(path: str | os.PathLike, rel: str) -> str | Path:
    return f"{str(path).rstrip('/')}/{rel}" if is_url(path) else Path(path) / rel


def read_bytes(path: str | os.PathLike, storage_options: dict | None = None) -> bytes:
    """A whole file; `FileNotFoundError` when there is none."""
    if is_url(path):
        fs, p = filesystem(path, storage_options)
        return fs.cat_file(p)
    return Path(path).read_bytes()


def write_bytes(path: str | os.PathLike, data: bytes | list[bytes], storage_options: dict | None = None) -> None:
    """Write a whole file (an object in object storage) from bytes or a list of pieces; on disk
    through a temporary name, so that a killed writer never leaves a partial file under the
    final name."""
    pieces = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    if is_url(path):
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


def exists(path: str | os.PathLike, storage_options: dict | None = None) -> bool:
    if is_url(path):
        fs, p = filesystem(path, storage_options)
        return fs.exists(p)
    return Path(path).exists()


def tree_bytes(path: str | os.PathLike, storage_options: dict | None = None) -> int:
    """Bytes of every file under ``path``."""
    if is_url(path):
        fs, p = filesystem(path, storage_options)
        return int(fs.du(p)) if fs.exists(p) else 0
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
