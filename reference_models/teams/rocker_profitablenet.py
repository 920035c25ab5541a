"""Rocker's ImageNet entry ProfitableNet (team_scores.md §1.2 #2, §2.6): a ProxylessNAS-like network of inverted
residual blocks with MixConv depthwise slices, SE and h-swish from stage 4 on. Rebuilt in torch from the deployed
Caffe net `submission/model/ProfitableNet.prototxt` of ``Zeitzmz/nips-micronet`` (read, not copied): BN is
already folded there (every conv has a bias), the SE pooled vector passes a per-channel ``Scale`` (``SE_bn``,
an unfoldable BatchNorm here) and two bias-free 1×1 convs, and the quantised widths are the prototxt's: weights
6-bit (``quantize_param precision: 6``), activations 8-bit (``Quantize`` layers), FP16 accumulation
(``fp16_accumulation: true``); the SE path runs at 16 bits (`submission/log/score.log` rows ``SE_*``).

The widths are carried by the modules (``weight_bits``, ``bias_bits``, ``act_bits``, ``acc_bits``; register
``bits=8`` for the 8-bit input), so any rule set sees them. Module names map to the Caffe layer names with
:func:`caffe_layer`; the per-layer sparsity of `submission/model/sparsity.txt` is
``reference_models/data/rocker_sparsity.csv`` (:func:`rocker_sparsity`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor, nn

from reference_models.registry import register

DATA = Path(__file__).resolve().parents[1] / "data" / "rocker_sparsity.csv"

#: (name, expanded width or None, depthwise slices (channels, kernel), stride, SE squeeze or None, output
#: width, activation), one row per block of the prototxt.
ROCKER_BLOCKS: tuple[tuple[str, int | None, tuple[tuple[int, int], ...], int, int | None, int, str], ...] = (
    ("conv2_0", None, ((32, 3),), 1, None, 16, "relu"),
    ("conv3_0", 48, ((48, 5),), 2, None, 32, "relu"),
    ("conv3_1", 96, ((96, 3),), 1, None, 32, "relu"),
    ("conv4_0", 96, ((32, 3), (32, 5), (32, 7)), 2, 6, 40, "hswish"),
    *((f"conv4_{i}", 120, ((60, 3), (60, 5)), 1, 7, 40, "hswish") for i in (1, 2, 3)),
    ("conv5_0", 240, ((80, 3), (80, 5), (80, 7)), 2, 15, 80, "hswish"),
    *((f"conv5_{i}", 240, ((120, 3), (120, 5)), 1, 15, 80, "hswish") for i in (1, 2, 3)),
    ("conv6_0", 480, ((160, 3), (160, 5), (160, 7)), 1, 30, 96, "hswish"),
    *((f"conv6_{i}", 288, ((96, 3), (96, 5), (96, 7)), 1, 18, 96, "hswish") for i in (1, 2, 3, 4, 5)),
    ("conv7_0", 576, ((144, 3), (144, 5), (144, 7), (144, 9)), 2, 36, 192, "hswish"),
    *((f"conv7_{i}", 576, ((192, 3), (192, 5), (192, 7)), 1, 36, 192, "hswish") for i in (1, 2)),
    ("conv8_0", 1152, ((384, 3), (384, 5), (384, 7)), 1, 72, 320, "hswish"),
)
STEM, HEAD = 32, 1280


def qconv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, bias: bool = True,
          act_bits: int | None = None) -> nn.Conv2d:
    """A conv with 6-bit weights, 16-bit bias and FP16 accumulation (``act_bits``: its output width, when not
    the 8-bit default)."""
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)
    conv.weight_bits, conv.bias_bits, conv.acc_bits = 6, 16, 16
    if act_bits is not None:
        conv.act_bits = act_bits
    return conv


def activation(name: str) -> nn.Module:
    """``relu`` or ``hswish``."""
    return nn.ReLU() if name == "relu" else nn.Hardswish()


class SqueezeExcite(nn.Module):
    """GAP → ``SE_bn`` (per-channel scale) → ``SE_fc1`` (no bias) → ReLU → ``SE_fc2`` (no bias) → sigmoid, then
    ``x · gate``; the pooled vector onwards is 16-bit."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pool.act_bits = 16
        self.bn = nn.BatchNorm2d(channels)
        self.bn.act_bits = 16
        self.fc1 = qconv(channels, squeeze, bias=False, act_bits=16)
        self.relu = nn.ReLU()
        self.fc2 = qconv(squeeze, channels, bias=False, act_bits=16)
        self.gate = nn.Sigmoid()
        self.gate.act_bits = 16

    def forward(self, x: Tensor) -> Tensor:
        """Channel attention."""
        return x * self.gate(self.fc2(self.relu(self.fc1(self.bn(self.pool(x))))))


