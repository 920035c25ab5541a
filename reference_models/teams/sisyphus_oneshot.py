"""Sisyphus' ImageNet entry OneShot-S+ (team_scores.md §1.2 #14/#18, §2.7): a ShuffleNetV2+ network found by
single-path one-shot NAS, with h-swish from stage 2 on, SE from stage 3 on and the MobileNetV3 last conv after
pooling. Rebuilt in torch from the team's MXNet code (``CanyonWind/MXNet-Single-Path-One-Shot-NAS``, read, not
copied): ``oneshot_nas_network.py`` (``ShuffleNasOneShotFix``, ``get_shufflenas_oneshot``) and
``oneshot_nas_blocks.py`` (``ShuffleNetBlock``, ``SE``, ``HardSwish``, ``ShuffleChannels``).

What §2.7 leaves open and the source settles:

- the main-branch mid width is ``int(out // 2 * scale)`` (truncated, *not* rounded to a multiple of 8: the
  ``make_divisible`` call is commented out in ``ShuffleNasOneShot.__init__``), e.g. block 0: int(32·1.8) = 57;
- the SE squeeze width is ``ceil(C/4 / 8)·8`` of the main branch's output C, and the SE gates only the main
  branch (``SE(main_output_channel)`` appended to ``main_branch``);
- stride-1 blocks shuffle all channels, then split them in half (the first half passes through); stride-2 blocks
  feed the input to both a projection branch (dw k×k s2 → 1×1 → act) and the main branch;
- ReLU in stage 1, h-swish from stage 2; ``x·clip(x+3, 0, 6)/6`` and h-sigmoid ``clip(x+3, 0, 6)/6``;
- convs have no bias (BN follows); the conv after pooling and the classifier (a 1×1 conv) have biases.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reference_models.registry import register

#: §2.7: block choices (0 = SNB-3, 1 = SNB-5, 2 = SNB-7, 3 = SXB-3) and channel-scale indices.
ONESHOT_S_PLUS_ARCH = (0, 0, 0, 1, 0, 0, 1, 0, 3, 2, 0, 1, 2, 2, 1, 2, 0, 0, 2, 0)
ONESHOT_S_PLUS_SCALE_IDS = (8, 7, 6, 8, 5, 7, 3, 4, 2, 4, 2, 3, 4, 5, 6, 6, 3, 3, 4, 6)
CANDIDATE_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
STAGE_OUT = (64, 160, 320, 640)
STAGE_REPEATS = (4, 4, 8, 4)
FIRST_CONV, LAST_CONV = 16, 1024


def mid_channels(out_channels: int, scale: float) -> int:
    """Main-branch width ``int(out // 2 · scale)`` (``ShuffleNasOneShot.__init__``, fix-arch branch)."""
    return int(out_channels // 2 * scale)


def se_squeeze(channels: int) -> int:
    """SE squeeze width: ``channels // 4`` rounded up to a multiple of 8 (``SE.__init__`` ``make_divisible``)."""
    return int(math.ceil((channels // 4) / 8) * 8)


class HSwish(nn.Module):
    """``x · clip(x + 3, 0, 6) / 6`` written as in ``oneshot_nas_blocks.HardSwish`` (captured as hardswish)."""

    def forward(self, x: Tensor) -> Tensor:
        """h-swish."""
        return nn.functional.hardswish(x)


def act(name: str) -> nn.Module:
    """``relu`` or ``hard_swish`` (``oneshot_nas_blocks.Activation``)."""
    return nn.ReLU() if name == "relu" else HSwish()


class SE(nn.Module):
    """GAP → 1×1 squeeze (bias) → ReLU → 1×1 excitation (bias) → h-sigmoid, then ``x · gate``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = se_squeeze(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Conv2d(channels, mid, 1)
        self.relu = nn.ReLU()
        self.excite = nn.Conv2d(mid, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        """Channel attention."""
        return x * self.gate(self.excite(self.relu(self.squeeze(self.pool(x)))))


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Bias-free conv followed by BN."""
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class ShuffleBlock(nn.Module):
    """``ShuffleNetBlock``: SNB (``mode="snb"``: 1×1 → act → dw k×k → 1×1 → act) or SXB (``"sxb"``: three
    dw k×k + 1×1 pairs, act after each 1×1) on the main branch, SE on the main output when ``use_se``."""

    def __init__(self, cin: int, cout: int, mid: int, k: int, stride: int, mode: str, act_name: str,
                 use_se: bool) -> None:
        super().__init__()
        self.stride, self.half = stride, cin // 2
        proj = cin // 2 if stride == 1 else cin
        main_in, main_out = proj, cout - proj
        if mode == "snb":
            layers = [*conv_bn(main_in, mid), act(act_name), *conv_bn(mid, mid, k, stride, mid),
                      *conv_bn(mid, main_out), act(act_name)]
        else:
            layers = [*conv_bn(main_in, main_in, k, stride, main_in), *conv_bn(main_in, mid), act(act_name),
                      *conv_bn(mid, mid, k, 1, mid), *conv_bn(mid, mid), act(act_name),
                      *conv_bn(mid, mid, k, 1, mid), *conv_bn(mid, main_out), act(act_name)]
        if use_se:
            layers.append(SE(main_out))
        self.main = nn.Sequential(*layers)
        if stride == 2:
            self.proj = nn.Sequential(*conv_bn(proj, proj, k, stride, proj), *conv_bn(proj, proj), act(act_name))

    def forward(self, x: Tensor) -> Tensor:
        """Stride 2: ``cat(proj(x), main(x))``; stride 1: shuffle (groups 2), split, ``cat(x1, main(x2))``."""
        if self.stride == 2:
            return torch.cat([self.proj(x), self.main(x)], 1)
        x = x.unflatten(1, (2, self.half)).transpose(1, 2).flatten(1, 2)
        return torch.cat([x[:, : self.half], self.main(x[:, self.half:])], 1)


class OneShotSPlus(nn.Module):
    """``get_shufflenas_oneshot(architecture, scale_ids, channels_layout='OneShot', use_se=True,
    last_conv_after_pooling=True)``. Module names: ``first_conv``, ``blocks.0`` … ``blocks.19`` (the profile's
    SNB0 … SNB19), ``pool``, ``last_conv``, ``classifier``."""

    def __init__(self, architecture: tuple[int, ...] = ONESHOT_S_PLUS_ARCH,
                 scale_ids: tuple[int, ...] = ONESHOT_S_PLUS_SCALE_IDS, num_classes: int = 1000) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(*conv_bn(3, FIRST_CONV, 3, 2), HSwish())
        blocks, cin, i = [], FIRST_CONV, 0
        for stage, (cout, repeats) in enumerate(zip(STAGE_OUT, STAGE_REPEATS, strict=True)):
            for r in range(repeats):
                choice = architecture[i]
                mid = mid_channels(cout, CANDIDATE_SCALES[scale_ids[i]])
                k, mode = {0: (3, "snb"), 1: (5, "snb"), 2: (7, "snb"), 3: (3, "sxb")}[choice]
                blocks.append(ShuffleBlock(cin, cout, mid, k, 2 if r == 0 else 1, mode,
                                           "hard_swish" if stage >= 1 else "relu", stage >= 2))
                cin, i = cout, i + 1
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.last_conv = nn.Sequential(nn.Conv2d(cin, LAST_CONV, 1), HSwish(), nn.Dropout(0.2))
        self.classifier = nn.Conv2d(LAST_CONV, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of 224×224 images."""
        x = self.pool(self.blocks(self.first_conv(x)))
        return torch.flatten(self.classifier(self.last_conv(x)), 1)


@register(
    "sisyphus_oneshot_s_plus",
    track="imagenet",
    rules="sisyphus2019",
    bits=16,
    input_shape=(1, 3, 224, 224),
    description="Sisyphus OneShot-S+ float16 (ImageNet #14, LB 0.6425)",
)
def sisyphus_oneshot_s_plus(num_classes: int = 1000, device: str | torch.device = "meta") -> OneShotSPlus:
    """OneShot-S+ (team_scores.md §2.7), dense and unpruned, on the meta device unless ``device`` says
    otherwise (weights do not matter for its counts)."""
    with torch.device(device):
        return OneShotSPlus(num_classes=num_classes)
