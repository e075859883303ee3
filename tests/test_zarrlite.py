"""converter.zarrlite, the hand-written subset of Zarr v3: the same arrays and the same bytes as
zarr-python for every layout it takes, every CRC-32C checked, and safe in forked workers."""

from __future__ import annotations

import json
import multiprocessing

import fsspec
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec

from converter.read.engine import ZarrReader, open_reader
from converter.write.store import finalize
from converter.zarrlite import ChunkReader, encode_chunks, encode_shard, read_coordinates
from converter.zarrlite import consolidate as consolidated_root

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
    for r in (reader, ZarrReader(zarr.open_array(path))):  # into memory used before: every element written
        out = np.full(want.shape, 1, dtype=want.dtype)
        assert r.read(sel, out) is out and bits(out) == bits(want)


def test_out_of_bounds_and_unsupported_layouts(tmp_path):
    z = zarr.create_array(tmp_path / "a.zarr", shape=(5,), dtype="f4", chunks=(2,), compressors=None)
    z[...] = np.arange(5)
    r = ChunkReader.from_path(tmp_path / "a.zarr")
    with pytest.raises(IndexError):
        r.read((np.array([5]),))
    for wrong in (np.empty(3, "f4"), np.empty(2, "f8"), np.empty(4, "f4")[::2], np.empty(2, "f4")[None]):
        with pytest.raises(ValueError, match=r"^out must be a writeable, C-contiguous float32 array of shape \(2,\), not "):
            r.read((np.array([0, 1]),), wrong)
    frozen = np.empty(2, "f4")
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="not a read-only float32 array"):
        r.read((np.array([0, 1]),), frozen)
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


def test_chunks_that_values_would_leave_part_written_are_refused_before_any_is_encoded():
    values = np.ones((5, 4), "<f4")
    assert [idx for idx, _ in encode_chunks(values, (4, 0), (4, 4), (9, 4), "lz4", 5, "shuffle")] == [(1, 0), (2, 0)]  # 9: the edge
    with pytest.raises(ValueError, match=r"end inside a chunk \(4, 4\) of an array of shape \(10, 4\)"):
        encode_chunks(values, (4, 0), (4, 4), (10, 4), "lz4", 5, "shuffle")
    with pytest.raises(ValueError, match="not on the chunk grid"):
        encode_chunks(values, (2, 0), (4, 4), (9, 4), "lz4", 5, "shuffle")


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
    finalize(tmp_path / "s.zarr", {})  # the bytes zarr.consolidate_metadata writes, without its warning
    meta = json.loads((tmp_path / "s.zarr/zarr.json").read_text())["consolidated_metadata"]["metadata"]
    got = read_coordinates(fsspec.filesystem("file"), str(tmp_path / "s.zarr"), list(made), meta)
    assert "gzip" not in got  # left to zarr-python
    for name, a in made.items():
        if name in got:
            want = a[...]
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
            assert got[name].tolist() == want.tolist() if name == "text" else bits(got[name]) == bits(want), name


def _sharded(path, index_crc: bool = True):
    z = zarr.create_array(path, shape=(8, 3), dtype="<f4", chunks=(1, 3), shards=(8, 3), fill_value=0,
                          compressors=[BloscCodec(cname="lz4", shuffle="shuffle"), zarr.codecs.Crc32cCodec()],
                          serializer="auto")
    z[...] = np.arange(24, dtype="<f4").reshape(8, 3) + 1
    if not index_crc:  # zarr-python's create_array takes no index codecs: rewrite them in the metadata
        meta = json.loads((path / "zarr.json").read_text())
        meta["codecs"][0]["configuration"]["index_codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}}]
        (path / "zarr.json").write_text(json.dumps(meta))
        shard = path / "c/0/0"
        shard.write_bytes(shard.read_bytes()[:-4])  # the index without its CRC-32C
    return path / "c/0/0"


def test_the_shard_index_crc_is_checked_on_every_read_as_zarr_python_does(tmp_path):
    shard = _sharded(tmp_path / "a.zarr")
    assert bits(ChunkReader.from_path(tmp_path / "a.zarr").read()) == bits(zarr.open_array(tmp_path / "a.zarr")[...])
    data = bytearray(shard.read_bytes())
    data[-4 - 16 * 8 + 8] ^= 1  # the length of inner chunk 0, inside the index
    shard.write_bytes(bytes(data))
    for sel in [(), (np.array([3]),), (slice(2, 4), np.array([1]))]:
        with pytest.raises(ValueError, match=rf"{shard}: damaged \(its CRC-32C does not match"):
            ChunkReader.from_path(tmp_path / "a.zarr").read(sel)
    with pytest.raises(Exception):  # noqa: B017  (zarr-python refuses it too, in its own words)
        zarr.open_array(tmp_path / "a.zarr")[...]


def test_an_index_without_crc_and_a_damaged_inner_chunk(tmp_path):
    _sharded(tmp_path / "a.zarr", index_crc=False)
    reader = ChunkReader.from_path(tmp_path / "a.zarr")
    assert reader.read((np.array([7]),)).tolist() == [[22.0, 23.0, 24.0]]
    shard = _sharded(tmp_path / "b.zarr")
    data = bytearray(shard.read_bytes())
    data[20] ^= 0xFF  # inside inner chunk 0
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="inner chunk .*damaged"):
        ChunkReader.from_path(tmp_path / "b.zarr").read((np.array([0]),))


