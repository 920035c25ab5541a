"""Binarisation: sign with a straight-through estimator, binary activations and binary convs.

The scorer reads ``SignActivation.bits == 1`` (a 1-bit activation tensor, free conversion) and
``BinaryConv2d.weight_bits == 1`` (a 1-bit weight, scored as an ``nn.Conv2d``), see docs/contracts.md.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reference_models.compression.surgery import parent_of, set_child


def _sign(x: Tensor) -> Tensor:
    """Sign mapping 0 to +1, so outputs are exactly {-1, +1}."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class SignSTE(torch.autograd.Function):
    """Sign forward; straight-through gradient clipped to ``|x| <= 1`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return _sign(x)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad_out * (x.abs() <= 1).to(grad_out.dtype)


def sign_ste(x: Tensor) -> Tensor:
    """Apply :class:`SignSTE`."""
    return SignSTE.apply(x)


class SignActivation(nn.Module):
    """Binary activation ``sign(x)`` in {-1, +1} with a clipped straight-through gradient."""

    bits = 1

    def forward(self, x: Tensor) -> Tensor:
        """Return ``sign(x)``."""
        return sign_ste(x)


class BinaryConv2d(nn.Conv2d):
    """Conv2d that convolves with ``sign(weight)`` times an optional per-output-channel scale.

    With ``scale=True`` the scale is ``mean(|W|)`` over each output filter (XNOR-Net style), computed on
    the fly (no extra parameter); it is a per-channel multiply that must be folded into the following BN to
    be free, so it is off by default. Gradients reach the latent FP weight through the STE.
    """

    weight_bits = 1

    def __init__(self, *args: Any, scale: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scale = scale

    def binary_weight(self) -> Tensor:
        """The effective weight used by the forward pass."""
        wb = sign_ste(self.weight)
        if self.scale:
            alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
            wb = wb * alpha
        return wb

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` with the binarised weight."""
        return self._conv_forward(x, self.binary_weight(), self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, scale: bool = False) -> BinaryConv2d:
        """Build a BinaryConv2d with the same geometry as ``conv`` and copy its weights."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            scale=scale,
        )
        new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None and new.bias is not None:
                new.bias.copy_(conv.bias)
        return new


class SignInput(nn.Sequential):
    """``sign -> conv``: the wrapper :func:`binarize_model` puts around a conv to binarise its input."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(OrderedDict([("sign", SignActivation()), ("conv", conv)]))


STAGES = ("activations", "weights", "weights_only")
DEFAULT_FP_GLOBS = ("*downsample*", "*shortcut*", "*branch*")


def _fp_convs(model: nn.Module, skip_first: bool, fp_globs: Iterable[str]) -> set[str]:
    """Names of convs kept in full precision: the first conv and the downsampling convs."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    keep = {n for n in convs if any(fnmatch.fnmatchcase(n, g) for g in fp_globs)}
    if skip_first and convs:
        keep.add(convs[0])
    return keep


def binarize_model(
    model: nn.Module,
    stage: str,
    skip_first: bool = True,
    fp_globs: Iterable[str] = DEFAULT_FP_GLOBS,
    scale: bool = False,
) -> nn.Module:
    """Binarise ``model`` in place (and return it), following the BNN two-stage recipe.

    * ``"activations"`` (stage 1): every eligible conv ``c`` becomes ``SignInput(c)`` (``c.sign``,
      ``c.conv``), i.e. binary activations with full-precision weights.
    * ``"weights"`` (stage 2, the 1-bit network): also swaps the eligible ``nn.Conv2d`` for
      :class:`BinaryConv2d` (weights copied); applies stage 1 first where it was not applied.
    * ``"weights_only"``: binary weights with full-precision activations (the recipe's alternative stage 1).

    Kept in full precision: the first conv (``skip_first``), convs whose name matches ``fp_globs``
    (downsampling / shortcut convs) and every ``nn.Linear`` (the classifier). Idempotent.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown binarisation stage {stage!r}; choose one of {STAGES}")
    fp_globs = tuple(fp_globs)
    keep_fp = _fp_convs(model, skip_first, fp_globs)
    if stage in ("activations", "weights"):
        for name, module in list(model.named_modules()):
            if not isinstance(module, nn.Conv2d) or name in keep_fp:
                continue
            parent = parent_of(model, name)
            if isinstance(parent, SignInput):
                continue  # already binarised input
            set_child(model, name, SignInput(module))
        keep_fp = _fp_convs(model, skip_first, fp_globs)  # names changed
    if stage in ("weights", "weights_only"):
        for name, module in list(model.named_modules()):
            if type(module) is nn.Conv2d and name not in keep_fp:
                set_child(model, name, BinaryConv2d.from_conv(module, scale=scale))
    return model


@dataclass(frozen=True)
class TwoStageSchedule:
    """The BNN two-stage schedule (bnn-training-tricks): binary activations first, then 1-bit weights.

    Stage 1 (epochs ``[0, stage1_epochs)``): Adam, lr 1e-3, weight decay 1e-5.
    Stage 2 (from ``stage1_epochs``, initialised from stage 1): lr 2e-4, weight decay 0.
    """

    stage1_epochs: int
    stage1_lr: float = 1e-3
    stage1_weight_decay: float = 1e-5
    stage2_lr: float = 2e-4
    stage2_weight_decay: float = 0.0

    def stage_at(self, epoch: int) -> str:
        """``"activations"`` during stage 1, ``"weights"`` afterwards."""
        return binarize_stage(epoch, self.stage1_epochs)

    def hparams(self, epoch: int) -> dict[str, float]:
        """Base learning rate and weight decay of the stage that applies at ``epoch``."""
        if self.stage_at(epoch) == "activations":
            return {"lr": self.stage1_lr, "weight_decay": self.stage1_weight_decay}
        return {"lr": self.stage2_lr, "weight_decay": self.stage2_weight_decay}


def binarize_stage(epoch: int, stage1_epochs: int) -> str:
    """Which :func:`binarize_model` stage applies at ``epoch`` (0-based) of the two-stage schedule."""
    if epoch < 0 or stage1_epochs < 0:
        raise ValueError("epoch and stage1_epochs must be non-negative")
    return "activations" if epoch < stage1_epochs else "weights"
