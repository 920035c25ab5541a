"""Dot products: convolution, fully connected layers, matmul/bmm/einsum (kinds ``conv``, ``linear``, ``matmul``)."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from rules.records import Op, WeightRef
from scorer.ops.call import Call
from scorer.ops.registry import register
from scorer.ops.values import Val


def conv_attrs(weight_shape: tuple[int, ...], groups: int, stride, padding, dilation, bias: bool) -> dict:
    """The ``conv`` attrs from the weight's shape [C_out, C_in/groups, *kernel] and the call's settings."""
    out_c, in_per_group = weight_shape[0], weight_shape[1]
    kernel = tuple(weight_shape[2:])
    return {
        "groups": groups,
        "kernel": kernel,
        "in_channels": in_per_group * groups,
        "out_channels": out_c,
        "vector_len": in_per_group * math.prod(kernel),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "has_bias": bias,
        "depthwise": groups > 1 and in_per_group == 1,
    }


def _binary_scale(call: Call, conv: Op) -> list[Op]:
    """A binary conv with a per-output-channel scale (XNOR-Net style, ``scale=True``) multiplies every output
    by a stored full-precision value (MSUNet counted it: one scale per channel stored, one mult per output,
    official_rules.md §3.3)."""
    mod = call.module
    if getattr(mod, "scale", None) is not True or getattr(mod, "weight_bits", None) != 1:
        return [conv]
    c_out = conv.attrs["out_channels"]
    scale = WeightRef(role="scale", name=f"{call.path}.scale", tensor=None, shape=(c_out,))
    return [conv, call.op("mul", [scale], acts=[], inputs=[conv.name], suffix="_scale", out_shape=conv.out_shape)]


_CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d)


@register("conv", modules=(nn.modules.conv._ConvNd,), functions=_CONV_FUNCTIONS,
          aten=("convolution", "_convolution", "conv1d", "conv2d", "conv3d"), weighted=True)
def conv(call: Call) -> Op | list[Op]:
    """Convolution in any form; transposed convolution has no rule yet (unknown)."""
    if call.form == "module":
        mod = call.module
        if mod.transposed:
            return call.unknown()
        ws = call.module_weights(("weight", "weight"), ("bias", "bias"))
        attrs = conv_attrs(tuple(ws[0].shape), mod.groups, mod.stride, mod.padding, mod.dilation,
                           mod.bias is not None)
        return _binary_scale(call, call.op("conv", ws, acts=call.acts[:1], attrs=attrs))
    x, w, b = call.args[0], call.args[1], call.arg(2, "bias")
    if call.base in ("convolution", "_convolution"):
        if call.value(6, "transposed"):
            return call.unknown("(transposed)")
        groups = int(call.value(8, "groups"))  # type: ignore[arg-type]
    else:
        groups = int(call.value(6, "groups", 1))  # type: ignore[arg-type]
    has_bias = isinstance(b, Val) and b.is_tensor
    attrs = conv_attrs(tuple(w.shape), groups, call.value(3, "stride", 1), call.value(4, "padding", 0),
                       call.value(5, "dilation", 1), has_bias)
    return call.op("conv", call.stored(w, "weight") + call.stored(b, "bias"), acts=[x], attrs=attrs)


@register("linear", modules=(nn.Linear,), functions=(F.linear,), aten=("linear", "addmm"), weighted=True)
def linear(call: Call) -> Op:
    """``x Wᵀ + b`` (module, F.linear, aten linear) and aten ``addmm(b, x, W)`` (a Linear after
    decomposition, or transformers' Conv1D: W stored [in, out])."""
    if call.form == "module":
        mod = call.module
        ws = call.module_weights(("weight", "weight"), ("bias", "bias"))
        attrs = {"vector_len": mod.in_features, "out_features": mod.out_features, "has_bias": mod.bias is not None}
        return call.op("linear", ws, acts=call.acts[:1], attrs=attrs)
    if call.base == "addmm":
        b, x, w = call.args[0], call.args[1], call.args[2]
        if w.param is None:  # b + x @ y with y computed: a matmul with a bias
            weights = call.stored(x, "weight") + call.stored(w, "weight") + call.stored(b, "bias")
            return call.op("matmul", weights, acts=[v for v in (x, w) if v.is_activation],
                           attrs={"vector_len": x.shape[-1]})
        attrs = {"vector_len": x.shape[-1], "out_features": call.out_shape[-1], "has_bias": True}
        return call.op("linear", call.stored(w, "weight") + call.stored(b, "bias"), acts=[x], attrs=attrs)
    x, w, b = call.args[0], call.args[1], call.arg(2, "bias")
    has_bias = isinstance(b, Val) and b.is_tensor
    attrs = {"vector_len": w.shape[-1], "out_features": w.shape[0], "has_bias": has_bias}
    return call.op("linear", call.stored(w, "weight") + call.stored(b, "bias"), acts=[x], attrs=attrs)


def _einsum(call: Call) -> Op:
    eq = call.value(0, "equation")
    operands = [a for a in (call.args[1:] if call.form != "aten" else call.args[1]) if isinstance(a, Val)]
    if len(operands) == 1 and isinstance(operands[0].meta, (list, tuple)):
        return call.unknown()
    if not isinstance(eq, str) or "->" not in eq or len(operands) != 2 or "..." in eq:
        return call.unknown()
    lhs, rhs = eq.replace(" ", "").split("->")
    sizes = {ch: n for spec, v in zip(lhs.split(","), operands, strict=True) for ch, n in zip(spec, v.shape, strict=True)}
    contraction = math.prod(n for c, n in sizes.items() if c not in rhs)
    weights = [w for v in operands for w in call.stored(v, "weight")]
    return call.op("matmul", weights, acts=[v for v in operands if v.is_activation],
                   attrs={"vector_len": contraction})


@register("matmul", functions=(torch.matmul, operator.matmul, torch.bmm, torch.mm, torch.einsum),
          methods=("matmul", "bmm", "mm", "__matmul__"), aten=("mm", "bmm", "matmul", "einsum"))
def matmul(call: Call) -> Op:
    """Matrix products: n = the contracted length (the last dimension of the left operand)."""
    if call.target is torch.einsum or call.base == "einsum":
        return _einsum(call)
    a, b = call.args[0], call.args[1]
    k = a.shape[-1] if a.meta.dim() >= 1 else 1
    weights = call.stored(a, "weight") + call.stored(b, "weight")
    return call.op("matmul", weights, acts=[v for v in (a, b) if v.is_activation], attrs={"vector_len": k})
