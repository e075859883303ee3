"""sensorium-zarr: each Sensorium scan as one chunked, lossless Zarr v3 store.

The package by role: `converter.source` reads datasets, `converter.write` makes stores,
`converter.read` opens them, `converter.integrity` checks them; `converter.contract` holds
the names they share.  The public API is re-exported here, each name imported on first use,
so that ``import converter`` and the command line start fast.

``ds.sensorium`` is registered on xarray's Dataset as soon as any reader is used (`open_mouse`
and the rest), on ``import converter.read``, or here already if xarray is imported first.
"""

import sys

from . import _startup

_startup.begin()
from ._lazy import exports  # noqa: E402
from ._version import __version__  # noqa: E402
from .errors import SourceError, StorageError, StoreError  # noqa: E402

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
__getattr__, __dir__ = exports(__name__, {
    "MouseResult": ".write.batch:MouseResult", "convert": ".write.convert:convert", "convert_all": ".write.batch:convert_all",
    "VerifyReport": ".integrity.verify:VerifyReport", "export": ".integrity.export:export",
    "self_check": ".integrity.export:self_check", "validate": ".schema:validate", "verify": ".integrity.verify:verify",
    "Normalizer": ".read.normalize:Normalizer", "standardize": ".read.normalize:standardize", "info": ".store_info:info",
    "open_mice": ".read.dataset:open_mice", "open_mouse": ".read.dataset:open_mouse",
    "read_statistics": ".read.statistics:read_statistics", "oracle": ".read.score:oracle", "score": ".read.score:score",
    "make_sample": ".sample:make_sample",
    # they need optional packages (matplotlib, PyTorch)
    "plot": ".plot", "torch": ".torch",
    # the subpackages and modules, as attributes, as when they were imported here
    **{m: f".{m}" for m in ("contract", "integrity", "progress", "read", "sample", "source", "storage", "write", "zarrlite")},
})
if "xarray" in sys.modules:  # xarray is loaded already: ds.sensorium costs nothing more
    from . import read  # noqa: E402,F401
