"""Scoring with the competition's metrics, against an independent oracle written from the
published formulas (sensorium ``utility/metrics.py``, neuralpredictors ``np_functions.py``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

import converter

from .conftest import run_cli


def pearson_eps(x: list[float], y: list[float]) -> float:
    """corr of neuralpredictors for one neuron: population std (ddof 0) plus 1e-8 each."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sx = math.sqrt(sum((v - mx) ** 2 for v in x) / n) + 1e-8
    sy = math.sqrt(sum((v - my) ** 2 for v in y) / n) + 1e-8
    return sum((a - mx) / sx * (b - my) / sy for a, b in zip(x, y)) / n


def var1(x: list[float]) -> float:
    m = sum(x) / len(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def oracle_scores(resp: np.ndarray, pred: np.ndarray, ids: np.ndarray) -> dict[str, list[float]]:
    """Per neuron, by loops over neurons and images (trials in the same order in both arrays)."""
    images = sorted(set(ids.tolist()))
    out = {"single": [], "average": [], "fev": [], "feve": []}
    for j in range(resp.shape[1]):
        r, p = resp[:, j].tolist(), pred[:, j].tolist()
        out["single"].append(pearson_eps(p, r))
        per_r = [[r[i] for i in range(len(r)) if ids[i] == im] for im in images]
        per_p = [[p[i] for i in range(len(p)) if ids[i] == im] for im in images]
        out["average"].append(pearson_eps([sum(g) / len(g) for g in per_r], [sum(g) / len(g) for g in per_p]))
        total = var1([v for g in per_r for v in g])
        noise = sum(var1(g) for g in per_r) / len(per_r)
        mse = sum((a - b) ** 2 for gr, gp in zip(per_r, per_p) for a, b in zip(gr, gp)) / len(r)
        out["fev"].append((total - noise) / total)
        out["feve"].append(1 - (mse - noise) / (total - noise))
    return out


@pytest.fixture(scope="module")
def scored_store(make_store):
    return make_store("none", trials=1200, neurons=24)


def standardized(store) -> xr.DataArray:
    return converter.open_mouse(store).sensorium.standardize().responses


def test_scores_equal_the_published_formulas(scored_store):
    r = standardized(scored_store)
    rng = np.random.default_rng(1)
    pred = r.copy(data=r.values * 0.7 + rng.normal(0, 0.5, r.shape))  # a model: signal plus error
    pred = pred.isel(trial=rng.permutation(r.sizes["trial"]), neuron=rng.permutation(r.sizes["neuron"]))  # any order
    s = converter.score(scored_store, pred)
    test = r.sel(trial=r.trial[r.tier == "test"]).sortby("trial")
    want = oracle_scores(test.values.astype(np.float64), pred.sel(trial=test.trial, neuron=test.neuron).values, test.image_id.values)
    np.testing.assert_allclose(s.single_trial_correlation.sel(neuron=test.neuron).values, want["single"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.correlation_to_average.sel(neuron=test.neuron).values, want["average"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.fev.sel(neuron=test.neuron).values, want["fev"], rtol=1e-9)
    np.testing.assert_allclose(s.feve.sel(neuron=test.neuron).values, want["feve"], rtol=1e-9)
    kept = np.array(want["fev"]) >= 0.15
    assert kept.any() and s.attrs["feve"] == pytest.approx(np.mean(np.array(want["feve"])[kept]), rel=1e-12)
    assert s.attrs["single_trial_correlation"] == pytest.approx(np.mean(want["single"]), rel=1e-12)
    assert s.attrs["n_trials"] == test.sizes["trial"] and s.attrs["n_neurons"] == test.sizes["neuron"]


def test_known_answers(scored_store):
    r = standardized(scored_store)
    perfect = converter.score(scored_store, r)  # the responses themselves
    np.testing.assert_allclose(perfect.single_trial_correlation, 1, atol=1e-6)
    np.testing.assert_allclose(perfect.correlation_to_average, 1, atol=1e-6)
    test = r.sel(trial=r.trial[r.tier == "test"])
    means = test.groupby("image_id").mean("trial").sel(image_id=test.image_id).drop_vars("image_id")
    best = converter.score(scored_store, means.assign_coords(trial=test.trial))  # the best any model can do
    np.testing.assert_allclose(best.correlation_to_average, 1, atol=1e-6)
    # FEVE of the per-image means is 1 + noise / (n (total - noise)) with n repeats: 1 up to the ddof=1 noise estimate
    n = int(np.unique(test.image_id.values, return_counts=True)[1][0])
    noise = test.astype(np.float64).groupby("image_id").var("trial", ddof=1).mean("image_id")
    total = test.astype(np.float64).var("trial", ddof=1)
    np.testing.assert_allclose(best.feve, 1 + noise / (n * (total - noise)), rtol=1e-9)
    rng = np.random.default_rng(2)
    shuffled = converter.score(scored_store, r.copy(data=rng.permutation(r.values)))
    assert abs(shuffled.attrs["single_trial_correlation"]) < 0.05
    scale = xr.DataArray(rng.uniform(0.5, 3, r.sizes["neuron"]), coords={"neuron": r.neuron}, dims="neuron")
    rescaled = converter.score(scored_store, (r * 0.5 + 1) * scale)
    np.testing.assert_allclose(rescaled.single_trial_correlation, perfect.single_trial_correlation, atol=1e-9)
    np.testing.assert_allclose(rescaled.correlation_to_average, perfect.correlation_to_average, atol=1e-9)


def test_oracle_is_the_jackknife(scored_store):
    ds = converter.open_mouse(scored_store)
    test = ds.sensorium.tier("test").sortby("trial")
    resp, ids = test.responses.values.astype(np.float64), test.image_id.values
    o = converter.oracle(scored_store)
    for j in range(resp.shape[1]):
        own, others = [], []
        for im in sorted(set(ids.tolist())):
            rows = [resp[i, j] for i in range(len(ids)) if ids[i] == im]
            for k, v in enumerate(rows):
                own.append(v)
                others.append((sum(rows) - v) / (len(rows) - 1))
        assert o.sel(neuron=test.neuron[j]).item() == pytest.approx(pearson_eps(own, others), rel=1e-9, abs=1e-12)
    assert o.attrs["mean"] == pytest.approx(float(np.mean(o.values)))


def test_misaligned_or_withheld_is_one_line(scored_store, make_store):
    r = standardized(scored_store)
    with pytest.raises(ValueError, match="no prediction for 1 neurons"):
        converter.score(scored_store, r.isel(neuron=slice(1, None)))
    with pytest.raises(ValueError, match="no tier 'final_test'"):
        converter.score(scored_store, r, tier="final_test")
    with pytest.raises(ValueError, match=r"responses of tier 'test' are withheld"):
        converter.score(make_store("sensorium"), standardized(make_store("sensorium")))


def test_score_command_reads_zarr_and_the_submission_csv(scored_store, tmp_path):
    r = standardized(scored_store)
    pred = r.copy(data=r.values * 0.8 + np.random.default_rng(3).normal(0, 0.3, r.shape))
    want = converter.score(scored_store, pred).attrs
    pred.to_dataset(name="prediction").to_zarr(tmp_path / "p.zarr", zarr_format=3, consolidated=False)
    got = run_cli("score", scored_store, tmp_path / "p.zarr", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["single_trial_correlation"] == pytest.approx(want["single_trial_correlation"])
    test = pred.sel(trial=pred.trial[pred.tier == "test"])
    lines = ["trial_indices,image_ids,prediction,neuron_ids"]
    units = json.dumps(test.neuron.values.tolist())
    for t in range(test.sizes["trial"]):
        row = test.isel(trial=t)
        lines.append(f'{row.trial_idx.item()},{row.image_id.item()},"{json.dumps(row.values.tolist())}","{units}"')
    (tmp_path / "submission.csv").write_text("\n".join(lines) + "\n")
    got = run_cli("score", scored_store, tmp_path / "submission.csv", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["feve"] == pytest.approx(want["feve"])
    (tmp_path / "bad.csv").write_text("\n".join(lines[:2] + [lines[2].replace(str(test.trial_idx.values[1]), "999999", 1)]) + "\n")
    got = run_cli("score", scored_store, tmp_path / "bad.csv")
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and "bad.csv:3: trial_indices" in got.stderr, got.stderr


def test_predictions_from_netcdf(scored_store, tmp_path):
    pytest.importorskip("scipy")  # xarray's NetCDF3 writer and reader
    from converter.read.score import read_predictions

    r = standardized(scored_store)
    pred = r.copy(data=r.values * 0.5 + 0.1)
    plain = xr.DataArray(pred.values, dims=("trial", "neuron"),  # NetCDF3 has no int64: int32 labels
                         coords={"trial": pred.trial.values.astype("int32"), "neuron": pred.neuron.values.astype("int32")})
    plain.to_dataset(name="prediction").to_netcdf(tmp_path / "p.nc", engine="scipy")
    got = converter.score(scored_store, read_predictions(tmp_path / "p.nc"))
    assert got.attrs["single_trial_correlation"] == pytest.approx(converter.score(scored_store, pred).attrs["single_trial_correlation"])
    with pytest.raises(ValueError, match="no 'prediction' variable"):
        read_predictions(_renamed(tmp_path, plain))


def _renamed(tmp_path, plain: xr.DataArray):
    plain.to_dataset(name="guess").to_netcdf(tmp_path / "q.nc", engine="scipy")
    return tmp_path / "q.nc"


VIDEO = {"video": True, "trials": 40, "neurons": 6, "frames": 64}


def test_clip_scores_and_oracle_match_loops_over_frames(make_dataset, make_store, tmp_path):
    from converter.read.score_video import SKIP_FRAMES

    folder, store = make_dataset(**VIDEO), make_store(**VIDEO)
    tiers = np.load(folder / "meta/trials/tiers.npy")
    trials = [i for i in range(VIDEO["trials"]) if tiers[i] == "oracle"]
    resp = {i: np.load(folder / f"data/responses/{i}.npy") for i in trials}
    videos = {i: np.load(folder / f"data/videos/{i}.npy") for i in trials}
    length = {i: next((t for t in range(64) if np.isnan(videos[i][..., t]).any()), 64) for i in trials}
    rng = np.random.default_rng(1)
    pred = {i: np.nan_to_num(resp[i]) + rng.normal(0, 0.5, resp[i].shape) for i in trials}
    units = np.load(folder / "meta/neurons/unit_ids.npy")
    da = xr.DataArray(np.stack([pred[i] for i in trials[::-1]]), dims=("trial", "neuron", "frame"),
                      coords={"trial": trials[::-1], "neuron": units})  # any order: labels align
    s = converter.score(store, da)
    assert s.attrs["tier"] == "oracle" and s.attrs["n_frames_scored"] == sum(length[i] - SKIP_FRAMES for i in trials)
    for j in range(VIDEO["neurons"]):
        x = [float(v) for i in trials for v in pred[i][j, SKIP_FRAMES : length[i]]]
        y = [float(v) for i in trials for v in resp[i][j, SKIP_FRAMES : length[i]]]
        assert s["single_trial_correlation"].values[j] == pytest.approx(pearson_eps(x, y), abs=1e-9)
    # oracle: repeats are trials with the same video, compared frame by frame
    groups = {}
    for i in trials:
        groups.setdefault(videos[i][..., : length[i]].tobytes(), []).append(i)
    assert all(len(g) > 1 for g in groups.values())
    o = converter.oracle(store)
    for j in range(VIDEO["neurons"]):
        own, others = [], []
        for g in groups.values():
            for i in g:
                for t in range(SKIP_FRAMES, length[i]):
                    own.append(float(resp[i][j, t]))
                    others.append(sum(float(resp[k][j, t]) for k in g if k != i) / (len(g) - 1))
        assert o.values[j] == pytest.approx(pearson_eps(own, others), abs=1e-9)
    da.to_dataset(name="prediction").to_zarr(tmp_path / "p.zarr", zarr_format=3, consolidated=False)
    r = run_cli("score", store, tmp_path / "p.zarr", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["single_trial_correlation"] == pytest.approx(s.attrs["single_trial_correlation"])
    r = run_cli("score", store, tmp_path / "p.zarr", "--tier", "live_test_main")
    assert r.returncode == 2 and "withheld" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_nan_predictions_are_refused_by_one_rule(scored_store, tmp_path):
    r = standardized(scored_store)
    pred = r.copy(data=r.values.astype(np.float64))
    test = np.flatnonzero(pred.tier.values == "test")
    pred.values[:, 3] = np.nan  # one neuron all NaN
    pred.values[test[5], 7] = np.nan  # and one cell
    with pytest.raises(ValueError, match=r"predictions: \d+ values are NaN or infinite, in 2 of 24 neurons"):
        converter.score(scored_store, pred)
    pred.to_dataset(name="prediction").to_zarr(tmp_path / "p.zarr", zarr_format=3, consolidated=False)
    got = run_cli("score", scored_store, tmp_path / "p.zarr")
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and "NaN" in got.stderr, got.stderr
    fine = r.copy(data=r.values.astype(np.float64))
    fine.values[np.flatnonzero(fine.tier.values == "train")[:3], 0] = np.nan  # outside the scored tier: not scored
    converter.score(scored_store, fine)


def test_nan_in_unscored_clip_frames_is_accepted_and_in_scored_ones_refused(make_dataset, make_store):
    from converter.read.score_video import SKIP_FRAMES

    store = make_store(**VIDEO)
    ds = converter.open_mouse(store).sensorium.tier("oracle")
    pred = ds.responses.fillna(0).astype(np.float64).copy()
    pred.values[:, :, :SKIP_FRAMES] = np.nan  # the burn-in is never scored
    converter.score(store, pred)
    pred.values[0, 2, SKIP_FRAMES] = np.nan
    with pytest.raises(ValueError, match="1 values are NaN or infinite, in 1 of"):
        converter.score(store, pred)
