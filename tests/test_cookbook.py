"""docs/cookbook.md: the ten analyses, in plain xarray (in a process that never imports
``converter``) and through ``open_mouse``, against a NumPy loop over the source files."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import converter
from benchmarks import cookbook as C


ROOT = Path(__file__).resolve().parents[1]
# The child: plain xarray on the store, every analysis, results pickled; it must never import converter.
CHILD = """
import pickle, sys, os
from benchmarks import cookbook as C
store, out, clips = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
os.chdir(os.path.dirname(out))
ds = C.open_plain(store)
results = {a.name: a.plain(ds) for a in C.ANALYSES if a.clips == clips}
assert "converter" not in sys.modules, "plain xarray imported converter"
pickle.dump(results, open(out, "wb"))
"""


def plain_results(store, tmp_path, clips=False) -> dict:
    out = tmp_path / "plain.pickle"
    r = subprocess.run([sys.executable, "-c", CHILD, str(store), str(out), "1" if clips else "0"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return pickle.loads(out.read_bytes())


def sensorium_results(store, tmp_path, monkeypatch, clips=False) -> dict:
    monkeypatch.chdir(tmp_path)
    ds = converter.open_mouse(store)
    return {a.name: a.sensorium(ds) for a in C.ANALYSES if a.clips == clips}


def files_results(folder, tmp_path, monkeypatch, clips=False) -> dict:
    monkeypatch.chdir(tmp_path)  # the NumPy loop writes analysis 8's NetCDF file here
    tree = C.FileTree(folder)
    return {a.name: a.files(tree) for a in C.ANALYSES if a.clips == clips}


def by_trial(da: xr.DataArray, trials: np.ndarray) -> np.ndarray:
    return da.sel(trial=trials).values


def check_2022(got: dict, want: dict) -> None:
    close = dict(rtol=1e-5, atol=1e-6)  # float32 sums in xarray, float64 in the loop
    g, w = got["1. mean response per image"], want["1. mean response per image"]
    for k in ("all", "test"):
        ids, values = w[k]
        np.testing.assert_array_equal(g[k]["image_id"].values, ids)
        np.testing.assert_allclose(g[k].transpose("image_id", "neuron").values, values, **close)
    g, (trials, values) = got["2. select a tier"]["responses"], want["2. select a tier"]["responses"]
    assert sorted(g["trial"].values.tolist()) == trials.tolist()
    np.testing.assert_array_equal(by_trial(g, trials), values)  # a selection: the same bits
    g, w = got["3. test repeats: mean, variance, oracle"], want["3. test repeats: mean, variance, oracle"]
    for k in ("mean", "var"):
        ids, values = w[k]
        np.testing.assert_array_equal(g[k]["image_id"].values, ids)
        np.testing.assert_allclose(g[k].transpose("image_id", "neuron").values, values, rtol=1e-5, atol=1e-7)
    # converter.oracle adds the competition's 1e-8 to each standard deviation: ~1e-5 apart at most
    np.testing.assert_allclose(g["oracle"].values, w["oracle"], rtol=1e-5, atol=1e-4)
    g, (units, values) = got["4. neurons of one area, by depth"]["responses"], want["4. neurons of one area, by depth"]["responses"]
    np.testing.assert_array_equal(g["neuron"].values, units)  # in depth order
    np.testing.assert_array_equal(g.values, values[g["trial"].values])
    g, w = got["5. running against still"]["by_state"], want["5. running against still"]["by_state"]
    np.testing.assert_array_equal(g["running"].values, [False, True])
    np.testing.assert_allclose(g.transpose("running", "neuron").values, w, **close)
    g, (order, values) = got["6. presentation order, rolling mean"]["rolling"], want["6. presentation order, rolling mean"]["rolling"]
    np.testing.assert_array_equal(g["trial"].values, order)
    np.testing.assert_allclose(g.values, values, rtol=1e-5, atol=1e-7)
    g, (unit, ids, values) = got["7. one neuron's tuning, top 10"]["top10"], want["7. one neuron's tuning, top 10"]["top10"]
    assert int(g["neuron"]) == unit
    np.testing.assert_allclose(g.values, values, **close)
    np.testing.assert_array_equal(g["image_id"].values[values > 0], ids[values > 0])  # ties at 0 may come in any order
    g, w = got["8. a subset to NetCDF and pandas"], want["8. a subset to NetCDF and pandas"]
    trials, values = w["netcdf"]
    np.testing.assert_array_equal(by_trial(g["netcdf"], trials), values)
    table = g["table"]
    assert len(table) == values.size and table.index.names == ["trial", "neuron"]
    np.testing.assert_array_equal(table.xs(int(trials[0]), level="trial").values, values[0])
    g, w = got["9. correlation matrix of 100 neurons"]["matrix"], want["9. correlation matrix of 100 neurons"]["matrix"]
    np.testing.assert_allclose(g.values, w, rtol=1e-5, atol=1e-6)


def check_2023(got: dict, want: dict) -> None:
    g, w = got["10. 2023: valid frames per clip, time course per tier"], want["10. 2023: valid frames per clip, time course per tier"]
    trials = g["per_clip"]["trial"].values
    np.testing.assert_allclose(g["per_clip"].transpose("trial", "neuron").values, w["per_clip"][trials], rtol=1e-5, atol=1e-7)
    assert sorted(g["time_course"]["tier"].values.tolist()) == sorted(w["time_course"])
    for tier, course in w["time_course"].items():
        np.testing.assert_allclose(g["time_course"].sel(tier=tier).values, course, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def mouse(make_dataset, make_store):
    kw = {"trials": 200, "neurons": 30}  # ten repeats per test image
    return make_dataset(**kw), make_store(**kw)


def test_plain_xarray_in_a_process_without_converter_matches_the_files(mouse, tmp_path, monkeypatch):
    folder, store = mouse
    check_2022(plain_results(store, tmp_path), files_results(folder, tmp_path, monkeypatch))


def test_open_mouse_and_ds_sensorium_match_the_files(mouse, tmp_path, monkeypatch):
    folder, store = mouse
    check_2022(sensorium_results(store, tmp_path, monkeypatch), files_results(folder, tmp_path, monkeypatch))


def test_the_2023_analysis_plain_and_through_open_mouse(clips, clip_store, tmp_path, monkeypatch):
    want = files_results(clips, tmp_path, monkeypatch, clips=True)
    check_2023(plain_results(clip_store, tmp_path, clips=True), want)
    check_2023(sensorium_results(clip_store, tmp_path, monkeypatch, clips=True), want)


def test_the_cookbook_page_shows_the_code_that_is_tested():
    page = (ROOT / "docs/cookbook.md").read_text()
    shown = {line.strip() for line in page.splitlines()}
    for fn in [inspect.getsource(C.open_plain)] + [inspect.getsource(f) for a in C.ANALYSES for f in (a.plain, a.sensorium)]:
        body = textwrap.dedent(fn).splitlines()[1:]
        for line in body:
            line = line.strip()
            if line and not line.startswith(("return", '"""', "import")):
                assert line in shown, f"docs/cookbook.md lacks: {line}"
