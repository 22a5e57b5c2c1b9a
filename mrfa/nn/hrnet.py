"""HRNet stem of the MTIA keypoint detector (paper Fig. 2, "keypoint detector" box).

The high-resolution backbone that feeds TokenPose-B: a stride-4 stem, one ResNet ``layer1`` of
Bottlenecks, then two multi-resolution stages (``stage2``, ``stage3``) joined by transition layers.
Only the highest-resolution branch of the last module is returned (``[B, C0, H/4, W/4]``), as the
official HRNET_base of TokenPose does (the last ``stage3`` module fuses into branch 0 only).

Sub-module names follow the official state_dict (``conv1``, ``layer1.0.downsample.1``,
``transition1.1.0.0``, ``stage2.0.branches.1.3.conv2``, ``stage3.3.fuse_layers.0.2.0`` ...), so
official weights load after stripping the ``encoder.pre_feature.`` prefix. All convolutions are
bias-free, BatchNorm uses momentum 0.1 and eps 1e-5, fuse upsampling is nearest (as the
official ``HighResolutionModule`` does). Default PyTorch init (the official ``INIT_WEIGHTS`` is False, so it never re-inits).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

BN_MOMENTUM = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet v1 basic block: relu(x + bn(conv3x3(relu(bn(conv3x3(x)))))), expansion 1."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = _bn(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = _bn(channels)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4 channels) + residual, expansion 4."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = _bn(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = _bn(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = _bn(channels * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def make_res_layer(block: type[BasicBlock] | type[Bottleneck], in_channels: int, channels: int,
                   num_blocks: int, stride: int = 1) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first gets a 1x1 conv + BN shortcut when shapes change."""
    out_channels = channels * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), _bn(out_channels))
    layers = [block(in_channels, channels, stride=stride, downsample=downsample)]
    layers += [block(out_channels, channels) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def _fuse_path(in_channels: int, out_channels: int, steps: int) -> nn.Module:
    """Map branch j to branch i: steps > 0 upsamples 2**steps, steps < 0 downsamples 2**-steps.

    Up: 1x1 conv + BN + nearest upsample. Down: a chain of stride-2 3x3 convs, each followed by BN,
    and by ReLU except the last one; intermediate convs keep ``in_channels``.
    """
    if steps > 0:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _bn(out_channels),
                             nn.Upsample(scale_factor=2 ** steps, mode="nearest"))
    chain = []
    for k in range(-steps):
        last = k == -steps - 1
        conv_out = out_channels if last else in_channels
        ops: list[nn.Module] = [_conv3x3(in_channels, conv_out, stride=2), _bn(conv_out)]
        if not last:
            ops.append(nn.ReLU())
        chain.append(nn.Sequential(*ops))
    return nn.Sequential(*chain)


class HighResolutionModule(nn.Module):
    """Parallel BasicBlock branches followed by an all-to-all sum fusion (HRNet exchange unit).

    Args:
        in_channels: channels entering each branch (list, one per branch; branch b is at 1/2**b
            of the branch-0 resolution).
        num_blocks: BasicBlocks per branch.
        channels: output channels per branch.
        multi_scale_output: False fuses into branch 0 only (the last module of the stem).
    """

    def __init__(self, *, in_channels: Sequence[int], num_blocks: Sequence[int],
                 channels: Sequence[int], multi_scale_output: bool = True) -> None:
        super().__init__()
        if not len(in_channels) == len(num_blocks) == len(channels):
            raise ValueError(f"HighResolutionModule branch lists differ in length: in_channels "
                             f"{list(in_channels)}, num_blocks {list(num_blocks)}, channels {list(channels)}.")
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            make_res_layer(BasicBlock, cin, c, n) for cin, c, n in zip(in_channels, channels, num_blocks))
        self.out_channels = [c * BasicBlock.expansion for c in channels]
        self.fuse_layers: Optional[nn.ModuleList] = None
        if self.num_branches > 1:
            outputs = self.num_branches if multi_scale_output else 1
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(None if j == i else _fuse_path(self.out_channels[j], self.out_channels[i], j - i)
                              for j in range(self.num_branches))
                for i in range(outputs))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for i, paths in enumerate(self.fuse_layers):
            # Summation order (branch 0 first, then 1, 2, ...) as in the official code.
            y = xs[0] if i == 0 else paths[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else paths[j](xs[j]))
            fused.append(F.relu(y))
        return fused


