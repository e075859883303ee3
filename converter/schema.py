"""Checking a store against ``schemas/store-<version>.json``: below the writers and the readers,
which both need it.

The check reads only the root ``zarr.json`` (consolidated metadata), turns it into a
plain manifest, validates that with JSON Schema, then checks the cross-array rules the
schema lists under ``x-cross-checks``.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path

from . import contract
from .contract import SCHEMA_VERSION
from .errors import StoreError
from .kinds import kind_of
from .storage import child, exists, read_bytes


@functools.cache
def load_schema(version: str = SCHEMA_VERSION) -> dict:
    """The JSON Schema of store layout ``version``."""
    name = f"store-{version}.json"
    checkout = Path(__file__).resolve().parents[1] / "schemas" / name  # a checkout: schemas/ beside converter/
    if checkout.exists():
        return json.loads(checkout.read_text())
    return json.loads(resources.files("converter.schemas").joinpath(name).read_text())


def _dtype_name(data_type) -> str:
    return data_type if isinstance(data_type, str) else data_type.get("name", "?")


def _codec_names(codecs: list[dict]) -> list[str]:
    names = []
    for c in codecs:
        names.append(c["name"])
        if c["name"] == "sharding_indexed":
            cfg = c.get("configuration", {})
            names += _codec_names(cfg.get("codecs", [])) + _codec_names(cfg.get("index_codecs", []))
    return names


def manifest(root_json: dict) -> dict:
    """A plain description of a store from its root ``zarr.json``."""
    consolidated = root_json.get("consolidated_metadata") or {}
    arrays = {}
    for path, meta in (consolidated.get("metadata") or {}).items():
        if meta.get("node_type") != "array":
            continue
        grid = meta.get("chunk_grid", {}).get("configuration", {})
        sharding = next((c for c in meta.get("codecs", []) if c.get("name") == "sharding_indexed"), None)
        arrays[path] = {
            "shape": meta.get("shape"),
            "dtype": _dtype_name(meta.get("data_type")),
            # a 0-d array has no dimension names to write
            "dims": meta.get("dimension_names") or ([] if meta.get("shape") == [] else None),
            "chunks": grid.get("chunk_shape"),
            "inner_chunks": sharding["configuration"]["chunk_shape"] if sharding else None,
            "codecs": _codec_names(meta.get("codecs", [])),
            "attributes": meta.get("attributes", {}),
        }
    return {
        "zarr_format": root_json.get("zarr_format"),
        "consolidated": bool(consolidated),
        "attributes": root_json.get("attributes", {}),
        "arrays": arrays,
    }


def read_root(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """The root ``zarr.json`` of a store (a local path or a URL); `StoreError` when there is none."""
    p = str(path).rstrip("/")
    try:
        return json.loads(read_bytes(child(path, "zarr.json"), storage_options))
    except FileNotFoundError:
        if exists(p + ".incomplete", storage_options):
            raise StoreError(f"{p}: no complete store here (a conversion is running, or was interrupted and left {p}.incomplete: run it again to finish)") from None
        if not exists(p, storage_options):
            raise StoreError(f"{p}: does not exist") from None
        raise StoreError(f"{p}: not a Zarr store (no zarr.json)") from None
    except StoreError:
        raise
    except NotADirectoryError:
        hint = ": a dataset zip, convert it first" if p.lower().endswith(".zip") else ""
        raise StoreError(f"{p}: not a Zarr store (a file, not a folder){hint}") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{p}/zarr.json: unreadable ({e})") from None


def cross_check(m: dict) -> list[str]:
    """The rules of ``x-cross-checks``; returns the problems found."""
    problems = []
    attrs, arrays = contract.decode_attrs(m["attributes"]), m["arrays"]
    sizes = {contract.TRIAL: attrs.get("n_trials"), contract.NEURON: attrs.get("n_neurons")}
    frames = kind_of(attrs).frames
    if frames:
        sizes[contract.FRAME] = attrs.get("n_frames_padded")
    for key in attrs.get("data_keys", []):
        a = arrays.get(key)
        if a is None:
            problems.append(f"data variable {key!r} is missing")
            continue
        if not a["dims"] or a["dims"][0] != contract.TRIAL:
            problems.append(f"{key}: first dimension is not {contract.TRIAL!r}")
        if frames and (a["dims"] or [None])[-1] != contract.FRAME:
            problems.append(f"{key}: last dimension is not {contract.FRAME!r}")
        if a["attributes"].get(contract.SOURCE) != contract.data_source(key):
            problems.append(f"{key}: attribute source is not {contract.data_source(key)!r}")
        if contract.withheld_name(key) not in arrays:
            problems.append(f"{contract.withheld_name(key)} is missing")
    for path, a in arrays.items():
        original = a["attributes"].get(contract.COPY_OF)
        if original is not None and (original not in attrs.get("data_keys", []) or original not in arrays
                                     or (arrays[original]["shape"], arrays[original]["dims"]) != (a["shape"], a["dims"])):
            problems.append(f"{path}: not a copy of a data variable of the same shape and dims ({original!r})")
        dims, shape = a["dims"] or [], a["shape"] or []
        if len(dims) != len(shape):
            problems.append(f"{path}: {len(dims)} dimension names for {len(shape)} axes")
            continue
        for dim, n in zip(dims, shape):
            if sizes.setdefault(dim, n) != n:
                problems.append(f"{path}: dimension {dim!r} has length {n}, elsewhere {sizes[dim]}")
    for name in ("tier_counts", "withheld_trials"):
        counts = attrs.get(name, {})
        if not isinstance(counts, dict) or not all(isinstance(n, int) and n >= 0 for n in counts.values()):
            problems.append(f"{name} is not an object of non-negative integers")
            return problems
    if sum(attrs.get("tier_counts", {}).values()) != attrs.get("n_trials"):
        problems.append("tier_counts do not add up to n_trials")
    return problems


def validate(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """Check the store at ``path`` (a local path or a URL) against its schema; return its manifest.

    Raises `StoreError` with the first problems found, on one line.
    """
    import jsonschema  # here, not above: reading a store's root (every command that opens one) needs neither

    from .damage import metadata_problems

    root = read_root(path, storage_options)
    m = manifest(root)
    version = m["attributes"].get("schema_version", SCHEMA_VERSION)
    try:
        schema = load_schema(version)
    except FileNotFoundError:
        raise StoreError(f"{path}: unknown schema version {version!r}") from None
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}"
        for e in sorted(validator.iter_errors(m), key=lambda e: list(map(str, e.absolute_path)))
    ]
    problems += cross_check(m)
    problems += metadata_problems(path, root, storage_options)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise StoreError(f"{path}: does not match schema {version}: " + "; ".join(problems[:3]) + more)
    return m
