"""Object storage: sources and stores read from a real S3 API (moto's server) on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import converter

from .conftest import bits
from .test_bad_input import run_cli

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port; the AWS environment points at it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*KEYS, "AWS_ENDPOINT_URL")}
    try:
        end = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        os.environ.update(KEYS, AWS_ENDPOINT_URL=endpoint)
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True)
        fs.mkdir("data")
        yield endpoint, fs
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=30)


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
    assert converter.info(url)["disk_bytes"] == sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
    assert converter.verify(make_dataset(), url).ok and converter.self_check(url).ok
    out = converter.export(url, tmp_path / "restored")
    sha = lambda root: {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.npy"))}
    assert sha(out) == sha(make_dataset())
    torch = pytest.importorskip("torch")
    from converter.torch import MouseDataset

    a, b = MouseDataset(url, normalize=True), MouseDataset(local, normalize=True)
    assert all(torch.equal(a[i].responses, b[i].responses) for i in (0, 17, 59))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # only --storage-option now
    r = subprocess.run([sys.executable, "-m", "converter.cli", "info", url, "--json", "--storage-option", f"endpoint_url={endpoint}",
                        "--storage-option", "key=testing", "--storage-option", "secret=testing"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and '"n_trials": 60' in r.stdout, r.stderr


def test_plain_xarray_reads_a_store_in_s3(s3, make_dataset, make_store):
    endpoint, fs = s3
    fs.put(str(make_store("sensorium+")), "data/plain/m.zarr", recursive=True)
    script = textwrap.dedent(
        """
        import sys, numpy as np, xarray as xr
        folder, endpoint = sys.argv[1], sys.argv[2]
        ds = xr.open_zarr("s3://data/plain/m.zarr", storage_options={"endpoint_url": endpoint, "key": "testing", "secret": "testing"})
        src = np.stack([np.load(f"{folder}/data/responses/{i}.npy") for i in range(ds.sizes["trial"])])
        assert ds["responses"].values.tobytes() == src.tobytes()
        assert "converter" not in sys.modules
        print("OK", ds.attrs["data_key"])
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    r = subprocess.run([sys.executable, "-c", script, str(make_dataset("sensorium+")), endpoint], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr


def test_missing_and_unwritable_locations_fail_in_one_line(s3, make_dataset, tmp_path):
    r = run_cli("info", "s3://data/nothing.zarr")
    assert r.returncode == 2 and "s3://data/nothing.zarr: not a Zarr store" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("convert", "s3://data/nothing.zip", tmp_path / "m.zarr")
    assert r.returncode == 2 and "s3://data/nothing.zip: no such file or folder" in r.stderr
    r = run_cli("convert", make_dataset(), "s3://data/out.zarr")
    assert r.returncode == 2 and "not supported yet" in r.stderr and r.stderr.count("\n") == 1