def _make_transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Branch adapters between stages: 3x3 conv + BN + ReLU where channels change (else None);
    new branches are grown from the last previous branch by stride-2 3x3 conv + BN + ReLU chains."""
    layers: list[Optional[nn.Module]] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(None if c == pre[i] else nn.Sequential(_conv3x3(pre[i], c), _bn(c), nn.ReLU()))
            continue
        chain = []
        for j in range(i + 1 - len(pre)):
            cin = pre[-1]
            cout = c if j == i - len(pre) else cin
            chain.append(nn.Sequential(_conv3x3(cin, cout, stride=2), _bn(cout), nn.ReLU()))
        layers.append(nn.Sequential(*chain))
    return nn.ModuleList(layers)


def _make_stage(in_channels: Sequence[int], num_modules: int, num_blocks: Sequence[int],
                channels: Sequence[int], multi_scale_output: bool) -> nn.Sequential:
    modules = []
    cin = list(in_channels)
    for m in range(num_modules):
        last = m == num_modules - 1
        module = HighResolutionModule(in_channels=cin, num_blocks=num_blocks, channels=channels,
                                      multi_scale_output=multi_scale_output or not last)
        modules.append(module)
        cin = module.out_channels
    return nn.Sequential(*modules)


class HRNetStem(nn.Module):
    """HRNet feature extractor of TokenPose-B (official ``HRNET_base``), output at 1/4 resolution.

    Args:
        in_channels: image channels.
        stem_channels: channels of the two stride-2 stem convs and the ``layer1`` bottleneck width
            (``layer1`` outputs ``4 * stem_channels``); official 64.
        layer1_blocks: Bottlenecks in ``layer1``; official 4.
        stage2_modules / stage3_modules: HighResolutionModules per stage; official 1 / 4.
        stage2_blocks / stage3_blocks: BasicBlocks per branch; official (4, 4) / (4, 4, 4).
        stage2_channels / stage3_channels: channels per branch (the number of branches is their
            length); official (32, 64) / (32, 64, 128).

    Shapes: ``[B, in_channels, H, W] -> [B, stage3_channels[0], H/4, W/4]`` (H, W multiples of
    4 * 2**(branches - 1) so that every branch upsamples back exactly).
    """

    def __init__(self, *, in_channels: int = 3, stem_channels: int = 64, layer1_blocks: int = 4,
                 stage2_modules: int = 1, stage2_blocks: Sequence[int] = (4, 4),
                 stage2_channels: Sequence[int] = (32, 64), stage3_modules: int = 4,
                 stage3_blocks: Sequence[int] = (4, 4, 4),
                 stage3_channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        if len(stage3_channels) < len(stage2_channels):
            raise ValueError(f"stage3_channels {list(stage3_channels)} must have at least as many "
                             f"branches as stage2_channels {list(stage2_channels)}.")
        if stage2_modules < 1 or stage3_modules < 1:
            raise ValueError(f"stage2_modules ({stage2_modules}) and stage3_modules ({stage3_modules}) "
                             "must be at least 1.")
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(stem_channels)
        self.layer1 = make_res_layer(Bottleneck, stem_channels, stem_channels, layer1_blocks)
        layer1_out = stem_channels * Bottleneck.expansion
        self.transition1 = _make_transition([layer1_out], stage2_channels)
        self.stage2 = _make_stage(stage2_channels, stage2_modules, stage2_blocks, stage2_channels, True)
        self.transition2 = _make_transition(stage2_channels, stage3_channels)
        self.stage3 = _make_stage(stage3_channels, stage3_modules, stage3_blocks, stage3_channels, False)
        self.out_channels = int(stage3_channels[0])
        self.min_divisor = 4 * 2 ** (len(stage3_channels) - 1)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] -> [B, stage3_channels[0], H/4, W/4]``."""
        x = F.relu(self.bn1(self.conv1(x)))  # [B, stem, H/2, W/2]
        x = F.relu(self.bn2(self.conv2(x)))  # [B, stem, H/4, W/4]
        x = self.layer1(x)  # [B, 4*stem, H/4, W/4]
        xs = [x if t is None else t(x) for t in self.transition1]
        ys = self.stage2(xs)
        # New branches grow from the lowest-resolution branch; existing ones keep their index.
        xs = [(ys[i] if t is None else t(ys[i])) if i < len(ys) else t(ys[-1])
              for i, t in enumerate(self.transition2)]
        return self.stage3(xs)[0]  # [B, C0, H/4, W/4]
