"""PyTorch access to stores (``pip install 'sensorium-zarr[torch]'``): the public name of
`converter.read.torch`, kept short because training code imports it."""

from .read.torch import MouseDataset, SubsetSequentialSampler, Trial, collate, loaders

__all__ = ["MouseDataset", "SubsetSequentialSampler", "Trial", "collate", "loaders"]
