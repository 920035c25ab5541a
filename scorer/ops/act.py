"""Activations and unary elementwise functions (kinds ``act:*``): one row per call, costed per output element.

Module, functional, method and operator forms of one function give one kind: ``nn.ReLU()``, ``F.relu``,
``torch.relu``, ``x.relu()``, ``x.relu_()`` and aten ``relu`` are all ``act:relu``.
"""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from rules.records import Op
from scorer.ops.call import Call, plain
from scorer.ops.registry import register
from scorer.ops.values import Val

#: base name -> (kind, modules, functions). Methods ``name``/``name_`` and aten ``name`` come with it.
_UNARY: dict[str, tuple[str, tuple[type, ...], tuple[object, ...]]] = {
    "relu": ("act:relu", (nn.ReLU,), (F.relu, torch.relu, F.relu_, torch.relu_)),
    "sigmoid": ("act:sigmoid", (nn.Sigmoid,), (torch.sigmoid, F.sigmoid)),
    "hardsigmoid": ("act:hardsigmoid", (nn.Hardsigmoid,), (F.hardsigmoid,)),
    "silu": ("act:silu", (nn.SiLU,), (F.silu,)),
    "hardswish": ("act:hardswish", (nn.Hardswish,), (F.hardswish,)),
    "tanh": ("act:tanh", (nn.Tanh,), (torch.tanh, F.tanh)),
    "gelu": ("act:gelu", (nn.GELU,), (F.gelu,)),
    "leaky_relu": ("act:leaky_relu", (nn.LeakyReLU,), (F.leaky_relu, F.leaky_relu_)),
    "elu": ("act:elu", (nn.ELU,), (F.elu,)),
    "selu": ("act:selu", (nn.SELU,), (F.selu, torch.selu)),
    "mish": ("act:mish", (nn.Mish,), (F.mish,)),
    "sign": ("act:sign", (), (torch.sign,)),
    "exp": ("act:exp", (), (torch.exp,)),
    "erf": ("act:erf", (), (torch.erf, torch.special.erf)),
    "log": ("act:log", (), (torch.log,)),
    "sqrt": ("act:sqrt", (), (torch.sqrt,)),
    "rsqrt": ("act:rsqrt", (), (torch.rsqrt,)),
    "abs": ("act:abs", (), (torch.abs,)),
    "neg": ("act:neg", (), (torch.neg, operator.neg)),
    "logical_not": ("act:not", (), (torch.logical_not,)),
    "bitwise_not": ("act:not", (), (torch.bitwise_not, operator.invert)),
    "reciprocal": ("act:reciprocal", (), (torch.reciprocal,)),
}
for _base, (_kind, _mods, _fns) in list(_UNARY.items()):  # the in-place function forms (torch.sigmoid_, F.elu_)
    _UNARY[_base] = (_kind, _mods, _fns + tuple(
        f for f in (getattr(torch, _base + "_", None), getattr(F, _base + "_", None)) if f is not None and f not in _fns))
_COMPARE = ("gt", "lt", "ge", "le", "eq", "ne")
_KIND_OF_BASE = ({base: kind for base, (kind, _, _) in _UNARY.items()} | {c: "act:compare" for c in _COMPARE}
                 | {"special_erf": "act:erf"})
_KIND_OF_TARGET: dict[object, str] = {}
for _base, (_kind, _mods, _fns) in _UNARY.items():
    for _t in (*_mods, *_fns, _base, _base + "_"):
        _KIND_OF_TARGET[_t] = _kind
for _c in _COMPARE:
    for _t in (getattr(torch, _c), getattr(operator, _c), _c, _c + "_", f"__{_c}__"):
        _KIND_OF_TARGET[_t] = "act:compare"
_KIND_OF_TARGET["__invert__"] = "act:not"  # x.__invert__(), what ~x calls

#: Comparison targets (their output is boolean, unlike the other unary functions').
COMPARISONS = frozenset(t for t, k in _KIND_OF_TARGET.items() if k == "act:compare")


def _layer_class(mod: nn.Module) -> type:
    """The torch.nn class a layer is registered by: its own or, for a subclass (``class MyReLU(nn.ReLU)``),
    the nearest base the registry matched it by."""
    return next(c for c in type(mod).__mro__ if c in _KIND_OF_TARGET)


def _unary_kind(call: Call) -> str:
    if call.form == "aten":
        kind = _KIND_OF_BASE[call.base]
        if kind == "act:elu" and call.value(2, "scale", 1) != 1:  # F.selu as the dispatch recorder sees it
            return "act:selu"
    else:
        kind = _KIND_OF_TARGET[_layer_class(call.target) if call.form == "module" else call.target]
    if kind == "act:gelu":
        approximate = call.module.approximate if call.form == "module" else call.value(1, "approximate", "none")
        if approximate == "tanh":
            return "act:gelu_tanh"
    return kind


@register(
    "unary",
    modules=[m for _, mods, _ in _UNARY.values() for m in mods],
    functions=[f for _, _, fns in _UNARY.values() for f in fns]
    + [getattr(torch, c) for c in _COMPARE] + [getattr(operator, c) for c in _COMPARE],
    methods=[m for b in (*_UNARY, *_COMPARE) for m in (b, b + "_")] + [f"__{c}__" for c in _COMPARE] + ["__invert__"],
    aten=[*_UNARY, *_COMPARE, "special_erf"],
)
def unary(call: Call) -> Op:
    """A function applied per element (ReLU, sigmoid, exp, comparisons, ...); a parameter it reads (a learned
    gate ``torch.sigmoid(self.alpha)``) is stored here."""
    return call.op(_unary_kind(call), call.params())


