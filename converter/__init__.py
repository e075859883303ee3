"""sensorium-zarr: each Sensorium 2022 scan as one chunked, lossless Zarr v3 store."""

from . import accessor  # registers ds.sensorium
from .batch import convert_all
from .convert import convert
from .dataset import info, open_mice, open_mouse, read_statistics
from .errors import SourceError, StorageError, StoreError
from .export import export, self_check
from .normalize import Normalizer, standardize
from .sample import make_sample
from .schema import validate
from ._version import __version__
from .verify import VerifyReport, verify

__all__ = [
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
    "read_statistics",
    "self_check",
    "standardize",
    "validate",
    "verify",
]
