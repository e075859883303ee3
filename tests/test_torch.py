"""Reading stores for training (PyTorch), against the official loaders' semantics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xarray as xr

import converter

from .conftest import bits
from .reference import FileTreeReference

torch = pytest.importorskip("torch")
from converter.torch import MouseDataset, Trial, loaders  # noqa: E402

KEYS = ("images", "responses", "behavior", "pupil_center")


@pytest.mark.parametrize("competition", ["none", "sensorium"])
@pytest.mark.parametrize("in_memory", [False, True])
def test_normalized_items_equal_filetree_and_neuronormalizer(make_dataset, make_store, competition, in_memory):
    ref = FileTreeReference(make_dataset(competition), *KEYS)
    ds = MouseDataset(make_store(competition), normalize=True, in_memory=in_memory)
    assert len(ds) == len(ref)
    for i in range(len(ds)):
        item, want = ds[i], ref[i]
        for k in KEYS:
            got = item[k].numpy()
            assert got.dtype == np.float32 and got.shape == want[k].shape, k
            assert bits(got) == bits(want[k]), (i, k)


@pytest.mark.parametrize("competition", ["none", "sensorium+"])
def test_raw_items_equal_the_source_files(make_dataset, make_store, competition):
    folder = make_dataset(competition)
    ds = MouseDataset(make_store(competition))
    for i in range(len(ds)):
        item = ds[i]
        for k in KEYS:
            src = np.load(folder / f"data/{k}/{i}.npy")
            assert item[k].numpy().dtype == src.dtype and bits(item[k].numpy()) == bits(src), (i, k)
    assert item.images.shape == (1, 144, 256) and item.images is item["images"]


def test_getitems_reads_a_batch_equal_to_single_items(make_store):
    ds = MouseDataset(make_store(), normalize=True)
    idx = [5, 3, 3, 59, 0]  # unsorted, with a repeat
    batch = ds.__getitems__(idx)
    assert len(batch) == 5
    for j, i in enumerate(idx):
        for k in KEYS:
            assert torch.equal(batch[j][k], ds[i][k])
    collated = converter.torch.collate(batch)
    assert collated["responses"].shape == (5, 40) and isinstance(collated, Trial)


def test_items_pickle_and_tier_selection(make_store):
    ds = MouseDataset(make_store(), tier="validation", keys=("responses", "behavior"))
    tiers = xr.open_zarr(make_store()).sortby("trial")["tier"].values  # file order
    assert len(ds) == int((tiers == "validation").sum())
    item = pickle.loads(pickle.dumps(ds[0]))
    first = int(np.flatnonzero(tiers == "validation")[0])
    assert torch.equal(item.responses, MouseDataset(make_store())[first].responses)
    assert set(item) == {"responses", "behavior"}
    ds2 = pickle.loads(pickle.dumps(ds.load()))  # a pickled dataset leaves its memory behind
    assert ds2._memory == {} and torch.equal(ds2[0].behavior, ds[0].behavior)


def test_loaders_structure_and_order(make_dataset, make_store):
    stores = [make_store("none"), make_store("sensorium")]
    dls = loaders(stores, batch_size=8, seed=1)
    keys = {xr.open_zarr(s).attrs["data_key"] for s in stores}
    assert set(dls) == {"train", "validation", "test", "final_test"}
    assert set(dls["train"]) == keys and len(dls["final_test"]) == 1  # only the competition scan has it
    key = xr.open_zarr(stores[0]).attrs["data_key"]
    ref = FileTreeReference(make_dataset("none"), "images", "responses")
    val = [i for i, t in enumerate(ref.tiers) if t == "validation"]
    got = torch.cat([b.responses for b in dls["validation"][key]]).numpy()
    assert bits(got) == bits(np.stack([ref[i]["responses"] for i in val]))  # sequential
    train = torch.cat([b.responses for b in dls["train"][key]]).numpy()
    want = np.stack([ref[i]["responses"] for i, t in enumerate(ref.tiers) if t == "train"])
    assert not np.array_equal(train, want)  # shuffled
    assert bits(train[np.lexsort(train.T[::-1])]) == bits(want[np.lexsort(want.T[::-1])])  # same trials
    again = torch.cat([b.responses for b in loaders(stores, batch_size=8, seed=1)["train"][key]]).numpy()
    assert np.array_equal(train, again)  # seeded
    one = loaders(str(stores[0]), batch_size=8, seed=1)  # one path is one store, not a sequence of letters
    assert list(one["train"]) == [key] and bits(torch.cat([b.responses for b in one["train"][key]]).numpy()) == bits(train)


def test_loaders_channels_neurons_and_images(make_dataset, make_store):
    folder, store = make_dataset(), make_store()
    area = np.load(folder / "meta/neurons/area.npy")
    idx = np.flatnonzero(area == "LM")
    ref = FileTreeReference(folder, "images", "responses", "behavior", "pupil_center", behavior_channels=True, pupil_channels=True, idx=idx)
    dls = loaders([store], batch_size=4, tier="validation", include_behavior=True, include_eye_position=True,
                  add_eye_pos_as_channels=True, areas=["LM"])
    (key, dl), = dls["validation"].items()
    batch = next(iter(dl))
    val = [i for i, t in enumerate(ref.tiers) if t == "validation"][:4]
    assert batch.images.shape == (4, 1 + 3 + 2, 144, 256)
    for k in ("images", "responses", "behavior", "pupil_center"):
        assert bits(batch[k].numpy()) == bits(np.stack([ref[i][k] for i in val])), k
    unit_ids = np.load(folder / "meta/neurons/unit_ids.npy")
    by_id = loaders([store], batch_size=4, tier="validation", neuron_ids=[unit_ids[[7, 2]]], normalize=False)
    got = next(iter(by_id["validation"][key])).responses.numpy()
    assert bits(got) == bits(np.stack([np.load(folder / f"data/responses/{i}.npy")[[7, 2]] for i in val]))
    ids = np.load(folder / "meta/trials/frame_image_id.npy")
    train_ids = ids[np.load(folder / "meta/trials/tiers.npy") == "train"][:5]
    chosen = loaders([store], batch_size=100, tier="train", image_ids=[train_ids], normalize=False)
    got = next(iter(chosen["train"][key])).responses.numpy()
    want = np.stack([np.load(folder / f"data/responses/{int(np.flatnonzero(ids == i)[0])}.npy") for i in train_ids])
    assert got.shape == (5, 40) and bits(got[np.lexsort(got.T[::-1])]) == bits(want[np.lexsort(want.T[::-1])])


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_multi_worker_loading(make_store, context):
    stores = [make_store("none"), make_store("sensorium+")]
    MouseDataset(stores[0]).__getitems__(range(30))  # the parent's read threads exist before the fork
    single = loaders(stores, batch_size=16, tier="train", seed=3)
    multi = loaders(stores, batch_size=16, tier="train", seed=3, num_workers=2, multiprocessing_context=context)
    for key, dl in multi["train"].items():
        a = [b for b in single["train"][key]]
        b = [b for b in dl]
        assert len(a) == len(b) > 1
        for x, y in zip(a, b):
            assert isinstance(y, Trial)
            for k in ("images", "responses"):
                assert torch.equal(x[k], y[k])
    on_disk = loaders(stores[:1], batch_size=16, tier="train", in_memory=False, num_workers=2,
                      multiprocessing_context=context, seed=3)
    in_mem = loaders(stores[:1], batch_size=16, tier="train", seed=3)
    (k0, dl0), = on_disk["train"].items()
    for x, y in zip(dl0, in_mem["train"][k0]):
        assert torch.equal(x.images, y.images) and torch.equal(x.responses, y.responses)


def test_unknown_tiers_and_image_ids_are_errors(make_store):
    store = make_store("none")
    with pytest.raises(ValueError, match=r"no tier 'bogus'; the store has \['test', 'train', 'validation'\]"):
        MouseDataset(store, tier="bogus")
    with pytest.raises(ValueError, match="no tier 'final_test'"):
        loaders([store], batch_size=4, tier="final_test")
    train_ids = MouseDataset(store, tier="train").image_ids
    with pytest.raises(ValueError, match=r"no trial shows image_ids \[123456789\]"):
        loaders([store], batch_size=4, tier="train", image_ids=[[int(train_ids[0]), 123456789]])


def test_loaders_refuse_a_neuron_or_image_given_twice(make_store):
    store = make_store("none")
    unit = int(MouseDataset(store).unit_ids[0])
    with pytest.raises(ValueError, match="neuron id .* given twice"):
        loaders([store], batch_size=4, neuron_ids=[[unit, unit]])
    image = int(MouseDataset(store, tier="train").image_ids[0])
    with pytest.raises(ValueError, match="image_id .* given twice"):
        loaders([store], batch_size=4, tier="train", image_ids=[[image, image]])
