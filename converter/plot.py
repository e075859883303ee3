"""A scan at a glance (``pip install 'sensorium-zarr[plot]'``): the public name of
`converter.read.plot`."""

from .read.plot import overview

__all__ = ["overview"]
