"""Shared fixtures: synthetic datasets and stores, made once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, settings

# ``--hypothesis-profile=quick`` while working on a failure: no shrinking, which can take minutes here.
settings.register_profile("quick", phases=[Phase.explicit, Phase.reuse, Phase.generate])

import converter

SMALL = {"trials": 60, "neurons": 40}
# A small Sensorium 2023 scan.  33 frames: not a multiple of the frame chunk, so the last inner
# chunk of each clip is partial.
CLIPS = {"video": True, "trials": 40, "neurons": 30, "frames": 33}
CLIP_KEYS = ("videos", "responses", "behavior", "pupil_center")


def sigint_as_at_a_terminal() -> None:
    """``preexec_fn`` of a child that a test interrupts with SIGINT, as Ctrl-C at a terminal would.

    A shell that starts the test run in the background (``.ci/run &``) sets SIGINT to "ignore"
    for it, and children inherit that; a command started at a terminal has the default.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str | os.PathLike) -> subprocess.CompletedProcess:
    """The ``sensorium-zarr`` command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "converter.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def disk_full(monkeypatch):
    """``disk_full(where, after=0)``: every write whose path contains ``where`` fails with ENOSPC
    once ``after`` such writes have succeeded: zarr's own writes (local and fsspec stores)
    and ours (`converter.storage.write_bytes` and `write_objects`).  ``monkeypatch.undo()`` frees the disk."""
    import errno

    from zarr.storage import FsspecStore, LocalStore

    import converter.write.block as block_module
    import converter.write.store as store_module

    def fill(where: str, after: int = 0) -> None:
        calls = {"n": 0}

        def check(path: str) -> None:
            if where in path:
                calls["n"] += 1
                if calls["n"] > after:
                    raise OSError(errno.ENOSPC, "No space left on device")

        for cls in (LocalStore, FsspecStore):
            original = cls.set

            async def full_set(self, key, value, *args, original=original, **kwargs):
                check(f"{getattr(self, 'root', None) or self.path}/{key}")  # however the store is rooted
                return await original(self, key, value, *args, **kwargs)

            monkeypatch.setattr(cls, "set", full_set)
        original_write, original_objects = store_module.write_bytes, store_module.write_objects

        def full_write(path, data, storage_options=None):
            check(str(path))
            return original_write(path, data, storage_options)

        def full_objects(path, objects, storage_options=None):
            for rel in objects:
                check(f"{path}/{rel}")
            return original_objects(path, objects, storage_options)

        monkeypatch.setattr(store_module, "write_bytes", full_write)
        monkeypatch.setattr(block_module, "write_bytes", full_write)  # chunks and shards
        monkeypatch.setattr(store_module, "write_objects", full_objects)

    return fill


@pytest.fixture(scope="session")
def make_dataset(tmp_path_factory):
    """Factory: ``make_dataset(competition="none", as_zip=False, **kw)`` -> a cached sample."""
    cache: dict[tuple, Path] = {}

    def make(competition: str = "none", as_zip: bool = False, **kw) -> Path:
        args = {**SMALL, **kw}
        key = (competition, as_zip, tuple(sorted(args.items())))
        if key not in cache:
            dest = tmp_path_factory.mktemp("sample")
            cache[key] = converter.make_sample(dest, competition=competition, as_zip=as_zip, **args)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def four_blocks(tmp_path_factory):
    """A dataset of four write blocks (small images keep it quick)."""
    return converter.make_sample(tmp_path_factory.mktemp("big"), trials=4000, neurons=30, image_shape=(24, 32))


@pytest.fixture(scope="session")
def make_store(make_dataset, tmp_path_factory):
    """Factory: the store converted from ``make_dataset(...)`` with the same arguments."""
    cache: dict[tuple, Path] = {}

    def make(competition: str = "none", as_zip: bool = False, **kw) -> Path:
        key = (competition, as_zip, tuple(sorted(kw.items())))
        if key not in cache:
            src = make_dataset(competition, as_zip, **kw)
            cache[key] = converter.convert(src, tmp_path_factory.mktemp("store") / "mouse.zarr", progress=False)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def clips(make_dataset):
    """The `CLIPS` sample folder."""
    return make_dataset(**CLIPS)


@pytest.fixture(scope="session")
def clip_store(make_store):
    """The store converted from `clips`."""
    return make_store(**CLIPS)


@pytest.fixture
def dataset_copy(make_dataset, tmp_path):
    """Factory: a private, writable copy of a sample folder, for tests that damage it."""

    def make(competition: str = "none", **kw) -> Path:
        src = make_dataset(competition, **kw)
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return make


def upload_mice(fs, prefix: str, make_dataset, specs) -> list[Path]:
    """Put sample datasets ``(competition, as_zip, seed)`` under ``prefix`` in object storage."""
    paths = []
    for competition, as_zip, seed in specs:
        p = make_dataset(competition, as_zip, seed=seed)
        fs.put(str(p), f"{prefix}/{p.name}", recursive=not as_zip)
        paths.append(p)
    return paths


def load_source(folder: Path, rel: str) -> np.ndarray:
    """The reference reader: plain ``np.load`` with pickling disabled."""
    return np.load(folder / rel, allow_pickle=False)


def bits(a: np.ndarray) -> bytes:
    """Bytes of an array's values in native order, for exact comparison (NaN payloads too)."""
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("="), order="C").tobytes()


KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on a free loopback port, with a bucket ``data``; the AWS environment points at it."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from benchmarks.moto import moto_server

    saved = {k: os.environ.get(k) for k in (*KEYS, "AWS_ENDPOINT_URL")}
    try:
        with moto_server() as endpoint:
            os.environ.update(KEYS, AWS_ENDPOINT_URL=endpoint)
            import s3fs

            fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True)
            fs.mkdir("data")
            yield endpoint, fs
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, in file order: under xdist the longest work then starts early instead
    of keeping one worker busy after the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
