"""convert-all on a dask scheduler and workers started as separate processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import converter

from .conftest import run_cli, sigint_as_at_a_terminal, upload_mice

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A dask scheduler and two single-threaded workers, each its own process, on loopback."""
    d = tmp_path_factory.mktemp("dask")
    info = d / "scheduler.json"
    address = None
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", str(info),
                               "--host", "127.0.0.1", "--port", "0", "--no-dashboard"], cwd=d,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        end = time.monotonic() + 60
        while not info.exists() and time.monotonic() < end:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        slow = {**os.environ, "SENSORIUM_ZARR_SLOW_BLOCKS": str(d / "slow")}  # see tests/slow_blocks.py
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                           "--no-dashboard", "--no-nanny", "--memory-limit", "2GB",
                                           "--preload", str(Path(__file__).with_name("slow_blocks.py"))], cwd=d, env=slow,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            pids = set(client.run(os.getpid).values())
        assert os.getpid() not in pids and len(pids) == 2
        yield address, pids, d / "slow"
    finally:
        # ended as a user ends a cluster (workers, then the scheduler), not as the default client, so
        # that no dask setting outlives it in this process.  The workers run without a nanny, which
        # waited ~8 s for its worker; and SIGTERM to a worker already closing can keep it trying to
        # reach the scheduler for 30 s, so what has not ended by itself is killed
        if address is not None:
            with contextlib.suppress(Exception), distributed.Client(address, timeout=10, set_as_default=False) as client:
                client.shutdown()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def mice(make_dataset, tmp_path):
    """A folder with a pre-training scan, a competition zip and a broken scan."""
    src = tmp_path / "src"
    src.mkdir()
    for comp, as_zip, seed in (("none", False, 3), ("sensorium", True, 4), ("none", False, 5)):
        p = make_dataset(comp, as_zip, seed=seed)
        (shutil.copy if as_zip else shutil.copytree)(p, src / p.name)
    broken = src / make_dataset("none", False, seed=5).name
    os.remove(broken / "meta/trials/tiers.npy")
    return src, broken.name


def test_convert_all_on_separate_scheduler_and_workers(scheduler, mice, make_dataset, tmp_path):
    address, worker_pids, _ = scheduler
    src, broken = mice
    out = tmp_path / "out"
    r = run_cli("convert-all", src, out, "--scheduler", address)
    assert r.returncode == 1, r.stderr  # one mouse failed, and the exit code says so
    lines = r.stdout.splitlines()
    assert lines[-1] == "2 of 3 stores complete"
    assert any(broken in l and "failed:" in l and "tiers.npy: missing" in l for l in lines)
    assert sum(l.endswith("converted") for l in lines) == 2
    for comp, as_zip, seed in (("none", False, 3), ("sensorium", True, 4)):
        srcp = make_dataset(comp, as_zip, seed=seed)
        store = out / f"{srcp.name.removesuffix('.zip')}.zarr"
        assert converter.verify(srcp, store).ok
    with distributed.Client(address) as client:  # the blocks ran in the worker processes
        logged = client.run(lambda dask_worker: sorted({str(e[0]) for e in dask_worker.state.log if isinstance(e, tuple) and e}))
    keys = {k for ks in logged.values() for k in ks if k.startswith("sensorium-zarr-")}
    names = {make_dataset("none", False, seed=3).name, make_dataset("sensorium", True, seed=4).name.removesuffix(".zip")}
    assert {k.rsplit("-", 2)[0] for k in keys} == {f"sensorium-zarr-{n}" for n in names}, logged
    r = run_cli("convert-all", src, out, "--scheduler", address)
    assert sum(l.endswith("  complete") for l in r.stdout.splitlines()) == 2  # done stores are skipped


def test_convert_all_converts_a_dataset_found_as_zip_and_folder_once(scheduler, make_dataset, tmp_path):
    address, *_ = scheduler
    src = tmp_path / "src"
    src.mkdir()
    zipped, folder = make_dataset("none", True, seed=12), make_dataset("none", False, seed=12)
    shutil.copy(zipped, src / zipped.name)
    shutil.copytree(folder, src / folder.name)  # unzipped beside its zip
    for _ in range(2):
        r = run_cli("convert-all", src, tmp_path / "out", "--scheduler", address)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[-1] == "1 of 1 stores complete", r.stdout
        assert any(l.startswith(zipped.name) and l.endswith(f"skipped: the same dataset as the folder {folder.name}/") for l in lines)
    assert converter.verify(folder, tmp_path / "out" / f"{folder.name}.zarr").ok


