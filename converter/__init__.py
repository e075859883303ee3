"""sensorium-zarr: each Sensorium 2022 scan as one chunked, lossless Zarr v3 store."""

import os as _os
import sys as _sys

try:
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
except KeyboardInterrupt:
    # Ctrl-C while the command line starts (the imports take a second): one line and exit
    # 130, as at any later moment.  Any other program importing us gets the interrupt.
    if _os.path.basename(_sys.argv[0]) == "sensorium-zarr" or _sys.orig_argv[1:3] == ["-m", "converter.cli"]:
        print("sensorium-zarr: interrupted", file=_sys.stderr, flush=True)
        _os._exit(130)
    raise

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
