"""``convert``: one dataset (folder or zip) into one store, atomically.

The store is built in ``<DEST>.incomplete/store`` and renamed to DEST only after it is
complete and validates against the schema, so DEST never holds a partial store.  An
interrupted conversion resumes from the records beside it (see `converter.state`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import executors, layout
from ._version import __version__
from .errors import SourceError, StorageError, StoreError, storage_error
from .executors import Executor
from .engine import compressed_size
from .location import check_creatable, filesystem, is_url, tree_bytes
from .npy import NpyHeader, parse_header
from .progress import Progress
from .source import Inventory, Source, ZipSource, open_source, read_array, read_trials, scan
from .state import ConversionState, RemoteConversionState
from .store import (BlockResult, MetaArray, create_skeleton, finalize, hide_root, sweep_temporaries, write_checksums,
                    write_files)

LICENSE = "CC BY-NC-ND 4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by-nc-nd/4.0/"
CITATION = (
    "Willeke, K. F., Fahey, P. G., Bashiri, M., Pede, L., Burg, M. F., Blessing, C., Cadena, S. A., "
    "Ding, Z., Lurz, K.-K., Ponder, K., Muhammad, T., Patel, S. S., Ecker, A. S., Tolias, A. S., "
    "Sinz, F. H. (2022). The Sensorium competition on predicting large-scale mouse primary visual "
    "cortex activity. arXiv:2206.08666."
)


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

    @property
    def n_trials(self) -> int:
        return self.inventory.n_trials


def _meta_array(source: Source, rel: str, name: str, base: str | None, length: int | None, data: layout.DataVar | None = None) -> MetaArray:
    values, crc, header = read_array(source, rel)
    if base is None:  # statistics
        dims = layout.stat_dims(name.rsplit("/", 1)[1], values.shape, data)
    else:
        if values.ndim == 0 or (length is not None and values.shape[0] != length):
            got = "a 0-d array" if values.ndim == 0 else f"{values.shape[0]} rows"
            raise SourceError(source.where(rel), f"has {got}, expected one row per {base} ({length})")
        dims = layout.meta_dims(name, base, values.shape)
    return MetaArray(rel, name, dims, values, crc, header)


def plan(source: Source) -> Plan:
    """Scan the source, read its meta arrays and one trial per folder; decide the layout."""
    inv = scan(source)
    expect, data_vars = {}, {}
    for key in inv.data_keys:
        rel = inv.trial_path(key, 0)
        h = parse_header(source.read(rel), source.where(rel))
        expect[key] = h
        data_vars[key] = layout.plan_data_var(key, inv.n_trials, h.shape, h.dtype)
    resp = data_vars.get("responses")
    n_neurons = resp.shape[1] if resp is not None and resp.dims[1] == "neuron" else None
    names = layout.coord_names(inv.trial_meta, inv.neuron_meta, inv.data_keys)

    meta, neuron_coord = [], None
    for f in inv.trial_meta:
        rel = f"meta/trials/{f}"
        meta.append(_meta_array(source, rel + ".npy", names[rel], "trial", inv.n_trials))
    for f in inv.neuron_meta:
        rel = f"meta/neurons/{f}"
        m = _meta_array(source, rel + ".npy", names[rel], "neuron", n_neurons)
        n_neurons = m.values.shape[0] if n_neurons is None else n_neurons
        if m.name == "neuron":
            if m.values.ndim != 1:
                raise SourceError(source.where(m.rel), f"expected a 1-d array of unit ids, found shape {m.values.shape}")
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
    tiers, ids = by_name.get("tier"), by_name.get("image_id")
    if tiers is not None and ids is not None and tiers.ndim == ids.ndim == 1:
        order = layout.trial_order(tiers, ids)
    else:
        order = np.arange(inv.n_trials, dtype=np.int64)
    return Plan(inv, data_vars, expect, n_neurons, neuron_coord, meta, statistics, labels, order)


def fingerprint(crcs: dict[str, int]) -> str:
    """SHA-256 over the sorted ``path<TAB>crc32`` lines of every source ``.npy`` file.

    The same content gives the same fingerprint from a folder or from its zip.
    """
    h = hashlib.sha256()
    for rel in sorted(crcs):
        h.update(f"{rel}\t{crcs[rel]:08x}\n".encode())
    return "sha256:" + h.hexdigest()


def _root_attrs(source: Source, p: Plan, results: list[BlockResult]) -> dict:
    inv = p.inventory
    crcs = {m.rel: m.crc32 for m in [*p.meta, *p.statistics]}
    if isinstance(p.neuron_coord, MetaArray):
        crcs[p.neuron_coord.rel] = p.neuron_coord.crc32
    for r in results:
        for key, c in r.crc32.items():
            for i, crc in zip(p.order[r.block.start : r.block.stop].tolist(), c.tolist()):
                crcs[inv.trial_path(key, i)] = crc
    tier = next(m for m in p.meta if m.name == "tier").stored_values()
    by_rel = {m.rel: m.values for m in p.meta}
    names, counts = np.unique(tier.astype(str), return_counts=True)
    return {
        "title": "Sensorium 2022 mouse visual cortex data: one scan",
        "dataset": inv.name,
        **layout.identity(inv.name, *(by_rel.get(f"meta/trials/{f}.npy") for f in ("animal_id", "session", "scan_idx"))),
        "n_trials": inv.n_trials,
        "n_neurons": p.n_neurons,
        "data_keys": list(inv.data_keys),
        "tier_counts": {str(n): int(c) for n, c in zip(names, counts)},
        "withheld_trials": {k: sum(r.withheld[k] for r in results) for k in inv.data_keys},
        "schema": "sensorium-zarr",
        "schema_version": layout.SCHEMA_VERSION,
        "converter_version": __version__,
        "source_name": Path(source.location).name,
        "source_fingerprint": fingerprint(crcs),
        "source_identity": source.identity(),
        "ignored_files": list(inv.ignored),
        **({"source_zip": source.layout()} if isinstance(source, ZipSource) else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "license": LICENSE,
        "license_url": LICENSE_URL,
        "citation": CITATION,
    }


def _check_replaceable(dest: Path) -> None:
    """Refuse to replace anything at DEST that is not a Zarr store."""
    if not (dest.is_dir() and ((dest / "zarr.json").exists() or not any(dest.iterdir()))):
        raise StoreError(f"{dest}: exists and is not a Zarr store; refusing to delete it")


def estimate_bytes(source: Source, p: Plan, sample: int = 16) -> int:
    """About how many bytes the store will take on disk.

    A few trials of each data folder, spread over the scan, are compressed as the store
    compresses them and scaled to every trial (twice for a variable kept in two layouts);
    meta arrays and other files count uncompressed.
    """
    n = p.n_trials
    picks = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64)).tolist()
    total = sum(m.values.nbytes for m in [*p.meta, *p.statistics])
    for key, v in p.data_vars.items():
        values = read_trials(source, key, picks, p.expect[key]).values
        packed = compressed_size(values, v.codec.cname, v.codec.clevel, v.codec.shuffle)
        total += packed * n // len(picks) * (2 if layout.row_copy(v) is not None else 1)
    return int(total)


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _check_space(source: Source, p: Plan, dest: Path, work: Path) -> None:
    """Refuse before writing when the store, as estimated, cannot fit where it is written."""
    usage = shutil.disk_usage(dest.parent)
    if usage.total == 0:
        return  # a pseudo-file-system that reports no sizes: the write itself will tell
    need = estimate_bytes(source, p) - (tree_bytes(work / "store") if work.exists() else 0)
    if need > usage.free:
        raise StorageError(f"{dest.parent}: not enough room for the store: it needs about {_size(need)} "
                           f"(estimated from a few trials), and {_size(usage.free)} is free there", errno.ENOSPC)


def _plan_record(source: Source, p: Plan) -> dict:
    """What a resumed conversion must find unchanged to reuse the work already done."""
    record = {
        "converter_version": __version__,
        "schema_version": layout.SCHEMA_VERSION,
        "source": source.location if is_url(source.location) else str(Path(source.location).resolve()),
        "source_identity": source.identity(),
        "n_trials": p.n_trials,
        "data_vars": {k: asdict(v) for k, v in p.data_vars.items()},
        "trial_order": hashlib.sha256(p.order.tobytes()).hexdigest(),
    }
    return json.loads(json.dumps(record))


def _build(source: Source, p: Plan, state: ConversionState, run_blocks: Executor, bar, record: dict) -> None:
    """Write (or finish writing) the store at ``state.store``; resumable at any point."""
    from .schema import validate

    tmp = state.store
    so = getattr(state, "storage_options", None)
    remote = is_url(str(tmp))
    if state.plan() != record:
        state.start_over()
        try:
            create_skeleton(tmp, p.data_vars, p.order, p.neuron_coord, p.meta, p.labels, p.statistics, so)
            write_files(tmp, [(rel, data, source.crc32(rel, data)) for rel in p.inventory.other_files
                              for data in (source.read(rel),)], so)
        finally:
            if remote:  # even when the skeleton fails half-way, no reader may take it for a store
                hide_root(tmp, so)
        state.save_plan(record)
    done = state.done_blocks()
    todo = [b for b in layout.blocks(p.n_trials) if b.start not in done]
    bar(sum(len(r.block) for r in done.values()) * len(p.data_vars))
    # closed at once on any error, here too: blocks still queued must not run on
    with contextlib.closing(run_blocks(source, tmp, p.data_vars, p.expect, todo, bar, so, p.order)) as finished:
        for r in finished:
            state.save_block(r)  # only after every chunk of the block is written
            done[r.block.start] = r
    results = [done[b.start] for b in layout.blocks(p.n_trials)]
    crcs = {k: np.concatenate([r.crc32[k] for r in results]) for k in p.data_vars}
    headers = {k: set().union(*(r.headers[k] for r in results)) for k in p.data_vars}
    sweep_temporaries(tmp)  # what writers killed half-way left: the store must equal an uninterrupted one
    try:
        write_checksums(tmp, crcs, headers, so)
    finally:
        if remote:
            hide_root(tmp, so)  # creating the checksum arrays wrote it again, failing or not
    finalize(tmp, _root_attrs(source, p, results), so)
    validate(tmp, so)


@contextlib.contextmanager
def _storage_errors(where):
    """A failing disk or bucket becomes one line that names it and says whether a rerun helps."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        err = storage_error(e, str(where))
        if err is None:
            raise
        raise err from None


