"""MobileNetV2 (Sandler et al., arXiv:1801.04381), torchvision layout, any width multiplier.

Registered as ``mobilenet_v2`` (width 1.0, 100 classes, 32×32: the same net at CIFAR resolution, as in
peers.md §2.1) and ``mobilenet_v2_1.4`` (width 1.4, 1000 classes, 224×224: the ImageNet normalisation
baseline of official_rules.md). ``cifar_strides=True`` gives the common CIFAR variant instead (stem and the
24-channel stage at stride 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reference_models.registry import register

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% below ``value``."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) → BN → ReLU6, 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=False),
        )


class InvertedResidual(nn.Module):
    """Expand 1×1 (if t≠1) → depthwise 3×3 → linear project 1×1; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Block forward with the optional residual add."""
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier ``width_mult``."""

    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        cifar_strides: bool = False,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNReLU6(3, input_channel, stride=1 if cifar_strides else 2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            if cifar_strides and c == 24:
                s = 1
            out_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, out_channel, s if i == 0 else 1, t))
                input_channel = out_channel
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images."""
        out = self.pool(self.features(x))
        return self.classifier(torch.flatten(out, 1))


@register(
    "mobilenet_v2_1.4",
    track="imagenet",
    rules="micronet2019",
    bits=None,
    input_shape=(1, 3, 224, 224),
    description="MobileNetV2 width 1.4 at 224x224 (ImageNet baseline architecture)",
    kwargs={"width_mult": 1.4, "num_classes": 1000, "input_size": 224},
)
@register(
    "mobilenet_v2",
    track="cifar100",
    rules="micronet2019",
    bits=None,
    input_shape=(1, 3, 32, 32),
    description="MobileNetV2 width 1.0, 100 classes, the ImageNet layout run at 32x32",
    kwargs={"width_mult": 1.0, "num_classes": 100, "input_size": 32},
)
def mobilenet_v2(
    width_mult: float = 1.0,
    num_classes: int = 100,
    input_size: int = 32,
    dropout: float = 0.2,
    cifar_strides: bool = False,
) -> MobileNetV2:
    """MobileNetV2 factory.

    ``input_size`` documents the intended resolution (the layout is resolution independent: global average
    pooling before the classifier); ``cifar_strides`` removes the stem and 24-channel-stage strides.
    """
    if input_size <= 0:
        raise ValueError(f"input_size must be positive, got {input_size}")
    return MobileNetV2(width_mult, num_classes, dropout=dropout, cifar_strides=cifar_strides)
