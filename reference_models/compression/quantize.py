"""Uniform fixed-point fake quantisation with straight-through gradients.

An ``n``-bit quantiser maps ``x`` to ``q * step`` with integer ``q`` in ``[-2^(n-1), 2^(n-1)-1]`` (signed)
or ``[0, 2^n-1]`` (unsigned), so at most ``2^n`` distinct values. The range ``r`` (max |w| for weights,
a running max or a learned clip for activations) gives ``step = r / qmax``; with ``shared_exponent=True``
(WaveComp: integers times ``2^e``, one exponent per layer) the step is ``2^ceil(log2(r / qmax))``, the
smallest power of two that covers the range. Rounding uses a straight-through estimator; values beyond the
range are clipped (zero gradient there, and gradient to a learned range as in PACT).

Modules carry the bit attributes the scorer reads (docs/contracts.md): ``QuantConv2d.weight_bits``,
``QuantLinear.weight_bits``, optional ``act_bits`` (the layer quantises its own output), ``ActQuant.bits``.
Biases are not quantised (the scorer stores them at the parameter width).
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from reference_models.compression.surgery import parent_of, set_child

__all__ = [
    "ActQuant",
    "QuantizedAct",
    "QuantConv2d",
    "QuantLinear",
    "bits_of",
    "fake_quantize",
    "int_range",
    "quant_step",
    "quantize_model",
]

FP_BITS = 32  # a width of 32 or more means "leave in floating point"
_UNSIGNED_ACTS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
DEFAULT_ACT_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.ELU, nn.Mish, nn.Hardtanh,
)


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of an ``bits``-bit code."""
    if not isinstance(bits, int) or bits < 1 or (signed and bits < 2):
        raise ValueError(f"need an integer bit width >= {2 if signed else 1} (signed={signed}), got {bits!r}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def quant_step(value_range: Tensor | float, bits: int, signed: bool, shared_exponent: bool = False) -> Tensor:
    """Quantisation step for a range: ``range / qmax``, or the covering power of two if ``shared_exponent``."""
    _, qmax = int_range(bits, signed)
    r = torch.as_tensor(value_range, dtype=torch.float32)
    r = torch.clamp(r, min=torch.finfo(r.dtype).tiny * qmax)
    step = r / qmax
    if shared_exponent:
        step = torch.exp2(torch.ceil(torch.log2(step.detach())))
    return step


def fake_quantize(
    x: Tensor, bits: int, value_range: Tensor | float, signed: bool = True, shared_exponent: bool = False
) -> Tensor:
    """Clip ``x`` to ``[-range, range]`` (or ``[0, range]``), round to the grid, STE for the rounding."""
    qmin, qmax = int_range(bits, signed)
    r = torch.as_tensor(value_range, dtype=x.dtype, device=x.device)
    lo = -r if signed else torch.zeros_like(r)
    xc = torch.minimum(torch.maximum(x, lo), r)
    step = quant_step(r.detach(), bits, signed, shared_exponent).to(x.device, x.dtype)
    q = torch.clamp(torch.round(xc.detach() / step), qmin, qmax) * step
    return xc + (q - xc).detach()


def _weight_quant(weight: Tensor, bits: int, shared_exponent: bool) -> Tensor:
    return fake_quantize(weight, bits, weight.detach().abs().max(), True, shared_exponent)


class ActQuant(nn.Module):
    """Activation fake-quantiser carrying ``bits`` (scored as a free format conversion).

    Args:
        bits: output width.
        signed: signed grid (for activations with negative outputs, e.g. swish) or unsigned (ReLU).
        mode: ``"running_max"`` (EMA of the batch max |x| in training, frozen in eval) or ``"learned"``
            (a trainable clip value, PACT).
        shared_exponent: power-of-two step (WaveComp).
        momentum: EMA momentum of the running max.
        init_range: initial clip value in ``"learned"`` mode.
    """

    def __init__(
        self,
        bits: int = 8,
        signed: bool = False,
        mode: str = "running_max",
        shared_exponent: bool = False,
        momentum: float = 0.1,
        init_range: float = 6.0,
    ) -> None:
        super().__init__()
        int_range(bits, signed)  # validate
        if mode not in ("running_max", "learned"):
            raise ValueError(f"ActQuant mode must be 'running_max' or 'learned', got {mode!r}")
        self.bits = int(bits)
        self.signed = signed
        self.mode = mode
        self.shared_exponent = shared_exponent
        self.momentum = momentum
        if mode == "learned":
            self.clip = nn.Parameter(torch.tensor(float(init_range)))
        else:
            self.register_buffer("running_max", torch.tensor(0.0))

    def value_range(self, x: Tensor) -> Tensor:
        """Current range (updating the running max when training)."""
        if self.mode == "learned":
            return self.clip.abs()
        if self.training:
            with torch.no_grad():
                batch = x.detach().abs().max() if self.signed else x.detach().max().clamp(min=0)
                if self.running_max == 0:
                    self.running_max.copy_(batch)
                else:
                    self.running_max.mul_(1 - self.momentum).add_(batch, alpha=self.momentum)
            # a copy: a module called twice in one forward updates the buffer in place again, and autograd
            # still needs the value this call used
            return self.running_max.clone()
        return self.running_max

    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantise ``x``."""
        return fake_quantize(x, self.bits, self.value_range(x), self.signed, self.shared_exponent)

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, signed={self.signed}, mode={self.mode}, shared_exponent={self.shared_exponent}"


class QuantizedAct(nn.Sequential):
    """``act -> ActQuant``: what :func:`quantize_model` puts in place of an activation module."""

    def __init__(self, act: nn.Module, quant: ActQuant) -> None:
        super().__init__(OrderedDict([("act", act), ("quant", quant)]))


class _QuantMixin:
    """Shared weight / output quantisation for QuantConv2d and QuantLinear."""

    weight: nn.Parameter
    weight_bits: int
    act_bits: int | None
    shared_exponent: bool
    training: bool

    def _setup_quant(self, weight_bits: int, act_bits: int | None, shared_exponent: bool) -> None:
        int_range(weight_bits, True)
        self.weight_bits = int(weight_bits)
        self.act_bits = None if act_bits is None else int(act_bits)
        self.shared_exponent = shared_exponent
        if act_bits is not None:
            int_range(act_bits, True)
            self.register_buffer("out_running_max", torch.tensor(0.0))  # type: ignore[attr-defined]

    def quantized_weight(self) -> Tensor:
        """The fake-quantised weight used in the forward pass."""
        return _weight_quant(self.weight, self.weight_bits, self.shared_exponent)

    def _quant_out(self, y: Tensor) -> Tensor:
        if self.act_bits is None:
            return y
        rmax: Tensor = self.out_running_max  # type: ignore[attr-defined]
        if self.training:
            with torch.no_grad():
                batch = y.detach().abs().max()
                rmax.copy_(batch if rmax == 0 else 0.9 * rmax + 0.1 * batch)
            rmax = rmax.clone()  # see ActQuant.value_range: the buffer may change again in this forward
        return fake_quantize(y, self.act_bits, rmax, True, self.shared_exponent)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """Conv2d with a fake-quantised weight (``weight_bits``) and optionally quantised output (``act_bits``)."""

    def __init__(
        self,
        *args: Any,
        weight_bits: int = 8,
        act_bits: int | None = None,
        shared_exponent: bool = False,
        **kwargs: Any,
    ) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._setup_quant(weight_bits, act_bits, shared_exponent)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve with the quantised weight."""
        return self._quant_out(self._conv_forward(x, self.quantized_weight(), self.bias))

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, weight_bits: int, act_bits: int | None = None, shared_exponent: bool = False
    ) -> QuantConv2d:
        """Copy of ``conv`` (geometry and weights) as a QuantConv2d."""
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
            padding_mode=conv.padding_mode, weight_bits=weight_bits, act_bits=act_bits,
            shared_exponent=shared_exponent,
        )
        _copy_params(conv, new)
        return new


