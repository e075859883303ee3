"""Reading stores: `open_mouse` (lazy xarray through a fast chunk reader), ``ds.sensorium``,
normalisation as the official loaders do it, the competition's metrics (`score`), the
overview figure (`converter.plot`) and the PyTorch datasets (`converter.torch`)."""

from . import accessor  # registers ds.sensorium
from .dataset import info, open_mice, open_mouse, read_statistics
from .normalize import Normalizer, standardize

__all__ = ["Normalizer", "accessor", "info", "open_mice", "open_mouse", "read_statistics", "standardize"]
