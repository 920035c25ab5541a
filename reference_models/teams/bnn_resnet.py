"""Binarised ResNet-18 with the block structure of the "Training tricks for binarized neural networks"
collection (seed ``bnn-training-tricks.txt``, tricks 1–4).

- Block (trick 1): BN → sign (straight-through gradient) → binary 3×3 conv → + shortcut → PReLU.
- Double skip (trick 3): every basic block of ResNet-18 becomes two such blocks, one skip per conv.
- Full-precision downsampling (trick 4) in three variants, chosen by ``downsample=``:
  ``"v1"`` 1×1 conv → BN → AvgPool(2, 2) (recommended); ``"v2"`` AvgPool(2, 2) → 1×1 conv → BN;
  ``"v3"`` 1×1 conv → BN → AvgPool(3, 2, padding 1).
- Everything else is the original ResNet-18: full-precision stem and classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reference_models.compression.binarize import BinaryConv2d, SignActivation
from reference_models.registry import register

DOWNSAMPLE_VARIANTS = ("v1", "v2", "v3")


def make_downsample(cin: int, cout: int, variant: str = "v1") -> nn.Sequential:
    """Full-precision stride-2 shortcut: a 1×1 conv (no bias) + BN combined with average pooling."""
    conv = nn.Conv2d(cin, cout, 1, stride=1, bias=False)
    bn = nn.BatchNorm2d(cout)
    if variant == "v1":
        return nn.Sequential(conv, bn, nn.AvgPool2d(2, 2))
    if variant == "v2":
        return nn.Sequential(nn.AvgPool2d(2, 2), conv, bn)
    if variant == "v3":
        return nn.Sequential(conv, bn, nn.AvgPool2d(3, 2, padding=1))
    raise ValueError(f"unknown downsample variant {variant!r}; choose one of {DOWNSAMPLE_VARIANTS}")


class BinaryBasicBlock(nn.Module):
    """BN → SignActivation → binary 3×3 conv (padding 1, no bias) → + shortcut → PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None,
                 binary_weights: bool = True) -> None:
        super().__init__()
        conv_cls = BinaryConv2d if binary_weights else nn.Conv2d
        self.bn = nn.BatchNorm2d(cin)
        self.ba = SignActivation()
        self.conv = conv_cls(cin, cout, 3, stride, 1, bias=False)
        self.prelu = nn.PReLU(cout)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """One binary conv with its own skip connection."""
        out = self.conv(self.ba(self.bn(x)))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)


class BinaryResNet18(nn.Module):
    """ResNet-18 whose eight basic blocks are each replaced by two binary single-conv blocks (16 in all)."""

    def __init__(
        self,
        num_classes: int = 100,
        downsample: str = "v1",
        stem: str = "cifar",
        binary_weights: bool = True,
    ) -> None:
        super().__init__()
        if downsample not in DOWNSAMPLE_VARIANTS:
            raise ValueError(f"unknown downsample variant {downsample!r}; choose one of {DOWNSAMPLE_VARIANTS}")
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
        else:
            raise ValueError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
        cin = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            ds = make_downsample(cin, width, downsample) if (stride != 1 or cin != width) else None
            blocks = [BinaryBasicBlock(cin, width, stride, ds, binary_weights)]
            blocks += [BinaryBasicBlock(width, width, 1, None, binary_weights) for _ in range(3)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images."""
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


@register(
    "bnn_resnet18",
    track="cifar100",
    rules="micronet2019",
    bits=16,
    input_shape=(1, 3, 32, 32),
    description="Binarised ResNet-18 (sign/STE, PReLU, double skip, FP downsampling v1/v2/v3)",
)
def bnn_resnet18(
    num_classes: int = 100, downsample: str = "v1", stem: str = "cifar", binary_weights: bool = True
) -> BinaryResNet18:
    """Binarised ResNet-18; ``binary_weights=False`` gives stage 1 of the 2-stage recipe (FP weights,
    binary activations)."""
    return BinaryResNet18(num_classes, downsample, stem, binary_weights)
