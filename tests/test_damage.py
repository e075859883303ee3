"""Every kind of damage to a store x `verify` (both forms), `validate` and the readers.

Each case damages a fresh copy of one finished store: truncated, deleted, flipped or swapped
bytes in chunks, shards, shard indexes, ``zarr.json`` files and the consolidated metadata.
`verify` must name each damaged object on one line and exit 1, never with a traceback; no
reader may return values from damaged bytes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import converter
from converter.read.engine import open_reader

from .conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mouse(tmp_path_factory):
    """A store whose images are sharded (one trial per inner chunk) and whose responses are tiled."""
    d = tmp_path_factory.mktemp("damage")
    src = converter.make_sample(d / "src", trials=40, neurons=12, image_shape=(24, 48))
    (src / "config.json").write_text('{"links": {}}')  # as the official loader leaves it: kept in files/
    return src, converter.convert(src, d / "m.zarr", progress=False)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def _index_entries(shard: Path, n: int) -> tuple[bytearray, int]:
    data = bytearray(shard.read_bytes())
    return data, len(data) - 4 - 16 * n


def _swap_index_entries(shard: Path, n: int) -> None:
    """Swap the first two entries of a shard's index and write the index's CRC-32C anew: the
    bytes are all valid, only which trial they belong to is wrong."""
    import google_crc32c

    data, start = _index_entries(shard, n)
    a, b = bytes(data[start : start + 16]), bytes(data[start + 16 : start + 32])
    data[start : start + 32] = b + a
    index = bytes(data[start : len(data) - 4])
    data[-4:] = int(google_crc32c.value(index)).to_bytes(4, "little")
    shard.write_bytes(bytes(data))


def _swap_without_crc(shard: Path, n: int) -> None:
    data, start = _index_entries(shard, n)
    data[start : start + 32] = data[start + 16 : start + 32] + data[start : start + 16]
    shard.write_bytes(bytes(data))


def _edit_json(path: Path, edit) -> None:
    node = json.loads(path.read_text())
    edit(node)
    path.write_text(json.dumps(node))


DAMAGE = {  # case: (damage(store), the object named, which readers must refuse)
    "flipped byte in a response tile": (lambda s: _flip(s / "responses/c/0/0", 40), "responses/c/0/0", "responses"),
    "deleted response tile": (lambda s: (s / "responses/c/0/0").unlink(), "responses/c/0/0: missing", "responses"),
    "flipped byte in an image shard": (lambda s: _flip(s / "images/c/0/0/0/0", 30), "images/c/0/0/0/0", "images"),
    "image shard truncated": (lambda s: (s / "images/c/0/0/0/0").write_bytes((s / "images/c/0/0/0/0").read_bytes()[:1000]),
                              "images/c/0/0/0/0: damaged", "images"),
    # tampering that keeps every checksum right: only a comparison of values can tell
    "by_trial index entries swapped, CRC redone": (lambda s: _swap_index_entries(s / "by_trial/responses/c/0/0", 40),
                                                   "by_trial/responses: differs from responses", "by_trial"),  # or the file it gives
    "by_trial index entries swapped": (lambda s: _swap_without_crc(s / "by_trial/responses/c/0/0", 40),
                                       "by_trial/responses/c/0/0: damaged (its CRC-32C", "by_trial"),
    "flipped byte in a coordinate": (lambda s: _flip(s / "tier/c/0", 5), "tier/c/0", "coordinates"),
    "flipped byte in the kept files": (lambda s: _flip(s / "files/bytes/c/0", 3), "files/bytes/c/0", None),
    "deleted zarr.json of an array": (lambda s: (s / "responses/zarr.json").unlink(), "responses/zarr.json: missing", None),
    "truncated zarr.json of an array": (lambda s: (s / "images/zarr.json").write_text("{\"zarr_form"),
                                        "images/zarr.json: damaged", None),
    "array metadata differs from the consolidated copy": (
        lambda s: _edit_json(s / "behavior/zarr.json", lambda n: n["attributes"].update(source="elsewhere")),
        "behavior/zarr.json: differs", None),
    "consolidated metadata differs from an array's": (
        lambda s: _edit_json(s / "zarr.json", lambda n: n["consolidated_metadata"]["metadata"]["pupil_center"]["attributes"].update(x=1)),
        "pupil_center/zarr.json: differs", None),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_named_on_one_line_by_verify_and_never_read_as_values(mouse, tmp_path, case):
    src, store = mouse
    damage, named, refused = DAMAGE[case]
    copy = tmp_path / "m.zarr"
    shutil.copytree(store, copy)
    damage(copy)
    for argv in (["verify", copy], ["verify", src, copy]):
        r = run_cli(*argv)
        assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout, (argv, r.stdout, r.stderr)
        lines = [line.strip() for line in r.stdout.splitlines()[1:]]
        assert any(line.startswith(named) or (case.endswith("CRC redone") and "by_trial/responses" in line) for line in lines), (named, r.stdout)
        assert len(lines) == len(set(lines)) and len([line for line in lines if named.split(":")[0] in line]) == 1
    if named.endswith("zarr.json: missing") or "zarr.json: d" in named:
        r = run_cli("validate", copy)
        assert r.returncode == 1 and named.split(":")[0] in r.stdout, r.stdout
    if refused is not None and "CRC redone" not in case:
        layout = {"responses": "responses", "images": "images", "by_trial": "by_trial/responses"}.get(refused)
        with pytest.raises(ValueError, match="damaged"):  # the damaged bytes themselves are never values
            open_reader(copy, layout).read() if layout else converter.open_mouse(copy)
    if refused in ("responses", "images", "by_trial"):  # every reader: refuses, or reads an intact layout
        ds, intact = converter.open_mouse(copy), converter.open_mouse(store)
        for key, trials in (("images", slice(None)), ("responses", slice(None)), ("responses", [0, 1])):
            try:
                got = ds[key].isel(trial=trials).values
            except ValueError as e:
                assert "damaged" in str(e)
            else:
                assert np.array_equal(got, intact[key].isel(trial=trials).values), (key, trials)
        if importlib.util.find_spec("torch") is not None:  # the training reader
            from converter.torch import MouseDataset

            items = [0, 1] if refused == "by_trial" else list(range(40))
            try:
                got = MouseDataset(copy).__getitems__(items)
            except ValueError as e:
                assert "damaged" in str(e)
            else:
                want = MouseDataset(store).__getitems__(items)
                assert all(np.array_equal(a[k], b[k]) for a, b in zip(got, want) for k in ("images", "responses"))


def test_an_undamaged_store_reads_the_same_as_before(mouse):
    src, store = mouse
    r = run_cli("verify", store)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout
    ds = converter.open_mouse(store)
    want = np.stack([np.load(src / f"data/responses/{i}.npy") for i in ds.trial.values])
    assert np.array_equal(ds.responses.values, want)
