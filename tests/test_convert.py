"""The store contract: what plain xarray sees after `convert`, for every variant."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import xarray as xr
import zarr

import converter
from converter.write.convert import run
from converter.errors import StoreError

from .conftest import bits, load_source

VARIANTS = [("none", False), ("none", True), ("sensorium", False), ("sensorium+", True)]


def source_folder(make_dataset, competition, as_zip, tmp_path_factory):
    """The dataset as a folder (extracting a zip only for the test's reference reads)."""
    src = make_dataset(competition, as_zip)
    if not as_zip:
        return src
    out = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(src) as zf:
        zf.extractall(out)
    return out / src.stem


@pytest.mark.parametrize("competition, as_zip", VARIANTS)
def test_every_source_array_is_in_the_store_bit_for_bit(make_dataset, make_store, competition, as_zip, tmp_path_factory):
    folder = source_folder(make_dataset, competition, as_zip, tmp_path_factory)
    store = make_store(competition, as_zip)
    stored = xr.open_zarr(store)
    n = len(os.listdir(folder / "data/images"))
    assert stored.sizes["trial"] == n
    # trials are stored clustered by tier then image_id; the label is the file number
    np.testing.assert_array_equal(np.sort(stored["trial"].values), np.arange(n))
    tiers = stored["tier"].values.tolist()
    runs = [t for k, t in enumerate(tiers) if k == 0 or tiers[k - 1] != t]
    assert len(runs) == len(set(runs)) and runs[:2] == ["train", "validation"]
    ds = stored.sortby("trial")  # file order: row i is i.npy
    copy = zarr.open_array(f"{store}/by_trial/responses", mode="r")
    assert copy.attrs["copy_of"] == "responses" and bits(copy[...]) == bits(stored["responses"].values)
    for key in ("images", "responses", "behavior", "pupil_center"):
        stacked = np.stack([load_source(folder, f"data/{key}/{i}.npy") for i in range(n)])
        assert ds[key].dtype == stacked.dtype and ds[key].shape == stacked.shape
        assert bits(ds[key].values) == bits(stacked)
        assert ds[key].attrs["source"] == f"data/{key}/{{trial}}.npy"
    assert ds["responses"].dims == ("trial", "neuron")
    assert ds["images"].dims == ("trial", "channel", "height", "width")
    np.testing.assert_array_equal(ds["trial"], np.arange(n))
    np.testing.assert_array_equal(ds["neuron"], load_source(folder, "meta/neurons/unit_ids.npy"))
    for rel, name in [("meta/trials/tiers.npy", "tier"), ("meta/trials/frame_image_id.npy", "image_id"),
                      ("meta/trials/trial_idx.npy", "trial_idx"), ("meta/trials/frame_trial_ts.npy", "frame_trial_ts"),
                      ("meta/trials/scan_idx.npy", "trial_scan_idx"), ("meta/neurons/scan_idx.npy", "neuron_scan_idx"),
                      ("meta/neurons/area.npy", "area"), ("meta/neurons/cell_motor_coordinates.npy", "cell_motor_coordinates")]:
        src = load_source(folder, rel)
        assert name in ds.coords, name
        assert ds[name].attrs["source"] == rel and ds[name].attrs["source_dtype"] == src.dtype.str
        if src.dtype.kind == "U":
            assert ds[name].values.tolist() == src.tolist()
        else:
            assert bits(ds[name].values) == bits(src)
    assert ds["tier"].dims == ("trial",) and ds["area"].dims == ("neuron",)
    assert ds["cell_motor_coordinates"].dims == ("neuron", "xyz")


@pytest.mark.parametrize("competition, as_zip", VARIANTS)
def test_statistics_groups(make_dataset, make_store, competition, as_zip, tmp_path_factory):
    folder = source_folder(make_dataset, competition, as_zip, tmp_path_factory)
    group = zarr.open_group(make_store(competition, as_zip), mode="r")
    stats_dir = folder / "meta/statistics"
    files = sorted(p.relative_to(stats_dir) for p in stats_dir.rglob("*.npy"))
    assert len(files) == 4 * 2 * 5
    for f in files:
        arr = group[f"statistics/{f.with_suffix('').as_posix()}"]
        src = load_source(stats_dir, f)
        assert arr.shape == src.shape and bits(arr[...]) == bits(src)
        assert arr.attrs["source"] == f"meta/statistics/{f.as_posix()}"
    assert group["statistics/images/all/mean"].shape == ()  # 0-d arrays are kept 0-d
    mean = xr.open_zarr(make_store(competition, as_zip), group="statistics/responses/all")["mean"]
    assert mean.dims == ("neuron",)


@pytest.mark.parametrize("competition", ["none", "sensorium", "sensorium+"])
def test_withheld_trials_are_marked(make_dataset, make_store, competition):
    ds = xr.open_zarr(make_store(competition))
    test_tiers = ds["tier"].isin(["test", "final_test"]).values
    if competition == "none":
        expected_resp, expected_beh = np.zeros_like(test_tiers), np.zeros_like(test_tiers)
    elif competition == "sensorium":
        expected_resp, expected_beh = test_tiers, np.ones_like(test_tiers)
    else:
        expected_resp, expected_beh = test_tiers, np.zeros_like(test_tiers)
    np.testing.assert_array_equal(ds["responses_withheld"], expected_resp)
    np.testing.assert_array_equal(ds["behavior_withheld"], expected_beh)
    np.testing.assert_array_equal(ds["pupil_center_withheld"], expected_beh)
    assert not ds["images_withheld"].any()
    assert json.loads(ds.attrs["withheld_trials"])["responses"] == int(expected_resp.sum())
    # the marks agree with the data: withheld rows are zero, the others are not
    resp = ds["responses"].values
    assert not resp[expected_resp].any() and resp[~expected_resp].any(axis=1).all()
    if competition != "none":
        assert ds["trial_idx"].dtype.kind in "OT" and len(str(ds["trial_idx"].values[0])) == 32  # hashed
        assert set(ds["tier"].values.tolist()) == {"train", "validation", "test", "final_test"}


def test_root_attributes(make_dataset, make_store):
    src = make_dataset()
    attrs = xr.open_zarr(make_store()).attrs
    assert attrs["dataset"] == src.name and attrs["data_key"] == src.name[len("static"):].split("-GrayImageNet")[0]
    assert attrs["n_trials"] == 60 and attrs["n_neurons"] == 40
    assert sum(json.loads(attrs["tier_counts"]).values()) == 60
    assert attrs["license"] == "CC BY-NC-ND 4.0" and "arXiv:2206.08666" in attrs["citation"]
    assert attrs["schema_version"] == converter.contract.SCHEMA_VERSION and attrs["converter_version"] == converter.__version__
    assert attrs["source_fingerprint"].startswith("sha256:")
    for k in ("animal_id", "session", "scan_idx", "created"):
        assert k in attrs


def test_folder_and_zip_give_the_same_fingerprint(make_store):
    a = xr.open_zarr(make_store("none", False)).attrs["source_fingerprint"]
    b = xr.open_zarr(make_store("none", True)).attrs["source_fingerprint"]
    c = xr.open_zarr(make_store("sensorium", False)).attrs["source_fingerprint"]
    assert a == b != c


def test_zip_is_read_in_place(make_dataset, tmp_path):
    src = make_dataset("none", True)
    before = sorted(os.listdir(src.parent))
    converter.convert(src, tmp_path / "m.zarr", progress=False)
    assert sorted(os.listdir(src.parent)) == before  # nothing extracted next to the zip
    assert sorted(os.listdir(tmp_path)) == ["m.zarr"]  # and nothing left beside the store


def test_big_endian_fortran_nan_and_inf_are_kept_exactly(dataset_copy, tmp_path):
    folder = dataset_copy()
    weird = np.array([np.nan, -np.inf, np.inf], dtype="<f4")
    weird = np.concatenate([weird, np.frombuffer(np.uint32(0x7FC0DEAD).tobytes(), "<f4"), np.float32([-0.0])])
    for i in range(60):  # behavior: big-endian in every trial
        np.save(folder / f"data/behavior/{i}.npy", load_source(folder, f"data/behavior/{i}.npy").astype(">f4"))
        img = load_source(folder, f"data/images/{i}.npy")
        np.save(folder / f"data/images/{i}.npy", np.asfortranarray(img))  # Fortran order
    resp = load_source(folder, "data/responses/5.npy")
    resp[: len(weird)] = weird
    np.save(folder / "data/responses/5.npy", resp)
    ds = xr.open_zarr(converter.convert(folder, tmp_path / "m.zarr", progress=False)).sortby("trial")
    assert bits(ds["responses"].values[5]) == bits(resp)
    assert ds["behavior"].attrs["source_dtype"] == ">f4" and ds["behavior"].dtype == np.dtype("<f4")
    assert bits(ds["behavior"].values[7]) == bits(load_source(folder, "data/behavior/7.npy"))
    assert bits(ds["images"].values[3]) == bits(load_source(folder, "data/images/3.npy"))
    assert converter.verify(folder, tmp_path / "m.zarr").ok


def test_uint8_images_and_extra_files(dataset_copy, tmp_path):
    folder = dataset_copy(image_dtype="uint8")
    (folder / "config.json").write_text('{"links": {}}')  # what the official loader leaves behind
    (folder / "change.log").write_text("v1\n")
    store = converter.convert(folder, tmp_path / "m.zarr", progress=False)
    ds = xr.open_zarr(store).sortby("trial")
    assert ds["images"].dtype == np.uint8
    assert bits(ds["images"].values[0]) == bits(load_source(folder, "data/images/0.npy"))
    assert ds.attrs["ignored_files"] == []


EXTRA = {  # files a downloaded, unzipped and used dataset may hold besides its arrays
    "config.json": b'{"links": {}}',  # what the official loader leaves behind
    "change.log": b"v1\n",
    "meta/README.txt": b"about the meta arrays\n",
    "meta/statistics/images/notes": b"",  # an empty file
    "data/images/.DS_Store": bytes(range(256)),  # inside a trial folder: kept, not a trial
    "data/checksums.md5": b"0" * 5000,
}


def tree_hashes(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_file_is_kept_and_exported(dataset_copy, tmp_path):
    folder = dataset_copy()
    for rel, data in EXTRA.items():
        (folder / rel).write_bytes(data)
    converter.convert(folder, folder / "inside.zarr", progress=False)  # a store written inside its source ...
    store = converter.convert(folder, tmp_path / "m.zarr", progress=False)  # ... is not part of it
    assert xr.open_zarr(store).attrs["ignored_files"] == ["inside.zarr/"]
    files = xr.open_zarr(store, group="files")
    assert sorted(files["path"].values.tolist()) == sorted(EXTRA)
    assert converter.verify(folder, store).ok and converter.self_check(store).ok
    import shutil

    shutil.rmtree(folder / "inside.zarr")
    assert tree_hashes(converter.export(store, tmp_path / "out")) == tree_hashes(folder)
    (folder / "change.log").write_bytes(b"v2\n")
    (folder / "extra.txt").write_bytes(b"new")
    report = converter.verify(folder, store)
    assert "change.log: bytes differ between the source and the store" in report.mismatches
    assert "extra.txt: not in the store" in report.mismatches
    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    arr = zarr.open_array(str(bad / "files/bytes"), mode="r+")
    arr[3] = arr[3] ^ 1  # one bit of one kept file
    assert any("bit rot or tampering" in m for m in converter.self_check(bad).mismatches)


def test_export_zip_gives_back_the_zips_file_list(make_dataset, tmp_path):
    folder = make_dataset()
    src = tmp_path / "in" / f"{folder.name}.zip"
    src.parent.mkdir()
    with zipfile.ZipFile(src, "w") as zf:  # no top folder, no directory entries, extra files
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, str(p.relative_to(folder)))
        for rel, data in EXTRA.items():
            zf.writestr(rel, data)
    store = converter.convert(src, tmp_path / "m.zarr", progress=False)
    assert converter.verify(src, store).ok
    out = converter.export(store, tmp_path / "out", as_zip=True)
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(out) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert all(a.read(n) == b.read(n) for n in a.namelist())
    # the sample's own zip: one top folder and directory entries, given back as such
    store2 = converter.convert(make_dataset("none", True), tmp_path / "m2.zarr", progress=False)
    out2 = converter.export(store2, tmp_path / "out2", as_zip=True)
    with zipfile.ZipFile(make_dataset("none", True)) as a, zipfile.ZipFile(out2) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())


