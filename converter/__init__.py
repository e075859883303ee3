"""sensorium-zarr: each Sensorium 2022 scan as one chunked, lossless Zarr v3 store.

The package by role: `converter.source` reads datasets, `converter.write` makes stores,
`converter.read` opens them, `converter.integrity` checks them; `converter.contract` holds
the names they share.  The public API is re-exported here.
"""

from . import _startup

_startup.begin()
from ._version import __version__  # noqa: E402
from .errors import SourceError, StorageError, StoreError  # noqa: E402
from .integrity import VerifyReport, export, self_check, validate, verify  # noqa: E402
from .read import Normalizer, info, open_mice, open_mouse, read_statistics, standardize  # noqa: E402  (registers ds.sensorium)
from .read.score import oracle, score  # noqa: E402
from .sample import make_sample  # noqa: E402
from .write import MouseResult, convert, convert_all  # noqa: E402

__all__ = [
    "MouseResult",
    "Normalizer",
    "SourceError",
    "StorageError",
    "StoreError",
    "VerifyReport",
    "__version__",
    "convert",
    "convert_all",
    "export",
    "info",
    "make_sample",
    "open_mice",
    "open_mouse",
    "oracle",
    "read_statistics",
    "score",
    "self_check",
    "standardize",
    "validate",
    "verify",
]
