"""ResNet-18 backbone (He et al. 2016) for the TPS keypoint detector and the background motion predictor.

In-project replacement for ``torchvision.models.resnet18`` (torchvision is not a dependency). Parameter
names follow torchvision exactly (``conv1``, ``bn1``, ``layer1..4.{0,1}.{conv1,bn1,conv2,bn2}``,
``layerN.0.downsample.{0,1}``, ``fc``), so the official MRFA ``fg_encoder.*`` / ``bg_encoder.*``
state_dict entries load after stripping their prefix. Only the input channels and the fc size are
configurable; the official code always builds it from random initialisation (no ImageNet weights).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 conv + BN) shortcut, ReLU after the sum."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:  # [B, Cin, H, W] -> [B, C, H/s, W/s]
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18: 7x7/2 stem, 3x3/2 max-pool, 4 stages of 2 BasicBlocks, global average pool, fc.

    Args:
        in_channels: channels of the input image (3 for the TPS detector, 6 for the bg predictor).
        num_outputs: output size of the final ``fc`` layer.

    Shapes: ``[B, in_channels, H, W] -> [B, num_outputs]`` (features 512 before ``fc``).
    """

    def __init__(self, *, in_channels: int = 3, num_outputs: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = (64, 128, 256, 512)
        in_planes = 64
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            self.add_module(f"layer{i + 1}", stage)
            in_planes = planes
        self.fc = nn.Linear(512, num_outputs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation: He-normal (fan_out) convs, BN (1, 0), default Linear."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.fc.reset_parameters()

    def features(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, 512]`` before the ``fc`` layer."""
        x = F.relu(self.bn1(self.conv1(x)))  # [B, 64, H/2, W/2]
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # [B, 64, H/4, W/4]
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)  # [B, 512, H/32, W/32]
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # [B, 512]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))  # [B, num_outputs]
