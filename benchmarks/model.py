"""The reference model of ``python -m benchmarks.training``: a Sensorium-style baseline, kept small.

Input scaled to a quarter of its height and width on the device (144 x 256 -> 36 x 64, as the
Sensorium baselines' loaders do with ``scale=0.25``: 4 x 4 averages); a core of 4 convolutions with 64 channels (9x9, then 7x7),
batch norm and ELU; a point readout per neuron (``grid_sample`` at a learned position, then a
linear map), ELU + 1; Poisson loss, AdamW, bf16 autocast where the device has it.
"""

from __future__ import annotations

import torch
from torch import nn


class Baseline(nn.Module):
    def __init__(self, channels: int, neurons: int, hidden: int = 64) -> None:
        super().__init__()
        layers = []
        for k, size in enumerate((9, 7, 7, 7)):
            layers += [nn.Conv2d(channels if k == 0 else hidden, hidden, size, padding=size // 2, bias=False),
                       nn.BatchNorm2d(hidden), nn.ELU()]
        self.core = nn.Sequential(*layers)
        self.position = nn.Parameter(torch.zeros(neurons, 2).uniform_(-0.8, 0.8))
        self.weight = nn.Parameter(torch.randn(neurons, hidden) / hidden ** 0.5)
        self.bias = nn.Parameter(torch.zeros(neurons))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.core(nn.functional.avg_pool2d(images, 4))  # (B, C, H/4, W/4)
        grid = self.position.clamp(-1, 1)[None, :, None, :].expand(len(images), -1, -1, -1)  # (B, N, 1, 2)
        sampled = nn.functional.grid_sample(features, grid, align_corners=False)[..., 0]  # (B, C, N)
        return nn.functional.elu((sampled.transpose(1, 2) * self.weight).sum(-1) + self.bias) + 1


def trainer(channels: int, neurons: int, device: torch.device):
    """A function ``step(images, responses)`` running one training step of `Baseline`."""
    model = Baseline(channels, neurons).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = device.type == "cuda"

    def step(images: torch.Tensor, responses: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            pred = model(images)
        loss = nn.functional.poisson_nll_loss(pred.float(), responses, log_input=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step
