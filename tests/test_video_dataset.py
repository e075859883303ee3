"""The clip dataset of Sensorium 2023 stores against an independent oracle of the official chain."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from converter.torch import VideoDataset, loaders, video_loaders  # noqa: E402

from .conftest import CLIP_KEYS as KEYS  # noqa: E402
from .conftest import CLIPS, load_source  # noqa: E402


def official(folder, i: int, frames: int, offset: int, behavior: bool, pupil: bool) -> dict[str, np.ndarray]:
    """One item as ``mouse_video_loader`` builds it from the files, step by step:
    NeuroNormalizer, CutVideos(max_frame=None), ChangeChannelsOrder, Subsequence at ``offset``,
    ChangeChannelsOrder back, ExpandChannels, AddBehaviorAsChannels, AddPupilCenterAsChannels,
    ToTensor.  Written from the published transforms, not from our code."""
    x = {k: load_source(folder, f"data/{k}/{i}.npy") for k in KEYS}

    def stat(key, s):
        return load_source(folder, f"meta/statistics/{key}/all/{s}.npy")

    s = stat("responses", "std")
    threshold = 0.01 * np.nanmean(s)
    precision = np.ones_like(s) / threshold
    precision[s > threshold] = 1 / s[s > threshold]
    x["videos"] = (x["videos"] - stat("videos", "mean")[()]) / stat("videos", "std")[()]
    x["responses"] = x["responses"] * precision
    x["behavior"] = (x["behavior"] - 0) * (1 / stat("behavior", "std"))
    x["pupil_center"] = (x["pupil_center"] - stat("pupil_center", "mean")) / stat("pupil_center", "std")
    ends = []
    for v in x.values():
        nans = np.argwhere(np.isnan(v))[:, -1]
        ends.append(nans.min() if nans.size else v.shape[-1])
    keep = np.arange(0, min(ends))
    x = {k: np.take(v, keep, -1) for k, v in x.items()}
    x["videos"] = x["videos"].transpose(2, 0, 1)
    for k in ("responses", "behavior", "pupil_center"):
        x[k] = x[k].transpose(1, 0)
    assert offset + frames <= len(keep)
    x = {k: v[offset : offset + frames, ...] for k, v in x.items()}
    for k in ("responses", "behavior", "pupil_center"):
        x[k] = x[k].transpose(1, 0)
    img = np.expand_dims(x["videos"], axis=0)
    for flag, k in ((behavior, "behavior"), (pupil, "pupil_center")):
        if flag:
            shape_changer = np.ones((1, *img.shape[1:]))
            img = np.concatenate((img, shape_changer * np.expand_dims(x[k], axis=(2, 3))), axis=0)
    x["videos"] = img
    return {k: v.astype(np.float32) for k, v in x.items()}


@pytest.mark.parametrize("behavior, pupil", [(True, False), (True, True), (False, False)])
def test_items_at_a_fixed_offset_equal_the_official_chain(clips, clip_store, behavior, pupil):
    ds = VideoDataset(clip_store, frames=12, offset=5, behavior_channels=behavior, pupil_channels=pupil)
    assert len(ds) + len(ds.skipped) == CLIPS["trials"]
    for j in range(len(ds)):
        item, ref = ds[j], official(clips, int(ds.trial_ids[j]), 12, 5, behavior, pupil)
        assert list(item) == list(KEYS)
        for k in KEYS:
            assert item[k].dtype == torch.float32
            np.testing.assert_array_equal(item[k].numpy(), ref[k], err_msg=f"{k} of trial {ds.trial_ids[j]}")


def test_random_windows_are_valid_reproducible_and_reach_the_last_frame(clips, clip_store):
    frames = 20
    a = VideoDataset(clip_store, frames=frames, seed=3, behavior_channels=True)
    b = VideoDataset(clip_store, frames=frames, seed=3, behavior_channels=True)
    seen = set()
    for _ in range(12):
        idx = np.arange(len(a))
        starts = a.offsets(idx)
        assert (starts >= 0).all() and (starts + frames <= a.n_frames).all()
        np.testing.assert_array_equal(starts, b.offsets(idx))
        seen |= set((starts == a.n_frames - frames).nonzero()[0].tolist())
    assert seen  # the last window that fits is drawn too
    got = a.batch([0, 1, 2], offsets=[0, 3, 1])
    for j, s in zip(range(3), (0, 3, 1)):
        ref = official(clips, int(a.trial_ids[j]), frames, s, True, False)
        for k in KEYS:
            np.testing.assert_array_equal(got[k][j], ref[k])
    one = VideoDataset(clip_store, frames=frames, seed=5)
    item = one[4]
    n = int(one.n_frames[4])
    matches = [s for s in range(n - frames + 1)
               if np.array_equal(item["responses"].numpy(), official(clips, int(one.trial_ids[4]), frames, s, False, False)["responses"])]
    assert len(matches) == 1


def test_short_trials_are_skipped_and_raw_items_are_the_files(clips, clip_store):
    ds = VideoDataset(clip_store, frames=33, offset=0, normalize=False, tier="train")
    assert len(ds.skipped) > 0 and set(ds.skipped.tolist()).isdisjoint(ds.trial_ids.tolist())
    for j in range(len(ds)):
        i = int(ds.trial_ids[j])
        assert int(ds.n_frames[j]) == 33
        np.testing.assert_array_equal(ds[j]["responses"].numpy(), load_source(clips, f"data/responses/{i}.npy"))
        np.testing.assert_array_equal(ds[j]["videos"].numpy()[0], load_source(clips, f"data/videos/{i}.npy").transpose(2, 0, 1))


def test_video_loaders_like_the_official_one(clip_store):
    out = video_loaders([clip_store], 4, frames=15, seed=0)
    assert video_loaders(clip_store, 4, frames=15, seed=0).keys() == out.keys()  # one path is one store
    data_key = next(iter(out["train"]))
    assert set(out) == {"train", "oracle", "live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus", "none"}
    batch = next(iter(out["train"][data_key]))
    assert batch["videos"].shape == (4, 3, 15, 36, 64) and batch["responses"].shape == (4, 30, 15)
    assert batch["behavior"].shape == batch["pupil_center"].shape == (4, 2, 15)
    oracle = out["oracle"][data_key]
    order = [int(i) for i in oracle.sampler]
    assert order == sorted(order)  # in file order
    ids = [int(u) for u in oracle.dataset.unit_ids[[3, 1]]]
    sub = video_loaders([clip_store], 2, frames=15, neuron_ids=[ids], tier="train", include_behavior=False,
                        include_pupil_centers=False)
    b = next(iter(sub["train"][data_key]))
    assert set(b) == {"videos", "responses"} and b["videos"].shape[1] == 1 and b["responses"].shape[1] == 2
    via = loaders([clip_store], batch_size=4, frames=15, tier="train", seed=0)
    assert set(via) == {"train"}
    with pytest.raises(ValueError, match="applies to image scans only"):
        loaders([clip_store], batch_size=4, image_ids=[[1]])


def test_multi_worker_loading(clip_store):
    out = video_loaders([clip_store], 4, frames=10, tier="train", num_workers=2, multiprocessing_context="spawn")
    n = sum(b["responses"].shape[0] for b in next(iter(out["train"].values())))
    assert n == len(next(iter(out["train"].values())).sampler)


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("seed", [None, 1])
@pytest.mark.parametrize("kind", ["2022", "2023"])
def test_every_start_method_seed_and_kind(make_store, clip_store, context, seed, kind):
    """Workers under every start method, with and without a seed, for both kinds of loader; with a
    seed, two runs give the same batches (a torch generator is never pickled into a worker)."""
    def epoch():
        if kind == "2022":
            dls = loaders([make_store()], batch_size=8, tier="train", seed=seed, num_workers=2, multiprocessing_context=context)
        else:
            dls = video_loaders([clip_store], 4, frames=10, tier="train", seed=seed, num_workers=2, multiprocessing_context=context)
        return [b["responses"] for b in next(iter(dls["train"].values()))]  # the whole epoch: workers shut down cleanly

    a = epoch()
    assert len(a) >= 2 and all(x.shape[0] > 0 for x in a)
    if seed is not None:
        b = epoch()
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_two_stores_of_one_mouse_are_refused(make_store, clip_store, tmp_path):
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(make_store(), copy)
    with pytest.raises(ValueError, match=r"copy.zarr: holds data key '.*', as .* does; give each mouse once"):
        loaders([make_store(), copy], batch_size=4)
    clip_copy = tmp_path / "clips.zarr"
    shutil.copytree(clip_store, clip_copy)
    with pytest.raises(ValueError, match="give each mouse once"):
        video_loaders([clip_store, clip_copy], 4, frames=10)
