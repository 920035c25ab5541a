"""Tables that map torch modules, functions and tensor methods onto the scorer's canonical op kinds.

Module, functional, method and operator forms of the same operation map to the same kind, so that
``nn.ReLU()``, ``F.relu``, ``torch.relu``, ``x.relu()`` and ``x.relu_()`` all give one ``act:relu`` row.
"""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

# Parameter-free activation modules -> kind.
ACTIVATION_MODULES: list[tuple[type, str]] = [
    (nn.ReLU, "act:relu"),
    (nn.ReLU6, "act:relu6"),
    (nn.Hardtanh, "act:hardtanh"),  # ReLU6 subclasses Hardtanh: ReLU6 is listed first
    (nn.Sigmoid, "act:sigmoid"),
    (nn.Hardsigmoid, "act:hardsigmoid"),
    (nn.SiLU, "act:silu"),
    (nn.Hardswish, "act:hardswish"),
    (nn.Tanh, "act:tanh"),
    (nn.GELU, "act:gelu"),
    (nn.LeakyReLU, "act:leaky_relu"),
    (nn.ELU, "act:elu"),
    (nn.Softmax, "act:softmax"),
    (nn.Mish, "act:mish"),
]

FREE_MODULES: tuple[type, ...] = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.dropout._DropoutNd,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.modules.padding.CircularPad2d,
)

ACTIVATION_FUNCTIONS: dict[object, str] = {
    F.relu: "act:relu",
    torch.relu: "act:relu",
    F.relu_: "act:relu",
    torch.relu_: "act:relu",
    F.relu6: "act:relu6",
    F.hardtanh: "act:hardtanh",
    F.hardtanh_: "act:hardtanh",
    torch.sigmoid: "act:sigmoid",
    F.sigmoid: "act:sigmoid",
    F.hardsigmoid: "act:hardsigmoid",
    F.silu: "act:silu",
    F.hardswish: "act:hardswish",
    torch.tanh: "act:tanh",
    F.tanh: "act:tanh",
    F.gelu: "act:gelu",
    F.leaky_relu: "act:leaky_relu",
    F.leaky_relu_: "act:leaky_relu",
    F.elu: "act:elu",
    F.softmax: "act:softmax",
    torch.softmax: "act:softmax",
    F.mish: "act:mish",
    torch.sign: "act:sign",
}

#: Unary elementwise ops by base name: tensor methods (``x.exp()``, ``x.exp_()``) and aten ops share them.
UNARY_KINDS: dict[str, str] = {
    "relu": "act:relu",
    "sigmoid": "act:sigmoid",
    "silu": "act:silu",
    "hardswish": "act:hardswish",
    "hardsigmoid": "act:hardsigmoid",
    "tanh": "act:tanh",
    "gelu": "act:gelu",
    "leaky_relu": "act:leaky_relu",
    "elu": "act:elu",
    "mish": "act:mish",
    "sign": "act:sign",
    "exp": "act:exp",
    "log": "act:log",
    "sqrt": "act:sqrt",
    "rsqrt": "act:rsqrt",
    "abs": "act:abs",
    "neg": "act:neg",
    "reciprocal": "act:reciprocal",
    "gt": "act:compare",
    "lt": "act:compare",
    "ge": "act:compare",
    "le": "act:compare",
    "eq": "act:compare",
    "ne": "act:compare",
}

#: Tensor methods of the unary ops (plain, in-place, and the comparison dunders).
ACTIVATION_METHODS: dict[str, str] = {
    **{m: k for n, k in UNARY_KINDS.items() for m in (n, n + "_")},
    **{f"__{n}__": UNARY_KINDS[n] for n in ("gt", "lt", "ge", "le")},
    "softmax": "act:softmax",
}

CLAMP_FUNCTIONS = {torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max}
CLAMP_METHODS = {"clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_"}

ELEMENTWISE_FUNCTIONS: dict[object, str] = {
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    operator.sub: "sub",
    operator.isub: "sub",
    torch.sub: "sub",
    torch.rsub: "sub",
    operator.mul: "mul",
    operator.imul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    operator.itruediv: "div",
    torch.div: "div",
    torch.true_divide: "div",
}

ELEMENTWISE_METHODS: dict[str, str] = {
    "add": "add",
    "add_": "add",
    "sub": "sub",
    "sub_": "sub",
    "mul": "mul",
    "mul_": "mul",
    "div": "div",
    "div_": "div",
    "__add__": "add",
    "__radd__": "add",
    "__iadd__": "add",
    "__sub__": "sub",
    "__rsub__": "sub",
    "__mul__": "mul",
    "__rmul__": "mul",
    "__truediv__": "div",
}

MATMUL_FUNCTIONS = {torch.matmul, operator.matmul, torch.bmm, torch.mm, torch.einsum}
MATMUL_METHODS = {"matmul", "bmm", "mm", "__matmul__"}

REDUCE_FUNCTIONS = {torch.mean: "mean", torch.sum: "sum"}
REDUCE_METHODS = {"mean": "mean", "sum": "sum"}

FREE_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.cat,
    torch.concat,
    torch.stack,
    torch.chunk,
    torch.split,
    torch.transpose,
    torch.permute,
    torch.squeeze,
    torch.unsqueeze,
    torch.narrow,
    torch.t,
    torch.clone,
    torch.zeros_like,
    torch.ones_like,
    torch.roll,
    torch.tensor_split,
    torch.unbind,
    torch.movedim,
    operator.getitem,
    getattr,
    F.pad,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
    F.pixel_shuffle,
    F.pixel_unshuffle,
}

FREE_METHODS = {
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "unflatten",
    "permute",
    "transpose",
    "t",
    "contiguous",
    "size",
    "dim",
    "squeeze",
    "unsqueeze",
    "chunk",
    "split",
    "expand",
    "expand_as",
    "repeat",
    "narrow",
    "detach",
    "clone",
    "float",
    "half",
    "double",
    "long",
    "int",
    "bool",
    "to",
    "type",
    "type_as",
    "__getitem__",
    "unbind",
    "numel",
}

# Quantise/dequantise between FP32-representable formats is free (official rules §3.1).
QUANT_MODULE_NAMES = {"FakeQuantize", "FusedMovingAvgObsFakeQuantize", "QuantStub", "DeQuantStub"}