class MixBlock(nn.Module):
    """1×1 increase (+act) → depthwise slices, each k×k (+act), concatenated → SE → 1×1 decrease (linear);
    ``+ x`` when the stride is 1 and the widths match (the prototxt's ``elt_sum``, 16-bit adds)."""

    def __init__(self, cin: int, expand: int | None, slices: tuple[tuple[int, int], ...], stride: int,
                 squeeze: int | None, cout: int, act: str) -> None:
        super().__init__()
        self.acc_bits = 16  # the residual add (``elt_sum``: add bits 16)
        width = expand or cin
        self.increase = qconv(cin, width) if expand else None
        self.increase_act = activation(act) if expand else None
        bounds = [sum(c for c, _ in slices[:i]) for i in range(len(slices) + 1)]
        self.slices = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.dw = nn.ModuleList(qconv(c, c, k, stride, groups=c) for c, k in slices)
        self.dw_act = nn.ModuleList(activation(act) for _ in slices)
        self.se = SqueezeExcite(width, squeeze) if squeeze else None
        self.decrease = qconv(width, cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        """The block."""
        out = self.increase_act(self.increase(x)) if self.increase is not None else x
        if len(self.slices) == 1:
            out = self.dw_act[0](self.dw[0](out))
        else:
            out = torch.cat([a(c(out[:, lo:hi])) for (lo, hi), c, a in zip(self.slices, self.dw, self.dw_act,
                                                                             strict=True)], 1)
        if self.se is not None:
            out = self.se(out)
        out = self.decrease(out)
        return out + x if self.residual else out


class ProfitableNet(nn.Module):
    """Stem 3×3 s2 (3→32) + ReLU, the ``ROCKER_BLOCKS``, ``conv9`` 1×1 (→1280) + ReLU, 7×7 average pool and a
    1×1 conv classifier with bias."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = qconv(3, STEM, 3, 2)
        self.conv1_act = nn.ReLU()
        cin = STEM
        for name, expand, slices, stride, squeeze, cout, act in ROCKER_BLOCKS:
            self.add_module(name, MixBlock(cin, expand, slices, stride, squeeze, cout, act))
            cin = cout
        self.block_names = [b[0] for b in ROCKER_BLOCKS]
        self.conv9 = qconv(cin, HEAD)
        self.conv9_act = nn.ReLU()
        self.avepool = nn.AvgPool2d(7)
        self.classifier = qconv(HEAD, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of 224×224 images."""
        x = self.conv1_act(self.conv1(x))
        for name in self.block_names:
            x = getattr(self, name)(x)
        x = self.avepool(self.conv9_act(self.conv9(x)))
        return torch.flatten(self.classifier(x), 1)


def caffe_layer(module: str) -> str:
    """The prototxt layer name of a conv module: ``conv4_0.dw.1`` → ``conv4_0/3x3_dwconv/slice_1`` (a single
    depthwise conv is ``convN_M/3x3_dwconv``), ``conv4_0.se.fc1`` → ``conv4_0/3x3_dwconv/SE_fc1``,
    ``conv4_0.increase`` → ``conv4_0/1x1_increase``, ``conv1`` → ``conv1/3x3_s2``, ``conv9`` → ``conv9/1x1``."""
    fixed = {"conv1": "conv1/3x3_s2", "conv9": "conv9/1x1", "classifier": "classifier"}
    if module in fixed:
        return fixed[module]
    block, *rest = module.split(".")
    if rest == ["increase"]:
        return f"{block}/1x1_increase"
    if rest == ["decrease"]:
        return f"{block}/1x1_decrease"
    if rest[:1] == ["se"]:
        return f"{block}/3x3_dwconv/SE_{rest[1]}"
    if rest[:1] == ["dw"]:
        single = next(len(b[2]) == 1 for b in ROCKER_BLOCKS if b[0] == block)
        return f"{block}/3x3_dwconv" if single else f"{block}/3x3_dwconv/slice_{rest[1]}"
    raise KeyError(f"no Caffe layer for module {module!r}")


def module_of(layer: str) -> str:
    """The module name of a prototxt conv layer, the inverse of :func:`caffe_layer`."""
    fixed = {"conv1/3x3_s2": "conv1", "conv9/1x1": "conv9", "classifier": "classifier"}
    if layer in fixed:
        return fixed[layer]
    block, *rest = layer.split("/")
    if rest == ["1x1_increase"]:
        return f"{block}.increase"
    if rest == ["1x1_decrease"]:
        return f"{block}.decrease"
    if rest == ["3x3_dwconv"]:
        return f"{block}.dw.0"
    if len(rest) == 2 and rest[0] == "3x3_dwconv" and rest[1].startswith("slice_"):
        return f"{block}.dw.{rest[1][len('slice_'):]}"
    if len(rest) == 2 and rest[0] == "3x3_dwconv" and rest[1] in ("SE_fc1", "SE_fc2"):
        return f"{block}.se.{rest[1][3:]}"
    raise KeyError(f"no module for Caffe layer {layer!r}")


def rocker_sparsity() -> dict[str, float]:
    """``{module name: sparsity}`` from ``rocker_sparsity.csv`` (`submission/model/sparsity.txt`), for
    ``score(..., sparsity=...)``."""
    with open(DATA, newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return {module_of(r["layer"]): float(r["sparsity"]) for r in rows}


@register(
    "rocker_profitablenet",
    track="imagenet",
    rules="rocker2019",
    bits=8,
    input_shape=(1, 3, 224, 224),
    description="Rocker ProfitableNet, W6/A8, FP16 accumulation, its per-layer sparsity (ImageNet #2, LB 0.1887)",
    sparsity=rocker_sparsity,
)
def rocker_profitablenet(num_classes: int = 1000, device: str | torch.device = "meta") -> ProfitableNet:
    """ProfitableNet (team_scores.md §2.6) on the meta device unless ``device`` says otherwise; score it with
    ``sparsity=rocker_sparsity()`` for the team's per-layer sparsity (``micronet-score
    reference:rocker_profitablenet`` does, through the registry's ``sparsity``)."""
    with torch.device(device):
        return ProfitableNet(num_classes)
