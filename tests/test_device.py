"""Batches on the device (`converter.torch.DeviceLoader`, `MiceCycler`), tested on ``device="cpu"``:
the same values as `MouseDataset`, bit for bit, a seeded order, and resuming at the next batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from converter.torch import DeviceLoader, MiceCycler, MouseDataset  # noqa: E402

KEYS = ("images", "responses", "behavior", "pupil_center")


@pytest.fixture(scope="module")
def stores(make_store):
    return {"float32": make_store(), "uint8": make_store(image_dtype="uint8", seed=1)}


@pytest.mark.parametrize("mode", ["resident", "streaming"])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_batches_equal_mouse_dataset_bit_for_bit(stores, mode, dtype):
    store = stores[dtype]
    dl = DeviceLoader(store, batch_size=7, device="cpu", mode=mode, shuffle=False, keys=KEYS)
    ref = MouseDataset(store, tier="train", keys=KEYS)
    assert dl.mode == mode and len(dl) == -(-len(ref) // 7)
    for b, batch in enumerate(dl):
        want = ref.batch(list(range(b * 7, min((b + 1) * 7, len(ref)))))
        for key in KEYS:
            assert batch[key].dtype == torch.float32 and batch[key].device.type == "cpu"
            assert np.array_equal(batch[key].numpy(), want[key].astype(np.float32), equal_nan=True), (key, b)
    assert b == len(dl) - 1


def test_a_neuron_subset_and_raw_values(stores):
    store = stores["float32"]
    neurons = [5, 1, 3]
    dl = DeviceLoader(store, batch_size=16, device="cpu", shuffle=False, keys=("responses",), normalize=False, neurons=neurons)
    ref = MouseDataset(store, tier="train", keys=("responses",), normalize=False, neurons=neurons, float32=True)
    first = next(iter(dl))
    assert np.array_equal(first["responses"].numpy(), ref.batch(list(range(16)))["responses"])


def test_the_order_is_seeded_and_a_loader_resumes_at_the_next_batch(stores):
    store = stores["float32"]

    make = lambda seed: DeviceLoader(store, batch_size=5, device="cpu", seed=seed, keys=("responses",))  # noqa: E731
    first, second = make(0), make(0)
    whole = [b["responses"] for _ in range(2) for b in first]  # two epochs of one loader
    again = [b["responses"] for _ in range(2) for b in second]
    other = [b["responses"] for b in make(1)]
    assert all(torch.equal(a, b) for a, b in zip(whole, again))
    assert not all(torch.equal(a, b) for a, b in zip(whole, other))
    a = make(0)
    it = iter(a)
    seen = [next(it)["responses"] for _ in range(3)]
    state = a.state_dict()
    b = make(0)  # a new process, say, after a checkpoint
    b.load_state_dict(state)
    rest = [x["responses"] for x in b]
    assert all(torch.equal(x, y) for x, y in zip(seen + rest, whole[: len(a)]))
    assert b.state_dict()["epoch"] == 1 and torch.equal(next(iter(b))["responses"], whole[len(a)])  # the next epoch follows


def test_mice_cycle_with_a_seeded_order_and_resume(stores):
    loaders = {k: DeviceLoader(s, batch_size=9, device="cpu", keys=("images", "responses"), seed=k == "uint8") for k, s in stores.items()}
    cycler = MiceCycler(loaders, seed=3)
    got = [(k, b["responses"].clone()) for k, b in cycler]
    assert len(got) == len(cycler) == max(len(dl) for dl in loaders.values()) * 2
    assert {k for k, _ in got} == set(stores)
    rounds = [sorted(k for k, _ in got[i:i + 2]) for i in range(0, len(got), 2)]
    assert all(r == sorted(stores) for r in rounds)  # one batch of each mouse per round
    fresh = {k: DeviceLoader(s, batch_size=9, device="cpu", keys=("images", "responses"), seed=k == "uint8") for k, s in stores.items()}
    c2 = MiceCycler(fresh, seed=3)
    it = iter(c2)
    head = [next(it) for _ in range(5)]
    state = c2.state_dict()
    fresh2 = {k: DeviceLoader(s, batch_size=9, device="cpu", keys=("images", "responses"), seed=k == "uint8") for k, s in stores.items()}
    c3 = MiceCycler(fresh2, seed=3)
    c3.load_state_dict(state)
    tail = list(c3)
    resumed = [(k, b["responses"]) for k, b in head + tail]
    assert [k for k, _ in resumed] == [k for k, _ in got]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(resumed, got))


def test_a_streaming_loader_left_early_stops_its_reader(stores):
    before = threading.active_count()
    dl = DeviceLoader(stores["float32"], batch_size=2, device="cpu", mode="streaming", keys=("images",))
    for _ in zip(range(2), dl):
        pass
    assert threading.active_count() == before


def test_bad_arguments_are_one_line(stores):
    with pytest.raises(ValueError, match="mode must be"):
        DeviceLoader(stores["float32"], batch_size=2, mode="fast")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        DeviceLoader(stores["float32"], batch_size=0)