@register("where", functions=(torch.where, torch.masked_fill, torch.triu, torch.tril),
          methods=("where", "masked_fill", "masked_fill_", "triu", "tril", "triu_", "tril_"),
          aten=("where", "masked_fill", "triu", "tril"))
def where(call: Call) -> Op:
    """``where(cond, a, b)``, ``x.masked_fill(mask, v)`` (= ``where(mask, v, x)``) and ``triu``/``tril`` (= ``where``
    of the triangle, x, 0: a causal mask made in the forward): one selection per output element."""
    return call.op("act:select", call.params())


def _number(v: object) -> float | None:
    v = plain(v)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


_SQUARE = (torch.square, "square", "square_")


@register("pow", functions=(torch.pow, operator.pow, operator.ipow, torch.square),
          methods=("pow", "pow_", "__pow__", "__rpow__", "__ipow__", "square", "square_"), aten=("pow", "square"))
def power(call: Call) -> Op:
    """``x ** e``: ``exponent`` is e when it is a number and x a tensor, None when the exponent is a tensor
    (``x ** y``, ``2 ** x``, aten ``pow.Scalar``); ``square`` is ``x ** 2``; a learned base or exponent is
    stored here."""
    if call.target in _SQUARE or call.base == "square":
        return call.op("pow", call.params(), attrs={"exponent": 2})
    base, exp = call.arg(0, "input"), call.arg(1, "exponent")
    if call.target == "__rpow__":
        base, exp = exp, base
    exponent = _number(exp) if isinstance(base, Val) and base.is_tensor else None
    return call.op("pow", call.params(), attrs={"exponent": exponent})


def _bounds_kind(lo: float, hi: float) -> str:
    return "act:relu6" if (lo, hi) == (0.0, 6.0) else "act:hardtanh"


@register("hardtanh", modules=(nn.Hardtanh,), functions=(F.hardtanh, F.hardtanh_, F.relu6),
          aten=("hardtanh", "relu6"))
def hardtanh(call: Call) -> Op:
    """Clamping to [lo, hi]: ``act:relu6`` for [0, 6] (nn.ReLU6 subclasses nn.Hardtanh), else ``act:hardtanh``."""
    if call.form == "module":
        return call.op(_bounds_kind(call.module.min_val, call.module.max_val))
    if call.target is F.relu6 or call.base == "relu6":
        return call.op("act:relu6")
    lo = float(call.value(1, "min_val", -1.0))  # type: ignore[arg-type]
    hi = float(call.value(2, "max_val", 1.0))  # type: ignore[arg-type]
    return call.op(_bounds_kind(lo, hi))


_CLAMP_FUNCTIONS = (torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max,
                    torch.clamp_, torch.clip_, torch.clamp_min_, torch.clamp_max_)
_CLAMP_METHODS = ("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_")


@register("clamp", functions=_CLAMP_FUNCTIONS, methods=_CLAMP_METHODS, aten=("clamp", "clip", "clamp_min", "clamp_max"))
def clamp(call: Call) -> Op:
    """clamp/clip: ``bounds`` is the number of bounds given (one comparison each)."""
    name = call.base or (call.target if isinstance(call.target, str) else call.target.__name__)  # type: ignore[union-attr]
    if name.startswith(("clamp_min", "clamp_max")):
        bounds = 1
    else:
        bounds = sum(call.arg(i, k) is not None for i, k in ((1, "min"), (2, "max")))
    return call.op("act:clamp", call.params(), attrs={"bounds": bounds})


def implicit_softmax_dim(ndim: int) -> int:
    """The dimension torch's softmax uses when none is given (its legacy rule: 0 for 0-, 1- and 3-d, else 1)."""
    return 0 if ndim in (0, 1, 3) else 1


_LOG_SOFTMAX = (F.log_softmax, torch.log_softmax, "log_softmax", "_log_softmax")


@register("softmax", modules=(nn.Softmax, nn.LogSoftmax), functions=(F.softmax, torch.softmax, F.log_softmax,
          torch.log_softmax), methods=("softmax", "log_softmax"), aten=("_softmax", "softmax", "_log_softmax",
          "log_softmax"))
def softmax(call: Call) -> Op:
    """Softmax (or log-softmax) over ``n`` values along its dimension."""
    x = call.acts[0]
    dim = call.module.dim if call.form == "module" else call.value(1, "dim")
    if dim is None:
        dim = implicit_softmax_dim(x.meta.dim())
    if call.form == "module":
        log = isinstance(call.target, nn.LogSoftmax)
    else:
        log = (call.base or call.target) in _LOG_SOFTMAX
    kind = "act:log_softmax" if log else "act:softmax"
    return call.op(kind, acts=[x], attrs={"n": x.shape[int(dim)]})  # type: ignore[arg-type]


@register("softplus", modules=(nn.Softplus,), functions=(F.softplus,), aten=("softplus",))
def softplus(call: Call) -> Op:
    """Softplus with its ``beta`` (the module's attribute, or the call's argument; 1 by default)."""
    beta = call.module.beta if call.form == "module" else call.value(1, "beta", 1.0)
    return call.op("act:softplus", call.params(), attrs={"beta": float(beta)})  # type: ignore[arg-type]


@register("prelu", modules=(nn.PReLU,), functions=(F.prelu,), aten=("prelu", "_prelu_kernel"), weighted=True)
def prelu(call: Call) -> Op:
    """PReLU: learned slopes, stored."""
    if call.form == "module":
        return call.op("act:prelu", call.module_weights(("weight", "prelu_weight")), acts=call.acts[:1])
    return call.op("act:prelu", call.stored(call.args[1], "prelu_weight"), acts=[call.args[0]])
