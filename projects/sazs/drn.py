"""DRN-D (Yu et al., "Dilated Residual Networks", fyu/drn), the classification head removed.

State-dict layout `<i>.*` for i = 0..8 = fyu/drn's layer0..layer8 (the official SAZS model keeps them
as `base.<i>`), so ImageNet DRN weights and SAZS checkpoints load by renaming `layer<i>` -> `<i>`.
Output stride 8: layers 3 and 4 stride 2 (after layer2's), layers 5/6 dilate by 2/4 instead.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Bottleneck", "DRND"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


def _conv_layers(inplanes: int, channels: int, convs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    modules: list[nn.Module] = []
    for i in range(convs):
        modules += [
            nn.Conv2d(inplanes, channels, 3, stride=stride if i == 0 else 1, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        inplanes = channels
    return nn.Sequential(*modules)


def _bottleneck_layer(inplanes: int, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride, dilation, downsample)]
    layers += [Bottleneck(out, planes, dilation=dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class DRND(nn.Sequential):
    """DRN-D with Bottleneck blocks; `layers` = blocks/convs per stage 0..7 (DRN-D-105:
    (1, 1, 3, 4, 23, 3, 1, 1)); children 0..8 = stem (7x7 conv) and the 8 stages."""

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128, 256, 512, 512, 512),
        layers: Sequence[int] = (1, 1, 3, 4, 23, 3, 1, 1),
    ) -> None:
        if len(channels) != 8 or len(layers) != 8:
            raise ValueError(f"DRN-D needs 8 channel widths and 8 stage depths, got {channels} / {layers}")
        c, n = list(channels), list(layers)
        e = Bottleneck.expansion
        stages = [
            nn.Sequential(nn.Conv2d(3, c[0], 7, padding=3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True)),
            _conv_layers(c[0], c[0], n[0]),
            _conv_layers(c[0], c[1], n[1], stride=2),
            _bottleneck_layer(c[1], c[2], n[2], stride=2),
            _bottleneck_layer(c[2] * e, c[3], n[3], stride=2),
            _bottleneck_layer(c[3] * e, c[4], n[4], dilation=2),
            _bottleneck_layer(c[4] * e, c[5], n[5], dilation=4),
            _conv_layers(c[5] * e, c[6], n[6], dilation=2),
            _conv_layers(c[6], c[7], n[7]),
        ]
        super().__init__(*stages)
        self.out_channels = c[7]
