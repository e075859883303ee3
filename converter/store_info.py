"""`info`: what a store holds, from its metadata alone (no xarray: the command answers fast)."""

from __future__ import annotations

import os

import numpy as np

from . import contract
from .errors import StoreError
from .kinds import kind_of
from .schema import manifest, read_root
from .storage import child, filesystem, open_group, tree_bytes


def checked_root(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """The root metadata of a store this version reads; `StoreError` for anything else."""
    root = read_root(path, storage_options)
    attrs = root.get("attributes", {})
    if attrs.get("schema") != contract.SCHEMA:
        raise StoreError(f"{path}: a Zarr store, but not one written by sensorium-zarr")
    if attrs.get("schema_version") not in contract.READABLE_SCHEMA_VERSIONS:
        raise StoreError(f"{path}: written with store schema {attrs.get('schema_version')!r}, which this version of "
                         "sensorium-zarr cannot read; rebuild it with `sensorium-zarr convert SRC DEST --overwrite` "
                         "(or `export` with the version that wrote it, then `convert`)")
    return root


def info(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    """Counts, dimensions and sizes of a store (on disk and decoded in memory)."""
    root = checked_root(path, storage_options)
    m = manifest(root)
    arrays = {}
    for name, a in m["arrays"].items():
        disk = tree_bytes(child(path, name), storage_options)
        n = int(np.prod(a["shape"], dtype=np.int64))
        memory = None if a["dtype"] == "string" else n * np.dtype(a["dtype"]).itemsize
        inner = a["inner_chunks"]  # a sharded array: its grid is of shards, each cut into inner chunks
        arrays[name] = {"dims": a["dims"], "shape": a["shape"], "dtype": a["dtype"], "chunks": inner or a["chunks"],
                        "shards": a["chunks"] if inner else None, "disk_bytes": disk, "memory_bytes": memory}
    attrs = contract.decode_attrs(m["attributes"])
    kind = kind_of(attrs)
    disk_total = tree_bytes(path, storage_options)
    memory_total = sum(a["memory_bytes"] or 0 for a in arrays.values())
    dims: dict[str, int] = {}
    for a in arrays.values():
        dims.update(zip(a["dims"], a["shape"]))
    return {
        "dataset": attrs["dataset"],
        "data_key": attrs["data_key"],
        "n_trials": attrs["n_trials"],
        "n_neurons": attrs.get("n_neurons"),
        "tier_counts": attrs["tier_counts"],
        "withheld_trials": attrs["withheld_trials"],
        "kind": kind.name,
        **({"frames": _frames(path, root, storage_options)} if kind.frames else {}),
        "dims": dims,
        "arrays": arrays,
        "disk_bytes": disk_total,
        "memory_bytes": memory_total,
        "compression_ratio": memory_total / disk_total if disk_total else None,
    }


def _frames(path, root: dict, storage_options: dict | None) -> dict:
    """A 2023 store's clip lengths: padded, and the valid frames per trial."""
    from .zarrlite import read_coordinates  # numcodecs; zarr-python only for a layout it leaves out

    attrs = root["attributes"]
    fs, where = filesystem(path, storage_options)
    n = read_coordinates(fs, where, [contract.N_FRAMES], root.get("consolidated_metadata", {}).get("metadata", {})).get(contract.N_FRAMES)
    if n is None:
        n = open_group(path, storage_options)[contract.N_FRAMES][...]
    return {"padded": attrs["n_frames_padded"], "rate_hz": attrs["frame_rate_hz"], "valid_min": int(n.min()),
            "valid_median": float(np.median(n)), "valid_max": int(n.max())}


def _frames_line(f: dict | None) -> list[str]:
    if f is None:
        return []
    return [f"frames per clip: {f['padded']} at {f['rate_hz']:g} Hz, of which valid (before the NaN padding): "
            f"min {f['valid_min']}, median {f['valid_median']:g}, max {f['valid_max']}"]


def format_info(d: dict) -> str:
    """`info` as a few readable lines and a table of the data variables."""
    mb = 1e6
    lines = [
        f"{d['dataset']}  ({d['data_key']})",
        f"trials {d['n_trials']}, neurons {d['n_neurons']}; tiers: "
        + ", ".join(f"{k} {v}" for k, v in sorted(d["tier_counts"].items())),
        "withheld (all-zero) trials: " + ", ".join(f"{k} {v}" for k, v in d["withheld_trials"].items()),
        *_frames_line(d.get("frames")),
        "dims: " + ", ".join(f"{k}={v}" for k, v in d["dims"].items()),
        "",
        f"{'array':<28} {'dtype':<8} {'shape':<24} {'chunk':<22} {'shard':<22} {'memory MB':>10} {'disk MB':>9} {'ratio':>6}",
    ]
    rows = sorted(d["arrays"].items(), key=lambda kv: -(kv[1]["memory_bytes"] or 0))
    for name, a in rows[:12]:
        mem = a["memory_bytes"]
        ratio = f"{mem / a['disk_bytes']:.2f}" if mem and a["disk_bytes"] else "-"
        shard = str(tuple(a["shards"])) if a.get("shards") else "-"
        lines.append(f"{name:<28} {a['dtype']:<8} {str(tuple(a['shape'])):<24} {str(tuple(a['chunks'] or ())):<22} {shard:<22} "
                     f"{(mem or 0) / mb:>10.1f} {a['disk_bytes'] / mb:>9.1f} {ratio:>6}")
    if len(rows) > 12:
        lines.append(f"... and {len(rows) - 12} smaller arrays")
    lines.append(f"total: {d['memory_bytes'] / mb:.1f} MB in memory, {d['disk_bytes'] / mb:.1f} MB on disk, "
                 f"compression ratio {d['compression_ratio']:.2f}")
    return "\n".join(lines)
