"""Quantised models (torch.ao): quantisers (kind ``quant``), QAT layers with a folded BatchNorm, and converted int8
layers, translated identically on every capture path.

- A quantiser (FakeQuantize, FusedMovingAvgObsFakeQuantize, converted Quantize/DeQuantize, aten
  ``fused_moving_avg_obs_fake_quant`` / ``fake_quantize_per_*_affine``, ``quantize_per_tensor``, ``dequantize``)
  is a ``quant`` op whose output carries ``bits``: free between FP32-representable formats (official_rules.md
  §3.1 "Conversions", §2.4). Its scale, zero point and running range are buffers, never stored by the official
  rules; its floating-point buffers ride along as ``qparam`` references for a team rule set that stores them. A quantiser
  applied to a parameter (``weight_fake_quant``) leaves it that parameter, stored by the op that uses it.
  Observers and switched-off fake-quantisers pass their input through (``free``); the observers torch.ao
  hooks onto a layer (``activation_post_process``) run after it on every path, fx included.
- A fused QAT module (``torch.ao.nn.intrinsic.qat``: ConvBn, ConvBnReLU, ConvReLU, LinearReLU, LinearBn1d)
  simulates its folded BatchNorm with weight arithmetic, so it is captured whole on every path (``whole``)
  and counted as its parts: conv/linear, then BatchNorm, then ReLU, each part's parameters stored once.
- A converted int8 layer (``torch.ao.nn.quantized`` Conv/Linear and their fused ReLU forms, the dynamic Linear)
  is a conv/linear whose weight is the packed int8 tensor (8-bit storage, nonzeros from its integer values);
  its bias is the float32 tensor the packed parameters hold, stored at the bias width (32 unless configured).
  Captured whole: its packed parameters are not tensors that torch.export or fake tensors can follow.
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn as nn
from torch.ao.quantization.fake_quantize import FakeQuantizeBase
from torch.ao.quantization.observer import ObserverBase

from rules.records import Op, WeightRef
from scorer.ops.call import Call, module_attr
from scorer.ops.dot import conv_attrs
from scorer.ops.registry import memo_table, register

_QUANT_NAMES = {"FakeQuantize", "FusedMovingAvgObsFakeQuantize"}


def range_bits(qmin: int, qmax: int) -> int:
    """Bits spanning the integer range qmin..qmax (-128..127: 8; 0..127, fbgemm's reduce_range: 7)."""
    return max(1, math.ceil(math.log2(qmax - qmin + 1)))


def _dtype_bits(dtype: object) -> int | None:
    if isinstance(dtype, torch.dtype):
        return torch.empty((), dtype=dtype).element_size() * 8
    return None


def _disabled(mod: nn.Module) -> bool:
    """A torch.ao fake-quantiser switched off (``disable_fake_quant``): it passes its input through."""
    on = getattr(mod, "fake_quant_enabled", None) if isinstance(mod, FakeQuantizeBase) else None
    return isinstance(on, torch.Tensor) and on.numel() > 0 and on.device.type != "meta" and not bool(on[0])


_NONE = object()


def _plain_attr(mod: nn.Module, name: str) -> object:
    """A plain (non-tensor) attribute of ``mod``, or None: read from the instance and class dicts, without
    ``nn.Module.__getattr__``'s slow miss (this runs for every layer call of every capture)."""
    v = mod.__dict__.get(name, _NONE)
    return getattr(type(mod), name, None) if v is _NONE else v


def quant_bits(mod: nn.Module) -> int | None:
    """Bit-width of an activation quantiser module, or None when ``mod`` is not one: an integer ``bits``
    attribute, a ``quant_min``/``quant_max`` range (torch.ao fake-quantisers), the dtype of a converted
    ``Quantize`` (quint8: 8), or 32 for a ``DeQuantize``. Not quantisers: QuantStub/DeQuantStub (identity;
    once prepared, the observer torch.ao hooks onto them is), observers (they only watch the range) and a
    fake-quantiser switched off."""
    d = mod.__dict__
    if "bits" not in d and "quant_min" not in d and "quant_max" not in d and _plain_class(type(mod)):
        return None  # neither the instance nor its class holds anything tested below
    bits = _plain_attr(mod, "bits")
    if isinstance(bits, int) and not isinstance(bits, bool):
        return bits
    if isinstance(mod, ObserverBase) or _disabled(mod):
        return None
    if isinstance(mod, nnq.Quantize):
        return _dtype_bits(mod.dtype) or 32
    if isinstance(mod, nnq.DeQuantize):
        return 32
    qmin, qmax = _plain_attr(mod, "quant_min"), _plain_attr(mod, "quant_max")
    if type(mod).__name__ in _QUANT_NAMES or qmin is not None and qmax is not None:
        if isinstance(qmin, int) and isinstance(qmax, int) and qmax > qmin:
            return range_bits(qmin, qmax)
        return 32
    return None


def _plain_class(cls: type) -> bool:
    """True when ``cls`` is none of torch.ao's quantiser or observer classes (nor named like one) and holds no
    ``bits``/``quant_min``/``quant_max`` of its own: an instance without them is then no quantiser. Answered
    once per class for a capture (``memoised``), else each time."""
    table = memo_table("quant_plain_class")
    if table is not None:
        hit = table.get(cls)
        if hit is not None:
            return hit
    plain = (not issubclass(cls, (ObserverBase, FakeQuantizeBase, nnq.Quantize, nnq.DeQuantize))
             and cls.__name__ not in _QUANT_NAMES
             and all(getattr(cls, n, None) is None for n in ("bits", "quant_min", "quant_max")))
    if table is not None:
        table[cls] = plain
    return plain


#: torch.ao quantiser and observer classes: identity-shaped, captured whole (an observer's min/max and a
#: fake-quantiser's range updates are not the model's arithmetic).
QUANTISERS = (nnq.Quantize, nnq.DeQuantize, FakeQuantizeBase, ObserverBase)


@register("quant", modules=QUANTISERS, claims=lambda mod: quant_bits(mod) is not None, weighted=True, whole=True)
def quant(call: Call) -> Op:
    """An activation quantiser module: its output carries ``bits`` (free between FP32-representable formats);
    an observer or a fake-quantiser switched off passes its input through (``free``)."""
    bits = quant_bits(call.module)
    if bits is None:
        return call.op("free", acts=call.acts[:1])
    return call.op("quant", quant_params(call), acts=call.acts[:1],
                   attrs={"bits": bits, "integer": isinstance(call.module, nnq.Quantize)})


def quant_params(call: Call) -> list[WeightRef]:
    """The quantiser's own floating-point buffers (its range or scale) as ``qparam`` references, keyed by name so
    that each is seen once over several paths. The official rules store none of them (``RuleSet.cost_quant``);
    a team rule set that counted them reads them here (MIT-HAN-Lab's ``max_abs``/``inv_scale``, team_scores.md
    §2.5)."""
    prefix = f"{call.path}." if call.path else ""
    return [WeightRef(role="qparam", name=prefix + name, tensor=None, shape=tuple(b.shape))
            for name, b in call.module._buffers.items() if isinstance(b, torch.Tensor) and b.is_floating_point()]


def hooked_quantisers(mod: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """The (input, output) quantisers torch.ao runs on ``mod`` by forward hooks (eager-mode prepare/prepare_qat:
    ``_observer_forward_pre_hook`` / ``_observer_forward_hook`` call ``mod.activation_post_process``)."""
    if not mod._forward_pre_hooks and not mod._forward_hooks:  # no hook: nothing runs around it
        return None, None
    apm = module_attr(mod, "activation_post_process")
    if not isinstance(apm, nn.Module):
        return None, None
    tqq = importlib.import_module("torch.ao.quantization.quantize")  # the package shadows it by a function
    pre = any(h is getattr(tqq, "_observer_forward_pre_hook", None) for h in mod._forward_pre_hooks.values())
    post = any(h is getattr(tqq, "_observer_forward_hook", None) for h in mod._forward_hooks.values())
    return (apm if pre else None), (apm if post else None)


#: aten quantisers -> positions of (quant_min, quant_max) in their schema.
_FAKE_QUANT_ATEN = {
    "fused_moving_avg_obs_fake_quant": (8, 9),
    "_fused_moving_avg_obs_fq_helper": (8, 9),
    "_fused_moving_avg_obs_fq_helper_functional": (8, 9),
    "fake_quantize_per_tensor_affine": (3, 4),
    "fake_quantize_per_tensor_affine_cachemask": (3, 4),
    "_fake_quantize_per_tensor_affine_cachemask_tensor_qparams": (4, 5),
    "fake_quantize_per_channel_affine": (4, 5),
    "fake_quantize_per_channel_affine_cachemask": (4, 5),
    "_fake_quantize_learnable_per_tensor_affine": (3, 4),
    "_fake_quantize_learnable_per_channel_affine": (4, 5),
}


_FUSED_FAKE_QUANT = ("fused_moving_avg_obs_fake_quant", "_fused_moving_avg_obs_fq_helper",
                     "_fused_moving_avg_obs_fq_helper_functional")
_QUANT_FUNCTIONS = (torch.fake_quantize_per_tensor_affine, torch.fake_quantize_per_channel_affine,
                    torch.fused_moving_avg_obs_fake_quant, torch.quantize_per_tensor, torch.quantize_per_channel,
                    torch.dequantize)


@register("fake_quant_aten", functions=_QUANT_FUNCTIONS, methods=("dequantize",),
          aten=(*_FAKE_QUANT_ATEN, "quantize_per_tensor", "quantize_per_channel", "dequantize",
                "quantize_per_tensor_dynamic"))
def fake_quant_aten(call: Call) -> Op:
    """Quantiser functions (aten, torch.* and ``Tensor.dequantize``): bits from their (quant_min, quant_max)
    arguments, a quantised dtype's width, or 32 for ``dequantize``. The first argument is the quantised
    value; scale, zero point and ranges are buffers."""
    name = call.base or (call.target if isinstance(call.target, str) else call.target.__name__)  # type: ignore[union-attr]
    x = call.args[0]
    if name in _FUSED_FAKE_QUANT:
        on = call.arg(2, "fake_quant_on")
        if on.real is not None and on.real.device.type != "meta" and not bool(on.real.reshape(-1)[0]):
            return call.op("free", acts=[x] if x.is_activation else [])  # switched off: passes x through
    if name in _FAKE_QUANT_ATEN:
        lo, hi = _FAKE_QUANT_ATEN[name]
        bits = range_bits(int(call.value(lo, "quant_min")), int(call.value(hi, "quant_max")))  # type: ignore[arg-type]
    elif name == "dequantize":
        bits = 32
    else:
        dtype = call.value(3 if name != "quantize_per_channel" else 4, "dtype")
        bits = _dtype_bits(dtype) or 32
    integer = name.startswith("quantize_per")
    return call.op("quant", acts=[x] if x.is_activation else [], attrs={"bits": bits, "integer": integer})


# ---------------------------------------------------------------------------------- fused QAT modules
_QAT_CONV_RELU = (nniqat.ConvReLU1d, nniqat.ConvReLU2d, nniqat.ConvReLU3d)
_QAT_FUSED = (nniqat.modules.conv_fused._ConvBnNd, *_QAT_CONV_RELU, nniqat.LinearReLU, nniqat.LinearBn1d)


def _part(call: Call, attr: str) -> Call:
    """The call of child ``attr`` (the BatchNorm of a fused module), for its parameters under its own names."""
    path = f"{call.path}.{attr}" if call.path else attr
    return Call("module", getattr(call.module, attr), call.name, path, call.args, call.kwargs, call.out, call.tname)


def _relu_after(call: Call, prev: Op, kind: str = "act:relu") -> Op:
    return call.op(kind, acts=[], inputs=[prev.name], suffix="_relu", out_shape=prev.out_shape)


@register("qat_fused", modules=_QAT_FUSED, weighted=True, whole=True)
def qat_fused(call: Call) -> list[Op]:
    """A fused QAT layer as its parts: conv/linear (weight through ``weight_fake_quant``: its bits), its
    BatchNorm (folded by the rule set as for the float model), its ReLU."""
    mod = call.module
    x = call.acts[0]
    ws = call.module_weights(("weight", "weight"), ("bias", "bias"))
    has_bias = getattr(mod, "bias", None) is not None
    if isinstance(mod, nn.modules.conv._ConvNd):
        attrs = conv_attrs(tuple(mod.weight.shape), mod.groups, mod.stride, mod.padding, mod.dilation, has_bias)
        kind = "conv"
    else:
        attrs = {"vector_len": mod.in_features, "out_features": mod.out_features, "has_bias": has_bias}
        kind = "linear"
    ops = [call.op(kind, ws, acts=[x], attrs=attrs, suffix="_" + kind)]
    bn = getattr(mod, "bn", None)
    if isinstance(bn, nn.modules.batchnorm._NormBase):
        part = _part(call, "bn")
        ops.append(part.op("bn", part.module_weights(("weight", "bn_weight"), ("bias", "bn_bias")), acts=[],
                           attrs={"channels": bn.num_features}, suffix="_bn", inputs=[ops[-1].name],
                           out_shape=ops[-1].out_shape))
    if "ReLU" in type(mod).__name__:
        ops.append(_relu_after(call, ops[-1]))
    return ops


# ---------------------------------------------------------------------------------- converted int8 modules
def _int_weight(call: Call, w: torch.Tensor) -> WeightRef:
    """The packed weight as stored: its integer values (zero exactly where the weight is zero)."""
    ints = w.int_repr()
    zero_points = w.q_per_channel_zero_points() if w.qscheme() in (torch.per_channel_affine,
                                                                  torch.per_channel_symmetric) else w.q_zero_point()
    if torch.as_tensor(zero_points).any():
        ints = (w.dequantize() != 0).to(ints.dtype)
    prefix = f"{call.path}." if call.path else ""
    return WeightRef(role="weight", name=f"{prefix}weight", tensor=ints, shape=tuple(ints.shape), ident=id(call.module))


def _float_bias(call: Call, b: torch.Tensor | None) -> list[WeightRef]:
    if b is None:
        return []
    prefix = f"{call.path}." if call.path else ""
    b = b.detach()
    return [WeightRef(role="bias", name=f"{prefix}bias", tensor=b, shape=tuple(b.shape), ident=id(call.module) + 1)]


def packed_int8(mod: nn.Module) -> bool:
    """True for a converted int8 layer, whose weights are packed (not tensors torch.export follows)."""
    return isinstance(mod, _INT8)


def _fused_act(mod: nn.Module) -> str | None:
    """The activation a converted fused layer applies (nniq.ConvReLU2d, LinearReLU, LinearLeakyReLU, LinearTanh)."""
    name = type(mod).__name__
    if "LeakyReLU" in name:
        return "act:leaky_relu"
    if "ReLU" in name:
        return "act:relu"
    return "act:tanh" if "Tanh" in name else None


_INT8 = (nnq.modules.conv._ConvNd, nnq.Linear)


@register("int8", modules=_INT8, weighted=True, whole=True)
def int8(call: Call) -> Op | list[Op]:
    """A converted int8 conv/linear (static or dynamic) and its fused activation."""
    mod = call.module
    if getattr(mod, "transposed", False) or "Add" in type(mod).__name__:
        return call.unknown()
    w, b = mod.weight(), mod.bias()
    ws = [_int_weight(call, w), *_float_bias(call, b)]
    x = call.acts[0]
    if isinstance(mod, nnq.Linear):
        attrs = {"vector_len": mod.in_features, "out_features": mod.out_features, "has_bias": b is not None}
        op = call.op("linear", ws, acts=[x], attrs=attrs)
    else:
        attrs = conv_attrs(tuple(w.shape), mod.groups, mod.stride, mod.padding, mod.dilation, b is not None)
        op = call.op("conv", ws, acts=[x], attrs=attrs)
    ops = [op]
    act = _fused_act(mod)
    if act is not None:
        ops.append(_relu_after(call, op, act))
    if not isinstance(mod, nnqd.Linear):  # a static layer requantises its output to quint8 (mod.scale, zero_point)
        ops.append(call.op("quant", acts=[], inputs=[ops[-1].name], suffix="_out", out_shape=op.out_shape,
                           attrs={"bits": 8, "integer": True}))
    return ops
