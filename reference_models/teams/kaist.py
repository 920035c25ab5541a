"""KAIST AI's CIFAR-100 MicroNet, ver1 and ver2 (team_scores.md §2.2): MobileNetV3-style blocks with hswish,
squeeze-and-excitation on the block *output*, 1×1 shortcut convs where channels change, and stride-2 blocks
that compute their SE branch but discard it (the published forward is
``out = out * w + self.shortcut(x) if self.stride == 1 else out``).

Module names match the team's checkpoints (``conv1``, ``layers.N.conv1/conv2/conv3/fc1/fc2/shortcut.0``,
``linear``), so the §2.2.1/§2.2.2 per-layer tables key by name. HSwish ``x·ReLU6(x+3)/6`` is ``nn.Hardswish``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reference_models.registry import register

#: ``cfg`` rows: (expansion, out_planes, num_blocks, stride of the first block).
KAIST_CFG: dict[str, tuple[tuple[float, int, int, int], ...]] = {
    "ver1": (
        (3, 16, 2, 1), (3, 32, 1, 2), (3, 32, 1, 1), (3, 48, 3, 1), (3, 72, 1, 2),
        (3, 72, 4, 1), (3, 80, 1, 2), (3, 88, 2, 1), (3, 106, 1, 1),
    ),
    "ver2": (
        (2.5, 20, 2, 1), (2.5, 36, 1, 2), (2.5, 36, 1, 1), (2.5, 56, 3, 1), (2.5, 80, 1, 2),
        (2.5, 80, 4, 1), (2.5, 88, 1, 2), (2.5, 96, 2, 1), (2.5, 114, 1, 1),
    ),
}
KAIST_STEM = 32


class MicroBlock(nn.Module):
    """conv1 1×1 + BN + hswish → depthwise 3×3 (stride s) + BN + hswish → conv3 1×1 + BN, then SE on the
    output (GAP → fc1 1×1 with bias → hswish → fc2 1×1 with bias → sigmoid). Stride 1: ``out·w + shortcut``
    (identity, or 1×1 conv + BN when channels change). Stride 2: the SE is computed but ``out`` is returned
    unchanged, with no residual."""

    def __init__(self, cin: int, cout: int, expansion: float, stride: int) -> None:
        super().__init__()
        planes = int(expansion * cin)
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.act = nn.Hardswish()
        squeezed = int(cout * 0.25)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(cout, squeezed, 1, bias=True)
        self.fc2 = nn.Conv2d(squeezed, cout, 1, bias=True)
        self.sigmoid = nn.Sigmoid()
        self.shortcut = nn.Sequential()
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """Block forward, faithful to the team's code (SE discarded in stride-2 blocks)."""
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        w = self.sigmoid(self.fc2(self.act(self.fc1(self.avg_pool(out)))))
        if self.stride == 1:
            return out * w + self.shortcut(x)
        return out


class KaistMicroNet(nn.Module):
    """``MicroNet(ver, num_classes=100, add_se=True, Activation='HSwish')`` for 32×32 inputs."""

    def __init__(self, version: str = "ver1", num_classes: int = 100, dropout: float = 0.3) -> None:
        super().__init__()
        if version not in KAIST_CFG:
            raise ValueError(f"unknown KAIST version {version!r}; known: {sorted(KAIST_CFG)}")
        self.version = version
        self.conv1 = nn.Conv2d(3, KAIST_STEM, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(KAIST_STEM, momentum=0.01)
        self.act = nn.Hardswish()
        blocks: list[nn.Module] = []
        cin = KAIST_STEM
        for expansion, cout, num_blocks, stride in KAIST_CFG[version]:
            for i in range(num_blocks):
                blocks.append(MicroBlock(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of 32×32 images."""
        out = self.layers(self.act(self.bn1(self.conv1(x))))
        out = torch.flatten(self.avg_pool(out), 1)
        return self.linear(self.dropout(out))


@register(
    "kaist_v1",
    track="cifar100",
    rules="kaist2019",
    bits=16,
    input_shape=(1, 3, 32, 32),
    description="KAIST AI MicroNet ver1 (CIFAR-100 #2, LB 0.0054)",
)
def kaist_v1(num_classes: int = 100, dropout: float = 0.3) -> KaistMicroNet:
    """KAIST MicroNet ver1 (team_scores.md §2.2)."""
    return KaistMicroNet("ver1", num_classes, dropout)


@register(
    "kaist_v2",
    track="cifar100",
    rules="kaist2019",
    bits=16,
    input_shape=(1, 3, 32, 32),
    description="KAIST AI MicroNet ver2 (CIFAR-100 #3, LB 0.0056)",
)
def kaist_v2(num_classes: int = 100, dropout: float = 0.3) -> KaistMicroNet:
    """KAIST MicroNet ver2 (team_scores.md §2.2)."""
    return KaistMicroNet("ver2", num_classes, dropout)
