"""Shared fixtures: synthetic datasets and stores, made once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import converter

SMALL = {"trials": 60, "neurons": 40}


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


@pytest.fixture
def dataset_copy(make_dataset, tmp_path):
    """Factory: a private, writable copy of a sample folder, for tests that damage it."""

    def make(competition: str = "none", **kw) -> Path:
        src = make_dataset(competition, **kw)
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return make


def load_source(folder: Path, rel: str) -> np.ndarray:
    """The reference reader: plain ``np.load`` with pickling disabled."""
    return np.load(folder / rel, allow_pickle=False)


def bits(a: np.ndarray) -> bytes:
    """Bytes of an array's values in native order, for exact comparison (NaN payloads too)."""
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("="), order="C").tobytes()
