"""sensorium-zarr: each Sensorium 2022 scan as one chunked, lossless Zarr v3 store.

The package by role: `converter.source` reads datasets, `converter.write` makes stores,
`converter.read` opens them, `converter.integrity` checks them; `converter.contract` holds
the names they share.  The public API is re-exported here.
"""

import os as _os
import sys as _sys

try:
    from ._version import __version__
    from .errors import SourceError, StorageError, StoreError
    from .integrity import VerifyReport, export, self_check, validate, verify
    from .read import Normalizer, info, open_mice, open_mouse, read_statistics, standardize  # registers ds.sensorium
    from .read.score import oracle, score
    from .sample import make_sample
    from .write import MouseResult, convert, convert_all
except KeyboardInterrupt:
    # Ctrl-C while the command line starts (the imports take a second): one line and exit
    # 130, as at any later moment.  Any other program importing us gets the interrupt.
    if _os.path.basename(_sys.argv[0]) == "sensorium-zarr" or _sys.orig_argv[1:3] == ["-m", "converter.cli"]:
        print("sensorium-zarr: interrupted", file=_sys.stderr, flush=True)
        _os._exit(130)
    raise

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
