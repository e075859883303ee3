"""The read engine against zarr-python: same arrays for every layout and selection."""

from __future__ import annotations

import json
import shutil

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec

import converter
from converter.chunks import encode_chunks, encode_shard
from converter.read.engine import ChunkReader, ZarrReader, cost, open_reader
from converter.errors import StoreError
from converter.write.store import consolidate

from .conftest import bits


def selections(shape):
    """Per axis: a slice (any step, negative bounds) or an integer array in any order, with repeats."""
    def axis(n):
        return st.one_of(
            st.builds(slice, st.integers(-n - 1, n + 1) | st.none(), st.integers(-n - 1, n + 1) | st.none(), st.integers(1, 3) | st.none()),
            st.lists(st.integers(-n, n - 1), min_size=0, max_size=2 * n).map(lambda v: np.array(v, dtype=np.int64)),
        )
    return st.tuples(*(axis(n) for n in shape))


def oindex(a: np.ndarray, sel: tuple) -> np.ndarray:
    """The reference: numpy, one axis at a time (orthogonal indexing)."""
    for k, s in enumerate(sel):
        a = a[(slice(None),) * k + (s,)]
    return a


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), dtype=st.sampled_from(["<f4", "<i2", "u1", "<f8", "?"]), sharded=st.booleans(),
       compressed=st.booleans(), holes=st.booleans())
def test_reader_equals_zarr_for_any_selection(tmp_path_factory, data, dtype, sharded, compressed, holes):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
    inner = tuple(data.draw(st.integers(1, n)) for n in shape)
    values = data.draw(hnp.arrays(np.dtype(dtype), shape))
    if holes:  # chunks equal to the fill value are never written; the reader must fill them in
        values[: inner[0]] = 0
    path = tmp_path_factory.mktemp("eng") / "a.zarr"
    shards = tuple(c * data.draw(st.integers(1, 3)) for c in inner) if sharded else None
    z = zarr.create_array(path, shape=shape, dtype=dtype, chunks=inner, shards=shards, fill_value=0,
                          compressors=[BloscCodec(cname="lz4", shuffle="shuffle")] if compressed else None)
    z[...] = values
    reader = ChunkReader.from_path(path)
    assert reader is not None and reader.chunks == inner
    assert bits(reader.read()) == bits(values)
    sel = data.draw(selections(shape))
    want = oindex(values, sel)
    got = reader.read(sel)
    assert got.shape == want.shape and bits(got) == bits(want)
    assert bits(ZarrReader(zarr.open_array(path)).read(sel)) == bits(want)


def test_out_of_bounds_and_unsupported_layouts(tmp_path):
    z = zarr.create_array(tmp_path / "a.zarr", shape=(5,), dtype="f4", chunks=(2,), compressors=None)
    z[...] = np.arange(5)
    r = ChunkReader.from_path(tmp_path / "a.zarr")
    with pytest.raises(IndexError):
        r.read((np.array([5]),))
    zstd = zarr.create_array(tmp_path / "z.zarr", shape=(5,), dtype="f4", chunks=(2,))  # zarr's default codec: zstd
    zstd[...] = np.arange(5)
    assert bits(ChunkReader.from_path(tmp_path / "z.zarr").read()) == bits(np.arange(5, dtype="f4"))
    gzip = zarr.create_array(tmp_path / "g.zarr", shape=(5,), dtype="f4", chunks=(2,), compressors=zarr.codecs.GzipCodec())
    assert ChunkReader.from_path(tmp_path / "g.zarr") is None
    assert isinstance(open_reader(tmp_path, "g.zarr"), ZarrReader)  # the fallback reads everything else
    text = zarr.create_array(tmp_path / "s.zarr", shape=(2,), dtype=str, chunks=(2,))
    assert ChunkReader.from_path(tmp_path / "s.zarr") is None and gzip is not None and text is not None


