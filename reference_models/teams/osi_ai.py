"""OSI AI's CIFAR-100 entry (team_scores.md §2.1): an EfficientNet-style network on a nearest-upsampled
63×63 input, TF-style static padding computed for a 32-pixel image, swish, SE, and an early exit after
block 4.

Module names follow OSI's state dict (§2.1.3: ``_conv_stem``, ``_blocks.N._expand_conv``, ``_blocks.N._conv``,
``_se_reduce``, ``_se_expand``, ``_project_conv``, ``_conv_head``, ``_fc``, ``_exit.*``) so per-layer tables key
by name. ``exit_paths()`` (docs/contracts.md) gives ``exit4`` (upsample + stem + blocks 0..4 + exit head)
and ``final`` (the whole main network **and** the exit head: OSI's formula charges non-exiting samples for
the exit module too, §2.1.2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from reference_models.registry import register

#: Block arguments before width scaling (``models/utils.py``, §2.1): (repeats, kernel, stride, expand, in, out).
OSI_BLOCK_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 24, 16),
    (1, 3, 1, 6, 16, 24),
    (2, 3, 2, 6, 24, 40),
    (1, 3, 1, 6, 40, 56),
    (2, 3, 1, 6, 56, 72),
    (2, 3, 2, 6, 72, 88),
    (1, 3, 1, 6, 88, 104),
)
OSI_SE_RATIO = 0.20
OSI_WIDTH = 0.9
OSI_STEM = 24
OSI_HEAD = 150
#: Index of the block whose output feeds the early exit (``blocks_idx=4``).
OSI_EXIT_BLOCK = 4


def round_filters(filters: int, width: float = OSI_WIDTH, divisor: int = 8) -> int:
    """EfficientNet's width rounding: scale, round to ``divisor``, and never go 10% below the target."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def upsampled_size(input_size: int = 32, avail_resource: int = 2, base: float = 1.4) -> int:
    """OSI's resolution: ``ceil(input_size * round(base**avail_resource, 2))`` = 63 for 32 pixels."""
    return int(math.ceil(input_size * round(base**avail_resource, 2)))


