"""The plan of a conversion: everything decided before the first trial is written.

`plan` reads a source's meta arrays and one trial's header per data folder and decides the layout
(`converter.write.layout`); `plan_record` is what a resumed conversion must find unchanged,
`root_attrs` the store's root attributes, and `made_from` whether a store came from a source.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from .. import contract
from ..storage import name as storage_name
from .._version import __version__
from ..zarrlite import compressed_size
from ..errors import SourceError, StoreError
from ..kinds import ScanKind
from ..source import Inventory, Source, ZipSource, read_array, read_trials, scan, trial_header
from ..source.npy import NpyHeader
from . import layout
from .store import BlockResult, MetaArray

LICENSE = "CC BY-NC-ND 4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by-nc-nd/4.0/"


@dataclass
class Plan:
    """Everything decided before the first trial is written."""

    inventory: Inventory
    data_vars: dict[str, layout.DataVar]
    expect: dict[str, NpyHeader]
    n_neurons: int | None
    neuron_coord: MetaArray | np.ndarray | None
    meta: list[MetaArray]
    statistics: list[MetaArray]
    labels: dict[str, tuple[str, ...]]
    order: np.ndarray  # file number of each stored trial position (`layout.trial_order`)
    block: int = layout.BLOCK_TRIALS  # trials per write block (`layout.block_trials`)

    @property
    def kind(self) -> ScanKind:
        return self.inventory.kind

    @property
    def n_frames(self) -> int | None:
        """Frames per (padded) clip, when the kind's files end in a frame axis; else None."""
        return self.data_vars[self.kind.stimulus].shape[-1] if self.kind.frames else None

    @property
    def n_trials(self) -> int:
        return self.inventory.n_trials

    def coordinate(self, name: str) -> MetaArray:
        """The meta array stored as coordinate ``name``; `StoreError` if there is none."""
        for m in self.meta:
            if m.name == name:
                return m
        raise StoreError(f"{self.inventory.name}: no meta array becomes the coordinate {name!r}")


def _meta_array(source: Source, rel: str, name: str, base: str | None, length: int | None, data: layout.DataVar | None = None) -> MetaArray:
    values, crc, header = read_array(source, rel)
    if base is None:  # statistics
        dims = layout.stat_dims(name, values.shape, data)
    else:
        if values.ndim == 0 or (length is not None and values.shape[0] != length):
            got = "a 0-d array" if values.ndim == 0 else f"{values.shape[0]} rows"
            raise SourceError(source.where(rel), f"has {got}, expected one row per {base} ({length})")
        dims = layout.meta_dims(name, base, values.shape)
    return MetaArray(rel, name, dims, values, crc, header)


def plan(source: Source) -> Plan:
    """Scan the source, read its meta arrays and one trial per folder; decide the layout."""
    inv = scan(source)
    expect = {key: trial_header(source, key) for key in inv.data_keys}
    if inv.kind.frames:
        _check_clips(source, inv, expect)
    block = layout.block_trials(sum(int(np.prod(h.shape, dtype=np.int64)) * h.dtype.itemsize for h in expect.values()))
    data_vars = {key: layout.plan_data_var(key, inv.n_trials, h.shape, h.dtype, block, inv.kind) for key, h in expect.items()}
    resp = data_vars.get("responses")
    n_neurons = resp.shape[1] if resp is not None and resp.dims[1] == contract.NEURON else None
    names = layout.coord_names(inv.trial_meta, inv.neuron_meta, inv.data_keys)

    meta, neuron_coord = [], None
    for f in inv.trial_meta:
        rel = f"meta/trials/{f}"
        meta.append(_meta_array(source, rel + ".npy", names[rel], contract.TRIAL, inv.n_trials))
    for f in inv.neuron_meta:
        rel = f"meta/neurons/{f}"
        m = _meta_array(source, rel + ".npy", names[rel], contract.NEURON, n_neurons)
        n_neurons = m.values.shape[0] if n_neurons is None else n_neurons
        if m.name == contract.NEURON:
            if m.values.ndim != 1:
                raise SourceError(source.where(m.rel), f"expected a 1-d array of unit ids, found shape {m.values.shape}")
            ids, counts = np.unique(m.values, return_counts=True)
            if (counts > 1).any():  # the store names neurons by unit id: each must name one
                raise SourceError(source.where(m.rel), f"unit id {ids[counts > 1][0]!r} appears {counts.max()} times; unit ids must be unique")
            neuron_coord = m
        else:
            meta.append(m)
    if neuron_coord is None and n_neurons is not None:
        neuron_coord = np.arange(n_neurons, dtype=np.int64)

    statistics = []
    for s in inv.statistics:
        key = s.split("/", 1)[0]
        statistics.append(_meta_array(source, f"meta/statistics/{s}.npy", f"statistics/{s}", None, None, data_vars.get(key)))

    labels = {}
    for v in data_vars.values():
        for dim, size in zip(v.dims, v.shape):
            if (dim, size) in layout.LABELS:
                labels[dim] = layout.LABELS[(dim, size)]
    by_name = {m.name: m.values for m in meta}
    tiers, ids = by_name.get(contract.TIER), by_name.get(contract.IMAGE_ID)
    if not inv.kind.shared_stimulus_id and tiers is not None and tiers.ndim == 1:
        order = layout.trial_order(tiers, np.zeros(inv.n_trials, dtype=np.int64))  # no id shared by repeats
    elif tiers is not None and ids is not None and tiers.ndim == ids.ndim == 1:
        order = layout.trial_order(tiers, ids)
    else:
        order = np.arange(inv.n_trials, dtype=np.int64)
    return Plan(inv, data_vars, expect, n_neurons, neuron_coord, meta, statistics, labels, order, block)


