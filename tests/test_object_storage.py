"""Object storage: sources and stores read from a real S3 API (moto's server) on loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

import converter

from .conftest import bits, upload_mice
from .conftest import run_cli

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

pytestmark = pytest.mark.slow


def test_convert_from_a_zip_and_a_folder_in_s3(s3, make_dataset, tmp_path):
    endpoint, fs = s3
    zip_path, folder = make_dataset("sensorium", True), make_dataset()
    fs.put(str(zip_path), f"data/in/{zip_path.name}")
    fs.put(str(folder), f"data/in/{folder.name}", recursive=True)
    # through the AWS environment variables, on the command line
    r = run_cli("convert", f"s3://data/in/{zip_path.name}", tmp_path / "z.zarr")
    assert r.returncode == 0, r.stderr
    r = run_cli("verify", f"s3://data/in/{zip_path.name}", tmp_path / "z.zarr")
    assert r.returncode == 0 and r.stdout.startswith("OK: 299"), r.stdout + r.stderr
    # through explicit storage options, from Python
    opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    store = converter.convert(f"s3://data/in/{folder.name}", tmp_path / "f.zarr", storage_options=opts, progress=False)
    assert converter.verify(folder, store).ok
    assert xr.open_zarr(store).attrs["source_fingerprint"] == xr.open_zarr(converter.convert(folder, tmp_path / "l.zarr")).attrs["source_fingerprint"]


def test_stores_in_s3_read_like_local_ones(s3, make_dataset, make_store, tmp_path):
    endpoint, fs = s3
    local = make_store()
    fs.put(str(local), "data/stores/m.zarr", recursive=True)
    url = "s3://data/stores/m.zarr"
    remote = converter.open_mouse(url)
    xr.testing.assert_identical(remote, converter.open_mouse(local))
    assert bits(remote.sensorium.normalize().responses.values) == bits(converter.open_mouse(local).sensorium.normalize().responses.values)
    assert list(converter.open_mice("s3://data/stores").children) == [remote.attrs["data_key"]]
    from converter.read.engine import open_reader

    assert open_reader(url, "responses").chunk_cost > open_reader(local, "responses").chunk_cost  # a request costs more
    run = remote.responses.isel(trial=slice(3, 50))  # a run of trials: one merged range request of the trial-major copy
    assert bits(run.values) == bits(converter.open_mouse(local).responses.isel(trial=slice(3, 50)).values)
    assert converter.info(url)["disk_bytes"] == sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
    assert converter.verify(make_dataset(), url).ok and converter.self_check(url).ok
    out = converter.export(url, tmp_path / "restored")
    sha = lambda root: {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.npy"))}
    assert sha(out) == sha(make_dataset())
    torch = pytest.importorskip("torch")
    from converter.torch import MouseDataset

    a, b = MouseDataset(url, normalize=True), MouseDataset(local, normalize=True)
    assert all(torch.equal(a[i].responses, b[i].responses) for i in (0, 17, 59))
    from converter.torch import DeviceLoader

    kw = {"batch_size": 16, "device": "cpu", "mode": "streaming", "keys": ("images", "responses"), "normalize": True, "seed": 1}
    for x, y in zip(DeviceLoader(url, **kw), DeviceLoader(local, **kw), strict=True):  # streamed from the bucket
        assert all(torch.equal(x[k], y[k]) for k in x)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # only --storage-option now
    r = subprocess.run([sys.executable, "-m", "converter.cli", "info", url, "--json", "--storage-option", f"endpoint_url={endpoint}",
                        "--storage-option", "key=testing", "--storage-option", "secret=testing"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and '"n_trials": 60' in r.stdout, r.stderr


def test_whole_rows_in_s3_come_in_one_round_of_range_requests(s3, make_store, monkeypatch):
    import json

    from converter.read.engine import open_reader
    from converter.zarrlite import ChunkReader, RemoteRows

    endpoint, fs = s3
    local = make_store()
    fs.put(str(local), "data/rows/m.zarr", recursive=True)
    url = "s3://data/rows/m.zarr"
    meta = json.loads((local / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    rows = np.array([41, 3, 3, 59, 0, 17])
    for name, gap in [("by_trial/responses", 0), ("images", 0), ("by_trial/responses", 1 << 20), ("images", 1 << 20)]:
        remote, here = open_reader(url, name, meta=meta[name]), ChunkReader.from_path(local / name)
        assert isinstance(remote, RemoteRows)
        rounds = []
        real = remote.fs.cat_ranges
        monkeypatch.setattr(remote.fs, "cat_ranges", lambda paths, *a, **k: rounds.append(len(paths)) or real(paths, *a, **k))
        monkeypatch.setattr("converter.zarrlite.remote.MAX_GAP", gap)
        assert bits(remote.read((rows,))) == bits(here.read((rows,)))
        # one round of concurrent requests: the five distinct rows, or fewer where nearby ones merge
        assert rounds == [5] if gap == 0 else rounds == [1], (name, gap, rounds)
        monkeypatch.undo()
    from converter.read.engine import cost

    by_trial, tiles = open_reader(url, "by_trial/responses", meta=meta["by_trial/responses"]), open_reader(url, "responses", meta=meta["responses"])
    assert cost(by_trial, (np.arange(3, 50),)) < cost(tiles, (np.arange(3, 50),))  # a run of trials: one merged request
    assert cost(tiles, (slice(None), np.array([7]))) < cost(by_trial, (slice(None), np.array([7])))  # one neuron: the tiles
    other = (rows, np.array([7, 0, 7]))  # not whole rows: through zarr-python
    assert bits(open_reader(url, "by_trial/responses", meta=meta["by_trial/responses"]).read(other)) == bits(ChunkReader.from_path(local / "by_trial/responses").read(other))
    shard = "data/rows/m.zarr/by_trial/responses/c/0/0"
    data = bytearray(fs.cat_file(shard))
    data[40] ^= 0xFF  # inside the inner chunk of row 0
    fs.pipe_file(shard, bytes(data))
    with pytest.raises(ValueError, match=r"^s3://data/rows/m.zarr/by_trial/responses: inner chunk \(0, 0\): damaged"):
        open_reader(url, "by_trial/responses", meta=meta["by_trial/responses"]).read((np.arange(60),))


def test_plain_xarray_reads_a_store_in_s3(s3, make_dataset, make_store):
    endpoint, fs = s3
    fs.put(str(make_store("sensorium+")), "data/plain/m.zarr", recursive=True)
    script = textwrap.dedent(
        """
        import sys, numpy as np, xarray as xr
        folder, endpoint = sys.argv[1], sys.argv[2]
        ds = xr.open_zarr("s3://data/plain/m.zarr", storage_options={"endpoint_url": endpoint, "key": "testing", "secret": "testing"}).sortby("trial")
        src = np.stack([np.load(f"{folder}/data/responses/{i}.npy") for i in range(ds.sizes["trial"])])
        assert ds["responses"].values.tobytes() == src.tobytes()
        assert "converter" not in sys.modules
        print("OK", ds.attrs["data_key"])
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    r = subprocess.run([sys.executable, "-c", script, str(make_dataset("sensorium+")), endpoint], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr


def test_missing_locations_fail_in_one_line(s3, make_dataset, tmp_path):
    r = run_cli("info", "s3://data/nothing.zarr")
    assert r.returncode == 2 and "s3://data/nothing.zarr: does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("convert", "s3://data/nothing.zip", tmp_path / "m.zarr")
    assert r.returncode == 2 and "s3://data/nothing.zip: does not exist" in r.stderr


def test_convert_into_s3(s3, make_dataset):
    endpoint, fs = s3
    src = make_dataset("sensorium", True)
    r = run_cli("convert", src, "s3://data/out/m.zarr")
    assert r.returncode == 0, r.stderr
    assert converter.verify(src, "s3://data/out/m.zarr").ok and converter.self_check("s3://data/out/m.zarr").ok
    assert not fs.exists("data/out/m.zarr.incomplete")  # the records are gone once the store is complete
    r = run_cli("convert", src, "s3://data/out/m.zarr")  # the same source again: nothing to do
    assert r.returncode == 0 and "already complete" in r.stdout and not fs.exists("data/out/m.zarr.incomplete"), r.stderr
    r = run_cli("convert", make_dataset("sensorium", True, seed=2), "s3://data/out/m.zarr")
    assert r.returncode == 2 and "already exists" in r.stderr
    assert run_cli("convert", src, "s3://data/out/m.zarr", "--overwrite").returncode == 0
    assert converter.verify(src, "s3://data/out/m.zarr").ok


def test_a_conversion_into_s3_puts_each_object_about_once(s3, make_dataset, monkeypatch):
    """xarray and zarr-python write each array's metadata with about eight requests, one after
    another (1,472 requests for this sample).  Staged in memory, the skeleton, flags and checksums
    go out as rounds of PUTs: each object of the store is put about once, and existence checks
    are few."""
    import collections

    import s3fs

    endpoint, fs = s3
    calls: collections.Counter = collections.Counter()
    original = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls[getattr(method, "__name__", str(method))] += 1
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    src, url = make_dataset("sensorium", True), "s3://data/requests/m.zarr"
    converter.convert(src, url, progress=False)
    monkeypatch.undo()
    objects = len(fs.find("data/requests/m.zarr"))
    # beyond the store's objects: the root metadata twice (skeleton, end) and the lock and resume records
    assert calls["put_object"] <= objects + 15, (calls, objects)
    assert calls["head_object"] + calls["list_objects_v2"] <= 40, calls
    assert converter.verify(src, url).ok


@pytest.mark.parametrize("where", ["/responses/c/", "/checksums/data/responses"])  # a block's chunk we encode; zarr's final writes
def test_interrupted_write_to_s3_is_invisible_then_resumes(s3, make_dataset, monkeypatch, disk_full, where):
    endpoint, fs = s3
    src, url = make_dataset(), f"s3://data/partial{len(where)}/m.zarr"
    disk_full(where)
    with pytest.raises(converter.StorageError, match="run the same command again to resume"):
        converter.convert(src, url)
    monkeypatch.undo()
    prefix = url.removeprefix("s3://")
    assert fs.exists(f"{prefix}/images") and not fs.exists(f"{prefix}/zarr.json")
    with pytest.raises(converter.StoreError, match="no complete store here"):
        converter.open_mouse(url)
    from zarr.errors import GroupNotFoundError

    with pytest.raises(GroupNotFoundError):  # plain xarray finds no store either
        xr.open_zarr(url)
    blocks_before = fs.glob(f"{prefix}.incomplete/state/blocks/*.json")
    assert converter.convert(src, url, progress=False) == url
    assert converter.verify(src, url).ok and not fs.exists(f"{prefix}.incomplete")
    if where == "/responses/c/":
        assert blocks_before == []  # the block failed, so nothing was recorded as done before the resume
    else:
        assert len(blocks_before) == 1  # every block was done; only the last steps remained


def test_s3_lock_refuses_a_live_writer_and_takes_over_a_dead_one(s3, make_dataset):
    import json as _json
    import socket as _socket

    from converter.write.state import ObjectStoreState

    endpoint, fs = s3
    src, url = make_dataset(), "s3://data/locked/m.zarr"
    with ObjectStoreState(url, None):  # this live process is "the conversion that is running"
        r = run_cli("convert", src, url)
        assert r.returncode == 2 and f"another conversion (pid {os.getpid()} on" in r.stderr, r.stderr
    fs.pipe_file("data/locked/m.zarr.incomplete/state/lock",
                 _json.dumps({"host": _socket.gethostname(), "pid": 2**22 + 7, "token": "dead", "time": time.time()}).encode())
    r = run_cli("convert", src, url)  # its holder is a dead process on this host
    assert r.returncode == 0, r.stderr
    assert converter.verify(src, url).ok


def test_convert_all_from_and_into_s3(s3, make_dataset):
    endpoint, fs = s3
    from distributed import LocalCluster

    mice = upload_mice(fs, "data/all-in", make_dataset, (("none", False, 7), ("sensorium+", True, 8)))
    rows = converter.convert_all("s3://data/all-in", "s3://data/all-out", workers=2)
    assert [r.status for r in rows] == ["converted", "converted"], rows
    for p in mice:
        assert converter.verify(p, f"s3://data/all-out/{p.name.removesuffix('.zip')}.zarr").ok
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        again = converter.convert_all("s3://data/all-in", "s3://data/all-out", scheduler=cluster.scheduler_address)
    assert [r.status for r in again] == ["complete", "complete"]  # found complete: nothing to convert


def test_s3_lock_admits_one_of_many_writers_starting_at_once(s3):
    """Conditional writes (If-None-Match, If-Match): one winner, also when taking over a stale lock."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from converter.write.state import ObjectStoreState

    endpoint, fs = s3
    for round, url in enumerate(["s3://data/race/m.zarr", "s3://data/race/m.zarr"]):
        states = [ObjectStoreState(url, None) for _ in range(8)]
        if round:
            time.sleep(3)  # the first round's lock is now 3 s old
        for s in states:
            # The second round finds the first round's lock stale, but not the one its winner has
            # just written: with "every lock is stale" a writer arriving after the winner would
            # rightly take over from it too.
            s.STALE_SECONDS = 2 if round else 600
        barrier = threading.Barrier(len(states))

        def enter(state):
            barrier.wait()
            try:
                return state.__enter__()
            except converter.StoreError:
                return None

        with ThreadPoolExecutor(len(states)) as pool:
            winners = [s for s in pool.map(enter, states) if s is not None]
        assert len(winners) == 1, f"round {round}: {len(winners)} writers hold the lock"
        if round == 0:
            first = winners[0]
    with pytest.raises(converter.StoreError, match="took over this store's lock; stopped"):
        first._heartbeat()  # the writer whose lock was taken over stops at its next block
    winners[0].__exit__(None, None, None)
    assert not fs.exists("data/race/m.zarr.incomplete/state/lock")


def test_object_storage_failures_are_one_line_naming_the_url(s3, make_dataset, tmp_path):
    import importlib.util

    endpoint, fs = s3
    src = make_dataset("none", True)
    no_keys = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    no_keys["AWS_SHARED_CREDENTIALS_FILE"] = no_keys["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    cases = [  # (arguments, environment, what the line must say, exit code)
        (["info", "s3://data/x.zarr"], no_keys, "s3://data/x.zarr: Unable to locate credentials", 3),
        (["convert", src, "s3://data/y.zarr"], no_keys, "s3://data/y.zarr: Unable to locate credentials", 3),
        (["info", "s3://data/x.zarr", "--storage-option", "endpoint_url=http://127.0.0.1:9"],
         {**os.environ, "AWS_MAX_ATTEMPTS": "1"}, "s3://data/x.zarr: Could not connect to the endpoint URL", 3),
        (["info", "s3://no-such-bucket/x.zarr"], None, "s3://no-such-bucket/x.zarr: does not exist", 2),
        (["convert", src, "s3://no-such-bucket/y.zarr"], None, "s3://no-such-bucket/y.zarr: The specified bucket does not exist", 3),
    ]
    if importlib.util.find_spec("gcsfs") is None:
        cases.append((["info", "gcs://bucket/x.zarr"], None, "reading gcs:// needs a package that is not installed", 2))
    for argv, env, says, code in cases:
        r = subprocess.run([sys.executable, "-m", "converter.cli", *map(str, argv)], capture_output=True, text=True, env=env)
        assert r.returncode == code and says in r.stderr and r.stderr.count("\n") == 1, (argv, r.returncode, r.stderr)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_both_states_keep_the_same_records(s3, tmp_path, kind):
    """`LocalState` and `ObjectStoreState` answer the `ConversionState` protocol alike."""
    import numpy as np

    from converter.write.state import ConversionState, LocalState, ObjectStoreState, state_for
    from converter.write.store import BlockResult

    dest = tmp_path / "m.zarr" if kind == "local" else f"s3://data/states/{tmp_path.name}/m.zarr"
    state = state_for(dest)
    assert isinstance(state, LocalState if kind == "local" else ObjectStoreState)
    for name in (n for n in vars(ConversionState) if not n.startswith("_") or n in ("__enter__", "__exit__")):
        assert callable(getattr(state, name, None)), name
    assert not state.occupied() and not state.started()
    r = BlockResult(range(0, 3), {"responses": np.array([1, 2, 3], np.uint32)}, {"responses": {b"header"}},
                    {"responses_withheld": np.array([True, False, False]), "n_frames": np.array([5, 7, 9])})
    with state:
        assert state.started() and state.plan() is None and state.done_blocks() == {}
        state.start_over()
        state.save_plan({"n_trials": 3})
        state.save_block(r)
        assert state.plan() == {"n_trials": 3}
        (got,) = state.done_blocks().values()
        assert got.block == r.block and got.headers == r.headers and got.flags.keys() == r.flags.keys()
        assert all(np.array_equal(got.flags[k], v) and got.flags[k].dtype == v.dtype for k, v in r.flags.items())
        assert (got.crc32["responses"] == r.crc32["responses"]).all()
        assert not state.finishing() and not state.occupied()  # records are not a store
        state.start_over()
        assert state.plan() is None and state.done_blocks() == {}
        state.discard()
    assert not state.occupied() and not state.started()


def test_score_and_show_read_a_store_in_s3(s3, make_dataset, make_store, tmp_path):
    pytest.importorskip("matplotlib")
    url = f"s3://data/look/{tmp_path.name}/m.zarr"
    converter.convert(make_dataset(), url, progress=False)
    r = run_cli("show", url, "--out", tmp_path / "o.png")
    assert r.returncode == 0 and (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG", r.stderr
    local = converter.open_mouse(make_store()).sensorium.standardize().responses
    assert converter.score(url, local).attrs == converter.score(make_store(), local).attrs


def test_video_scan_from_a_zip_in_s3_into_s3(s3, make_dataset, make_store):
    from .conftest import CLIPS

    endpoint, fs = s3
    src = make_dataset(as_zip=True, **CLIPS)
    fs.put(str(src), f"data/video/{src.name}")
    r = run_cli("convert", f"s3://data/video/{src.name}", "s3://data/video/m.zarr")
    assert r.returncode == 0, r.stderr
    assert converter.verify(src, "s3://data/video/m.zarr").ok
    pytest.importorskip("torch")
    from converter.torch import VideoDataset

    local = converter.open_mouse(make_store(as_zip=True, **CLIPS))
    remote = converter.open_mouse("s3://data/video/m.zarr")
    assert np.array_equal(remote.responses.isel(trial=[0, 5]).values, local.responses.isel(trial=[0, 5]).values, equal_nan=True)
    clips = VideoDataset("s3://data/video/m.zarr", frames=10, offset=2, normalize=False)  # windows read through zarr-python
    got = clips.batch([0, 5])
    for j, i in enumerate(clips.trial_ids[:1].tolist() + clips.trial_ids[5:6].tolist()):
        assert np.array_equal(got["responses"][j], local.responses.sel(trial=i).values[:, 2:12], equal_nan=True)
    import torch
    from converter.torch import DeviceLoader

    kw = {"batch_size": 8, "device": "cpu", "mode": "streaming", "frames": 10, "behavior_channels": True, "seed": 3}
    there, here = DeviceLoader("s3://data/video/m.zarr", **kw), DeviceLoader(make_store(as_zip=True, **CLIPS), **kw)
    for x, y in zip(there, here, strict=True):  # random windows streamed from the bucket
        assert all(torch.equal(x[k], y[k]) for k in x)
