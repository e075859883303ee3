"""Reading stores for analysis in xarray (no PyTorch needed): open_mice and ``ds.sensorium``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import converter

from .conftest import bits
from .reference import FileTreeReference

KEYS = ("images", "responses", "behavior", "pupil_center")


def test_package_works_without_torch():
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import converter\n"
        "try:\n    import converter.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pip install 'sensorium-zarr[torch]'" in r.stdout


def test_open_mice_children_match_open_mouse(make_store, tmp_path):
    stores = [make_store("none"), make_store("sensorium")]
    tree = converter.open_mice(stores)
    assert len(tree.children) == 2
    for s in stores:
        ds = converter.open_mouse(s)
        xr.testing.assert_identical(tree[ds.attrs["data_key"]].to_dataset(), ds)
    for s in stores:  # a folder of stores works too
        (tmp_path / s.parent.name).symlink_to(s, target_is_directory=True)
    assert set(converter.open_mice(tmp_path).children) == set(tree.children)


def test_xarray_selection_helpers(make_dataset, make_store):
    folder = make_dataset("sensorium")
    ds = converter.open_mouse(make_store("sensorium"))
    tiers = np.load(folder / "meta/trials/tiers.npy")
    ids = np.load(folder / "meta/trials/frame_image_id.npy")
    assert ds.sensorium.tier("train").sizes["trial"] == (tiers == "train").sum()
    assert ds.sensorium.tier("test", "final_test").sizes["trial"] == np.isin(tiers, ["test", "final_test"]).sum()
    one_test_image = ids[tiers == "test"][0]
    assert ds.sensorium.images(one_test_image).sizes["trial"] == (ids == one_test_image).sum() > 1
    v1 = ds.sensorium.neurons(area="V1", layer=["L2/3"])
    area, layer = np.load(folder / "meta/neurons/area.npy"), np.load(folder / "meta/neurons/layer.npy")
    assert v1.sizes["neuron"] == ((area == "V1") & (layer == "L2/3")).sum()
    picked = ds.sensorium.neurons(unit_ids=ds.neuron.values[[3, 1]])
    assert list(picked.neuron.values) == list(ds.neuron.values[[3, 1]])
    groups = ds.sensorium.repeats()
    assert len(groups.groups) == len(np.unique(ids[np.isin(tiers, ["test", "final_test"])]))
    assert groups.mean()["images"].sizes["image_id"] == len(groups.groups)
    masked = ds.sensorium.mask_withheld().sortby("trial")  # file order, as the arrays above
    assert np.isnan(masked.responses.values[np.isin(tiers, ["test", "final_test"])]).all()
    assert not np.isnan(masked.responses.values[tiers == "train"]).any()
    withheld = ds.sensorium.withheld("responses")  # by label: compared after sorting by file number
    assert withheld.sortby("trial").values.tolist() == np.isin(tiers, ["test", "final_test"]).tolist()
    assert not ds.sensorium.withheld("images").values.any() and not ds.sensorium.is_video
    plain = converter.open_mouse(make_store("none"))  # a scan that withholds nothing has no flags: all False
    assert "responses_withheld" not in plain.coords or not plain.responses_withheld.values.any()
    assert not plain.sensorium.withheld("responses").values.any()
    assert ds.drop_vars("responses_withheld").sensorium.withheld().sizes == {"trial": ds.sizes["trial"]}


@pytest.mark.parametrize("competition", ["none", "sensorium"])
def test_xarray_normalize_matches_reference_and_inverts(make_dataset, make_store, competition):
    folder = make_dataset(competition)
    ref = FileTreeReference(folder, *KEYS)
    ds = converter.open_mouse(make_store(competition))
    ds = ds.sortby("trial")  # file order, as the reference
    norm = ds.sensorium.normalize()
    for k in KEYS:
        assert bits(norm[k].values) == bits(np.stack([ref[i][k] for i in range(len(ref))])), k
    back = norm.sensorium.denormalize()
    np.testing.assert_allclose(back.responses.values, ds.responses.values, rtol=1e-6, atol=1e-6)
    assert back.images.dtype == np.float32  # as documented; integer sources come back exactly when rounded
    u8 = converter.open_mouse(make_store(competition, image_dtype="uint8"))
    again = u8.sensorium.normalize().sensorium.denormalize().images
    assert bits(again.round().astype(u8.images.attrs["source_dtype"]).values) == bits(u8.images.values)
    sub = ds.sensorium.neurons(area="LM").sensorium.normalize()
    lm = np.flatnonzero(np.load(folder / "meta/neurons/area.npy") == "LM")
    assert bits(sub.responses.values) == bits(np.stack([ref[i]["responses"][lm] for i in range(len(ref))]))
    std = np.load(folder / "meta/statistics/responses/all/std.npy")
    r = np.stack([np.load(folder / f"data/responses/{i}.npy") for i in range(len(ref))])
    assert bits(ds.sensorium.standardize().responses.values) == bits(r / std)


def test_an_unknown_tier_is_an_error_that_lists_the_tiers(make_store):
    ds = converter.open_mouse(make_store("none"))  # pre-training variant: no final_test
    with pytest.raises(ValueError, match=r"no tier 'bogus'.*\['test', 'train', 'validation'\]"):
        ds.sensorium.tier("bogus")
    with pytest.raises(ValueError, match="no tier 'final_test'"):
        ds.sensorium.tier("test", "final_test")
    assert len(ds.sensorium.repeats()) > 1  # the default ("test", "final_test") takes the tiers there are


@pytest.mark.parametrize("how", [("train", "test"), (["train", "test"],), (("train",), "test"), (np.array(["train", "test"]),)])
def test_tiers_as_values_or_lists(make_store, how):
    ds = converter.open_mouse(make_store("none"))
    want = ds.isel(trial=np.flatnonzero(np.isin(ds.tier.values, ["train", "test"])))
    assert ds.sensorium.tier(*how).trial.values.tolist() == want.trial.values.tolist()


def test_a_tier_given_twice_is_refused(make_store):
    ds = converter.open_mouse(make_store("none"))
    with pytest.raises(ValueError, match="tier 'train' given twice"):
        ds.sensorium.tier(["train", "train"])


def test_mean_per_image_of_every_trial_equals_xarray_groupby(make_store):
    ds = converter.open_mouse(make_store("none"))
    got = ds.sensorium.by_image().mean()
    want = ds.load().groupby("image_id").mean()
    assert got.image_id.values.tolist() == want.image_id.values.tolist()
    for name in want.data_vars:
        np.testing.assert_allclose(got[name].values, want[name].values, rtol=1e-6)


def test_repeats_are_lazy_and_read_only_the_variables_asked_for(make_store, monkeypatch):
    from converter.read import dataset

    read = []
    original = dataset.StoreArray._read

    def spy(self, key):
        read.append(self.readers[0].shape)
        return original(self, key)

    monkeypatch.setattr(dataset.StoreArray, "_read", spy)
    ds = converter.open_mouse(make_store())
    mean = ds.sensorium.repeats("test").mean()
    assert read == []  # nothing read yet
    values = mean["responses"].values
    assert read == [ds.responses.shape]  # the responses alone, once; not the images
    want = ds.sensorium.tier("test").load().groupby("image_id").mean()["responses"]
    np.testing.assert_allclose(values, want.values, rtol=1e-6)


def test_open_mouse_coordinates_equal_plain_xarray(make_store, clip_store):
    for store in (make_store(), clip_store):
        ds = converter.open_mouse(store)
        want = xr.open_zarr(store).coords.to_dataset().compute()
        xr.testing.assert_identical(ds.coords.to_dataset(), want)
        assert all(isinstance(c.variable._data, np.ndarray) or c.name in ds.indexes for c in ds.coords.values())


@pytest.mark.parametrize("select", [
    lambda ds: ds.sensorium.tier("test", "test"),
    lambda ds: ds.sensorium.images([int(ds.image_id[0]), int(ds.image_id[0])]),
    lambda ds: ds.sensorium.neurons(unit_ids=[int(ds.neuron[1]), int(ds.neuron[1])]),
    lambda ds: ds.sensorium.neurons(area=["V1", "V1"]),
], ids=["tier", "image_id", "unit id", "area"])
def test_every_selection_refuses_a_label_given_twice(make_store, select):
    ds = converter.open_mouse(make_store())
    with pytest.raises(ValueError, match="given twice"):
        select(ds)


def test_every_selection_takes_one_value_or_a_list(make_store):
    ds = converter.open_mouse(make_store())
    image, unit = int(ds.image_id[0]), int(ds.neuron[1])
    assert ds.sensorium.images(image).trial.values.tolist() == ds.sensorium.images([image]).trial.values.tolist()
    assert ds.sensorium.neurons(unit_ids=unit).neuron.values.tolist() == [unit]
    assert ds.sensorium.neurons(area="V1").sizes == ds.sensorium.neurons(area=["V1"]).sizes
