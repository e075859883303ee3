"""Every consistent variant of the published layouts converts; every inconsistent one is refused.

The datasets come from `tests.variants`, written with ``np.save`` alone: shapes, ranks, dtypes,
byte orders, channels, meta files, statistics and tiers that this project's sample never makes.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import converter

from .variants import Scan, invalid_scans, valid_scans, write_scan

# A dozen examples each keep the suite quick; VARIANT_EXAMPLES=500 searches harder.
FAST = settings(max_examples=int(os.environ.get("VARIANT_EXAMPLES", 12)), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# What NeuroNormalizer reads of each key's statistics (neuralpredictors 0.3.0), written out here.
NEEDS = {"images": {"mean", "std"}, "videos": {"mean", "std"}, "responses": {"std"}, "behavior": {"std"},
         "pupil_center": {"mean", "std"}}


def _check_readers(store: Path, scan: Scan) -> None:
    """Open, normalise and standardise: each works on the variant, or refuses it in one line."""
    ds = converter.open_mouse(store)
    assert ds.sizes["trial"] == scan.n_trials
    assert sorted(ds.trial.values.tolist()) == list(range(scan.n_trials))
    np.testing.assert_array_equal(ds.neuron.values, scan.arrays["meta/neurons/unit_ids.npy"])
    found: dict[str, set[str]] = {}
    for rel in scan.arrays:
        if rel.startswith("meta/statistics/") and rel.split("/")[3] == "all":
            found.setdefault(rel.split("/")[2], set()).add(rel.split("/")[4][:-4])
    _check_scoring(store, ds, scan)
    _check_training(store, scan, normalize=not any(not NEEDS[k] <= have for k, have in found.items() if k in NEEDS))
    from converter.plot import overview

    overview(ds).savefig(io.BytesIO(), dpi=20)
    if any(not NEEDS[k] <= have for k, have in found.items() if k in NEEDS):
        with pytest.raises(ValueError) as e:
            ds.sensorium.normalize()
        assert "\n" not in str(e.value) and "statistics/" in str(e.value)
        return
    normalised = ds.sensorium.normalize().compute()
    stats = converter.read_statistics(store)
    for key in normalised.data_vars:
        assert normalised[key].dtype == np.float32 and normalised[key].shape == ds[key].shape
        if key in stats and key in ("images", "videos", "pupil_center"):
            # (x - mean) / std, with the statistic broadcast over one trial as the loaders do
            first = int(ds.trial[0])
            x = scan.arrays[f"data/{key}/{first}.npy"]
            mean = stats[key]["mean"].reshape(_broadcast_shape(stats[key]["mean"].shape, x.shape, scan.dynamic))
            std = stats[key]["std"].reshape(_broadcast_shape(stats[key]["std"].shape, x.shape, scan.dynamic))
            want = ((x.astype(x.dtype.newbyteorder("=")) - mean) / std).astype(np.float32)
            np.testing.assert_array_equal(normalised[key].values[0], want)
    if "std" in found.get("responses", ()):
        standardised = ds.sensorium.standardize().responses.values
        std = stats["responses"]["std"]
        r = scan.arrays[f"data/responses/{int(ds.trial[0])}.npy"]
        np.testing.assert_array_equal(standardised[0], r / std.reshape(_broadcast_shape(std.shape, r.shape, scan.dynamic)))


def _refused(f, *reasons: str):
    """``f()``, or None where it refuses in one line for one of ``reasons``."""
    try:
        return f()
    except ValueError as e:
        assert "\n" not in str(e) and any(r in str(e) for r in reasons), str(e)
        return None


def _check_scoring(store: Path, ds, scan: Scan) -> None:
    """The competition's metrics and the oracle, scored on the responses themselves."""
    tier = "oracle" if scan.dynamic else "test"
    have_ids = scan.dynamic or "meta/trials/frame_image_id.npy" in scan.arrays
    reasons = ("no tier", "withheld", "no trial has frames") + (() if have_ids else ("image_id",))
    oracle = _refused(lambda: converter.oracle(store), *reasons)
    if oracle is not None:
        assert oracle.sizes["neuron"] == ds.sizes["neuron"]
    has_std = "meta/statistics/responses/all/std.npy" in scan.arrays
    predictions = ds.responses.load()
    result = _refused(lambda: converter.score(store, predictions, tier), *reasons, *(() if has_std else ("statistics/responses",)))
    if result is not None:
        assert result.sizes["neuron"] == ds.sizes["neuron"]


