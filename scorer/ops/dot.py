"""Dot products: convolution (also transposed), fully connected layers, matmul/bmm/einsum (kinds ``conv``,
``conv_transpose``, ``linear``, ``matmul``)."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from rules.records import Op, WeightRef
from scorer.ops.call import Call, module_attr
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
    if module_attr(mod, "scale") is not True or module_attr(mod, "weight_bits") != 1:
        return [conv]
    c_out = conv.attrs["out_channels"]
    scale = WeightRef(role="scale", name=f"{call.path}.scale", tensor=None, shape=(c_out,))
    return [conv, call.op("mul", [scale], acts=[], inputs=[conv.name], suffix="_scale", out_shape=conv.out_shape)]


_CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d)


def _tuple(v: object, d: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v),) * d  # type: ignore[arg-type]


def scatter_pairs(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """Along one dimension of a transposed convolution: (input·tap pairs landing inside the output,
    output positions receiving at least one). Input i and tap j land at i·s − p + j·d (PyTorch's
    definition); positions outside [0, n_out) are cropped by the padding."""
    hit = [i * s - p + j * d for i in range(n_in) for j in range(k)]
    inside = [o for o in hit if 0 <= o < n_out]
    return len(inside), len(set(inside))


def conv_transpose_attrs(x: Val, w_shape: tuple[int, ...], out_shape: tuple[int, ...], groups: int, stride,
                         padding, dilation, bias: bool) -> dict:
    """The ``conv_transpose`` attrs from the weight [C_in, C_out/groups, *kernel] and the real shapes."""
    kernel = tuple(w_shape[2:])
    dims = len(kernel)
    c_in, c_out = w_shape[0], w_shape[1] * groups
    st, pad, dil = _tuple(stride, dims), _tuple(padding, dims), _tuple(dilation, dims)
    n_in, n_out = x.shape[-dims:], out_shape[-dims:]
    counts = [scatter_pairs(n_in[i], n_out[i], kernel[i], st[i], pad[i], dil[i]) for i in range(dims)]
    outputs = c_out * math.prod(n_out)
    per_channel_pair = c_in * w_shape[1]  # each input channel feeds the C_out/groups channels of its group
    return {
        "groups": groups, "kernel": kernel, "in_channels": c_in, "out_channels": c_out, "stride": st,
        "padding": pad, "dilation": dil, "has_bias": bias, "depthwise": groups > 1 and w_shape[1] == 1,
        "vector_len": per_channel_pair * math.prod(c[0] for c in counts) / outputs,
        "covered": math.prod(c[1] for c in counts) / math.prod(n_out),
        "scatter_len": per_channel_pair * math.prod(n_in) * math.prod(kernel) / outputs,
    }


_CONV_T_FUNCTIONS = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, torch.conv_transpose1d,
                     torch.conv_transpose2d, torch.conv_transpose3d)


def _conv_transpose(call: Call) -> Op:
    """Transposed convolution: module, F.conv_transpose*/aten conv_transpose* (input, weight, bias, stride,
    padding, output_padding, groups, dilation) and aten convolution with ``transposed=True``."""
    if call.form == "module":
        mod = call.module
        ws = call.module_weights(("weight", "weight"), ("bias", "bias"))
        attrs = conv_transpose_attrs(call.acts[0], tuple(mod.weight.shape), call.out_shape, mod.groups, mod.stride,
                                     mod.padding, mod.dilation, mod.bias is not None)
        return call.op("conv_transpose", ws, acts=call.acts[:1], attrs=attrs)
    x, w, b = call.args[0], call.args[1], call.arg(2, "bias")
    if call.base in ("convolution", "_convolution"):
        groups, dilation = call.value(8, "groups"), call.value(5, "dilation")
    else:
        groups, dilation = call.value(6, "groups", 1), call.value(7, "dilation", 1)
    has_bias = isinstance(b, Val) and b.is_tensor
    attrs = conv_transpose_attrs(x, tuple(w.shape), call.out_shape, int(groups), call.value(3, "stride", 1),  # type: ignore[arg-type]
                                 call.value(4, "padding", 0), dilation, has_bias)
    return call.op("conv_transpose", call.stored(w, "weight") + call.stored(b, "bias"), acts=[x], attrs=attrs)


@register("conv", modules=(nn.modules.conv._ConvNd,), functions=_CONV_FUNCTIONS + _CONV_T_FUNCTIONS,
          aten=("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d"), weighted=True)
def conv(call: Call) -> Op | list[Op]:
    """Convolution in any form; a transposed one is ``conv_transpose``."""
    transposed = (call.module.transposed if call.form == "module"
                  else call.target in _CONV_T_FUNCTIONS or call.base.startswith("conv_transpose")
                  or call.base in ("convolution", "_convolution") and bool(call.value(6, "transposed")))
    if transposed:
        return _conv_transpose(call)
    if call.form == "module":
        mod = call.module
        ws = call.module_weights(("weight", "weight"), ("bias", "bias"))
        attrs = conv_attrs(tuple(ws[0].shape), mod.groups, mod.stride, mod.padding, mod.dilation,
                           mod.bias is not None)
        return _binary_scale(call, call.op("conv", ws, acts=call.acts[:1], attrs=attrs))
    x, w, b = call.args[0], call.args[1], call.arg(2, "bias")
    if call.base in ("convolution", "_convolution"):
        groups = int(call.value(8, "groups"))  # type: ignore[arg-type]
    else:
        groups = int(call.value(6, "groups", 1))  # type: ignore[arg-type]
    has_bias = isinstance(b, Val) and b.is_tensor
    attrs = conv_attrs(tuple(w.shape), groups, call.value(3, "stride", 1), call.value(4, "padding", 0),
                       call.value(5, "dilation", 1), has_bias)
    return call.op("conv", call.stored(w, "weight") + call.stored(b, "bias"), acts=[x], attrs=attrs)


@register("linear", modules=(nn.Linear,), functions=(F.linear, torch.addmm), aten=("linear", "addmm"), weighted=True)
def linear(call: Call) -> Op:
    """``x Wᵀ + b`` (module, F.linear, aten linear) and aten ``addmm(b, x, W)`` (a Linear after
    decomposition, or transformers' Conv1D: W stored [in, out])."""
    if call.form == "module":
        mod = call.module
        ws = call.module_weights(("weight", "weight"), ("bias", "bias"))
        attrs = {"vector_len": mod.in_features, "out_features": mod.out_features, "has_bias": mod.bias is not None}
        return call.op("linear", ws, acts=call.acts[:1], attrs=attrs)
    if call.base == "addmm" or call.target is torch.addmm:
        b, x, w = call.args[0], call.args[1], call.args[2]
        # beta·b + alpha·(x @ w): one mult per output for each factor that is not 1; beta = 0 ignores b
        beta, alpha = call.value(3, "beta", 1), call.value(4, "alpha", 1)
        added = beta != 0  # a parameter b is stored all the same: the forward reads it
        scalings = int(added and beta != 1) + int(alpha != 1)
        bias = call.stored(b, "bias")
        if w.param is None:  # b + x @ y with y computed: a matmul with a bias
            weights = call.stored(x, "weight") + call.stored(w, "weight") + bias
            return call.op("matmul", weights, acts=[v for v in (x, w) if v.is_activation],
                           attrs={"vector_len": x.shape[-1], "has_bias": added, "scalings": scalings})
        attrs = {"vector_len": x.shape[-1], "out_features": call.out_shape[-1], "has_bias": added, "scalings": scalings}
        return call.op("linear", call.stored(w, "weight") + bias, acts=[x], attrs=attrs)
    x, w, b = call.args[0], call.args[1], call.arg(2, "bias")
    has_bias = isinstance(b, Val) and b.is_tensor
    attrs = {"vector_len": w.shape[-1], "out_features": w.shape[0], "has_bias": has_bias}
    return call.op("linear", call.stored(w, "weight") + call.stored(b, "bias"), acts=[x], attrs=attrs)


def _presum(call: Call, v: Val, spec: str, solo: list[str], sizes: dict[str, int], i: int) -> Op:
    """Operand ``v`` summed over ``solo``, its indices in no other operand nor the output (aten ``sum``)."""
    kept = tuple(sizes[c] for c in dict.fromkeys(spec) if c not in solo)
    op = call.op("sum", call.stored(v, "operand"), acts=[v] if v.is_activation else [], suffix=f"_sum{i}",
                 attrs={"reduce": math.prod(sizes[c] for c in solo)}, out_shape=kept,
                 inputs=[v.producer] if v.producer else [])
    if not v.is_activation:
        op.reads_input = False  # a summed weight reads no activation (a constant, as on dispatch)
    return op


def _einsum(call: Call) -> Op | list[Op]:
    """Two-operand einsum as torch lowers it (ATen ``einsum``, Linear.cpp): an index in one operand only and
    not in the output is summed out of that operand first (``sum``, n−1 adds per value kept); the product is
    then a dot product over the indices both operands share and the output lacks (``matmul``: bmm, n their
    sizes' product) or, with none, a broadcast ``mul`` (``x * y``; FlopCounterMode counts no FLOPs)."""
    eq = call.value(0, "equation")
    operands = [a for a in (call.args[1:] if call.form != "aten" else call.args[1]) if isinstance(a, Val)]
    if len(operands) == 1 and isinstance(operands[0].meta, (list, tuple)):
        return call.unknown()
    if not isinstance(eq, str) or "->" not in eq or len(operands) != 2 or "..." in eq:
        return call.unknown()
    lhs, rhs = eq.replace(" ", "").split("->")
    specs = lhs.split(",")
    sizes = {ch: n for spec, v in zip(specs, operands, strict=True) for ch, n in zip(spec, v.shape, strict=True)}
    ops, kept, inputs, kept_specs = [], [], [], []
    for i, (spec, v) in enumerate(zip(specs, operands, strict=True)):
        solo = [c for c in dict.fromkeys(spec) if c not in rhs and c not in specs[1 - i]]
        if math.prod(sizes[c] for c in solo) > 1:  # a size-1 index is squeezed, not summed
            ops.append(_presum(call, v, spec, solo, sizes, i))
            inputs.append(ops[-1].name)
            continue
        kept.append(v)
        kept_specs.append(spec)
        inputs += [v.producer] if v.producer else []
    contracted = [c for c in dict.fromkeys(specs[0]) if c in specs[1] and c not in rhs]
    acts = [v for v in kept if v.is_activation]
    if contracted:
        weights = [w for v in kept for w in call.stored(v, "weight")]
        ops.append(call.op("matmul", weights, acts=acts, attrs={"vector_len": math.prod(sizes[c] for c in contracted)},
                           inputs=inputs))
        return ops
    ops.append(call.op("mul", [w for v in kept for w in call.stored(v, "operand")], acts=acts, inputs=inputs))
    # the operands as the product broadcasts them over the output's indices (an outer product is a broadcast)
    ops[-1].in_shapes = [tuple(sizes[c] if c in spec else 1 for c in rhs)
                         for v, spec in zip(kept, kept_specs, strict=True) if v.is_activation]
    return ops


@register("matmul", functions=(torch.matmul, operator.matmul, torch.bmm, torch.mm, torch.mv, torch.dot, torch.einsum),
          methods=("matmul", "bmm", "mm", "mv", "dot", "__matmul__"), aten=("mm", "bmm", "mv", "dot", "matmul", "einsum"))
def matmul(call: Call) -> Op | list[Op]:
    """Matrix products: n = the contracted length (the last dimension of the left operand); einsum as torch
    lowers it (``_einsum``)."""
    if call.target is torch.einsum or call.base == "einsum":
        return _einsum(call)
    a, b = call.args[0], call.args[1]
    k = a.shape[-1] if a.meta.dim() >= 1 else 1
    weights = call.stored(a, "weight") + call.stored(b, "weight")
    return call.op("matmul", weights, acts=[v for v in (a, b) if v.is_activation], attrs={"vector_len": k})
