"""verify, validate, info and the command line as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

import converter

from .conftest import run_cli


@pytest.fixture
def store_copy(make_store, tmp_path):
    def make(*args, **kw):
        dst = tmp_path / "copy.zarr"
        shutil.copytree(make_store(*args, **kw), dst)
        return dst

    return make


@pytest.mark.parametrize("competition, as_zip", [("none", False), ("sensorium", True)])
def test_verify_passes_on_a_fresh_store(make_dataset, make_store, competition, as_zip):
    report = converter.verify(make_dataset(competition, as_zip), make_store(competition, as_zip))
    assert report.ok, str(report)
    assert report.files_checked == 60 * 4 + 12 + 7 + 40


def test_verify_catches_one_changed_value(make_dataset, store_copy):
    store = store_copy()
    pos = int(np.flatnonzero(zarr.open_array(store / "trial")[...] == 42)[0])  # where file 42 is stored
    for name in ("responses", "by_trial/responses"):  # both layouts are checked
        arr = zarr.open_array(store / name, mode="r+")
        row = arr[pos]
        row[7] = np.nextafter(row[7], np.float32(np.inf))  # the smallest possible change
        arr[pos] = row
        report = converter.verify(make_dataset(), store)
        assert not report.ok
        assert report.mismatches[0].startswith(f"data/responses/42.npy: values differ in {name} (first at element 7")
        r = run_cli("verify", make_dataset(), store)
        assert r.returncode == 1 and "MISMATCH" in r.stdout and "data/responses/42.npy" in r.stdout
        if name == "responses":
            r = run_cli("verify", store)  # without the source: the CRC-32 of file 42 no longer matches
            assert r.returncode == 1 and "data/responses/42.npy: stored values no longer give the source file" in r.stdout
            arr[pos] = zarr.open_array(store / "by_trial/responses")[pos]  # undo
        else:
            r = run_cli("verify", store)  # the copy no longer equals the original
            assert r.returncode == 1 and "by_trial/responses: differs from responses at trial 42" in r.stdout


def test_verify_catches_changed_text_and_missing_arrays(make_dataset, store_copy):
    store = store_copy()
    tier = zarr.open_array(store / "tier", mode="r+")
    values = tier[...]
    values[0] = "validation" if values[0] != "validation" else "train"
    tier[...] = values
    shutil.rmtree(store / "statistics/behavior/all/median")
    meta = json.loads((store / "zarr.json").read_text())
    del meta["consolidated_metadata"]["metadata"]["statistics/behavior/all/median"]
    (store / "zarr.json").write_text(json.dumps(meta))
    problems = converter.verify(make_dataset(), store).mismatches
    assert "meta/trials/tiers.npy: text values differ" in problems
    assert "meta/statistics/behavior/all/median.npy: not in the store" in problems


def test_verify_against_another_dataset_fails(make_dataset, make_store):
    report = converter.verify(make_dataset("sensorium"), make_store("none"))
    assert not report.ok
    assert report.mismatches[0].startswith("source fingerprint differs:")  # the cause first, then the details
    assert len(report.mismatches) > 1


def test_verify_with_its_arguments_swapped(make_dataset, make_store):
    r = run_cli("verify", make_store("none", True), make_dataset("none", True))
    assert r.returncode == 2 and "arguments swapped? (verify SRC DEST)" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_validate_detects_tampering(store_copy):
    store = store_copy()
    assert run_cli("validate", store).returncode == 0
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"]["license"]
    meta["consolidated_metadata"]["metadata"]["images"]["dimension_names"][0] = "frame"
    (store / "zarr.json").write_text(json.dumps(meta))
    r = run_cli("validate", store)
    assert r.returncode == 1
    assert "'license' is a required property" in r.stdout and "first dimension is not 'trial'" in r.stdout


def test_cli_flow_sample_convert_verify_info(tmp_path):
    r = run_cli("sample", tmp_path, "--trials", "50", "--neurons", "30", "--zip", "--competition", "sensorium+")
    assert r.returncode == 0, r.stderr
    zip_path = r.stdout.strip()
    assert zip_path.endswith(".zip")
    r = run_cli("convert", zip_path, tmp_path / "m.zarr")
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no progress bar when not on a terminal
    r = run_cli("verify", zip_path, tmp_path / "m.zarr")
    assert r.returncode == 0 and r.stdout.startswith(f"OK: {50 * 4 + 12 + 7 + 40} source files"), r.stdout
    r = run_cli("info", tmp_path / "m.zarr")
    assert r.returncode == 0 and "final_test" in r.stdout and "compression ratio" in r.stdout
    d = json.loads(run_cli("info", tmp_path / "m.zarr", "--json").stdout)
    assert d["n_trials"] == 50 and d["arrays"]["responses"]["shape"] == [50, 30]
    assert d["memory_bytes"] > 0 and d["disk_bytes"] > 0


def test_progress_bar_on_a_terminal(make_dataset, tmp_path):
    import io

    from converter.progress import Progress

    out = io.StringIO()
    with Progress(10, "work", enabled=True, stream=out) as bar:
        for _ in range(10):
            bar(1)
    assert "100.0%" in out.getvalue() and out.getvalue().startswith("\rwork [")
    silent = io.StringIO()
    with Progress(10, "work", stream=silent) as bar:  # a StringIO is not a terminal
        bar(10)
    assert silent.getvalue() == ""


def test_plain_xarray_in_a_process_that_never_imports_converter(make_dataset, make_store):
    script = textwrap.dedent(
        """
        import sys, numpy as np, xarray as xr
        folder, store = sys.argv[1], sys.argv[2]
        ds = xr.open_zarr(store).sortby("trial")  # stored clustered by tier; labelled by file number
        n = ds.sizes["trial"]
        for key in ("images", "responses", "behavior", "pupil_center"):
            src = np.stack([np.load(f"{folder}/data/{key}/{i}.npy", allow_pickle=False) for i in range(n)])
            got = ds[key].values
            assert got.dtype == src.dtype and got.shape == src.shape, key
            assert got.tobytes() == src.tobytes(), key
        tiers = np.load(f"{folder}/meta/trials/tiers.npy", allow_pickle=False)
        assert ds["tier"].values.tolist() == tiers.tolist()
        ids = np.load(f"{folder}/meta/trials/frame_image_id.npy", allow_pickle=False)
        assert (ds["image_id"].values == ids).all()
        assert (ds["neuron"].values == np.load(f"{folder}/meta/neurons/unit_ids.npy")).all()
        assert "converter" not in sys.modules
        print("OK", n, ds["responses"].shape)
        """
    )
    r = subprocess.run([sys.executable, "-c", script, str(make_dataset()), str(make_store())], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK 60 (60, 40)")


def entropy_per_pixel(img: np.ndarray) -> float:
    """Bits per pixel left once each pixel is predicted by its left neighbour (the entropy of
    the differences): what no compressor of the pixels can take out."""
    d = np.diff(np.asarray(img, dtype=np.int64).reshape(-1, img.shape[-1]), axis=1).ravel()
    p = np.bincount(d - d.min()) / d.size
    return float(-(p[p > 0] * np.log2(p[p > 0])).sum())


def test_noisy_sample_images_carry_most_of_white_noise_entropy(tmp_path, make_dataset):
    r = run_cli("sample", tmp_path, "--trials", "40", "--neurons", "5", "--images", "noise", "--quiet")
    assert r.returncode == 0, r.stderr
    noisy = [np.load(Path(r.stdout.strip()) / f"data/images/{i}.npy") for i in range(10)]
    smooth = [np.load(make_dataset() / f"data/images/{i}.npy") for i in range(10)]
    assert noisy[0].shape == smooth[0].shape and noisy[0].dtype == smooth[0].dtype
    assert all(np.array_equal(x, np.round(x)) and 0 <= x.min() and x.max() <= 255 for x in noisy)
    white = entropy_per_pixel(np.random.default_rng(0).integers(0, 256, noisy[0].shape))
    bits = {k: np.mean([entropy_per_pixel(x) for x in v]) for k, v in (("noisy", noisy), ("smooth", smooth))}
    assert bits["noisy"] >= white / 3 and bits["noisy"] > bits["smooth"]