def _check_training(store: Path, scan: Scan, normalize: bool) -> None:
    """One item of the PyTorch dataset of the scan's kind, with every data folder."""
    if importlib.util.find_spec("torch") is None:
        return
    keys = tuple(dict.fromkeys(rel.split("/")[1] for rel in scan.arrays if rel.startswith("data/")))
    if scan.dynamic:
        from converter.torch import VideoDataset

        item = VideoDataset(store, keys=keys, frames=1, normalize=normalize)[0]
    else:
        from converter.torch import MouseDataset

        item = MouseDataset(store, keys=keys, normalize=normalize)[0]
    assert all(bool(v.isfinite().any()) or v.numel() == 0 or scan.dynamic for v in item.values() if hasattr(v, "isfinite"))


def _broadcast_shape(stat: tuple[int, ...], trial: tuple[int, ...], clips: bool) -> tuple[int, ...]:
    """Where a statistic's axes sit on one trial's axes (the reference: written out by hand)."""
    if stat == trial or len(stat) == len(trial) or not stat:
        return stat
    if clips and stat == trial[:-1]:
        return (*stat, 1)
    return stat  # trailing axes: numpy aligns them


@FAST
@given(scan=valid_scans(), as_zip=st.booleans())
def test_every_consistent_variant_converts_verifies_and_exports(scan: Scan, as_zip: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = write_scan(scan, tmp, as_zip)
        store = converter.convert(src, tmp / "s.zarr", executor=1, progress=False)
        converter.validate(store)
        report = converter.verify(src, store)
        assert report.ok, report.mismatches
        assert converter.self_check(store).ok
        out = converter.export(store, tmp / "out")
        assert _files(out) == _files(tmp / scan.name)
        _check_readers(store, scan)


@FAST
@given(scan=invalid_scans(), as_zip=st.booleans())
def test_every_inconsistent_variant_is_refused_and_leaves_nothing(scan: Scan, as_zip: bool) -> None:
    """Refused in one line naming the file: by the plan (meta arrays, missing files), or as the file
    is read (a trial that differs from trial 0: the plan reads one header per folder, and the
    blocks check every file as they read it); either way nothing is left behind."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = write_scan(scan, tmp, as_zip)
        shutil.rmtree(tmp / scan.name) if as_zip else None
        with pytest.raises(converter.SourceError) as e:
            converter.convert(src, tmp / "s.zarr", executor=1, progress=False)
        message = str(e.value)
        assert "\n" not in message and scan.broken in message, message
        assert sorted(p.name for p in tmp.iterdir()) == [src.name]  # nothing left behind


@pytest.mark.parametrize(
    "shape, dims, aligned",
    [
        ((7,), ("neuron",), (7, 1)),  # a clip's (n_neurons,) statistic, per neuron across frames
        ((7, 1), ("neuron", "responses_frame_reduced"), (7, 1)),
        ((7, 300), ("neuron", "frame"), (7, 300)),
        ((300,), ("frame",), (1, 300)),
        ((), (), (1, 1)),
        ((1, 300), ("responses_dim_0", "responses_dim_1"), (1, 300)),  # no rule placed it: numpy's broadcasting
    ],
)
def test_statistics_are_placed_on_a_trials_axes(shape, dims, aligned):
    from converter.read.normalize import align

    values = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    out = align(values, dims, "responses", ("neuron", "frame"), (7, 300), "statistics/responses/all/std")
    assert out.shape == aligned and np.array_equal(out.ravel(), values.ravel())


def test_a_statistic_that_fits_no_trial_is_refused_in_one_line():
    from converter.read.normalize import align

    with pytest.raises(ValueError, match=r"^statistics/responses/all/std: shape \(8,\) does not broadcast against one trial of responses \(7, 300\)$"):
        align(np.ones(8), ("responses_all_std_dim_0",), "responses", ("neuron", "frame"), (7, 300), "statistics/responses/all/std")


@pytest.mark.parametrize("dtype, stat_dtype, inplace", [("float32", "float32", True), ("float64", "float32", True),
                                                     ("float32", "float64", False), ("uint8", "float32", False)])
def test_normalising_in_place_gives_the_bits_of_normalising(dtype, stat_dtype, inplace):
    from converter.read.normalize import Normalizer

    rng = np.random.default_rng(0)
    stats = {"images": {"mean": np.asarray(rng.random(), stat_dtype), "std": np.asarray(rng.random() + 0.5, stat_dtype)},
             "responses": {"std": rng.random(5).astype(stat_dtype)}}
    norm = Normalizer.from_statistics(stats)
    for key, shape in (("images", (3, 1, 4, 6)), ("responses", (3, 5))):
        x = (rng.random(shape) * 255).astype(dtype)
        want = norm(key, x.copy())
        got = norm.in_place(key, x)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        assert (got is x) == inplace  # new memory only where a step changes the dtype


def test_a_trial_read_straight_into_its_row_is_checked_like_any_other(tmp_path):
    """Trials of a folder are read into their rows with one system call; a file whose header no
    longer matches (same size, other byte order) still fails, naming it, and values are exact."""
    from converter.source import open_source, read_trials, trial_header

    folder = tmp_path / "scan"
    (folder / "data" / "responses").mkdir(parents=True)
    values = np.random.default_rng(0).normal(size=(5, 7)).astype("<f4")
    for i, row in enumerate(values):
        np.save(folder / f"data/responses/{i}.npy", row)
    source = open_source(folder)
    expect = trial_header(source, "responses")
    block = read_trials(source, "responses", range(5), expect)
    assert np.array_equal(block.values, values) and block.values.dtype == np.dtype("<f4")
    assert block.crc32.tolist() == [zlib.crc32((folder / f"data/responses/{i}.npy").read_bytes()) for i in range(5)]
    np.save(folder / "data/responses/3.npy", values[3].astype(">f4"))  # written after trial 0's header was read
    with pytest.raises(converter.SourceError, match="data/responses/3.npy: shape .* dtype >f4 differs from data/responses/0.npy's"):
        read_trials(source, "responses", range(5), expect)


def test_blocks_read_into_scratch_memory_reuse_it_per_role_and_thread(tmp_path):
    """`Scratch` hands a role's memory back for the next block (no fresh pages to zero), grows it
    when a block is larger, and keeps threads apart; trials read into it are those `np.load` gives,
    whatever the memory held before (byte-swapped files included). Only our executors turn it on
    (`reusing`): a task as made, or as a dask worker unpickles and keeps it, holds no memory."""
    import pickle
    import threading

    from converter.source import open_source, read_trials, trial_header
    from converter.source.arrays import Scratch, reusing
    from converter.write.executors import BlockWriter

    plain = Scratch()
    assert not np.shares_memory(plain("x", (4, 5), np.float32), plain("x", (4, 5), np.float32))
    task = BlockWriter(None, "s.zarr", {}, {}, np.arange(3))
    assert not task.scratch.keep and not pickle.loads(pickle.dumps(task)).scratch.keep
    kept = reusing(task)
    assert kept.scratch.keep and not task.scratch.keep and kept == task
    assert pickle.loads(pickle.dumps(kept)).scratch.keep  # as a worker process gets it: on, and empty
    assert reusing(print) is print

    scratch = Scratch(keep=True)
    a = scratch("x", (4, 5), np.float32)
    a[...] = 1
    b = scratch("x", (2, 3), np.int16)
    assert np.shares_memory(a, b) and b.shape == (2, 3) and b.dtype == np.int16
    assert not np.shares_memory(a, scratch("y", (4, 5), np.float32))
    c = scratch("x", (8, 5), np.float32)  # larger: new memory
    assert not np.shares_memory(a, c) and np.shares_memory(c, scratch("x", (8, 5), np.float32))
    other = []
    t = threading.Thread(target=lambda: other.append(scratch("x", (8, 5), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(c, other[0])
    assert scratch("x", (0, 5), np.float32).shape == (0, 5)

    folder = tmp_path / "scan"
    (folder / "data" / "responses").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for dtype in ("<f4", ">f4"):
        values = rng.normal(size=(6, 7)).astype(dtype)
        for i, row in enumerate(values):
            np.save(folder / f"data/responses/{i}.npy", row)
        source = open_source(folder)
        alloc = lambda shape, dt: scratch("source", shape, dt)  # noqa: E731
        scratch("source", (6, 7), np.float32)[...] = np.nan  # what a previous block left
        block = read_trials(source, "responses", range(6), trial_header(source, "responses"), alloc=alloc)
        assert np.shares_memory(block.values, scratch("source", (1,), np.uint8))
        assert np.array_equal(block.values, [np.load(folder / f"data/responses/{i}.npy") for i in range(6)])
