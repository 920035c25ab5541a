"""timm-style MixNet blocks in plain torch, built from an ``arch_def`` of block strings, and two networks built
with them: MixNet-S (ImageNet; RIAIR's and QualcommAI's base network, team_scores.md §1.2, §2.8) and MSUNet-v3
(CIFAR-100 #5, §1.1, §2.8, ``MSU-MLSys-Lab/MSUNet`` ``timm/models/gen_efficientnet.py::_gen_MSUnet_CIFAR100``).

Written from the block-string semantics of ``gen_efficientnet.py`` (``_decode_block_str``, ``InvertedResidual``,
``DepthwiseSeparableConv``, ``SqueezeExcite``, ``MixedConv2d``, ``_split_channels``; read, not copied):

- ``ds_rR_kK_sS_eE_cC``: depthwise k×k (stride s) + BN + act [+ SE] → 1×1 + BN, skip when s = 1 and the widths
  match; ``ir_...``: 1×1 expansion to ``int(in·e)`` + BN + act → depthwise + BN + act [+ SE] → 1×1 + BN, skip
  likewise;
- ``k3.5.7``: a mixed depthwise conv, the channels split in equal groups, the remainder on the first;
  ``a1.1`` / ``p1.1``: the expansion / projection 1×1 split in 2 groups the same way;
- ``seX``: SE with ``max(1, int(in·X))`` squeeze channels (of the block's *input* width), mean over H·W, biased
  1×1 convs, the block's act, sigmoid gate; ``nsw``: swish, otherwise ReLU;
- only a stage's first block has stride > 1; channel multiplier 1.0 keeps the widths as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reference_models.registry import register


@dataclass(frozen=True)
class BlockArgs:
    """One decoded block string."""

    kind: str  # "ds" or "ir"
    repeats: int
    kernels: tuple[int, ...]
    stride: int
    expansion: float
    out_chs: int
    se: float | None
    swish: bool
    exp_groups: int
    pw_groups: int


def decode(block: str) -> BlockArgs:
    """``ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40_se0.5_nsw`` → BlockArgs."""
    kind, *ops = block.split("_")
    opts: dict[str, str] = {}
    for op in ops:
        key, value = re.fullmatch(r"([a-z]+)(.*)", op).groups()  # type: ignore[union-attr]
        opts[key] = value
    ks = tuple(int(k) for k in opts["k"].split("."))
    return BlockArgs(kind, int(opts["r"]), ks, int(opts["s"]), float(opts.get("e", 1)), int(opts["c"]),
                     float(opts["se"]) if "se" in opts else None, "nsw" in opts,
                     len(opts["a"].split(".")) if "a" in opts else 1, len(opts["p"].split(".")) if "p" in opts else 1)


def split_channels(total: int, groups: int) -> list[int]:
    """Equal groups, the remainder on the first (``_split_channels``)."""
    split = [total // groups] * groups
    split[0] += total - sum(split)
    return split


class MixedConv(nn.Module):
    """Channel groups, each its own conv (``MixedConv2d``); one group is a plain conv. Depthwise when
    ``depthwise``; "same" padding k // 2."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], stride: int = 1,
                 depthwise: bool = False) -> None:
        super().__init__()
        ins, outs = split_channels(cin, len(kernels)), split_channels(cout, len(kernels))
        bounds = [sum(ins[:i]) for i in range(len(ins) + 1)]
        self.slices = list(zip(bounds[:-1], bounds[1:], strict=True))
        for i, (k, ci, co) in enumerate(zip(kernels, ins, outs, strict=True)):
            self.add_module(str(i), nn.Conv2d(ci, co, k, stride, k // 2, groups=co if depthwise else 1,
                                              bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """Split, convolve each group, concatenate."""
        convs = list(self.children())
        if len(convs) == 1:
            return convs[0](x)
        return torch.cat([c(x[:, lo:hi]) for c, (lo, hi) in zip(convs, self.slices, strict=True)], 1)


def act(swish: bool) -> nn.Module:
    """Swish (``nsw``) or ReLU."""
    return nn.SiLU() if swish else nn.ReLU()


class SqueezeExcite(nn.Module):
    """mean over H·W → 1×1 reduce (bias) → act → 1×1 expand (bias) → sigmoid → ``x · gate``."""

    def __init__(self, chs: int, reduced: int, swish: bool) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, reduced, 1)
        self.act = act(swish)
        self.conv_expand = nn.Conv2d(reduced, chs, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        """Channel attention."""
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(s))))


