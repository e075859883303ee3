"""The pure layout decisions, checked without any I/O."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.kinds import VIDEO
from converter.write import layout


@pytest.mark.parametrize(
    "key, shape, dims",
    [
        ("images", (1, 144, 256), ("trial", "channel", "height", "width")),
        ("images", (144, 256), ("trial", "height", "width")),
        ("responses", (7776,), ("trial", "neuron")),
        ("behavior", (3,), ("trial", "behavior_variable")),
        ("behavior", (1, 3), ("trial", "behavior_dim_0", "behavior_dim_1")),  # the readme's "1 x 3"
        ("pupil_center", (2,), ("trial", "pupil_axis")),
        ("videos", (36, 64, 300), ("trial", "videos_dim_0", "videos_dim_1", "videos_dim_2")),  # unknown key
    ],
)
def test_data_dims(key, shape, dims):
    assert layout.data_dims(key, shape) == dims


@pytest.mark.parametrize(
    "key, n, shape, dtype, chunks, shards",
    [
        ("images", 6955, (1, 144, 256), ">f4", (1, 1, 144, 256), (1024, 1, 144, 256)),  # one trial per inner chunk
        ("images", 6955, (1, 144, 256), "u1", (1, 1, 144, 256), (1024, 1, 144, 256)),
        ("images", 10, (1, 144, 256), "<f4", (1, 1, 144, 256), (10, 1, 144, 256)),  # never more trials than exist
        ("responses", 6955, (7776,), "<f4", (1024, 512), None),  # tiles, plus the by_trial copy
        ("responses", 60, (40,), "<f4", (60, 40), None),
        ("behavior", 6955, (3,), "<f4", (1024, 3), None),  # small: chunks of a write block
        ("videos", 100, (36, 64, 300), "<f4", (1, 36, 64, 300), (100, 36, 64, 300)),
    ],
)
def test_chunks(key, n, shape, dtype, chunks, shards):
    v = layout.plan_data_var(key, n, shape, np.dtype(dtype))
    assert v.chunks == chunks and v.shards == shards
    assert v.dtype == np.dtype(dtype).newbyteorder("=").str and v.source_dtype == np.dtype(dtype).str
    outer = layout.write_chunks(v)[0]
    assert layout.BLOCK_TRIALS % outer == 0 or outer == n  # blocks own whole chunks and shards
    copy = layout.row_copy(v)
    assert (copy is not None) == (key == "responses")
    if copy is not None:
        assert copy.path == "by_trial/responses" and copy.chunks == (1, *shape) and copy.shards == (v.chunks[0], *shape)


# (tiers, image ids) -> stored order; each row a case the README promises
@pytest.mark.parametrize(
    "tiers, ids, expected",
    [
        (["test", "train", "validation", "train"], [5, 3, 1, 2], [3, 1, 2, 0]),  # train, validation, test
        (["final_test", "test", "oracle", "train"], [1, 1, 1, 1], [3, 1, 0, 2]),  # unknown tiers last, by name
        (["test", "test", "test"], [7, 7, 2], [2, 0, 1]),  # repeats of an image together, then file order
        ([b"train", b"test"], [0, 0], [0, 1]),  # bytes tiers
    ],
)
def test_trial_order(tiers, ids, expected):
    order = layout.trial_order(np.array(tiers), np.array(ids))
    assert order.tolist() == expected


@given(st.lists(st.tuples(st.sampled_from(["train", "validation", "test", "final_test", "none"]), st.integers(0, 5)), min_size=1, max_size=200))
def test_trial_order_is_a_clustering_permutation(rows):
    tiers, ids = np.array([t for t, _ in rows]), np.array([i for _, i in rows])
    order = layout.trial_order(tiers, ids)
    assert sorted(order.tolist()) == list(range(len(rows)))
    runs = [t for k, t in enumerate(tiers[order]) if k == 0 or tiers[order][k - 1] != t]
    assert len(runs) == len(set(runs))  # each tier one contiguous run
    for t in set(runs):  # within a tier: image ids ascending, then file numbers ascending
        keys = [(ids[i], i) for i in order if tiers[i] == t]
        assert keys == sorted(keys)
    values = np.arange(len(rows)) * 10
    np.testing.assert_array_equal(layout.to_file_order(values[order], order), values)


def test_codec_choice():
    assert layout.codec_for("images", np.dtype("f4")).shuffle == "bitshuffle"
    assert layout.codec_for("images", np.dtype("u1")).shuffle == "noshuffle"
    assert layout.codec_for("responses", np.dtype("f4")).shuffle == "shuffle"


@given(st.integers(1, 20_000))
def test_blocks_partition_the_trials_on_chunk_boundaries(n):
    bs = layout.blocks(n)
    assert [i for b in bs for i in b] == list(range(n))
    assert all(b.start % layout.BLOCK_TRIALS == 0 for b in bs)


@pytest.mark.parametrize(
    "trials, neurons, keys, expected",
    [
        # the documented renames; unit_ids becomes the neuron dimension coordinate
        (("tiers", "frame_image_id", "trial_idx"), ("unit_ids", "area"), ("responses",),
         {"meta/trials/tiers": "tier", "meta/trials/frame_image_id": "image_id", "meta/trials/trial_idx": "trial_idx",
          "meta/neurons/unit_ids": "neuron", "meta/neurons/area": "area"}),
        # the same name in both folders gets a prefix on both sides
        (("scan_idx",), ("scan_idx",), (), {"meta/trials/scan_idx": "trial_scan_idx", "meta/neurons/scan_idx": "neuron_scan_idx"}),
        # a meta file named like a data variable, a dimension or a withheld flag
        (("responses", "neuron", "images_withheld"), ("trial", "channel"), ("responses", "images"),
         {"meta/trials/responses": "trial_responses", "meta/trials/neuron": "trial_neuron",
          "meta/trials/images_withheld": "trial_images_withheld", "meta/neurons/trial": "neuron_trial",
          "meta/neurons/channel": "neuron_channel"}),
    ],
)
def test_coord_names(trials, neurons, keys, expected):
    assert layout.coord_names(trials, neurons, keys) == expected


def test_meta_dims():
    assert layout.meta_dims("cell_motor_coordinates", "neuron", (5, 3)) == ("neuron", "xyz")
    assert layout.meta_dims("cell_motor_coordinates", "neuron", (5, 2)) == ("neuron", "cell_motor_coordinates_dim_1")
    assert layout.meta_dims("thing", "trial", (5, 2, 4)) == ("trial", "thing_dim_1", "thing_dim_2")


RESPONSES = layout.plan_data_var("responses", 10, (7,), np.dtype("f4"))
IMAGES = layout.plan_data_var("images", 10, (1, 144, 256), np.dtype("f4"))
CLIP_RESPONSES = layout.plan_data_var("responses", 10, (7, 300), np.dtype("f4"), kind=VIDEO)
VIDEO_CLIPS = layout.plan_data_var("videos", 10, (36, 64, 300), np.dtype("f4"), kind=VIDEO)


@pytest.mark.parametrize(
    "name, shape, data, dims",
    [
        # 1. the trial's own shape
        ("responses/all/mean", (7,), RESPONSES, ("neuron",)),
        ("images/all/mean", (1, 144, 256), IMAGES, ("channel", "height", "width")),
        ("responses/all/std", (7, 300), CLIP_RESPONSES, ("neuron", "frame")),
        # 2. the same rank, reduced axes kept with length 1
        ("responses/all/std", (7, 1), CLIP_RESPONSES, ("neuron", "responses_frame_reduced")),
        ("images/all/mean", (1, 1, 1), IMAGES, ("channel", "images_height_reduced", "images_width_reduced")),
        ("videos/all/mean", (1, 1, 300), VIDEO_CLIPS, ("videos_height_reduced", "videos_width_reduced", "frame")),
        # 3. a clip's statistic reduced over trials and frames: (n_neurons,)
        ("responses/all/std", (7,), CLIP_RESPONSES, ("neuron",)),
        ("videos/all/mean", (36, 64), VIDEO_CLIPS, ("height", "width")),
        # 4. the trial's last axes, as numpy broadcasts them
        ("images/all/mean", (144, 256), IMAGES, ("height", "width")),
        ("videos/all/mean", (300,), VIDEO_CLIPS, ("frame",)),
        # a scalar
        ("images/all/mean", (), IMAGES, ()),
        ("images/all/mean", (), None, ()),
        # 5. anything else, named after its own file so that no two statistics share a dim by accident
        ("images/all/mean", (7,), IMAGES, ("images_all_mean_dim_0",)),
        ("responses/all/max", (8,), RESPONSES, ("responses_all_max_dim_0",)),
        ("behavior/Stimulus_Frame/std", (3,), None, ("behavior_Stimulus_Frame_std_dim_0",)),
    ],
)
def test_stat_dims(name, shape, data, dims):
    assert layout.stat_dims(f"statistics/{name}", shape, data) == dims


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("static26872-17-20-GrayImageNet-94c6ff995dac583098847cfecd43e7b6",
         {"data_key": "26872-17-20", "animal_id": 26872, "session": 17, "scan_idx": 20}),
        ("my_own_scan", {"data_key": "my_own_scan"}),
    ],
)
def test_parse_name(name, parsed):
    assert parsed.items() <= layout.parse_name(name).items()
