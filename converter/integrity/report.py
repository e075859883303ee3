"""What `verify`, `self_check` and `export` share: the report, the block size, the damage check
and the kept non-array files, read back in pieces."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .. import contract
from .. import damage
from ..errors import StoreError
from ..source.npy import to_native
from ..write import layout

@dataclass
class VerifyReport:
    """The outcome of `verify`: ``ok`` only when every source array matched."""

    files_checked: int = 0
    mismatches: list[str] = field(default_factory=list)
    limit: int = 20
    against: str = "the store bit for bit"

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def add(self, problem: str) -> None:
        if len(self.mismatches) < self.limit:
            self.mismatches.append(problem)

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.files_checked} source files match {self.against}"
        lines = [f"MISMATCH: {len(self.mismatches)} problem(s) in {self.files_checked} files checked (first {self.limit} shown)"]
        return "\n".join(lines + [f"  {m}" for m in self.mismatches])


def row_bits(a: np.ndarray) -> np.ndarray:
    """The bytes of each element, native order, as a (n, itemsize * rest) uint8 view."""
    a = to_native(a)
    n = a.shape[0] if a.ndim else 1
    return a.reshape(n, -1).view(np.uint8).reshape(n, -1)


def damaged(report: VerifyReport, dest, root: dict, storage_options: dict | None) -> bool:
    """Add a line per damaged object of the store to ``report`` (`converter.damage`);
    True when there was any: its values cannot be compared then."""
    found = damage.problems(dest, root, storage_options)
    for problem in found:
        report.add(problem)
    return bool(found)


def block_trials(arrays: dict[str, dict], keys: list[str]) -> int:
    """Trials per write block of a store, from its manifest's ``arrays`` (`converter.schema.manifest`):
    what one read of every data variable may hold in memory."""
    for key in keys:
        if key in arrays:
            return arrays[key]["chunks"][0]  # a data variable's write unit (chunk or shard) is one block of trials
    return layout.BLOCK_TRIALS


# Pieces in which the kept non-array files are read back: memory never depends on their sizes.
PIECE = 1 << 20
Pieces = Callable[[], Iterator[bytes]]


def other_files(group, schema_version: str | None) -> Iterator[tuple[str, Pieces, int]]:
    """``(path, its bytes in pieces, recorded CRC-32)`` of each non-array file kept in group ``files``.

    Stores of schema 1.0 and 2.0 did not keep them: none.  From 2.1 on, a store without
    the group is damaged (`StoreError`).
    """
    if contract.FILES_GROUP not in group:
        if schema_version in contract.WITHOUT_FILES_GROUP:
            return
        raise StoreError(f"{contract.FILES_GROUP}/: missing (the source's files that are not arrays)")
    files = group[contract.FILES_GROUP]
    data = files["bytes"]
    for path, start, size, crc in zip(files["path"][...].tolist(), files["offset"][...].tolist(),
                                      files["size"][...].tolist(), files["crc32"][...].tolist()):
        yield str(path), (lambda start=int(start), size=int(size): (data[a : min(a + PIECE, start + size)].tobytes()
                                                                     for a in range(start, start + size, PIECE))), int(crc)