def test_dest_is_refused_unless_overwrite(make_dataset, tmp_path):
    src = make_dataset()
    dest = converter.convert(src, tmp_path / "m.zarr", progress=False)
    mtime = (dest / "zarr.json").stat().st_mtime_ns
    # the same source again (same identity, or a zip of the same content): complete, nothing rewritten
    assert run(src, dest) == (dest, "complete")
    assert run(make_dataset("none", True), dest) == (dest, "complete")
    assert (dest / "zarr.json").stat().st_mtime_ns == mtime and not (tmp_path / "m.zarr.incomplete").exists()
    with pytest.raises(StoreError, match="already exists"):  # made from another source
        converter.convert(make_dataset(seed=1), dest)
    assert (dest / "zarr.json").stat().st_mtime_ns == mtime and not (tmp_path / "m.zarr.incomplete").exists()
    converter.convert(src, dest, overwrite=True, progress=False)
    assert (dest / "zarr.json").stat().st_mtime_ns != mtime
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("do not delete")
    with pytest.raises(StoreError, match="is not a Zarr store"):
        converter.convert(src, tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_open_mouse_chunks_and_coordinates(make_store):
    ds = converter.open_mouse(make_store(), dask=True, trial_chunk=64)  # rounded up to whole stored shards
    assert ds["images"].data.chunks[0] == (60,) and ds["responses"].data.chunks == ((60,), (40,))
    assert converter.open_mouse(make_store(), dask=True)["images"].data.numblocks[0] == 1  # never one task per trial
    lazy = converter.open_mouse(make_store())  # the default: lazily indexed, no dask
    assert lazy["responses"].chunks is None and not isinstance(lazy["responses"].variable._data, np.ndarray)
    assert isinstance(ds["tier"].data, np.ndarray)  # coordinates in memory, ready for selection
    train = ds.sel(trial=ds["tier"] == "train")
    assert train.sizes["trial"] == json.loads(xr.open_zarr(make_store()).attrs["tier_counts"])["train"]
    loaded = converter.open_mouse(make_store(), load=True)
    assert isinstance(loaded["responses"].data, np.ndarray)
    plain = xr.open_zarr(make_store())
    for a in (ds, lazy, loaded):
        xr.testing.assert_identical(a.compute().drop_encoding(), plain.compute().drop_encoding())


def test_a_folder_sources_identity_is_the_digest_that_stores_record(make_dataset):
    """Each store records its source's identity, and a rerun finds the store complete only when it
    is unchanged: the digest of the resolved folder, then of every file's path, size and time."""
    import hashlib

    from converter.source import open_source

    src = make_dataset()
    stats = sorted((os.path.relpath(os.path.join(d, f), src), os.stat(os.path.join(d, f))) for d, _, files in os.walk(src) for f in files)
    h = hashlib.sha256(str(src.resolve()).encode())
    for rel, st in stats:
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    source = open_source(src, None)
    assert source.identity() == h.hexdigest()  # before the tree is walked
    source.tree()
    assert source.identity() == h.hexdigest()


def test_the_plan_reads_one_header_per_folder_and_the_blocks_check_every_file(dataset_copy, tmp_path):
    """`Source.head` gives a plain read's first bytes and size; the plan reads trial 0's
    header alone, and a file that differs later is found as its block reads it: one line naming
    it, and nothing left behind."""
    from converter.contract import trial_file
    from converter.source import files, open_source
    from converter.write.plan import plan

    folder = dataset_copy()
    source = open_source(folder, None)
    rels = [trial_file(k, i) for k in ("images", "responses") for i in (0, 59)]
    assert [source.head(r) for r in rels] == [((folder / r).read_bytes()[: files.HEAD_BYTES], (folder / r).stat().st_size) for r in rels]
    np.save(folder / "data/responses/59.npy", np.zeros(3, np.float32))
    assert plan(open_source(folder, None)).expect["responses"].shape == (40,)
    with pytest.raises(converter.SourceError, match=r"data/responses/59.npy: shape \(3,\) dtype <f4 differs from data/responses/0.npy's"):
        converter.convert(folder, tmp_path / "out" / "m.zarr", progress=False)
    assert not any((tmp_path / "out").iterdir())
    (folder / "data/responses/59.npy").unlink()
    with pytest.raises(converter.SourceError, match="data/responses/59.npy: No such file"):
        source.head(trial_file("responses", 59))


def test_a_renamed_dataset_keeps_its_identity(make_dataset, tmp_path):
    import shutil

    renamed = tmp_path / "mydata"
    shutil.copytree(make_dataset(), renamed)
    attrs = xr.open_zarr(converter.convert(renamed, tmp_path / "m.zarr", progress=False)).attrs
    assert (attrs["data_key"], attrs["animal_id"], attrs["session"], attrs["scan_idx"]) == ("90000-1-1", 90000, 1, 1)
    assert attrs["identity_from"] == "meta/trials" and attrs["dataset"] == "mydata"
    assert list(converter.open_mice([tmp_path / "m.zarr"]).children) == ["90000-1-1"]
    (renamed / "meta/trials/session.npy").unlink()  # the meta arrays no longer say: the name decides
    attrs = xr.open_zarr(converter.convert(renamed, tmp_path / "n.zarr", progress=False)).attrs
    assert attrs["data_key"] == "mydata" and attrs["identity_from"] == "name" and "animal_id" not in attrs


def test_a_neuron_file_named_like_a_trial_coordinate_keeps_tier_for_trials(dataset_copy, tmp_path):
    folder = dataset_copy()
    n = len(np.load(folder / "meta/neurons/unit_ids.npy"))
    np.save(folder / "meta/neurons/tier.npy", np.array(["deep", "superficial"] * (n // 2) + ["deep"] * (n % 2)))
    store = converter.convert(folder, tmp_path / "m.zarr", progress=False)
    ds = converter.open_mouse(store)
    assert ds["tier"].dims == ("trial",) and ds["neuron_tier"].dims == ("neuron",)
    assert set(ds.sensorium.tier("train")["tier"].values.tolist()) == {"train"}
    assert converter.verify(folder, store).ok
    assert tree_hashes(converter.export(store, tmp_path / "out")) == tree_hashes(folder)


def test_consolidated_metadata_equals_zarr_python_s(make_store, tmp_path):
    import shutil
    import warnings

    store = tmp_path / "m.zarr"
    shutil.copytree(make_store(), store)
    ours = (store / "zarr.json").read_bytes()
    with warnings.catch_warnings():  # this test's own call of zarr's function warns; converting does not
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(store), zarr_format=3)
    assert (store / "zarr.json").read_bytes() == ours


def test_converting_and_reading_emit_no_warning(make_dataset, tmp_path, recwarn):
    store = converter.convert(make_dataset(), tmp_path / "m.zarr", progress=False)
    converter.open_mouse(store).responses.values
    xr.open_zarr(store).responses.values
    assert [str(w.message) for w in recwarn] == []


def test_executor_is_one_parameter(make_dataset, tmp_path):
    import pickle

    from converter.write.executors import BlockWriter

    src = make_dataset()
    seen = []

    def serial(task, blocks, progress):  # any callable mapping the task over blocks is an executor
        for b in blocks:
            task = pickle.loads(pickle.dumps(task))  # as a process pool or a cluster would ship it
            assert isinstance(task, BlockWriter)
            seen.append(b)
            yield task(b, progress)

    store = converter.convert(src, tmp_path / "a.zarr", executor=serial, progress=False)
    assert seen and converter.verify(src, store).ok
    assert converter.verify(src, converter.convert(src, tmp_path / "b.zarr", executor=1, progress=False)).ok
    with pytest.raises(TypeError, match="executor must be"):
        converter.convert(src, tmp_path / "c.zarr", executor="threads")
    with pytest.raises(ValueError, match="at least 1"):
        converter.convert(src, tmp_path / "d.zarr", executor=0)
    assert not (tmp_path / "c.zarr").exists() and not (tmp_path / "c.zarr.incomplete").exists()


@pytest.mark.parametrize("kind", [{}, {"image_dtype": "uint8"}, {"video": True, "trials": 40, "neurons": 30, "frames": 33}])
def test_the_skeleton_is_what_xarray_writes(make_dataset, tmp_path, kind):
    """The skeleton is written with zarr-python alone (xarray, pandas and dask cost ~0.6 s of a
    conversion's start), yet every object of it, metadata and chunks, is byte for byte what
    ``xarray.Dataset.to_zarr`` writes of the same values: the coordinates and statistics as numpy
    arrays, the arrays filled later (data, their trial-major copies, the flags, the bytes of other
    files) as dask arrays with ``compute=False``."""
    import asyncio

    import dask.array as da
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    from converter.source import open_source
    from converter.write import store as S
    from converter.write.layout import row_copy, write_chunks
    from converter.write.plan import plan

    src = tmp_path / "src"
    shutil.copytree(make_dataset(**kind), src)
    (src / "config.json").write_text('{"a": 1}')
    (src / "meta" / "notes.txt").write_bytes(bytes(range(256)) * 3)
    source = open_source(src)
    p = plan(source)
    files = {rel: source.size(rel) for rel in p.inventory.other_files}
    assert files
    path = tmp_path / "skeleton.zarr"
    S.create_skeleton(path, p.data_vars, p.order, p.neuron_coord, p.meta, p.labels, p.statistics, files, n_frames=p.n_frames)
    meta = lambda rel: json.loads((path / rel / "zarr.json").read_text())  # noqa: E731
    opened = xr.open_zarr(path, consolidated=False, decode_times=False, decode_timedelta=False, mask_and_scale=False)
    flags = [n for n in opened.coords if n.endswith("_withheld") or n == "n_frames"]
    assert len(flags) == len(p.data_vars) + ("video" in kind)

    def lazy(name, dims, shape, dtype, chunks):
        return xr.Variable(dims, da.zeros(shape, dtype=dtype, chunks=chunks), meta(name)["attributes"])

    coords = {n: opened[n].variable.load() for n in opened.coords if n not in flags}
    for n in flags:
        coords[n] = lazy(n, opened[n].dims, opened[n].shape, opened[n].dtype, -1)
    data = {k: lazy(k, v.dims, v.shape, v.dtype, write_chunks(v)) for k, v in p.data_vars.items()}
    for var in data.values():
        var.attrs.pop("coordinates", None)
    ref = MemoryStore()
    opts = {"zarr_format": 3, "consolidated": False, "mode": "a"}
    xr.Dataset(data, coords=coords).to_zarr(ref, compute=False, **{**opts, "mode": "w"},
                                            encoding={**{k: {"_FillValue": None, **S._encoding(v)} for k, v in p.data_vars.items()},
                                                      **{n: {"_FillValue": None, **S.small()} for n in coords}})
    for k, v in p.data_vars.items():
        c = row_copy(v)
        if c is not None:
            group, name = c.path.rsplit("/", 1)
            xr.Dataset({name: lazy(c.path, c.dims, c.shape, c.dtype, write_chunks(c))}).to_zarr(
                ref, group=group, compute=False, **opts, encoding={name: {"_FillValue": None, **S._encoding(c)}})
    for group in {s.name.rsplit("/", 1)[0] for s in p.statistics}:
        stats = xr.open_zarr(path, group=group, consolidated=False, decode_times=False, decode_timedelta=False, mask_and_scale=False)
        stats = xr.Dataset({n: v.variable.load() for n, v in stats.data_vars.items()})
        stats.to_zarr(ref, group=group, **opts, encoding={n: {"_FillValue": None, **S.small()} for n in stats.data_vars})
    fds = xr.open_zarr(path, group="files", consolidated=False, decode_times=False, decode_timedelta=False, mask_and_scale=False)
    fds = xr.Dataset({n: fds[n].variable.load() for n in ("offset", "size")}, coords={"path": fds["path"].variable.load()})
    fds["bytes"] = lazy("files/bytes", ("byte",), (int(sum(files.values())),), np.uint8, 2**20)
    fds["crc32"] = lazy("files/crc32", ("file",), (len(files),), np.uint32, -1)
    fds.to_zarr(ref, group="files", compute=False, **opts,
                encoding={n: {"_FillValue": None, **S.small(), "chunks": (max(1, min(v.size, S._FILE_CHUNK)),)} for n, v in fds.variables.items()})
    for name in ("checksums", "checksums/data"):
        zarr.open_group(ref, path=name, mode="a", zarr_format=3)

    async def objects():
        return {k: (await ref.get(k, default_buffer_prototype())).to_bytes() async for k in ref.list()}

    expected = asyncio.run(objects())
    written = {str(f.relative_to(path)): f.read_bytes() for f in path.rglob("*") if f.is_file()}
    assert sorted(written) == sorted(expected)
    for rel, data in expected.items():
        assert written[rel] == data, rel
    assert "coordinates" in meta(next(iter(p.data_vars)))["attributes"]


@pytest.mark.parametrize("kind", [{}, {"video": True, "trials": 12, "neurons": 5, "frames": 20}])
def test_a_conversion_imports_neither_xarray_nor_dask(make_dataset, tmp_path, kind):
    """Converting on this machine's cores needs neither (xarray, pandas and dask cost ~0.6 s of
    imports here, and seconds more where CuPy or SciPy are installed); only a dask cluster brings
    dask in."""
    import subprocess
    import sys

    code = ("import sys, converter; converter.convert(sys.argv[1], sys.argv[2], progress=False); "
            "print(sorted(m for m in ('xarray', 'pandas', 'dask', 'distributed', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(make_dataset(**kind)), str(tmp_path / "m.zarr")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