def test_convert_all_resumes_a_partial_store(scheduler, make_dataset, tmp_path, monkeypatch, disk_full, capsys):
    address, *_ = scheduler
    src = tmp_path / "src"
    shutil.copytree(make_dataset("none", False, seed=6), src / make_dataset("none", False, seed=6).name)
    dest = tmp_path / "out" / f"{make_dataset('none', False, seed=6).name}.zarr"
    disk_full("/responses/c/")
    with pytest.raises(converter.StorageError, match="run the same command again to resume"):
        converter.convert(make_dataset("none", False, seed=6), dest)
    monkeypatch.undo()
    assert (dest.parent / f"{dest.name}.incomplete" / "state" / "plan.json").exists()
    capsys.readouterr()
    rows = converter.convert_all(src, tmp_path / "out", scheduler=address, progress=True)
    assert [r.status for r in rows] == ["converted"]
    # the bar is fed from the worker that converts the mouse, the blocks done before included
    drawn = [line.split("]")[1].split()[0] for line in capsys.readouterr().err.split("\r") if line.startswith("convert-all [")]
    assert drawn[-1] == "100.0%" and drawn == sorted(drawn, key=lambda x: float(x.rstrip("%"))), drawn
    assert converter.verify(make_dataset("none", False, seed=6), dest).ok
    assert not (dest.parent / f"{dest.name}.incomplete").exists()


def test_one_source_into_two_stores_at_once_on_one_client(scheduler, make_dataset, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    address, *_ = scheduler
    src = make_dataset("none", False, seed=11)
    with distributed.Client(address) as client, ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(converter.convert, src, tmp_path / f"{i}.zarr", executor=client, progress=False) for i in (1, 2)]
        stores = [j.result() for j in jobs]  # before: FutureCancelledError, the two shared task keys
    assert all(converter.verify(src, s).ok for s in stores)


def test_convert_all_between_s3_folders_on_separate_workers(scheduler, s3, make_dataset):
    address, *_ = scheduler
    endpoint, fs = s3
    opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}  # travel with the tasks
    mice = upload_mice(fs, "data/cluster-in", make_dataset, (("none", False, 9), ("sensorium", True, 10)))
    rows = converter.convert_all("s3://data/cluster-in", "s3://data/cluster-out", scheduler=address, storage_options=opts)
    assert [r.status for r in rows] == ["converted", "converted"], rows
    for p in mice:
        assert converter.verify(p, f"s3://data/cluster-out/{p.name.removesuffix('.zip')}.zarr", storage_options=opts).ok


def test_ctrl_c_stops_the_mice_the_workers_convert_and_a_rerun_resumes(scheduler, make_dataset, tmp_path):
    import fcntl
    import signal

    address, _, slow = scheduler
    src = make_dataset("none", False, seed=13, trials=1100, neurons=30, image_shape=(24, 32))  # two blocks, one per worker
    (tmp_path / "in").mkdir()
    shutil.copytree(src, tmp_path / "in" / src.name)
    dest = tmp_path / "out" / f"{src.name}.zarr"
    state = dest.with_name(dest.name + ".incomplete") / "state"
    slow.touch()  # each block takes 1 s: the conversion is still running when the Ctrl-C comes
    try:
        proc = subprocess.Popen([sys.executable, "-m", "converter.cli", "convert-all", str(tmp_path / "in"),
                                 str(tmp_path / "out"), "--scheduler", address, "--quiet"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_at_a_terminal)
        end = time.monotonic() + 120
        while not (state / "plan.json").exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and err.endswith("run the same command again to resume\n"), err
        # the mouse's task on a worker holds the store's lock until it stops: at its next finished block
        with open(state / "lock", "rb") as lock:
            end = time.monotonic() + 60
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    assert time.monotonic() < end, "the worker kept converting after the Ctrl-C"
                    time.sleep(0.05)
            fcntl.flock(lock, fcntl.LOCK_UN)
        assert not dest.exists() and len(list((state / "blocks").glob("*.json"))) < 2  # stopped, not finished
    finally:
        slow.unlink()
    rows = converter.convert_all(tmp_path / "in", tmp_path / "out", scheduler=address)
    assert [r.status for r in rows] == ["converted"]
    assert converter.verify(src, dest).ok and not state.parent.exists()


def test_the_cluster_of_convert_all_keeps_its_workers_memory_and_leaves_our_environment_as_it_was(monkeypatch):
    """dask spawns a local cluster's workers with variables it puts in the caller's environment
    (`MALLOC_TRIM_THRESHOLD_=65536`, `OMP_NUM_THREADS=1`, ...): ours, so the workers keep the memory
    they encode in, and the caller's environment is put back once they have started."""
    from converter.write.batch import _client
    from converter.write.processes import WORKER_ENVIRON

    for k in WORKER_ENVIRON:
        monkeypatch.delenv(k, raising=False)
    before = dict(os.environ)
    with _client(None, 1) as client:
        assert dict(os.environ) == before
        (got,) = client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENVIRON}).values()
    assert got == WORKER_ENVIRON