def test_a_missing_chunk_is_the_fill_value_unless_the_array_is_written_whole(tmp_path):
    z = zarr.create_array(tmp_path / "a.zarr", shape=(4, 2), dtype="<f4", chunks=(2, 2), fill_value=7, compressors=None)
    z[:2] = 1
    assert ChunkReader.from_path(tmp_path / "a.zarr").read()[2:].tolist() == [[7, 7], [7, 7]]
    with pytest.raises(ValueError, match=r"c/1/0: damaged \(missing"):
        ChunkReader.from_path(tmp_path / "a.zarr", missing_is_damage=True).read()


_READER = None


def _read_rows(rows):
    return _READER.read((np.asarray(rows),)).tobytes()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # that is the point
def test_a_reader_used_before_a_fork_reads_in_the_forked_workers(tmp_path):
    """What a DataLoader does with fork: the parent has read (its thread pool exists), the workers
    read through the same objects."""
    global _READER
    z = zarr.create_array(tmp_path / "a.zarr", shape=(64, 1, 6, 5), dtype="<f4", chunks=(1, 1, 6, 5), shards=(32, 1, 6, 5),
                          compressors=[BloscCodec(cname="lz4", shuffle="bitshuffle"), zarr.codecs.Crc32cCodec()])
    z[...] = np.random.default_rng(0).random(z.shape, dtype="f4")
    _READER = ChunkReader.from_path(tmp_path / "a.zarr")
    parts = [list(range(k, 64, 4)) for k in range(4)]  # 16 rows each: on the pool's threads
    want = [_read_rows(p) for p in parts]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map_async(_read_rows, parts).get(timeout=60) == want


def test_consolidated_root_is_what_zarr_python_writes(tmp_path):
    import warnings

    g = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3, attributes={"a": 1})
    g.create_group("x/y", attributes={"b": [1, 2]})
    g.create_array("x/v", shape=(3,), dtype="i2", chunks=(3,))
    g.create_array("w", shape=(2, 2), dtype="f8", chunks=(1, 2), fill_value=np.nan)
    nodes = {p.parent.relative_to(tmp_path / "s.zarr").as_posix(): json.loads(p.read_text())
             for p in (tmp_path / "s.zarr").rglob("zarr.json") if p.parent != tmp_path / "s.zarr"}
    ours = consolidated_root(json.loads((tmp_path / "s.zarr/zarr.json").read_text()), nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(tmp_path / "s.zarr"), zarr_format=3)
    assert (tmp_path / "s.zarr/zarr.json").read_bytes() == ours


def test_remote_rows_count_the_requests_left_after_merging_nearby_rows(tmp_path):
    from converter.zarrlite import RemoteRows
    from converter.zarrlite.remote import MAX_BLOCK, MAX_GAP

    zarr.create_array(tmp_path / "a.zarr", shape=(3000, 65536), dtype="<f4", chunks=(1, 65536), shards=(1024, 65536),
                      compressors=[BloscCodec(cname="lz4", shuffle="shuffle"), zarr.codecs.Crc32cCodec()])
    meta = json.loads((tmp_path / "a.zarr/zarr.json").read_text())
    rows = RemoteRows.from_meta(None, str(tmp_path / "a.zarr"), meta, fallback=lambda: None)
    assert (MAX_GAP, MAX_BLOCK) == (1 << 20, 16 << 20) and rows.shape[1] * 4 == 1 << 18  # rows of 256 KiB
    assert rows.requests((np.array([2, 0, 1, 1]),)) == 1
    assert rows.requests((np.array([0, 4]),)) == 1 and rows.requests((np.array([0, 6]),)) == 2  # 0.75 and 1.25 MiB apart
    assert rows.requests((slice(0, 128),)) == 2  # 32 MiB: two blocks of 16
    assert rows.requests((np.array([1023, 1024]),)) == 2  # two shards
    assert rows.requests((slice(None),)) == 16 + 16 + 15  # 16 blocks a shard of 1024 rows; 15 for the last, of 952
    assert rows.requests((np.array([5]), slice(0, 9))) > 10**9  # not whole rows: zarr-python reads it
    plain = zarr.create_array(tmp_path / "b.zarr", shape=(8, 4), dtype="<f4", chunks=(2, 4))
    assert RemoteRows.from_meta(None, str(tmp_path / "b.zarr"), json.loads((tmp_path / "b.zarr/zarr.json").read_text()),
                                fallback=lambda: None) is None and plain is not None


def test_a_job_started_on_the_pool_runs_there_rather_than_wait_for_it():
    """A window read inside a batch read (`VideoDataset.read`) asks the pool from the pool's own
    threads; waiting there for free threads would hang once every thread waits."""
    import threading

    from converter.zarrlite import pool

    where: list[str] = []

    def outer(run):
        pool.in_runs(lambda inner: where.append(threading.current_thread().name), list(range(64)), 1 << 30)

    t = threading.Thread(target=pool.in_runs, args=(outer, list(range(64)), 1 << 30), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "nested pool jobs hang"
    assert where and all(name.startswith("sensorium-zarr-read") for name in where)
