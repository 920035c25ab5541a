"""Normalisation layers: ``bn``, ``layernorm``, ``groupnorm`` (InstanceNorm is GroupNorm with one channel per group),
``rmsnorm``."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rules.records import Op
from scorer.ops.call import Call
from scorer.ops.registry import register

_BN_ATEN = ("_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm", "_native_batch_norm_legit",
            "cudnn_batch_norm", "_batch_norm_impl_index", "_native_batch_norm_legit_functional")


@register("bn", modules=(nn.modules.batchnorm._NormBase,), functions=(F.batch_norm,), aten=_BN_ATEN, weighted=True)
def batch_norm(call: Call) -> Op:
    """BatchNorm with running statistics (eval): per-channel affine γ, β."""
    x = call.args[0]
    if call.form == "module":
        ws = call.module_weights(("weight", "bn_weight"), ("bias", "bn_bias"))
        return call.op("bn", ws, acts=[x], attrs={"channels": call.module.num_features})
    if call.form == "aten":
        w, b = call.args[1], call.args[2]
    else:
        w, b = call.arg(3, "weight"), call.arg(4, "bias")
    return call.op("bn", call.stored(w, "bn_weight") + call.stored(b, "bn_bias"), acts=[x],
                   attrs={"channels": x.shape[1]})


@register("instance_norm", modules=(nn.modules.instancenorm._InstanceNorm,), functions=(F.instance_norm,),
          aten=("instance_norm",), weighted=True)
def instance_norm(call: Call) -> Op:
    """Per-example, per-channel statistics computed at inference: GroupNorm with one channel per group. With running
    statistics instead (``track_running_stats`` in eval: ``use_input_stats=False``), BatchNorm's per-channel affine."""
    x = call.args[0]
    c = x.shape[1]
    if call.form == "module":
        running = call.module.track_running_stats and not call.module.training
    else:
        running = not call.value(5, "use_input_stats", True)
    roles = ("bn_weight", "bn_bias") if running else ("gn_weight", "gn_bias")
    if call.form == "module":
        ws = call.module_weights(("weight", roles[0]), ("bias", roles[1]))
    elif call.form == "aten":
        ws = call.stored(call.args[1], roles[0]) + call.stored(call.args[2], roles[1])
    else:
        ws = call.stored(call.arg(3, "weight"), roles[0]) + call.stored(call.arg(4, "bias"), roles[1])
    if running:
        return call.op("bn", ws, acts=[x], attrs={"channels": c})
    return call.op("groupnorm", ws, acts=[x], attrs={"groups": c, "channels": c})


@register("layernorm", modules=(nn.LayerNorm,), functions=(F.layer_norm,), aten=("layer_norm", "native_layer_norm"),
          weighted=True)
def layer_norm(call: Call) -> Op:
    """LayerNorm over the trailing ``normalized_shape``."""
    x = call.args[0]
    if call.form == "module":
        ws = call.module_weights(("weight", "ln_weight"), ("bias", "ln_bias"))
        shape = call.module.normalized_shape
    else:
        ws = call.stored(call.arg(2, "weight"), "ln_weight") + call.stored(call.arg(3, "bias"), "ln_bias")
        shape = call.value(1, "normalized_shape")
    return call.op("layernorm", ws, acts=[x], attrs={"norm_numel": math.prod(shape)})  # type: ignore[arg-type]


@register("groupnorm", modules=(nn.GroupNorm,), functions=(F.group_norm,), aten=("group_norm", "native_group_norm"),
          weighted=True)
def group_norm(call: Call) -> Op:
    """GroupNorm: statistics per example and group of channels, per-channel affine."""
    x = call.args[0]
    if call.form == "module":
        ws = call.module_weights(("weight", "gn_weight"), ("bias", "gn_bias"))
        groups = call.module.num_groups
    elif call.base == "native_group_norm":
        ws = call.stored(call.args[1], "gn_weight") + call.stored(call.args[2], "gn_bias")
        groups = int(call.value(6, "group"))  # type: ignore[arg-type]
    else:
        ws = call.stored(call.arg(2, "weight"), "gn_weight") + call.stored(call.arg(3, "bias"), "gn_bias")
        groups = int(call.value(1, "num_groups"))  # type: ignore[arg-type]
    return call.op("groupnorm", ws, acts=[x], attrs={"groups": groups, "channels": x.shape[1]})


@register("rmsnorm", modules=(nn.RMSNorm,), functions=(F.rms_norm, torch.rms_norm),
          aten=("rms_norm", "_fused_rms_norm"), weighted=True)
def rms_norm(call: Call) -> Op:
    """RMSNorm over the trailing ``normalized_shape``, optional γ (``rms_norm(x, shape, weight, eps)``)."""
    x = call.args[0]
    if call.form == "module":
        ws = call.module_weights(("weight", "ln_weight"))
        shape = call.module.normalized_shape
    else:
        ws = call.stored(call.arg(2, "weight"), "ln_weight")
        shape = call.value(1, "normalized_shape")
    return call.op("rmsnorm", ws, acts=[x], attrs={"norm_numel": math.prod(shape)})  # type: ignore[arg-type]
