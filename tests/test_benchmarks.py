"""The benchmark suite at tiny size, so that it never rots (full size is not run in CI)."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def needs_torch():
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")


def test_tiny_benchmark_run_writes_every_output(tmp_path, needs_torch):
    from benchmarks import run

    result = run.run("tiny", data=tmp_path / "data", out=tmp_path / "out")
    workloads = {r["workload"] for r in result["rows"]}
    for w in ("convert", "convert from zip", "open (metadata only)", "load all responses", "random batch of 128, all keys",
              "epoch of the train loader (normalised images + responses)", "responses of the train tier",
              "one neuron, all trials", "test repeats grouped by image_id (mean)", "size", "convert several mice",
              "loader memory"):
        assert w in workloads, w
    assert {r["dataset"] for r in result["rows"]} == {"float32 images", "uint8 images", "float32 noise images"}
    scale = [r for r in result["rows"] if r["workload"] == "convert several mice"]
    assert [r["workers"] for r in scale] == [2] and all(r["peak_worker_mb"] > 0 for r in scale)  # 1 and 2 at full size
    timed = [r for r in result["rows"] if "seconds" in r]
    assert all(r["seconds"] > 0 for r in timed)
    names = {t["target"] for t in result["targets"]}
    assert {"one neuron, open_mouse default >= 50x (a)", "store <= 0.8x the source bytes", "random batch, MouseDataset default >= 3x (a)",
            "plain xr.open_zarr, load all responses >= 1x (a)", "test repeats mean per image >= 5x (a)"} <= names
    assert any(n.startswith("loaders over 2 mice, 2 workers") for n in names)
    modes = {r.get("mode") for r in result["rows"] if r["workload"] == "load all responses"}
    assert "plain xr.open_zarr, no converter" in modes  # measured in a child process
    saved = json.loads((tmp_path / "out/results-tiny.json").read_text())
    assert saved["machine"]["cores"] >= 1 and len(saved["rows"]) == len(result["rows"])
    md = (tmp_path / "out/results-tiny.md").read_text()
    assert "| float32 images | all responses, open_mouse >= 10x (a) |" in md
    png = (tmp_path / "out/results-tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_tiny_video_benchmark_run(tmp_path, needs_torch):
    from benchmarks import video

    result = video.run("tiny", data=tmp_path / "data", out=tmp_path / "out")
    workloads = {r["workload"] for r in result["rows"]}
    assert {"convert", "random batch of 32 clips x 60 frames, all keys", "one neuron, all trials and frames"} <= workloads
    assert {t["target"] for t in result["targets"]} == {
        "random batch of 32 clips x 60 frames >= 3x (a)", "one neuron, all trials >= 50x (a)",
        "conversion <= 3x the time to np.load every file", "peak memory flat across sizes (max/min)",
        "the same, normalised, against the official transform chain >= 3x"}
    assert all(r["seconds"] > 0 for r in result["rows"])
    md = (tmp_path / "out/video-tiny.md").read_text()
    assert "| random batch of 32 clips x 60 frames >= 3x (a) |" in md and "| convert | 40 |" in md


def test_tiny_remote_benchmark_run(tmp_path, needs_torch):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from benchmarks import remote

    result = remote.run("tiny", data=tmp_path / "data", out=tmp_path / "out")  # its own moto server on loopback
    rows = result["rows"]
    assert {r["workload"] for r in rows} == {"a run of 200 trials (the overview's panel)", "the train tier",
                                            "random batch of 128 trials", "one neuron, all trials", remote.OPEN, remote.STREAM, remote.CONVERT}
    assert sorted(r["method"] for r in rows if r["workload"] == remote.CONVERT) == ["a", "c"]
    assert sorted(r["run_length"] for r in rows if r["workload"] == remote.STREAM) == [1, remote.RUNS]
    run = [r for r in rows if r["workload"].startswith("a run of")]
    assert {r.get("layout") for r in run} == {None, "tiles", "by_trial", remote.ZARR, "open_mouse (by_trial)"}  # one merged request
    assert all(r["seconds"] > 0 for r in rows)
    md = (tmp_path / "out/remote-tiny.md").read_text()
    assert "| a run of 200 trials (the overview's panel) |" in md and "Into the bucket: `convert`" in md


def test_tiny_training_benchmark_run(tmp_path, needs_torch):
    from benchmarks import training

    rows = training.run("tiny", tmp_path / "data", tmp_path / "out", model=False)
    loaders = {r["loader"] for r in rows}
    assert {"file tree", "loaders", "the streaming reads alone", "DeviceLoader resident", "DeviceLoader streaming, 3 mice"} <= loaders
    assert all(r["trials_per_s"] > 0 and 0 <= r["waiting"] <= 1 and r["peak_mb"] > 0 for r in rows)
    assert "| DeviceLoader resident |" in (tmp_path / "out" / "training-tiny.md").read_text()


def test_tiny_engines_benchmark_compares_every_engine_and_forks_each(tmp_path):
    from benchmarks import engines

    result = engines.run("tiny", data=tmp_path / "data", out=tmp_path / "out")
    names = {r["engine"] for r in result["rows"]}
    assert {engines.OURS, "zarr-python"} <= names
    assert {r["row"] for r in result["rows"]} == set(engines.selections(10, 10))
    assert {f["engine"] for f in result["forks"]} == names
    assert next(f for f in result["forks"] if f["engine"] == engines.OURS)["ok"]  # ours survives a fork
    assert {v["engine"] for v in result["verdict"]} == names - {engines.OURS}
    md = next((tmp_path / "out").glob("engines-tiny-py*.md")).read_text()
    assert "| read in forked workers |" in md and "| all responses (tiles) |" in md


def test_tiny_conversion_benchmark_measures_every_target(tmp_path):
    from benchmarks import conversion

    result = conversion.run("tiny", data=tmp_path / "data", out=tmp_path / "out")
    workloads = {r["workload"] for r in result["rows"]}
    assert {"convert", "convert from the zip", "unzip -q", "verify SRC DEST", "convert-all", "sensorium-zarr --help", conversion.COPY,
            "sensorium-zarr info STORE", "phases of one conversion", "np.load every data file, one thread"} <= workloads
    phases = next(r["phases"] for r in result["rows"] if r["workload"] == "phases of one conversion")
    assert phases["total"] > 0 and all(v >= 0 for v in phases.values()) and "blocks (read, encode, write), on the workers" in phases
    assert all(r["seconds"] > 0 for r in result["rows"] if "seconds" in r)
    assert all(r["cpu_s"] >= 0 for r in result["rows"] if "cpu_s" in r) and any("cpu_s" in r for r in result["rows"])
    assert {t["target"] for t in result["targets"]} >= {"a full-size mouse <= 1.0x np.load of every file", "from the zip <= 0.5x unzip -q",
                                                       "a 2023 mouse <= 1.0x np.load", "sensorium-zarr --help <= 0.3 s"}
    assert "| target | measured | met |" in (tmp_path / "out/conversion-tiny.md").read_text()


def test_tiny_scaling_benchmark_times_every_worker_count(tmp_path):
    from benchmarks import scaling

    result = scaling.run("tiny", data=tmp_path / "data", out=tmp_path / "out")
    cores = os.cpu_count() or 1
    counts = {r["workers"] for r in result["rows"] if r["workload"] == "convert"}
    assert {1, cores} <= counts and max(counts) == cores
    assert sum(r["workload"] == "phases" for r in result["rows"]) == len({1, cores})
    assert "| workers |" in (tmp_path / "out/scaling-tiny.md").read_text()