class MixBlock(nn.Module):
    """A ``ds`` or ``ir`` block (see the module docstring)."""

    def __init__(self, a: BlockArgs, cin: int, stride: int) -> None:
        super().__init__()
        self.has_residual = stride == 1 and cin == a.out_chs
        mid = cin if a.kind == "ds" else int(cin * a.expansion)
        self.expands = a.kind == "ir"
        if self.expands:
            self.conv_pw = MixedConv(cin, mid, (1,) * a.exp_groups)
            self.bn1 = nn.BatchNorm2d(mid)
            self.act1 = act(a.swish)
        self.conv_dw = MixedConv(mid, mid, a.kernels, stride, depthwise=True)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = act(a.swish)
        self.se = SqueezeExcite(mid, max(1, int(cin * a.se)), a.swish) if a.se else None
        self.conv_pwl = MixedConv(mid, a.out_chs, (1,) * a.pw_groups)
        self.bn3 = nn.BatchNorm2d(a.out_chs)

    def forward(self, x: Tensor) -> Tensor:
        """The block."""
        out = self.act1(self.bn1(self.conv_pw(x))) if self.expands else x
        out = self.act2(self.bn2(self.conv_dw(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_residual else out


class GenMixNet(nn.Module):
    """Stem 3×3 conv + BN + ReLU, the stages of ``arch_def``, 1×1 head conv + BN + ReLU, global average pool,
    linear classifier (``GenEfficientNet``)."""

    def __init__(self, arch_def: list[list[str]], stem: int, stem_stride: int, num_features: int,
                 num_classes: int) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, stem, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = nn.ReLU()
        stages, cin = [], stem
        for stage in arch_def:
            blocks = []
            for block in stage:
                a = decode(block)
                for _ in range(a.repeats):
                    blocks.append(MixBlock(a, cin, a.stride if not blocks else 1))
                    cin = a.out_chs
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(cin, num_features, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_features)
        self.act2 = nn.ReLU()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.act2(self.bn2(self.conv_head(self.blocks(x))))
        return self.classifier(torch.flatten(self.global_pool(x), 1))


#: ``_gen_mixnet_s`` (timm ``gen_efficientnet.py``): stem 16 (stride 2), 1536 features.
MIXNET_S_ARCH = [
    ["ds_r1_k3_s1_e1_c16"],
    ["ir_r1_k3_a1.1_p1.1_s2_e6_c24", "ir_r1_k3_a1.1_p1.1_s1_e3_c24"],
    ["ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw", "ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw", "ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw", "ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]
#: team_scores.md §2.8 (MSUNet-v3 ``_gen_MSUnet_CIFAR100``): stem 64, stride 1, ReLU, ``num_features=256``.
MSUNET_V3_ARCH = [
    ["ds_r1_k3_s1_e1_c64"],
    ["ir_r1_k3_a1.1_p1.1_s1_e6_c64"],
    ["ir_r1_k3.5.7_s2_e5_c128_se0.5_nsw", "ir_r1_k3.5_a1.1_p1.1_s1_e6_c128_se0.5_nsw"],
    ["ir_r1_k3.5.7_p1.1_s2_e5_c256_se0.25_nsw", "ir_r1_k3.5_p1.1_s1_e4_c256_se0.25_nsw"],
]


def ternary_convs(model: nn.Module) -> list[str]:
    """MSUNet's ternarised layers: every 1×1 conv but the stem and the SE convs (``counting.py``
    ``Model_binary_patch``: ``kernel_size == (1, 1)`` and not ``conv_stem``/``se.conv_reduce``/
    ``se.conv_expand``)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and "conv_stem" not in name
            and ".se." not in f".{name}."]


@register(
    "mixnet_s",
    track="imagenet",
    rules="micronet2019",
    bits=16,
    input_shape=(1, 3, 224, 224),
    description="MixNet-S (timm arch_def; RIAIR's and QualcommAI's ImageNet base network), dense",
)
def mixnet_s(num_classes: int = 1000, device: str | torch.device = "meta") -> GenMixNet:
    """MixNet-S, dense and unquantised, on the meta device unless ``device`` says otherwise."""
    with torch.device(device):
        return GenMixNet(MIXNET_S_ARCH, stem=16, stem_stride=2, num_features=1536, num_classes=num_classes)


@register(
    "msunet_v3",
    track="cifar100",
    rules="msunet2019",
    bits=16,
    input_shape=(1, 3, 32, 32),
    description="MSUNet-v3 (CIFAR-100 #5, LB 0.0108): ternary 1×1 convs, FP16 elsewhere (sparsity not public)",
)
def msunet_v3(num_classes: int = 100, device: str | torch.device = "meta") -> GenMixNet:
    """MSUNet-v3 (team_scores.md §2.8) with its ternarised 1×1 convs marked ``weight_bits = 1`` (a ternary
    weight is a sparse binary one); the per-layer sparsity lives in the team's checkpoint, which is not
    retrievable, so every tensor is dense unless the caller passes ``sparsity``."""
    with torch.device(device):
        model = GenMixNet(MSUNET_V3_ARCH, stem=64, stem_stride=1, num_features=256, num_classes=num_classes)
    modules = dict(model.named_modules())
    for name in ternary_convs(model):
        modules[name].weight_bits = 1
    return model
