"""Sensorium 2023 (video) scans: the sample, conversion, checks, reading and the clip dataset."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import converter
from converter import contract
from converter.kinds import VIDEO
from converter.write import layout

from .conftest import CLIP_KEYS as KEYS
from .conftest import CLIPS, bits, load_source, run_cli


@pytest.fixture(scope="module")
def many_blocks(clips, tmp_path_factory):
    """The same scan converted in blocks of a few trials (a small memory budget per block)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(layout, "BLOCK_TARGET_BYTES", 2 * 2**20)
    try:
        return converter.convert(clips, tmp_path_factory.mktemp("blocks") / "m.zarr", progress=False)
    finally:
        mp.undo()


def first_nan(a: np.ndarray) -> int:
    """Frames before the first frame (last axis) holding a NaN: written out independently here."""
    for t in range(a.shape[-1]):
        if np.isnan(a[..., t]).any():
            return t
    return a.shape[-1]


def test_sample_has_the_release_layout(clips):
    assert clips.name.startswith("dynamic") and "-Video-" in clips.name
    tiers = load_source(clips, "meta/trials/tiers.npy")
    assert set(tiers.tolist()) == set(contract.VIDEO_TIERS)
    assert not (clips / "meta/trials/frame_image_id.npy").exists()
    lengths = []
    for i in range(CLIPS["trials"]):
        v = load_source(clips, f"data/videos/{i}.npy")
        r = load_source(clips, f"data/responses/{i}.npy")
        assert v.shape == (36, 64, 33) and r.shape == (30, 33)
        assert load_source(clips, f"data/behavior/{i}.npy").shape == load_source(clips, f"data/pupil_center/{i}.npy").shape == (2, 33)
        n = first_nan(v)
        assert np.isnan(v[..., n:]).all() and not np.isnan(v[..., :n]).any()
        if tiers[i].endswith(("_main", "_bonus")):
            assert not r.any()  # zero-filled dummies
        lengths.append(n)
    assert min(lengths) < 33 == max(lengths)  # padded trials and full ones
    assert load_source(clips, "meta/statistics/responses/all/std.npy").shape == (30, 1)


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<f2", "<c8"])
def test_withheld_flag_is_every_value_zero_or_padding(dtype):
    """A clip is withheld when every value is zero or NaN (its padding); anything else, an
    infinity or the smallest subnormal among NaN included, is data."""
    from converter.write.block import _withheld

    rows = np.zeros((9, 2, 6), dtype=dtype)
    rows[1] = np.nan
    rows[2, :, 4:] = np.nan
    rows[3] = -0.0
    rows[4, 1, 2] = np.inf
    rows[5] = np.nan
    rows[5, 0, 0] = np.finfo(rows.real.dtype).smallest_subnormal
    rows[6, 0, 0] = -1
    rows[7, 1, 5] = np.nan
    rows[7, 0, 3] = -np.inf
    rows[8] = np.arange(12).reshape(2, 6)
    expected = [True, True, True, True, False, False, False, False, False]
    assert _withheld(rows, padded=True).tolist() == expected
    assert _withheld(rows, padded=False).tolist() == [True, False, False, True, False, False, False, False, False]


def test_converted_store_is_lossless_with_frame_axis_and_n_frames(clips, clip_store):
    ds = xr.open_zarr(clip_store)
    assert ds.attrs["schema_version"] == contract.VIDEO_SCHEMA_VERSION and ds.attrs["n_frames_padded"] == 33
    assert ds.videos.dims == ("trial", "height", "width", "frame")
    assert ds.responses.dims == ("trial", "neuron", "frame")
    assert ds.behavior.dims == ("trial", "behavior_variable", "frame")
    assert list(ds.behavior_variable.values) == ["pupil_dilation", "running_speed"]
    assert ds.frame_time.values[30] == pytest.approx(1.0) and ds.frame_time.attrs["units"] == "s"
    for i in (0, 7, 39):
        row = ds.sel(trial=i)
        for key in KEYS:
            assert bits(row[key].values) == bits(load_source(clips, f"data/{key}/{i}.npy"))  # NaN padding too
        assert int(row.n_frames) == first_nan(load_source(clips, f"data/videos/{i}.npy"))
    tiers = ds.tier.values
    dummies = np.array([t.endswith(("_main", "_bonus")) for t in tiers.tolist()])
    assert (ds.responses_withheld.values == dummies).all() and not ds.videos_withheld.values.any()
    assert list(dict.fromkeys(tiers.tolist())) == [t for t in contract.VIDEO_TIERS if t in set(tiers.tolist())]  # clustered by tier


