"""Stores written by earlier schema versions still open, validate, verify and export."""

from __future__ import annotations

import json
import shutil

import xarray as xr

import converter
from converter import contract


def as_written_by_2_1(store, dest):
    """A copy of ``store`` whose root attributes are as sensorium-zarr 0.5 (schema 2.1) wrote them:
    ``tier_counts``, ``withheld_trials`` and ``source_zip`` as objects, not JSON text."""
    shutil.copytree(store, dest)
    root = json.loads((dest / "zarr.json").read_text())
    attrs = root["attributes"]
    for name in contract.JSON_ATTRS:
        if name in attrs:
            attrs[name] = json.loads(attrs[name])
    attrs["schema_version"] = "2.1"
    (dest / "zarr.json").write_text(json.dumps(root))
    return dest


def test_a_schema_2_1_store_still_opens_validates_verifies_and_exports(make_dataset, make_store, tmp_path):
    src = make_dataset(as_zip=True)
    old = as_written_by_2_1(make_store(as_zip=True), tmp_path / "old.zarr")
    assert converter.validate(old)["attributes"]["schema_version"] == "2.1"
    info = converter.info(old)
    assert sum(info["tier_counts"].values()) == info["n_trials"]
    assert converter.verify(src, old).ok and converter.self_check(old).ok
    out = converter.export(old, tmp_path / "restored", as_zip=True)
    assert out.read_bytes()[:2] == b"PK"
    assert converter.open_mouse(old).sensorium.tier("train").sizes["trial"] == info["tier_counts"]["train"]


def test_every_root_attribute_is_a_netcdf_type(make_store, clip_store, tmp_path):
    for k, store in enumerate((make_store(as_zip=True), clip_store)):
        ds = xr.open_zarr(store)
        for name, value in ds.attrs.items():
            assert isinstance(value, str | int | float | list), (name, value)
        ds.isel(trial=slice(0, 3)).drop_vars([v for v in ds.data_vars if v != "responses"]).to_netcdf(tmp_path / f"{k}.nc")
        assert contract.decode_attrs(ds.attrs)["tier_counts"] == converter.info(store)["tier_counts"]


def test_stores_of_schema_2_2_and_dynamic_1_1_still_open_validate_verify_and_normalise(make_dataset, make_store, clip_store, clips, tmp_path):
    """0.6 wrote these: the same layout, whose schemas fixed more dims than today's."""
    for version, store, src in (("2.2", make_store(as_zip=True), make_dataset(as_zip=True)), ("dynamic-1.1", clip_store, clips)):
        old = tmp_path / f"{version}.zarr"
        shutil.copytree(store, old)
        root = json.loads((old / "zarr.json").read_text())
        root["attributes"]["schema_version"] = version
        (old / "zarr.json").write_text(json.dumps(root))
        assert converter.validate(old)["attributes"]["schema_version"] == version
        assert converter.verify(src, old).ok and converter.self_check(old).ok
        normalised = converter.open_mouse(old).sensorium.normalize()
        assert normalised.responses.isel(trial=0).values.dtype == "float32"
