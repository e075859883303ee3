"""PyTorch access to stores (``pip install 'sensorium-zarr[torch]'``): the public name of
`converter.read.torch`, kept short because training code imports it."""

from .read.torch import MouseDataset, SubsetSequentialSampler, Trial, collate, loaders  # first: says how to install torch
from .read.clips import ClipDataset, video_loaders  # noqa: I001
from .read.device import DeviceLoader, MiceCycler

__all__ = ["ClipDataset", "DeviceLoader", "MiceCycler", "MouseDataset", "SubsetSequentialSampler", "Trial", "collate", "loaders", "video_loaders"]
