"""PyTorch access to stores (``pip install 'sensorium-zarr[torch]'``): the public name of
`converter.read.torch`, kept short because training code imports it."""

import warnings

from .read.torch import MouseDataset, SubsetSequentialSampler, Trial, collate, loaders  # first: says how to install torch
from .read.video import VideoDataset, video_loaders  # noqa: I001
from .read.device import DeviceLoader, MiceCycler

__all__ = ["DeviceLoader", "MiceCycler", "MouseDataset", "SubsetSequentialSampler", "Trial", "VideoDataset", "collate", "loaders",
           "video_loaders"]

_RENAMED = {"ClipDataset": "VideoDataset"}  # 0.7's names of the 2023 kind's parts


def __getattr__(name: str):
    if name in _RENAMED:
        warnings.warn(f"converter.torch.{name} is now converter.torch.{_RENAMED[name]}; the old name goes in 1.0",
                      DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