def static_same_padding(kernel: int, stride: int, image_size: int = 32) -> tuple[int, int, int, int]:
    """TF 'same' padding for ``image_size`` as (left, right, top, bottom): the extra pixel goes right/bottom."""
    out = math.ceil(image_size / stride)
    total = max((out - 1) * stride + kernel - image_size, 0)
    return (total // 2, total - total // 2, total // 2, total - total // 2)


def _padded_conv(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> tuple[nn.Module, nn.Conv2d]:
    """A (pad, conv) pair: symmetric padding goes into the conv, asymmetric padding into a ZeroPad2d."""
    pad = static_same_padding(kernel, stride)
    if pad[0] == pad[1] == pad[2] == pad[3]:
        return nn.Identity(), nn.Conv2d(cin, cout, kernel, stride, pad[0], groups=groups, bias=False)
    return nn.ZeroPad2d(pad), nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)


class OsiMBConv(nn.Module):
    """MBConv: [expand 1×1 + BN + swish] → depthwise + BN + swish → SE (on the expanded channels, width
    ``max(1, int(in*0.2))``) → project 1×1 + BN (no activation) → residual add when stride 1 and in == out."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, se_ratio: float) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand_ratio = expand
        self.use_residual = stride == 1 and cin == cout
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden)
        self._pad, self._conv = _padded_conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden)
        squeezed = max(1, int(cin * se_ratio))
        self._se_pool = nn.AdaptiveAvgPool2d(1)
        self._se_reduce = nn.Conv2d(hidden, squeezed, 1, bias=True)
        self._se_expand = nn.Conv2d(squeezed, hidden, 1, bias=True)
        self._se_gate = nn.Sigmoid()
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout)
        self._swish = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        """Block forward (drop-connect is a training-only detail and is left out)."""
        out = x
        if self.expand_ratio != 1:
            out = self._swish(self._bn0(self._expand_conv(out)))
        out = self._swish(self._bn1(self._conv(self._pad(out))))
        gate = self._se_gate(self._se_expand(self._swish(self._se_reduce(self._se_pool(out)))))
        out = self._bn2(self._project_conv(out * gate))
        if self.use_residual:
            out = out + x
        return out


class OsiEarlyExit(nn.Module):
    """Early-exit head (``models/early_exit/layers.py``): depthwise 3×3 + BN + swish → 1×1 conv + BN + swish
    → global average pool → 1×1 conv with bias (counted as an FC) → logits."""

    def __init__(self, channels: int = 48, hidden: int = 136, num_classes: int = 100) -> None:
        super().__init__()
        self._depthwise_conv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self._bn0 = nn.BatchNorm2d(channels)
        self._expand_conv = nn.Conv2d(channels, hidden, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden)
        self._swish = nn.SiLU()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Conv2d(hidden, num_classes, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """Exit logits, shape (N, num_classes)."""
        out = self._swish(self._bn0(self._depthwise_conv(x)))
        out = self._swish(self._bn1(self._expand_conv(out)))
        return torch.flatten(self._fc(self._avg_pooling(out)), 1)


class _OsiTrunk(nn.Module):
    """Shared forward pieces of the OSI network and its exit paths (attributes are set by subclasses)."""

    _upsample: nn.Module
    _stem_pad: nn.Module
    _conv_stem: nn.Conv2d
    _bn0: nn.BatchNorm2d
    _swish: nn.Module
    _blocks: nn.ModuleList
    _exit: OsiEarlyExit
    exit_block: int

    def _to_exit(self, x: Tensor) -> Tensor:
        """Upsample, stem and blocks 0..exit_block: the input of the exit head."""
        out = self._swish(self._bn0(self._conv_stem(self._stem_pad(self._upsample(x)))))
        for block in self._blocks[: self.exit_block + 1]:
            out = block(out)
        return out


class OsiAiNet(_OsiTrunk):
    """OSI AI's MicroNet (CIFAR-100, LB 0.0058)."""

    def __init__(
        self,
        num_classes: int = 100,
        input_size: int = 32,
        width: float = OSI_WIDTH,
        dropout: float = 0.2,
        exit_block: int = OSI_EXIT_BLOCK,
    ) -> None:
        super().__init__()
        self.exit_block = exit_block
        size = upsampled_size(input_size)
        self._upsample = nn.Upsample(size=(size, size), mode="nearest")
        stem = round_filters(OSI_STEM, width)
        self._stem_pad, self._conv_stem = _padded_conv(3, stem, 3, 2)
        self._bn0 = nn.BatchNorm2d(stem)
        self._swish = nn.SiLU()
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in OSI_BLOCK_ARGS:
            cin, cout = round_filters(cin, width), round_filters(cout, width)
            for i in range(repeats):
                blocks.append(
                    OsiMBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand, OSI_SE_RATIO)
                )
        self._blocks = nn.ModuleList(blocks)
        last = round_filters(OSI_BLOCK_ARGS[-1][-1], width)
        head = round_filters(OSI_HEAD, width)
        self._conv_head = nn.Conv2d(last, head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)
        exit_channels = self._blocks[exit_block]._project_conv.out_channels
        self._exit = OsiEarlyExit(exit_channels, head, num_classes)

    def _rest(self, out: Tensor) -> Tensor:
        """Blocks after the exit point, head, pooling, dropout and FC."""
        for block in self._blocks[self.exit_block + 1 :]:
            out = block(out)
        out = self._swish(self._bn1(self._conv_head(out)))
        out = torch.flatten(self._avg_pooling(out), 1)
        return self._fc(self._dropout(out))

    def forward(self, x: Tensor) -> Tensor:
        """Final logits of the main network (the exit head is not run)."""
        return self._rest(self._to_exit(x))

    def forward_with_exit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(exit_logits, final_logits)`` for every sample, e.g. to measure exit fractions."""
        mid = self._to_exit(x)
        return self._exit(mid), self._rest(mid)

    def exit_paths(self) -> dict[str, nn.Module]:
        """``{"exit4": ..., "final": ...}``; both share this model's parameters and module names."""
        return {f"exit{self.exit_block}": OsiExitPath(self), "final": OsiFinalPath(self)}


class OsiExitPath(_OsiTrunk):
    """What a sample leaving at the early exit pays: upsample, stem, blocks 0..4 and the exit head."""

    def __init__(self, net: OsiAiNet) -> None:
        super().__init__()
        self.exit_block = net.exit_block
        for name in ("_upsample", "_stem_pad", "_conv_stem", "_bn0", "_swish", "_exit"):
            setattr(self, name, getattr(net, name))
        self._blocks = net._blocks[: net.exit_block + 1]

    def forward(self, x: Tensor) -> Tensor:
        """Exit logits."""
        return self._exit(self._to_exit(x))


class OsiFinalPath(_OsiTrunk):
    """What a non-exiting sample pays: the whole main network plus the exit head it tried first."""

    def __init__(self, net: OsiAiNet) -> None:
        super().__init__()
        self.exit_block = net.exit_block
        for name in ("_upsample", "_stem_pad", "_conv_stem", "_bn0", "_swish", "_blocks", "_exit",
                     "_conv_head", "_bn1", "_avg_pooling", "_dropout", "_fc"):
            setattr(self, name, getattr(net, name))

    _rest = OsiAiNet._rest

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(exit_logits, final_logits)``: both heads are computed, so both are counted."""
        mid = self._to_exit(x)
        return self._exit(mid), self._rest(mid)


@register(
    "osi_ai",
    track="cifar100",
    rules="osi_ai2019",
    bits=16,
    input_shape=(1, 3, 32, 32),
    description="OSI AI (CIFAR-100 #4, LB 0.0058): upsampled EfficientNet-style net with an early exit",
)
def osi_ai(num_classes: int = 100, input_size: int = 32, dropout: float = 0.2) -> OsiAiNet:
    """OSI AI's network (team_scores.md §2.1)."""
    return OsiAiNet(num_classes=num_classes, input_size=input_size, dropout=dropout)
