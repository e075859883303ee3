"""Which reader serves a read (converter.read.engine): the cost of each layout, and what
open_mouse's selections and reductions give against plain xarray."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr

import converter
from converter.errors import StoreError
from converter.read.engine import ZarrReader, cost
from converter.zarrlite import ChunkReader

from .conftest import bits


class Layout:
    def __init__(self, chunks, chunk_cost=ChunkReader.chunk_cost):
        self.shape, self.chunks, self.chunk_cost = (6955, 7776), chunks, chunk_cost


def test_cost_prefers_tiles_for_neurons_and_rows_for_trials():
    tiles, rows = Layout((1024, 512)), Layout((1, 7776))
    batch = np.random.default_rng(0).choice(6955, 128, replace=False)
    assert cost(rows, (batch,)) < cost(tiles, (batch,))
    assert cost(rows, (np.arange(200),)) < cost(tiles, (np.arange(200),))  # a local read costs little
    assert cost(tiles, (slice(None), np.array([17]))) < cost(rows, (slice(None), np.array([17])))
    assert cost(tiles, ()) < cost(rows, ())  # a whole read: fewer, larger chunks


def test_cost_in_object_storage_counts_requests(make_store):
    request = ZarrReader(zarr.open_array(make_store("none"), path="responses"), remote=True).chunk_cost
    assert request > ChunkReader.chunk_cost
    tiles, rows = Layout((1024, 512), request), Layout((1, 7776), request)
    batch = np.random.default_rng(0).choice(6955, 128, replace=False)
    assert cost(rows, (batch,)) < cost(tiles, (batch,))  # scattered trials: still one small request each
    assert cost(tiles, (np.arange(200),)) < cost(rows, (np.arange(200),))  # a run of trials: 16 tiles, not 200 requests


def test_open_mouse_selections_equal_plain_xarray(make_store):
    store = make_store("sensorium")
    plain = xr.open_zarr(store).load()
    ds = converter.open_mouse(store)
    rng = np.random.default_rng(1)
    for sel in [dict(trial=rng.choice(60, 17)), dict(neuron=[7, 3, 3]), dict(trial=slice(50, 5, -3), neuron=slice(2, 30)),
                dict(trial=4), dict(trial=np.flatnonzero(plain.tier.values == "test"), neuron=0)]:
        for key in ("images", "responses", "behavior", "pupil_center"):
            want, got = plain[key].isel(**{k: v for k, v in sel.items() if k in plain[key].dims}), None
            got = ds[key].isel(**{k: v for k, v in sel.items() if k in ds[key].dims})
            assert bits(got.values) == bits(want.values), (key, sel)
    xr.testing.assert_identical(ds.sel(trial=[3, 1]).compute().drop_encoding(), plain.sel(trial=[3, 1]).drop_encoding())


def test_repeats_reductions_equal_xarray_groupby(make_store):
    ds = converter.open_mouse(make_store("none"))[["responses", "behavior"]]
    test = ds.sensorium.tier("test").load()
    for stat, kw in (("mean", {}), ("var", {"ddof": 1}), ("std", {}), ("count", {})):
        got = getattr(ds.sensorium.repeats("test"), stat)(**kw)
        want = getattr(test.groupby("image_id"), stat)(**kw)
        xr.testing.assert_allclose(got, want, rtol=1e-6)
    masked = ds.sensorium.mask_withheld()
    masked["responses"][0] = np.nan  # NaN is skipped, as xarray skips it
    xr.testing.assert_allclose(masked.sensorium.repeats().mean(), masked.sensorium.tier("test").load().groupby("image_id").mean(), rtol=1e-6)
    assert len(ds.sensorium.repeats().groups) == len(ds.sensorium.repeats())  # other groupby methods still work


def test_a_store_of_an_unknown_schema_version_says_how_to_rebuild(make_store, tmp_path):
    store = tmp_path / "old.zarr"
    shutil.copytree(make_store(), store)
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["schema_version"] = "0.9"
    (store / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(StoreError, match=r"schema '0.9'.*sensorium-zarr convert SRC DEST --overwrite"):
        converter.open_mouse(store)