def _bar(progress: bool | Progress | None, p: Plan):
    if isinstance(progress, Progress):
        return contextlib.nullcontext(progress)
    return Progress(p.n_trials * len(p.data_vars), f"convert {p.inventory.name[:40]}", progress)


class Outcome(NamedTuple):
    """What `run` did: the store's location, and ``"converted"`` or ``"complete"`` (already there)."""

    dest: Path | str
    status: str


def convert(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool | Progress | None = None,
    client=None,
    storage_options: dict | None = None,
) -> Path | str:
    """Convert one dataset folder or zip into a consolidated Zarr v3 store at ``dest``.

    The store is built in ``<dest>.incomplete`` and renamed to ``dest`` once complete
    and valid.  If a conversion is interrupted (killed, out of disk space), running the
    same call again resumes it: finished blocks of trials are not written again.  Run
    again once the store is complete, it finds the store made from this very source and
    does nothing.

    Parameters
    ----------
    src : path to the dataset folder (holding ``data/`` and ``meta/``) or its ``.zip``; either
        may be a URL such as ``s3://bucket/x.zip`` (``storage_options`` go to fsspec).
    dest : path or URL of the store to create.  In object storage (no rename) the store is
        written in place with its root metadata last; see README, "Object storage".
    overwrite : replace an existing store at ``dest`` (on disk only once the new one is complete).
    workers : threads writing blocks of trials in parallel; default: one per core.
    progress : draw a progress bar on stderr; default: only when stderr is a terminal.
        A `Progress` instance is advanced instead (one bar over several conversions).
    client : a ``distributed.Client``: write the blocks on its workers instead of threads.

    Returns
    -------
    The path (or URL) of the finished store.

    Raises
    ------
    SourceError : the source is malformed (the message names the file); nothing is left.
    StoreError : ``dest`` exists and was made from another source (without ``overwrite``),
        another conversion is writing it, or the result is invalid.
    StorageError : the disk or bucket failed; the message says whether a rerun resumes.
    """
    return run(src, dest, overwrite=overwrite, workers=workers, progress=progress, client=client,
               storage_options=storage_options).dest


