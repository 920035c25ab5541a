"""BrAIn's CIFAR-100 entry (team_scores.md §2.3): DenseNet-BC-196 with growth rate 8 and reduction 0.5
(``densenet_cifar(n=196, growth_rate=8, reduction=0.5)`` in ``Final/models/densenet.py``), unpruned.

Stem conv 3×3 (3→16, no BN/ReLU after it); three dense blocks of 32 bottlenecks, each followed by a
transition (BN → ReLU → 1×1 conv → AvgPool2d(2)), so the last transition pools to 4×4; head
BN → ReLU → AvgPool2d(4) → Linear. Channels: 16 → 272 → 136 → 392 → 196 → 452 → 226.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reference_models.registry import register


class DenseBottleneck(nn.Module):
    """BN → ReLU → 1×1 conv (→ 4k) → BN → ReLU → 3×3 conv (→ k), output concatenated before the input.

    One ``nn.ReLU`` module is used twice, as in the team's code (its hook fires twice)."""

    def __init__(self, cin: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``cat([new_features, x])`` along channels."""
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN → ReLU → 1×1 conv → AvgPool2d(2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        """Halve channels (by ``reduction``) and resolution."""
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNetCifar(nn.Module):
    """DenseNet-BC for 32×32 inputs with three dense blocks, each followed by a transition."""

    def __init__(self, depth: int = 196, growth_rate: int = 8, reduction: float = 0.5, num_classes: int = 100):
        super().__init__()
        n = (depth - 4) // 3 // 2
        channels = min(2 * growth_rate, 16)
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        for i in (1, 2, 3):
            self.add_module(f"dense{i}", nn.Sequential(*[DenseBottleneck(channels + j * growth_rate, growth_rate)
                                                          for j in range(n)]))
            channels += n * growth_rate
            out = int(channels * reduction)
            self.add_module(f"trans{i}", Transition(channels, out))
            channels = out
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(4)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of 32×32 images."""
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = self.pool(self.relu(self.bn(out)))
        return self.linear(torch.flatten(out, 1))


@register(
    "brain_densenet_bc196",
    track="cifar100",
    rules="brain2019",
    bits=16,
    input_shape=(1, 3, 32, 32),
    description="BrAIn DenseNet-BC-196, k=8 (CIFAR-100 #19, LB 0.0780)",
)
def brain_densenet_bc196(num_classes: int = 100) -> DenseNetCifar:
    """BrAIn's DenseNet-BC-196 (team_scores.md §2.3)."""
    return DenseNetCifar(196, 8, 0.5, num_classes)
