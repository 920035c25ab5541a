"""Reductions, pooling and resampling: ``mean``, ``sum``, ``max``, ``cumsum``, ``avgpool``, ``maxpool``,
``upsample:*``."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rules.records import Op
from scorer.ops.call import Call
from scorer.ops.registry import register
from scorer.ops.values import Val


def adaptive_window_sum(n_in: int, n_out: int) -> int:
    """Σ of PyTorch's adaptive pooling window sizes along one dimension: window i spans
    [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out)), so windows may differ in size and overlap."""
    return sum(-((-(i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))


def pool_window(in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: object) -> float:
    """Values pooled per output. Adaptive pools (``kernel`` None): the mean window size (windows are products
    of per-dimension windows, so the mean is the product of per-dimension means); × outputs it is exact."""
    if kernel is None:
        n = len(out_shape) - 2 if len(out_shape) > 2 else 1
        return math.prod(adaptive_window_sum(i, o) / o for i, o in zip(in_shape[-n:], out_shape[-n:], strict=True))
    if isinstance(kernel, int):
        return kernel ** max(1, len(out_shape) - 2)
    return math.prod(kernel)  # type: ignore[arg-type]


def _spatial_is_one(shape: tuple[int, ...]) -> bool:
    return len(shape) > 2 and all(s == 1 for s in shape[2:])


@register("reduce", functions=(torch.mean, torch.sum), methods=("mean", "sum"), aten=("mean", "sum"))
def reduce(call: Call) -> Op:
    """mean/sum over some dimensions: ``reduce`` values per output."""
    kind = call.base or (call.target if isinstance(call.target, str) else call.target.__name__)  # type: ignore[union-attr]
    x = call.args[0]
    n_out = math.prod(call.out_shape)
    return call.op(kind, call.params(), acts=[x] if x.is_activation else [],
                   attrs={"reduce": math.prod(x.shape) // max(1, n_out)})


@register("max", functions=(torch.max, torch.amax, torch.argmax, torch.maximum),
          methods=("max", "amax", "argmax", "maximum"), aten=("max", "amax", "argmax", "maximum"))
def max_reduce(call: Call) -> Op:
    """max/amax/argmax over some dimensions (all of them without ``dim``): ``reduce`` values per output;
    ``torch.max(x, y)`` or ``torch.maximum(x, y)`` of two tensors is the elementwise maximum, one comparison
    per output (``reduce`` 2)."""
    x, other = call.args[0], call.arg(1, "other")
    if isinstance(other, Val) and other.is_tensor:
        return call.op("max", call.params(), attrs={"reduce": 2})
    n_out = math.prod(call.out_shape)
    return call.op("max", call.params(), acts=[x] if x.is_activation else [],
                   attrs={"reduce": math.prod(x.shape) // max(1, n_out)})


@register("cumsum", functions=(torch.cumsum,), methods=("cumsum", "cumsum_"), aten=("cumsum",))
def cumsum(call: Call) -> Op:
    """Running sum along ``dim``: rows of ``n`` values."""
    x = call.args[0]
    n = x.shape[int(call.value(1, "dim"))] if x.meta.dim() else 1  # type: ignore[arg-type]
    return call.op("cumsum", call.params(), acts=[x] if x.is_activation else [], attrs={"n": n})


_ADAPTIVE_AVG = (nn.modules.pooling._AdaptiveAvgPoolNd,)


@register("avgpool", modules=(nn.modules.pooling._AvgPoolNd, *_ADAPTIVE_AVG),
          functions=(F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                     F.adaptive_avg_pool3d),
          aten=("avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                "_adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool3d"), whole=True)
def avg_pool(call: Call) -> Op:
    """Average pooling; an adaptive pool to one value per channel is a ``mean`` (global average pooling). Its
    modules are recorded whole on every capture: aten's ``kernel_size`` is always a list, and a team's rule reads
    whether the layer was given an int (``kernel_int``, BrAIn's count)."""
    x = call.args[0]
    out = call.out_shape
    if call.form == "module":
        adaptive = isinstance(call.target, _ADAPTIVE_AVG)
        kernel = None if adaptive else call.module.kernel_size
    else:
        name = call.base or call.target.__name__  # type: ignore[union-attr]
        adaptive = "adaptive" in name
        kernel = None if adaptive else call.value(1, "kernel_size")
    if adaptive and _spatial_is_one(out):
        return call.op("mean", acts=[x], attrs={"reduce": math.prod(x.shape[2:])})
    attrs = {"window": pool_window(x.shape, out, kernel)}
    if isinstance(kernel, int):
        attrs["kernel_int"] = kernel
    return call.op("avgpool", acts=[x], attrs=attrs)


@register("maxpool", modules=(nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd),
          functions=(F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                     F.adaptive_max_pool3d),
          aten=("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
                "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"))
def max_pool(call: Call) -> Op:
    """Max pooling over ``window`` values per output."""
    x = call.args[0]
    if call.form == "module":
        kernel = getattr(call.module, "kernel_size", None)
    else:
        name = call.base or call.target.__name__  # type: ignore[union-attr]
        kernel = None if "adaptive" in name else call.value(1, "kernel_size")
    return call.op("maxpool", acts=[x], attrs={"window": pool_window(x.shape, call.out_shape, kernel)})


_UPSAMPLE_MODES = {"nearest": "upsample:nearest", "nearest-exact": "upsample:nearest", "bilinear": "upsample:bilinear"}


@register("upsample", modules=(nn.Upsample,), functions=(F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear),
          aten=("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
                "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_bilinear2d",
                "_upsample_bilinear2d_aa"))
def upsample(call: Call) -> Op:
    """Resampling: nearest (and nearest-exact) is a copy, bilinear interpolates; other modes have no rule."""
    if call.form == "module":
        mode = call.module.mode
    elif call.form == "aten":
        mode = "nearest" if "nearest" in call.base else "bilinear"
    elif call.target is F.upsample_nearest:
        mode = "nearest"
    elif call.target is F.upsample_bilinear:
        mode = "bilinear"
    else:
        mode = call.value(3, "mode", "nearest")
    kind = _UPSAMPLE_MODES.get(mode)  # type: ignore[arg-type]
    return call.op(kind, acts=call.acts[:1]) if kind else call.unknown(f"(mode={mode})")
