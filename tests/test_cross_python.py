"""Stores written under one supported Python (and its zarr) read, verify and convert the same under the other.

``.ci/run`` points ``SENSORIUM_ZARR_OTHER_PYTHON`` at the other leg's interpreter (3.12 with the
newest zarr 3.x from the 3.11 leg, and back), each with this package installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import converter

OTHER = os.environ.get("SENSORIUM_ZARR_OTHER_PYTHON")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not OTHER, reason="SENSORIUM_ZARR_OTHER_PYTHON is not set (.ci/run sets it)")]


def in_other(code: str, *args) -> dict:
    r = subprocess.run([OTHER, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def data_files(store) -> dict[str, bytes]:
    """Every chunk and shard (metadata apart: zarr versions word their JSON differently)."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file() and p.suffix != ".json"}


def test_stores_cross_between_the_two_pythons(make_dataset, make_store, tmp_path):
    src, here = make_dataset(), make_store()
    there = tmp_path / "there.zarr"
    found = in_other("""
        import json, sys, xarray as xr, zarr
        plain = xr.open_zarr(sys.argv[2])  # plain xarray first, before our package is imported
        total = float(plain.responses.astype("float64").sum())
        import converter
        src, store, there = sys.argv[1:4]
        converter.convert(src, there, progress=False)
        print(json.dumps({"python": sys.version.split()[0], "zarr": zarr.__version__, "total": total,
                          "verify": converter.verify(src, store).ok, "self_check": converter.self_check(store).ok}))
    """, src, here, there)
    assert found["python"].split(".")[:2] != list(map(str, sys.version_info[:2])), "the other interpreter is this one"
    assert found["verify"] and found["self_check"]
    assert found["total"] == float(converter.open_mouse(here).responses.astype("float64").sum())
    assert converter.verify(src, there).ok and converter.self_check(there).ok
    assert data_files(there) == data_files(here)  # every chunk byte for byte, whichever Python wrote it


def test_video_stores_cross_between_the_two_pythons(make_dataset, make_store, tmp_path):
    from .conftest import CLIPS

    src, here = make_dataset(**CLIPS), make_store(**CLIPS)
    there = tmp_path / "there.zarr"
    found = in_other("""
        import json, sys, xarray as xr
        plain = xr.open_zarr(sys.argv[2])
        n_frames = plain.n_frames.values.tolist()
        import converter
        src, store, there = sys.argv[1:4]
        converter.convert(src, there, progress=False)
        print(json.dumps({"n_frames": n_frames, "verify": converter.verify(src, store).ok, "self_check": converter.self_check(store).ok}))
    """, src, here, there)
    assert found["verify"] and found["self_check"]
    assert found["n_frames"] == converter.open_mouse(here).n_frames.values.tolist()
    assert converter.verify(src, there).ok
    assert data_files(there) == data_files(here)