def test_zip_and_folder_give_the_same_store_and_the_zip_comes_back(make_dataset, make_store, clip_store, tmp_path):
    import zipfile

    zipped = make_store(as_zip=True, **CLIPS)
    a, b = converter.open_mouse(clip_store), converter.open_mouse(zipped)
    assert a.attrs["source_fingerprint"] == b.attrs["source_fingerprint"]
    for key in KEYS:
        assert bits(a[key].values) == bits(b[key].values)
    out = converter.export(zipped, tmp_path / "back", as_zip=True, progress=False)
    with zipfile.ZipFile(make_dataset(as_zip=True, **CLIPS)) as src, zipfile.ZipFile(out) as got:
        assert sorted(got.namelist()) == sorted(src.namelist())
        assert all(got.read(n) == src.read(n) for n in src.namelist())


def test_many_blocks_same_arrays_verify_export_round_trip(clips, clip_store, many_blocks, tmp_path):
    one, many = converter.open_mouse(clip_store), converter.open_mouse(many_blocks)
    meta = json.loads((many_blocks / "videos" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"][0] <= 8  # five blocks or more
    for key in (*KEYS, "n_frames", "responses_withheld"):
        assert bits(one[key].values) == bits(many[key].values), key
    assert converter.verify(clips, many_blocks, progress=False).ok
    assert converter.self_check(many_blocks, progress=False).ok
    out = converter.export(many_blocks, tmp_path / "out", progress=False)
    for f in clips.rglob("*"):
        if f.is_file():
            assert (out / f.relative_to(clips)).read_bytes() == f.read_bytes(), f


def test_verify_finds_a_wrong_n_frames(clips, tmp_path):
    store = converter.convert(clips, tmp_path / "m.zarr", progress=False)
    import zarr

    a = zarr.open_array(str(store / "n_frames"), mode="r+")
    values = a[...]
    values[3] -= 1
    a[...] = values
    report = converter.verify(clips, store, progress=False)
    assert not report.ok and any("n_frames" in m for m in report.mismatches)


def test_cli_sample_convert_info_validate(tmp_path):
    r = run_cli("sample", tmp_path, "--video", "--trials", "30", "--neurons", "8", "--frames", "25", "--zip", "--quiet")
    assert r.returncode == 0, r.stderr
    src = Path(r.stdout.strip())
    assert src.suffix == ".zip" and src.name.startswith("dynamic")
    assert run_cli("convert", src, tmp_path / "m.zarr", "--quiet").returncode == 0
    r = run_cli("info", tmp_path / "m.zarr")
    assert r.returncode == 0 and "frames per clip: 25 at 30 Hz" in r.stdout
    r = run_cli("validate", tmp_path / "m.zarr")
    assert r.returncode == 0 and converter.contract.VIDEO_SCHEMA_VERSION in r.stdout
    r = run_cli("verify", src, tmp_path / "m.zarr")
    assert r.returncode == 0, r.stderr


def test_info_gives_the_clip_lengths_the_store_holds(clip_store, monkeypatch):
    """Read without zarr-python, or through it where our reader leaves the layout out: the same."""
    import converter.zarrlite

    n = xr.open_zarr(clip_store).n_frames.values
    want = {"valid_min": int(n.min()), "valid_median": float(np.median(n)), "valid_max": int(n.max())}
    assert want["valid_min"] < want["valid_max"]  # padded clips and whole ones
    assert {k: converter.info(clip_store)["frames"][k] for k in want} == want
    monkeypatch.setattr(converter.zarrlite, "read_coordinates", lambda *a: {})
    assert {k: converter.info(clip_store)["frames"][k] for k in want} == want


def test_plain_xarray_reads_it_without_our_package(clip_store):
    code = ("import sys, xarray as xr, numpy as np; ds = xr.open_zarr(sys.argv[1]); "
            "assert 'converter' not in sys.modules; "
            "v = ds.responses.where(ds.frame < ds.n_frames); print(ds.videos.dims, int(np.isnan(v.values).sum()))")
    r = subprocess.run([sys.executable, "-c", code, str(clip_store)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "('trial', 'height', 'width', 'frame')" in r.stdout


def _bad(dataset_copy, change) -> subprocess.CompletedProcess:
    src = dataset_copy(**CLIPS)
    change(src)
    return src, run_cli("convert", src, src.parent / "out.zarr")


@pytest.mark.parametrize("case", ["short clip", "0-d video", "frames differ between folders", "no tiers"])
def test_bad_clips_are_one_line_errors(dataset_copy, case):
    def change(src):
        if case == "short clip":
            v = np.load(src / "data/videos/5.npy")
            np.save(src / "data/videos/5.npy", v[..., :20])
        elif case == "0-d video":
            for i in range(CLIPS["trials"]):
                np.save(src / f"data/videos/{i}.npy", np.float32(0))
        elif case == "frames differ between folders":
            for i in range(CLIPS["trials"]):
                np.save(src / f"data/behavior/{i}.npy", np.zeros((2, 30), np.float32))
        else:
            (src / "meta/trials/tiers.npy").unlink()

    src, r = _bad(dataset_copy, change)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    expected = {"short clip": "data/videos/5.npy", "0-d video": "data/videos/0.npy",
                "frames differ between folders": "data/behavior/0.npy", "no tiers": "meta/trials/tiers.npy"}[case]
    assert expected in lines[0]
    assert not (src.parent / "out.zarr").exists()


def test_a_clip_of_another_rank_is_recorded_as_found(dataset_copy, tmp_path):
    """Only the frame axis, last, is fixed: a (height, frames) clip converts, its other axis named after it."""
    src = dataset_copy(**CLIPS)
    for i in range(CLIPS["trials"]):
        v = np.load(src / f"data/videos/{i}.npy")
        np.save(src / f"data/videos/{i}.npy", v[0])
    store = converter.convert(src, tmp_path / "out.zarr", progress=False)
    ds = converter.open_mouse(store)
    assert ds.videos.dims == ("trial", "videos_dim_0", "frame")
    assert converter.verify(src, store).ok


def test_layout_decisions_for_a_full_size_scan():
    per_trial = {"videos": ((36, 64, 300), 4), "responses": ((7900, 300), 4), "behavior": ((2, 300), 4), "pupil_center": ((2, 300), 4)}
    block = layout.block_trials(sum(int(np.prod(s)) * n for s, n in per_trial.values()))
    assert block * sum(int(np.prod(s)) * n for s, n in per_trial.values()) <= layout.BLOCK_TARGET_BYTES
    assert block >= 16
    assert layout.block_trials(144 * 256 * 4 + 7776 * 4 + 20) == layout.BLOCK_TRIALS  # a 2022 scan keeps its blocks
    resp = layout.plan_data_var("responses", 720, (7900, 300), np.dtype("<f4"), block, kind=VIDEO)
    assert resp.dims == ("trial", "neuron", "frame") and resp.shards is None
    assert resp.chunks[0] == block and resp.chunks[2] == 300
    assert np.prod(resp.chunks) * 4 <= layout.CLIP_TILE_BYTES
    copy = layout.row_copy(resp)
    assert copy.chunks == (1, 7900, layout.FRAME_CHUNK) and copy.shards == (block, 7900, 300)
    video = layout.plan_data_var("videos", 720, (36, 64, 313), np.dtype("<f4"), block, kind=VIDEO)
    assert video.chunks == (1, 36, 64, layout.FRAME_CHUNK) and video.shards == (block, 36, 64, 320)  # rounded up
    assert layout.data_dims("behavior", (2, 300), kind=VIDEO) == ("trial", "behavior_variable", "frame")
    assert layout.data_dims("other", (5, 300), kind=VIDEO) == ("trial", "other_dim_0", "frame")


def test_valid_masks_the_padding(clips, clip_store):
    ds = converter.open_mouse(clip_store)
    test = ds.sensorium.tier("live_test_main", "final_test_main")
    assert ds.sensorium.is_video and ds.isel(trial=[0]).sensorium.is_video
    v = ds.sensorium.valid()
    for i, n in enumerate(v.n_frames.values.tolist()):
        for key in KEYS:
            x = v[key].values[i]
            assert np.isnan(x[..., n:]).all() and not np.isnan(x[..., :n]).any(), (key, i)
    assert (test.responses.values == 0).all()  # dummies are zero in the padding too
    masked = test.sensorium.valid().responses.values
    for x, n in zip(masked, test.n_frames.values.tolist()):
        assert np.isnan(x[:, n:]).all() and (x[:, :n] == 0).all()
    with pytest.raises(ValueError, match="no n_frames coordinate"):
        ds.drop_vars("n_frames").sensorium.valid()


def test_normalize_matches_the_statistics(clip_store):
    ds = converter.open_mouse(clip_store).isel(trial=[0, 1])
    n = ds.sensorium.normalize()
    std = converter.read_statistics(clip_store)["responses"]["std"]
    raw = ds.responses.values
    assert np.allclose(n.responses.values, raw / std[None], equal_nan=True, rtol=1e-6)
    sub = ds.sensorium.neurons(unit_ids=ds.neuron.values[[4, 2]]).sensorium.normalize()
    assert np.allclose(sub.responses.values, raw[:, [4, 2]] / std[None, [4, 2]], equal_nan=True, rtol=1e-6)
    assert np.array_equal(ds.sensorium.standardize().responses.values, raw / std[None], equal_nan=True)  # (neuron, 1) std
    sub = ds.sensorium.neurons(unit_ids=ds.neuron.values[[4, 2]]).sensorium.standardize()
    assert np.array_equal(sub.responses.values, raw[:, [4, 2]] / std[None, [4, 2]], equal_nan=True)


def test_convert_all_takes_2022_and_2023_scans_together(make_dataset, tmp_path):
    import shutil

    (tmp_path / "in").mkdir()
    video, image = make_dataset(as_zip=True, **CLIPS), make_dataset(as_zip=True)
    for p in (video, image):
        shutil.copy(p, tmp_path / "in" / p.name)
    r = run_cli("convert-all", tmp_path / "in", tmp_path / "out", "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    versions = {json.loads((s / "zarr.json").read_text())["attributes"]["schema_version"] for s in (tmp_path / "out").glob("*.zarr")}
    assert versions == {contract.SCHEMA_VERSION, contract.VIDEO_SCHEMA_VERSION}
    assert converter.verify(video, tmp_path / "out" / f"{video.stem}.zarr", progress=False).ok
    tree = converter.open_mice(tmp_path / "out")
    assert len(tree.children) == 2


def test_image_only_readers_refuse_a_clip_store_in_one_line(clip_store, make_store):
    pytest.importorskip("torch")
    from converter.torch import VideoDataset, MouseDataset

    with pytest.raises(ValueError, match="VideoDataset"):
        MouseDataset(clip_store)
    with pytest.raises(ValueError, match="image"):
        VideoDataset(make_store())
    with pytest.raises(ValueError, match="image_id"):
        converter.open_mouse(clip_store).sensorium.images([1])
    with pytest.raises(ValueError, match="image_id"):
        converter.open_mouse(clip_store).sensorium.repeats()


def test_the_old_names_of_the_video_kind_still_work_and_say_what_replaces_them(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"make_sample\(video=...\)"):
        path = converter.make_sample(tmp_path / "a", trials=30, neurons=4, frames=8, dynamic=True)
    assert (path / "data/videos/0.npy").exists()
    r = run_cli("sample", tmp_path / "b", "--dynamic", "--trials", "30", "--neurons", "4", "--frames", "8", "--quiet")
    assert r.returncode == 0 and r.stderr.strip() == "sensorium-zarr: --dynamic is now --video; the old name goes in 1.0"
    assert next((tmp_path / "b").iterdir()).name == path.name
    if importlib.util.find_spec("torch") is not None:
        import converter.torch as ct

        with pytest.warns(DeprecationWarning, match="converter.torch.VideoDataset"):
            assert ct.ClipDataset is ct.VideoDataset
