"""Reading stores: `open_mouse` (lazy xarray through a fast chunk reader), ``ds.sensorium``,
normalisation as the official loaders do it, the competition's metrics (`score`), the
overview figure (`converter.plot`) and the PyTorch datasets (`converter.torch`).

Importing this package registers ``ds.sensorium`` (`converter.read.accessor`); the rest is
imported on first use.
"""

from .._lazy import exports
from . import accessor  # registers ds.sensorium

__all__ = ["Normalizer", "accessor", "info", "open_mice", "open_mouse", "read_statistics", "standardize"]
__getattr__, __dir__ = exports(__name__, {"info": "..store_info:info", "open_mice": ".dataset:open_mice",
                                          "open_mouse": ".dataset:open_mouse", "read_statistics": ".statistics:read_statistics",
                                          "Normalizer": ".normalize:Normalizer", "standardize": ".normalize:standardize"})