class QuantLinear(_QuantMixin, nn.Linear):
    """Linear with a fake-quantised weight (``weight_bits``) and optionally quantised output (``act_bits``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        weight_bits: int = 8,
        act_bits: int | None = None,
        shared_exponent: bool = False,
        **kwargs: Any,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias, **kwargs)
        self._setup_quant(weight_bits, act_bits, shared_exponent)

    def forward(self, x: Tensor) -> Tensor:
        """Affine map with the quantised weight."""
        return self._quant_out(nn.functional.linear(x, self.quantized_weight(), self.bias))

    @classmethod
    def from_float(
        cls, linear: nn.Linear, weight_bits: int, act_bits: int | None = None, shared_exponent: bool = False
    ) -> QuantLinear:
        """Copy of ``linear`` as a QuantLinear."""
        new = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            weight_bits=weight_bits, act_bits=act_bits, shared_exponent=shared_exponent,
        )
        _copy_params(linear, new)
        return new


def _copy_params(src: nn.Module, dst: nn.Module) -> None:
    dst.to(device=src.weight.device, dtype=src.weight.dtype)
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if getattr(src, "bias", None) is not None:
            dst.bias.copy_(src.bias)


def _layer_bits(name: str, key: str, default: int, per_layer: Mapping[str, Mapping[str, int]] | None) -> int:
    bits = default
    for glob, spec in (per_layer or {}).items():
        if key in spec and fnmatch.fnmatchcase(name, glob):
            bits = spec[key]  # later globs win
    return bits


def quantize_model(
    model: nn.Module,
    weight_bits: int,
    act_bits: int | None,
    per_layer: Mapping[str, Mapping[str, int]] | None = None,
    shared_exponent: bool = False,
    exclude: Iterable[str] = (),
    act_types: tuple[type[nn.Module], ...] = DEFAULT_ACT_TYPES,
    act_mode: str = "running_max",
) -> nn.Module:
    """Swap ``nn.Conv2d`` / ``nn.Linear`` for quantised layers and add an ActQuant after each activation.

    In place; returns ``model``. ``per_layer`` maps module-name globs to ``{"weight": b, "act": b}``
    (later globs win): ``"weight"`` applies to the matching conv/linear, ``"out"`` quantises that layer's own
    output (its ``act_bits``; none by default), ``"act"`` sets the ActQuant after a matching activation module. A width of 32 or more leaves that layer / activation in floating point, as
    does ``act_bits=None`` for activations and ``exclude`` (module-name globs) for both. An activation ``act``
    becomes ``QuantizedAct(act, ActQuant)`` (children ``.act``, ``.quant``); idempotent. Activations called functionally in
    ``forward`` are not seen. ReLU/ReLU6 get unsigned quantisers, other activations signed ones.
    """
    exclude = tuple(exclude)
    for name, module in list(model.named_modules()):
        if not name or any(fnmatch.fnmatchcase(name, g) for g in exclude):
            continue
        if type(module) in (nn.Conv2d, nn.Linear):
            wb = _layer_bits(name, "weight", weight_bits, per_layer)
            if wb >= FP_BITS:
                continue
            ob = _layer_bits(name, "out", FP_BITS, per_layer)
            cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
            set_child(model, name, cls.from_float(module, wb, act_bits=ob if ob < FP_BITS else None,
                                                  shared_exponent=shared_exponent))
        elif isinstance(module, act_types):
            parent = parent_of(model, name)
            if isinstance(parent, QuantizedAct):
                continue  # already quantised
            ab = _layer_bits(name, "act", act_bits if act_bits is not None else FP_BITS, per_layer)
            if ab >= FP_BITS:
                continue
            signed = not isinstance(module, _UNSIGNED_ACTS)
            quant = ActQuant(ab, signed=signed, mode=act_mode, shared_exponent=shared_exponent)
            set_child(model, name, QuantizedAct(module, quant))
    return model


def bits_of(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per-module widths for a checkpoint: ``{"weight": weight_bits}`` (plus ``"act"`` if the layer
    quantises its output) for quantised/binary layers, ``{"act": bits}`` for activation quantisers."""
    out: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        entry: dict[str, int] = {}
        wb = getattr(module, "weight_bits", None)
        if isinstance(wb, int):
            entry["weight"] = wb
        ab = getattr(module, "act_bits", None)
        if isinstance(ab, int):
            entry["act"] = ab
        b = getattr(module, "bits", None)
        if isinstance(b, int) and not isinstance(b, bool):
            entry["act"] = b
        if entry:
            out[name] = entry
    return out