def _check_clips(source: Source, inv: Inventory, expect: dict[str, NpyHeader]) -> None:
    """Every file ends in one frame axis: the clip's frames, the same number in every folder."""
    video = expect[inv.kind.stimulus]
    rel = inv.trial_path(inv.kind.stimulus, 0)
    if not video.shape:
        raise SourceError(source.where(rel), "a 0-d array: a clip needs a frame axis (its last)")
    for key, h in expect.items():
        if not h.shape or h.shape[-1] != video.shape[-1]:
            raise SourceError(source.where(inv.trial_path(key, 0)), f"has shape {h.shape}: its last axis should be the "
                                                                   f"clip's {video.shape[-1]} frames, as in {rel}")


def root_attrs(source: Source, p: Plan, results: list[BlockResult]) -> dict:
    inv = p.inventory
    crcs = {m.rel: m.crc32 for m in [*p.meta, *p.statistics]}
    if isinstance(p.neuron_coord, MetaArray):
        crcs[p.neuron_coord.rel] = p.neuron_coord.crc32
    for r in results:
        for key, c in r.crc32.items():
            for i, crc in zip(p.order[r.block.start : r.block.stop].tolist(), c.tolist()):
                crcs[inv.trial_path(key, i)] = crc
    tier = p.coordinate(contract.TIER).stored_values()
    by_rel = {m.rel: m.values for m in p.meta}
    names, counts = np.unique(tier.astype(str), return_counts=True)
    frames = {"n_frames_padded": p.n_frames, "frame_rate_hz": contract.FRAME_RATE_HZ} if p.kind.frames else {}
    return contract.encode_attrs({
        "title": p.kind.title,
        "dataset": inv.name,
        **layout.identity(inv.name, *(by_rel.get(f"meta/trials/{f}.npy") for f in ("animal_id", "session", "scan_idx"))),
        "n_trials": inv.n_trials,
        "n_neurons": p.n_neurons,
        "data_keys": list(inv.data_keys),
        "tier_counts": {str(n): int(c) for n, c in zip(names, counts)},
        "withheld_trials": {k: sum(int(r.flags[contract.withheld_name(k)].sum()) for r in results) for k in inv.data_keys},
        "schema": contract.SCHEMA,
        "schema_version": p.kind.schema_version,
        **frames,
        "converter_version": __version__,
        "source_name": storage_name(source.location),
        "source_fingerprint": contract.fingerprint(crcs),
        "source_identity": source.identity(),
        "ignored_files": list(inv.ignored),
        **({"source_zip": source.layout()} if isinstance(source, ZipSource) else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "license": LICENSE,
        "license_url": LICENSE_URL,
        "citation": p.kind.citation,
    })


def estimate_bytes(source: Source, p: Plan, sample: int = 16) -> int:
    """About how many bytes the store will take on disk.

    A few trials of each data folder, spread over the scan, are compressed as the store
    compresses them and scaled to every trial (twice for a variable kept in two layouts);
    so is the first MiB of every other file, scaled to its declared size.  Meta arrays count
    uncompressed.
    """
    from numcodecs import Zstd

    n = p.n_trials
    picks = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64)).tolist()
    total = sum(m.values.nbytes for m in [*p.meta, *p.statistics])
    for rel in p.inventory.other_files:
        size = source.size(rel)
        with source.open(rel) as f:
            head = f.read(1 << 20)
        total += len(Zstd().encode(head)) * size // max(1, len(head))
    for key, v in p.data_vars.items():
        values = read_trials(source, key, picks, p.expect[key]).values
        packed = compressed_size(values, v.codec.cname, v.codec.clevel, v.codec.shuffle)
        total += packed * n // len(picks) * (2 if layout.row_copy(v) is not None else 1)
    return int(total)


def plan_record(source: Source, p: Plan) -> dict:
    """What a resumed conversion must find unchanged to reuse the work already done."""
    record = {
        "converter_version": __version__,
        "schema_version": p.kind.schema_version,
        "source": source.canonical,
        "source_identity": source.identity(),
        "n_trials": p.n_trials,
        "data_vars": {k: asdict(v) for k, v in p.data_vars.items()},
        "trial_order": hashlib.sha256(p.order.tobytes()).hexdigest(),
    }
    return json.loads(json.dumps(record))


def made_from(dest, source: Source, p: Plan, storage_options: dict | None = None) -> bool:
    """True when ``dest`` is a complete, valid store converted from this very source.

    The same source means the same identity (path, names, sizes, times), or for a zip, the
    same fingerprint (from the CRC-32s in its directory: the same content anywhere).
    """
    from ..schema import validate

    try:
        attrs = validate(dest, storage_options)["attributes"]
    except StoreError:
        return False
    if attrs.get("source_identity") == source.identity():
        return True
    crcs = source.directory_crc32s()
    if crcs is None:
        return False
    inv = p.inventory
    files = [m.rel for m in [*p.meta, *p.statistics]] + [inv.trial_path(k, i) for k in inv.data_keys for i in range(inv.n_trials)]
    if isinstance(p.neuron_coord, MetaArray):
        files.append(p.neuron_coord.rel)
    return all(f in crcs for f in files) and contract.fingerprint({f: crcs[f] for f in files}) == attrs.get("source_fingerprint")


