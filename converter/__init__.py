"""sensorium-zarr: each Sensorium 2022 scan as one chunked, lossless Zarr v3 store."""

from .convert import convert
from .dataset import info, open_mouse
from .errors import SourceError, StoreError
from .sample import make_sample
from .schema import validate
from .verify import VerifyReport, verify

__version__ = "0.1.0"

__all__ = [
    "SourceError",
    "StoreError",
    "VerifyReport",
    "__version__",
    "convert",
    "info",
    "make_sample",
    "open_mouse",
    "validate",
    "verify",
]