@pytest.mark.parametrize("n", [1024, 700, 1])
def test_encoded_shards_are_the_bytes_zarr_writes(tmp_path, n):
    rng = np.random.default_rng(n)
    values = (rng.random((n, 1, 6, 5)) * 255).round().astype("f4")
    z = zarr.create_array(tmp_path / "a.zarr", shape=values.shape, dtype="f4", chunks=(1, 1, 6, 5), shards=(1024, 1, 6, 5),
                          compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"), zarr.codecs.Crc32cCodec()], fill_value=0)
    z[...] = values
    ours = encode_shard(values, (1, 1, 6, 5), (1024, 1, 6, 5), "lz4", 5, "bitshuffle")
    assert (tmp_path / "a.zarr/c/0/0/0/0").read_bytes() == ours


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), dtype=st.sampled_from(["<f4", "u1", "?", "<i8"]), shuffle=st.sampled_from(["noshuffle", "shuffle", "bitshuffle"]))
def test_encoded_chunks_are_the_bytes_zarr_writes(tmp_path_factory, data, dtype, shuffle):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
    chunks = tuple(data.draw(st.integers(1, n)) for n in shape)
    values = data.draw(hnp.arrays(np.dtype(dtype), shape, elements={"allow_nan": False} if dtype == "<f4" else None))
    values[(0,) * len(shape)] = 1  # at least one chunk differs from the fill value (zarr skips those)
    path = tmp_path_factory.mktemp("chunks") / "a.zarr"
    z = zarr.create_array(path, shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                          compressors=[BloscCodec(cname="lz4", clevel=5, shuffle=shuffle), zarr.codecs.Crc32cCodec()])
    z[...] = values
    for idx, data_ in encode_chunks(values, (0,) * len(shape), chunks, shape, "lz4", 5, shuffle):
        written = path / "c" / "/".join(map(str, idx))
        if written.exists():  # zarr leaves out chunks equal to the fill value; we write them
            assert written.read_bytes() == data_, idx
        else:
            assert not ChunkReader.from_path(path).read(tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks))).any()


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


def test_whole_rows_of_a_shard_wider_than_the_array(tmp_path):
    """Found by hypothesis: shards (2, 2) of inner chunks (1, 1) on a (2, 1) array; row 1 is inner
    chunk (1, 0), the third index entry, not the second."""
    z = zarr.create_array(tmp_path / "a.zarr", shape=(2, 1), dtype="<f4", chunks=(1, 1), shards=(2, 2), fill_value=0,
                          compressors=[BloscCodec(cname="lz4", shuffle="shuffle")])
    z[...] = np.array([[1.0], [2.0]], dtype="<f4")
    reader = ChunkReader.from_path(tmp_path / "a.zarr")
    assert reader.read().ravel().tolist() == [1.0, 2.0]
    assert reader.read((np.array([1, 0, 1]),)).ravel().tolist() == [2.0, 1.0, 2.0]


def test_read_coordinates_equals_zarr_on_every_layout_it_takes(tmp_path):
    from converter.read.engine import read_coordinates

    g = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    made = {
        "one_chunk": g.create_array("one_chunk", shape=(7,), dtype="i8", chunks=(7,)),
        "many_chunks": g.create_array("many_chunks", shape=(10, 3), dtype="f8", chunks=(4, 2), fill_value=np.nan),
        "never_written": g.create_array("never_written", shape=(5,), dtype="f4", chunks=(2,), fill_value=np.nan),
        "flags": g.create_array("flags", shape=(9,), dtype=bool, chunks=(4,), compressors=zarr.codecs.BloscCodec()),
        "big_endian": g.create_array("big_endian", shape=(6,), dtype=">u2", chunks=(6,), serializer=zarr.codecs.BytesCodec(endian="big")),
        "text": g.create_array("text", shape=(4,), dtype=str, chunks=(4,)),
        "gzip": g.create_array("gzip", shape=(3,), dtype="f4", chunks=(3,), compressors=zarr.codecs.GzipCodec()),
    }
    made["one_chunk"][...] = np.arange(7) * 3
    made["many_chunks"][:9] = np.arange(27, dtype="f8").reshape(9, 3)  # the last row of chunks partly unwritten
    made["flags"][...] = np.arange(9) % 3 == 0
    made["big_endian"][...] = np.arange(6) * 1000
    made["text"][...] = np.array(["V1", "LM", "", "é"])
    made["gzip"][...] = np.ones(3)
    consolidate(tmp_path / "s.zarr")  # the bytes zarr.consolidate_metadata writes, without its warning
    meta = json.loads((tmp_path / "s.zarr/zarr.json").read_text())["consolidated_metadata"]["metadata"]
    got = read_coordinates(tmp_path / "s.zarr", list(made), meta)
    assert "gzip" not in got  # left to zarr-python
    for name, a in made.items():
        if name in got:
            want = a[...]
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
            assert got[name].tolist() == want.tolist() if name == "text" else bits(got[name]) == bits(want), name
