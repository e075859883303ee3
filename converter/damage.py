"""Damage to a store, object by object: what `verify` and `validate` look for before any value.

Two kinds, each reported as one line per damaged object:

- **metadata**: every array's and group's own ``zarr.json`` must exist, parse, and agree with its
  copy in the root's consolidated metadata (readers without consolidation, such as tensorstore,
  use the former; this package and xarray the latter);
- **chunks**: every chunk and shard file is checked without decoding: a shard's index against its
  CRC-32C and its length, every chunk (or inner chunk) that carries a ``crc32c`` codec against
  it, and the arrays this package fills whole (the per-trial data) for missing files.

Stores written before chunks carried CRC-32Cs (schema 2.1 and older) are checked for what they
carry: shard indexes, lengths and missing files; their values are checked by `verify` itself.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np

from . import contract
from .zarrlite import MISSING, checked, index_bytes, shard_index
from .storage import filesystem


def metadata_problems(path, root: dict, storage_options: dict | None = None) -> list[str]:
    """Each node's ``zarr.json`` against the consolidated metadata of ``root``."""
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    fs, base = filesystem(path, storage_options)
    files = {name: f"{base.rstrip('/')}/{name}/zarr.json" for name in consolidated}
    found = fs.cat(list(files.values()), on_error="return") if files else {}
    problems = []
    for name, node in consolidated.items():
        raw = found.get(files[name])
        if raw is None or isinstance(raw, Exception):
            problems.append(f"{name}/zarr.json: missing (readers that do not use the consolidated metadata cannot find {name})")
            continue
        try:
            own = json.loads(raw)
        except ValueError:
            problems.append(f"{name}/zarr.json: damaged (not JSON)")
            continue
        if _comparable(own) != _comparable(node):
            problems.append(f"{name}/zarr.json: differs from its copy in the consolidated metadata (root zarr.json)")
    return problems


def _comparable(node: dict) -> dict:
    """A node's metadata without what consolidation adds to groups."""
    return {k: v for k, v in node.items() if k != "consolidated_metadata"}


def chunk_problems(path, root: dict, storage_options: dict | None = None) -> list[str]:
    """Every chunk and shard of every array, checked as the module docstring says."""
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    fs, base = filesystem(path, storage_options)
    problems = []
    for name, meta in consolidated.items():
        if meta.get("node_type") != "array" or meta.get("chunk_grid", {}).get("name") != "regular":
            continue
        layout = _layout(meta)
        if layout is None:
            continue
        keys = [f"{base.rstrip('/')}/{name}/{layout['sep'].join(['c', *map(str, idx)])}" for idx in layout["grid"]]
        whole = contract.written_whole(meta.get("attributes", {}))
        step = 1 if layout["shard"] else 64  # bounded memory: one shard, or a few chunks, at a time
        for start in range(0, len(keys), step):
            batch = keys[start : start + step]
            got = fs.cat(batch, on_error="return")
            for key in batch:
                data = got.get(key)
                where = f"{name}/{key[len(base.rstrip('/')) + len(name) + 2:]}"
                if data is None or isinstance(data, Exception):
                    if whole:
                        problems.append(f"{where}: missing")
                    continue
                problem = _check(data, layout, where)
                if problem:
                    problems.append(problem)
    return problems


def _layout(meta: dict) -> dict | None:
    shape = meta["shape"]
    outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
    codecs = meta.get("codecs", [])
    sep = (meta.get("chunk_key_encoding", {}).get("configuration") or {}).get("separator", "/")
    grid = list(itertools.product(*[range(-(-s // c)) for s, c in zip(shape, outer)]))
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        cfg = codecs[0]["configuration"]
        if cfg.get("index_location", "end") != "end":
            return None
        per = int(np.prod([o // i for o, i in zip(outer, cfg["chunk_shape"])]))
        index_crc = [c.get("name") for c in cfg.get("index_codecs", [])][-1:] == ["crc32c"]
        inner_crc = [c.get("name") for c in cfg.get("codecs", [])][-1:] == ["crc32c"]
        return {"sep": sep, "grid": grid, "shard": per, "index_crc": index_crc, "crc": inner_crc}
    return {"sep": sep, "grid": grid, "shard": None, "crc": [c.get("name") for c in codecs][-1:] == ["crc32c"]}


def _check(data: bytes, layout: dict, where: str) -> str | None:
    """The one line that says what is wrong with one chunk or shard file, or None."""
    try:
        if layout["shard"] is None:
            if layout["crc"]:
                checked(data, where)
            return None
        n = index_bytes(layout["shard"], layout["index_crc"])
        index = shard_index(data[max(0, len(data) - n) :], len(data), layout["shard"], layout["index_crc"], where)
        if layout["crc"]:
            for offset, nbytes in index[index[:, 0] != MISSING].tolist():
                checked(data[offset : offset + nbytes], f"{where}: inner chunk at byte {offset}")
    except ValueError as e:
        return str(e)
    return None


def problems(path: str | os.PathLike, root: dict, storage_options: dict | None = None) -> list[str]:
    """Both kinds of damage, metadata first: one line per damaged object."""
    return metadata_problems(path, root, storage_options) + chunk_problems(path, root, storage_options)


__all__ = ["chunk_problems", "metadata_problems", "problems"]
