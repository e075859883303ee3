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


def __getattr__(name: str):
    """``converter.plot`` and ``converter.torch`` after a plain ``import converter``: imported on
    first use, since they need optional packages (matplotlib, PyTorch) and take time to load."""
    if name in ("plot", "torch"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
