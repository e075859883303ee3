"""What a source holds: `scan` lists its files and checks names and trial indices."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..contract import RESPONSES, UNIT_IDS, trial_file
from ..kinds import ScanKind, kind_of_source
from ..errors import SourceError
from .files import Source

_TRIAL_FILE = re.compile(r"(0|[1-9][0-9]*)\.npy")


@dataclass(frozen=True)
class Inventory:
    """What a source holds, checked for consistent names and trial indices."""

    name: str
    n_trials: int
    data_keys: tuple[str, ...]
    trial_meta: tuple[str, ...]
    neuron_meta: tuple[str, ...]
    statistics: tuple[str, ...]  # "<key>/<source>/<stat>"
    other_files: tuple[str, ...] = field(default=())  # every other file, kept byte for byte
    ignored: tuple[str, ...] = field(default=())  # passed over: stores inside the source, __MACOSX/

    @property
    def kind(self) -> ScanKind:
        """The kind of scan, decided by its data folders (`converter.kinds`)."""
        return kind_of_source(self.data_keys)

    def trial_path(self, key: str, i: int) -> str:
        return trial_file(key, i)


def _files_under(tree: dict[str, set[str]], rel: str) -> list[str]:
    """``rel`` if it is a file, else every file below it."""
    if rel not in tree:
        return [rel]
    return [f for entry in sorted(tree[rel]) for f in _files_under(tree, f"{rel}/{entry}".lstrip("/"))]


def _npy_names(tree: dict[str, set[str]], folder: str, other: list[str]) -> tuple[str, ...]:
    """The arrays (``<name>.npy`` files) of ``folder``; anything else goes to ``other``."""
    names = []
    for entry in sorted(tree.get(folder, ())):
        rel = f"{folder}/{entry}"
        if entry.endswith(".npy") and rel not in tree:
            names.append(entry[:-4])
        else:
            other += _files_under(tree, rel)
    return tuple(names)


def _trial_indices(source: Source, tree: dict[str, set[str]], folder: str, other: list[str]) -> list[int]:
    """Sorted trial numbers of ``data/<key>/``; files that are not ``.npy`` (``.DS_Store``) go to ``other``."""
    idx = []
    for entry in tree[folder]:
        rel = f"{folder}/{entry}"
        m = _TRIAL_FILE.fullmatch(entry)
        if m is not None and rel not in tree:
            idx.append(int(m.group(1)))
        elif rel not in tree and not entry.lower().endswith(".npy"):
            other.append(rel)
        else:
            raise SourceError(source.where(rel), "not a trial file (expected <non-negative integer>.npy)")
    if not idx:
        raise SourceError(source.where(folder), "no trial files (expected <non-negative integer>.npy)")
    return sorted(idx)


def scan(source: Source) -> Inventory:
    """List and check the dataset's files; raise `SourceError` on the first problem."""
    tree = source.tree()
    if "zarr.json" in tree[""] and "data" not in tree[""]:
        raise SourceError(source.location, "a Zarr store, not a dataset folder or zip (arguments swapped?)")
    for folder in ("data", "meta"):
        if folder not in tree:
            raise SourceError(source.where(folder), _missing_top(tree))
    other: list[str] = []
    keys = []
    for entry in tree["data"]:
        if f"data/{entry}" in tree:
            keys.append(entry)
        else:
            other.append(f"data/{entry}")
    known = kind_of_source(keys).data_keys
    keys.sort(key=lambda k: (known.index(k) if k in known else len(known), k))
    if not keys:
        raise SourceError(source.where("data"), "no data folders")
    n_trials = None
    first = None
    for key in keys:
        folder = f"data/{key}"
        if not tree[folder]:
            raise SourceError(source.where(folder), "empty folder")
        idx = _trial_indices(source, tree, folder, other)
        if idx[-1] != len(idx) - 1:
            missing = next(i for i, v in enumerate(idx) if i != v)
            raise SourceError(source.where(f"{folder}/{missing}.npy"), f"missing: trial indices have gaps (found {len(idx)} files up to {idx[-1]}.npy)")
        if n_trials is None:
            n_trials, first = len(idx), key
        elif len(idx) != n_trials:
            raise SourceError(source.where(folder), f"has {len(idx)} trial files but data/{first} has {n_trials}")
    for f in sorted(tree[""]):
        if f not in ("data", "meta"):
            other += _files_under(tree, f)
    trial_meta = _npy_names(tree, "meta/trials", other)
    neuron_meta = _npy_names(tree, "meta/neurons", other)
    stats = []
    for key in sorted(tree.get("meta/statistics", ())):
        if f"meta/statistics/{key}" not in tree:
            other.append(f"meta/statistics/{key}")
            continue
        for src in sorted(tree[f"meta/statistics/{key}"]):
            folder = f"meta/statistics/{key}/{src}"
            if folder in tree:
                stats += [f"{key}/{src}/{s}" for s in _npy_names(tree, folder, other)]
            else:
                other.append(folder)
    for f in sorted(tree["meta"]):
        if f not in ("trials", "neurons", "statistics"):
            other += _files_under(tree, f"meta/{f}")
    if "tiers" not in trial_meta:
        raise SourceError(source.where("meta/trials/tiers.npy"), "missing")
    if RESPONSES in keys and UNIT_IDS not in neuron_meta:  # the store names neurons by their unit ids
        raise SourceError(source.where(f"meta/neurons/{UNIT_IDS}.npy"), "missing (data/responses needs the unit id of each neuron)")
    return Inventory(source.name, n_trials, tuple(keys), trial_meta, neuron_meta, tuple(stats),
                     tuple(sorted(other)), tuple(source.skipped))


def _missing_top(tree: dict[str, set[str]]) -> str:
    """Why ``data/`` or ``meta/`` is not at the top: say what was found instead."""
    nested = sorted(t for t in tree[""] if t in tree and {"data", "meta"} <= tree[t])
    if len(nested) > 1:
        return f"missing: found {len(nested)} datasets ({', '.join(nested[:3])}); give one at a time"
    if nested:
        return f"missing: the dataset is in the subfolder {nested[0]}/; give that folder"
    return "missing (not a Sensorium dataset folder)"


