"""Batches on the device (`converter.torch.DeviceLoader`, `MiceCycler`), tested on ``device="cpu"``:
the same values as `MouseDataset`, bit for bit, a seeded order, and resuming at the next batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from converter.read.batch_memory import BatchMemory  # noqa: E402
from converter.read.device import PREFETCH  # noqa: E402
from converter.torch import DeviceLoader, MiceCycler, MouseDataset  # noqa: E402

KEYS = ("images", "responses", "behavior", "pupil_center")
# CI has no GPU: the cuda cases run where there is one (the benchmarks' machine), skip elsewhere
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.fixture(scope="module")
def stores(make_store):
    return {"float32": make_store(), "uint8": make_store(image_dtype="uint8", seed=1)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["resident", "streaming"])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_batches_equal_mouse_dataset_bit_for_bit(stores, mode, dtype, device):
    store = stores[dtype]
    dl = DeviceLoader(store, batch_size=7, device=device, mode=mode, shuffle=False, keys=KEYS)  # normalised by default
    ref = MouseDataset(store, tier="train", keys=KEYS, normalize=True)
    assert dl.mode == mode and len(dl) == -(-len(ref) // 7)
    for b, batch in enumerate(dl):
        want = ref.batch(list(range(b * 7, min((b + 1) * 7, len(ref)))))
        for key in KEYS:
            assert batch[key].dtype == torch.float32 and batch[key].device.type == device
            assert np.array_equal(batch[key].cpu().numpy(), want[key].astype(np.float32), equal_nan=True), (key, b)
    assert b == len(dl) - 1


@pytest.mark.parametrize("mode", ["resident", "streaming"])
def test_a_neuron_subset_and_raw_values(stores, mode):
    store = stores["float32"]
    neurons = [5, 1, 3]
    dl = DeviceLoader(store, batch_size=16, device="cpu", mode=mode, shuffle=False, keys=("responses",), normalize=False, neurons=neurons)
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scan", ["image", "video"])
def test_a_resident_loader_reads_in_pieces_the_values_it_would_read_whole(stores, video_store, scan, device, monkeypatch):
    import converter.read.device as on_device

    store, kw = (stores["float32"], {"keys": KEYS}) if scan == "image" else (video_store, {"frames": 10, "behavior_channels": True})
    whole = DeviceLoader(store, batch_size=6, device=device, mode="resident", seed=5, **kw)
    trial_bytes = max(int(np.prod(t.shape[1:])) * t.element_size() for t in whole._resident.values())
    monkeypatch.setattr(on_device, "PIECE", 3 * trial_bytes - 1)  # two trials a piece, for the largest variable
    reads = []
    real = type(whole.items).whole
    monkeypatch.setattr(type(whole.items), "whole", lambda self, key, items, out: reads.append((key, len(items))) or real(self, key, items, out))
    pieces = DeviceLoader(store, batch_size=6, device=device, mode="resident", seed=5, **kw)
    n = len(pieces.dataset)
    biggest = max(whole._resident, key=lambda k: whole._resident[k][0].numel() * whole._resident[k].element_size())
    assert [m for k, m in reads if k == biggest] == [2] * (n // 2) + [1] * (n % 2)
    same = lambda a, b: a.cpu().numpy().tobytes() == b.cpu().numpy().tobytes()  # noqa: E731  (NaN where a clip has no frame)
    assert all(same(pieces._resident[k], whole._resident[k]) for k in whole._resident)
    assert all(same(x[k], y[k]) for x, y in zip(pieces, whole, strict=True) for k in x)


def test_batch_memory_is_taken_again_only_once_nothing_holds_it():
    memory = BatchMemory(torch.device("cpu"), depth=2)
    a = memory.host((4, 3), np.float32)
    where = a.data_ptr()
    view, array = a[1:], a.numpy()[::2]  # a torch view and a numpy one of the same memory
    del a
    assert memory.host((4, 3), np.float32).data_ptr() != where
    del view
    assert memory.host((4, 3), "float32").data_ptr() != where  # the numpy view still holds it
    del array
    again = memory.empty((4, 3), torch.float32)
    assert again.data_ptr() == where and again.dtype == torch.float32
    held = [memory.host((4, 3), np.float32) for _ in range(3)]  # beyond ``depth``: new memory, not kept
    assert len({t.data_ptr() for t in [again, *held]}) == 4 and len(memory._kept[((4, 3), "<f4")]) == 2
    assert memory.host((2, 3), np.float32).shape == (2, 3)


@pytest.mark.parametrize("mode", ["resident", "streaming"])
def test_batches_let_go_of_are_the_memory_of_later_ones(stores, mode):
    dl = DeviceLoader(stores["float32"], batch_size=4, device="cpu", mode=mode, keys=KEYS)
    seen = {b["images"].data_ptr() for _ in range(3) for b in dl}  # three epochs, no batch kept
    assert len(dl) * 3 > 3 * (PREFETCH + 4) and len(seen) <= PREFETCH + 4 + 1  # (+1: the last, smaller batch)


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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["resident", "streaming"])
@pytest.mark.parametrize("channels", [False, True])
def test_images_with_behavior_as_channels_equal_mouse_dataset(stores, mode, channels, device):
    kw = {"keys": ("images", "responses"), "normalize": True, "behavior_channels": channels, "pupil_channels": channels}
    dl = DeviceLoader(stores["uint8"], batch_size=8, device=device, mode=mode, shuffle=True, seed=4, **kw)
    ref = MouseDataset(stores["uint8"], tier="train", float32=True, **kw)
    order = dl.order(0)
    for b, batch in enumerate(dl):
        want = ref.batch(order[b * 8:(b + 1) * 8].numpy())
        assert batch["images"].shape[1] == (6 if channels else 1)  # 3 behavior variables, 2 pupil axes
        for key in kw["keys"]:
            assert np.array_equal(batch[key].cpu().numpy(), want[key], equal_nan=True), (key, b)


@pytest.fixture(scope="module")
def video_store(clip_store):
    return clip_store


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["resident", "streaming"])
@pytest.mark.parametrize("offset, channels", [(-1, True), (3, False)])
def test_video_windows_equal_video_dataset_bit_for_bit(video_store, mode, offset, channels, device):
    from converter.torch import VideoDataset

    kw = {"frames": 10, "offset": offset, "behavior_channels": channels, "pupil_channels": channels, "neurons": [4, 0, 2]}
    dl = DeviceLoader(video_store, batch_size=6, device=device, mode=mode, seed=2, **kw)
    ref = VideoDataset(video_store, tier="train", **kw)
    assert dl.mode == mode and len(dl.dataset) == len(ref) > 6
    plan = dl.batches(0)
    if offset == -1:
        starts = np.concatenate([s for _, s in plan])
        assert len(set(starts.tolist())) > 1 and np.all(starts + 10 <= ref.n_frames[dl.order(0).numpy()])
    for (idx, starts), batch in zip(plan, dl, strict=True):
        want = ref.batch(idx.numpy(), starts)
        assert batch["videos"].shape == (len(idx), 1 + 4 * channels, 10, *ref._reader("videos").shape[1:3])
        for key in ref.keys:
            assert batch[key].dtype == torch.float32 and batch[key].device.type == device
            assert np.array_equal(batch[key].cpu().numpy(), want[key], equal_nan=True), key


def test_video_windows_are_seeded_and_resume_at_the_next_batch(video_store):
    make = lambda: DeviceLoader(video_store, batch_size=4, device="cpu", seed=7, frames=8, keys=("videos", "responses"))  # noqa: E731
    first = make()
    whole = [b["responses"] for _ in range(2) for b in first]  # two epochs
    a = make()
    again = [b["responses"] for _ in range(2) for b in a]
    assert all(torch.equal(x, y) for x, y in zip(whole, again))
    assert not torch.equal(torch.cat([b["responses"] for b in a]), torch.cat(again[: len(a)]))  # a new epoch, new windows
    b = make()
    it = iter(b)
    head = [next(it)["responses"] for _ in range(2)]
    c = make()
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(head + [x["responses"] for x in c], whole))


def test_mice_of_both_kinds_cycle_together(stores, video_store):
    cycler = MiceCycler({"image": DeviceLoader(stores["float32"], batch_size=16, device="cpu", keys=("images", "responses")),
                         "video": DeviceLoader(video_store, batch_size=4, device="cpu", frames=8, keys=("videos", "responses"))})
    seen = {}
    for key, batch in cycler:
        seen.setdefault(key, []).append(batch)
    assert set(seen) == {"image", "video"}
    assert seen["video"][0]["videos"].dim() == 5 and seen["image"][0]["images"].dim() == 4



def test_loaders_on_a_device_serve_what_the_dataloaders_serve(stores, video_store):
    from converter.torch import loaders

    kw = {"batch_size": 8, "include_behavior": True, "include_eye_position": True, "seed": 0}
    on_device, plain = loaders([stores["uint8"]], device="cpu", **kw), loaders([stores["uint8"]], **kw)
    assert set(on_device) == set(plain)
    for tier, by_key in plain.items():
        (key, dl), = by_key.items()
        got = on_device[tier][key]
        assert isinstance(got, DeviceLoader) and got.shuffle == (tier == "train") and got.dataset.behavior_channels
        if tier != "train":  # in file order on both
            for a, b in zip(dl, got, strict=True):
                assert all(torch.equal(a[k], b[k]) for k in a)
    clips = loaders([video_store], batch_size=3, device="cpu", frames=8, offset=2, tier="oracle")
    (key, dl), = clips["oracle"].items()
    ref = loaders([video_store], batch_size=3, frames=8, offset=2, tier="oracle")["oracle"][key]
    for a, b in zip(ref, dl, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="^num_workers does not apply to loaders on a device"):
        loaders([stores["uint8"]], batch_size=8, device="cpu", num_workers=2)
    with pytest.raises(ValueError, match="^image_ids does not apply"):
        loaders([stores["uint8"]], batch_size=8, device="cpu", image_ids=[[1]])


def test_runs_of_stored_trials_shuffled_within_buffers_read_once_per_buffer(stores, monkeypatch):
    store = stores["float32"]
    kw = {"batch_size": 5, "device": "cpu", "seed": 3, "run_length": 4, "buffer_batches": 3, "keys": ("images", "responses")}
    dl = DeviceLoader(store, mode="streaming", **kw)
    ref = MouseDataset(store, tier="train", keys=kw["keys"], normalize=True)
    order = dl.order(0)
    assert sorted(order.tolist()) == list(range(len(ref)))  # still every trial once an epoch
    stored = np.argsort(np.argsort(ref.trials))  # each item's rank in stored order
    buffers = order.split(15)
    runs_per_buffer = [len({int(r) // 4 for r in stored[b.numpy()]}) for b in buffers]
    assert max(runs_per_buffer) <= 15 // 4 + 2 < 15  # a buffer holds a few runs, not 15 scattered trials
    assert any(not torch.equal(b.sort().values, b) for b in buffers)  # and is shuffled within
    reads = []
    real = dl.items.read
    monkeypatch.setattr(dl.items, "read", lambda key, idx, starts, out: reads.append((key, len(idx))) or real(key, idx, starts, out))
    got = list(dl)  # held: batches the consumer keeps are not overwritten by later ones
    assert sorted(reads) == sorted((k, len(b)) for b in buffers for k in kw["keys"])  # one read per variable and buffer
    for b, batch in enumerate(got):
        want = ref.batch(order[b * 5:(b + 1) * 5].numpy())
        assert all(np.array_equal(batch[k].numpy(), want[k]) for k in kw["keys"])
    resident = list(DeviceLoader(store, mode="resident", **kw))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(got, resident, strict=True) for k in x)
    c = DeviceLoader(store, mode="streaming", **kw)  # resumed in the middle of a buffer
    c.load_state_dict({**c.state_dict(), "next_batch": 4})
    assert all(torch.equal(x[k], y[k]) for x, y in zip(list(c), got[4:], strict=True) for k in x)
