"""WaveComp's starting network (team_scores.md §1.1 rows 13–15 and §2.8; seed ``wavecomp-micronet.txt``):
PyramidNet-272 with α=200 and bottleneck blocks for CIFAR-100, as trained with Fast-AutoAugment.

Layout (Han et al., arXiv:1610.02915, bottleneck variant): conv 3×3 3→16 + BN (no ReLU); three stages of
n = (depth−2)/9 bottlenecks whose width grows by α/(3n) per block; bottleneck = BN → 1×1 conv → BN → ReLU →
3×3 conv (stride) → BN → ReLU → 1×1 conv (×4) → BN; shortcut = identity or 2×2 average pool (ceil mode) in
stride-2 blocks, zero-padded along channels to the residual width; head BN → ReLU → AvgPool(8) → FC.

Not modelled: ShakeDrop (a training regulariser; in eval it is a constant scale foldable into the last BN)
and WaveComp's own pruned widths, sparsity and quantisation (they live only in a checkpoint that is not
retrievable, §2.8), so by default this is the *unpruned* network. ``mid_widths`` (one ``[conv1, conv2]``
output width pair per bottleneck) rebuilds a channel-pruned network (``hessian_prune``, the ``wavecomp``
recipe): :meth:`PyramidNet.channel_chains` names the prunable chains and :meth:`PyramidNet.width_kwargs`
the arguments that rebuild the current widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_models.registry import register


class PyramidBottleneck(nn.Module):
    """Pyramidal bottleneck with a parameter-free, zero-padded shortcut."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, mid: tuple[int, int] | None = None) -> None:
        super().__init__()
        cout = planes * self.expansion
        if cout < cin:
            raise ValueError(f"pyramidal block cannot shrink channels ({cin} -> {cout})")
        w1, w2 = mid if mid is not None else (planes, planes)
        if w1 < 1 or w2 < 1:
            raise ValueError(f"bottleneck widths must be >= 1, got {(w1, w2)}")
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, w1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w1)
        self.conv2 = nn.Conv2d(w1, w2, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(w2)
        self.conv3 = nn.Conv2d(w2, cout, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = nn.AvgPool2d(2, 2, ceil_mode=True) if stride != 1 else None
        self.pad_channels = cout - cin

    def forward(self, x: Tensor) -> Tensor:
        """Residual forward; the shortcut is zero-padded to the block's output width."""
        out = self.conv1(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.bn4(self.conv3(self.relu(self.bn3(out))))
        shortcut = x if self.downsample is None else self.downsample(x)
        if self.pad_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.pad_channels))
        return out + shortcut


class PyramidNet(nn.Module):
    """Bottleneck PyramidNet for 32×32 inputs."""

    def __init__(
        self, depth: int = 272, alpha: float = 200, num_classes: int = 100, mid_widths: list[list[int]] | None = None
    ) -> None:
        super().__init__()
        if (depth - 2) % 9 != 0:
            raise ValueError(f"bottleneck PyramidNet depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        if mid_widths is not None and (len(mid_widths) != 3 * n or any(len(w) != 2 for w in mid_widths)):
            raise ValueError(f"mid_widths needs {3 * n} [conv1, conv2] pairs, got {mid_widths!r}")
        addrate = alpha / (3 * n)
        stem = 16
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        width = float(stem)
        cin = stem
        for stage, stride in enumerate((1, 2, 2)):
            blocks = []
            for i in range(n):
                width += addrate
                planes = int(round(width))
                mid = tuple(mid_widths[stage * n + i]) if mid_widths is not None else None
                blocks.append(PyramidBottleneck(cin, planes, stride if i == 0 else 1, mid))
                cin = planes * PyramidBottleneck.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.bn_final = nn.BatchNorm2d(cin)
        self.relu_final = nn.ReLU()
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(cin, num_classes)

    def _blocks(self) -> list[tuple[str, PyramidBottleneck]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, PyramidBottleneck)]

    def channel_chains(self) -> list[tuple[str, str, list[str]]]:
        """The bottlenecks' inner ``(conv, bn, [consumer])`` chains; ``conv3`` feeds the residual add."""
        out = []
        for name, _ in self._blocks():
            out.append((f"{name}.conv1", f"{name}.bn2", [f"{name}.conv2"]))
            out.append((f"{name}.conv2", f"{name}.bn3", [f"{name}.conv3"]))
        return out

    def width_kwargs(self) -> dict[str, list[list[int]]]:
        """``{"mid_widths": ...}`` rebuilding this network's current bottleneck widths."""
        return {"mid_widths": [[b.conv1.out_channels, b.conv2.out_channels] for _, b in self._blocks()]}

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of 32×32 images."""
        out = self.bn1(self.conv1(x))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = self.avgpool(self.relu_final(self.bn_final(out)))
        return self.fc(torch.flatten(out, 1))


@register(
    "wavecomp_pyramidnet",
    track="cifar100",
    rules="micronet2019",
    bits=None,
    input_shape=(1, 3, 32, 32),
    description="WaveComp's base net: PyramidNet-272, alpha=200, bottleneck (unpruned, unquantised)",
)
def wavecomp_pyramidnet(
    depth: int = 272, alpha: float = 200, num_classes: int = 100, mid_widths: list[list[int]] | None = None
) -> PyramidNet:
    """PyramidNet-272 (α=200) as WaveComp started from (team_scores.md §2.8); ``mid_widths``: channel-pruned
    bottleneck widths."""
    return PyramidNet(depth, alpha, num_classes, mid_widths)
