"""WideResNet-28-10 for CIFAR-100 (Zagoruyko & Komodakis, arXiv:1605.07146): the CIFAR-100 baseline.

Pre-activation blocks (BN → ReLU → conv3×3 → BN → ReLU → conv3×3), convs without bias, a 1×1 shortcut conv
on the pre-activated input where the channel count changes, and BN → ReLU → global average pool → FC at the
end. team_scores.md §0 gives the expected size: 36,536,884 parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reference_models.registry import register


class WideBasicBlock(nn.Module):
    """Pre-activation basic block; the first block of a group carries the stride and the 1×1 shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if in_planes != planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward; the shortcut conv sees the pre-activated input, as in the WRN code."""
        pre = self.relu1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        identity = x if self.shortcut is None else self.shortcut(pre)
        return out + identity


class WideResNet(nn.Module):
    """WRN-depth-k for 32×32 inputs: conv 3→16, three groups of (depth−4)/6 blocks at 16k, 32k, 64k."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 100, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = widths[0]
        for group, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2), strict=True)):
            blocks = []
            for i in range(n):
                blocks.append(WideBasicBlock(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
            self.add_module(f"block{group + 1}", layers[-1])
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images."""
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.pool(self.relu(self.bn(out)))
        return self.fc(torch.flatten(out, 1))


@register(
    "wrn28_10",
    track="cifar100",
    rules="micronet2019",
    bits=None,
    input_shape=(1, 3, 32, 32),
    description="WideResNet-28-10 (CIFAR-100 baseline, 36.5M params / 10.49B ops)",
)
def wrn28_10(num_classes: int = 100, dropout: float = 0.0) -> WideResNet:
    """WideResNet-28-10, the CIFAR-100 normalisation baseline (team_scores.md §0)."""
    return WideResNet(28, 10, num_classes=num_classes, dropout=dropout)