def run(src, dest, *, overwrite: bool = False, workers: int | None = None, progress=None, client=None,
        storage_options: dict | None = None) -> Outcome:
    """`convert`, also telling whether it converted or found the store already complete."""
    run_blocks = executors.dask(client) if client is not None else executors.threads(workers)
    source = open_source(src, storage_options)
    try:
        p = plan(source)
        if is_url(dest):
            return _convert_remote(source, p, str(dest).rstrip("/"), overwrite, run_blocks, progress, storage_options)
        return _convert_local(source, p, Path(dest), overwrite, run_blocks, progress)
    finally:
        source.close()


def made_from(dest, source: Source, p: Plan, storage_options: dict | None = None) -> bool:
    """True when ``dest`` is a complete, valid store converted from this very source.

    The same source means the same identity (path, names, sizes, times), or for a zip, the
    same fingerprint (from the CRC-32s in its directory: the same content anywhere).
    """
    from .schema import validate

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
    return all(f in crcs for f in files) and fingerprint({f: crcs[f] for f in files}) == attrs.get("source_fingerprint")


def _convert_local(source: Source, p: Plan, dest: Path, overwrite: bool, run_blocks: Executor, progress) -> Outcome:
    work = dest.with_name(dest.name + ".incomplete")
    check_creatable(dest)
    if dest.exists() and not overwrite and not work.exists():  # decided without touching anything
        if made_from(dest, source, p):
            return Outcome(dest, "complete")
        raise StoreError(f"{dest}: already exists (use --overwrite to replace it)")
    with _storage_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        _check_space(source, p, dest, work)
        work.mkdir(exist_ok=True)
    with ConversionState(work) as state:  # from here on, this process alone may delete or rename
        with _storage_errors(work):
            record = _plan_record(source, p)
            if state.plan() == record and state.publishing():  # killed while moving the finished store
                state.publish(dest)
                state.discard()
                return Outcome(dest, "converted")
            if dest.exists():
                if not overwrite and made_from(dest, source, p):
                    state.discard()
                    return Outcome(dest, "complete")
                if not overwrite:
                    if state.plan() is None:
                        state.discard()  # made by this call: nothing to resume
                    raise StoreError(f"{dest}: already exists (use --overwrite to replace it)")
                _check_replaceable(dest)
            with _bar(progress, p) as bar:
                try:
                    _build(source, p, state, run_blocks, bar, record)
                except SourceError:
                    state.discard()  # bad input: nothing worth resuming
                    raise
            state.publish(dest)
            state.discard()
    return Outcome(dest, "converted")


def _convert_remote(source: Source, p: Plan, dest: str, overwrite: bool, run_blocks: Executor, progress,
                    storage_options: dict | None) -> Outcome:
    """`convert` into object storage: written in place, root metadata last (no rename there)."""
    fs, root = filesystem(dest, storage_options)
    with _storage_errors(dest), RemoteConversionState(dest, storage_options) as state:
        if fs.exists(f"{root}/zarr.json"):
            if not overwrite and made_from(dest, source, p, storage_options):
                state.discard()
                return Outcome(dest, "complete")
            if not overwrite:
                raise StoreError(f"{dest}: already exists (use --overwrite to replace it)")
            state.start_over()  # without rename, the old store goes first
        with _bar(progress, p) as bar:
            try:
                _build(source, p, state, run_blocks, bar, _plan_record(source, p))
            except SourceError:
                state.start_over()  # bad input: nothing worth resuming
                state.discard()
                raise
        state.discard()
    return Outcome(dest, "converted")
