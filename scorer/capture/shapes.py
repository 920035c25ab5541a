"""Output shapes of common layers by the formulas of their torch.nn docs, as meta tensors.

fx capture propagates shapes on the meta device. torch's meta kernels for convolutions and pools are
Python functions that check their arguments with ``torch._check``, whose first call imports
``torch.fx.experimental.symbolic_shapes`` and sympy, and an adaptive average pool, a mean over
dimensions or a concatenation decomposes through a ``torch._refs`` function whose first call imports ``torch._dynamo``:
together more than a second of a CLI run that needs only the shapes. Each function here returns the output's meta tensor, or None for
anything outside its plain case (another dtype, a quantised layer, a bad argument), which then goes to
torch's kernel as before, so that torch's own error messages are kept. ``tests/test_capture_shapes.py``
compares every function with torch on random configurations.
"""

from __future__ import annotations

import math

import torch
import torch.ao.nn.quantized as nnq
from torch import nn

#: The meta device, made once (a device string is parsed on every call that names it).
META = torch.device("meta")
_CONV = nn.modules.conv._ConvNd
_QUANTISED_CONV = nnq.modules.conv._ConvNd

__all__ = ["broadcast_shapes", "cat_output", "conv_output", "mean_output", "pool_output", "upsample_output"]


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> torch.Size:
    """``torch.broadcast_shapes(a, b)`` for two static shapes; RuntimeError when they do not broadcast."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(f"shapes {a} and {b} are not broadcastable (size {x} vs {y})")
        out.append(y if x == 1 else x)
    return torch.Size(out)


def _float_shape(x: object, dims: int) -> tuple[int, ...] | None:
    """The shape of ``x`` when it is a float32 tensor of ``dims`` spatial dimensions, batched or not, none of
    them empty; else None. Read once: each read of a tensor's shape is a call into torch."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        return None
    shape = tuple(x.shape)
    return shape if len(shape) in (dims + 1, dims + 2) and min(shape) > 0 else None


def _int_tuple(v: object, n: int) -> bool:
    """A tuple of ``n`` ints (exact types)."""
    if type(v) is not tuple or len(v) != n:
        return False
    for i in v:
        if type(i) is not int:
            return False
    return True


def conv_output(mod: nn.Module, x: object) -> torch.Tensor | None:
    """A float, non-transposed ``nn.Conv1d/2d/3d``'s output: ``(L + 2p - d(k - 1) - 1) // s + 1`` per
    spatial dimension (torch.nn.Conv2d docs), the input's with ``padding="same"``."""
    if not isinstance(mod, _CONV) or isinstance(mod, _QUANTISED_CONV) or mod.transposed:
        return None
    kernel, stride, dilation, padding = mod.kernel_size, mod.stride, mod.dilation, mod.padding
    n = len(kernel)
    if not (_int_tuple(kernel, n) and _int_tuple(stride, n) and _int_tuple(dilation, n)
            and (isinstance(padding, str) or _int_tuple(padding, n))):
        return None  # sizes a subclass keeps in another form: the meta kernel decides
    shape = _float_shape(x, n)
    groups, c_in, c_out = mod.groups, mod.in_channels, mod.out_channels
    if (shape is None or shape[-n - 1] != c_in or type(groups) is not int
            or groups < 1 or c_in % groups or c_out % groups):
        return None  # a mismatch torch reports in its own words
    spatial = shape[-n:]
    if padding == "same":
        out = spatial
    else:
        pad = (0,) * n if padding == "valid" else padding
        out = tuple([(size + 2 * p - d * (k - 1) - 1) // st + 1 for size, p, d, k, st
                     in zip(spatial, pad, dilation, kernel, stride, strict=True)])
    if min(out) <= 0:
        return None
    return torch.empty((*shape[:-n - 1], c_out, *out), dtype=torch.float32, device=META)


_ADAPTIVE_AVG = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
_MAX = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_AVG = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}


def _per_dim(value: object, dims: int) -> tuple | None:
    """A layer argument given once or per dimension, per dimension (None: neither)."""
    if value is None or isinstance(value, (int, float)):
        return (value,) * dims
    if not isinstance(value, (tuple, list)):
        return None
    return tuple(value) if len(value) == dims else None


def _pooled_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int | None:
    """torch.nn.MaxPool2d docs: ``floor_or_ceil((L + 2p - d(k - 1) - 1) / s + 1)``, and with ``ceil_mode`` a
    last window starting in the right padding is dropped; None where torch refuses the arguments (its
    padding check is on the kernel size, not the dilated one)."""
    if k <= 0 or s <= 0 or d <= 0 or p < 0 or p > k // 2:
        return None
    span = size + 2 * p - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out if out > 0 else None


def pool_output(mod: nn.Module, x: object) -> torch.Tensor | None:
    """The output of a max pool (without indices), an average pool or an adaptive average pool."""
    kind = type(mod)
    if kind in _ADAPTIVE_AVG:
        dims = _ADAPTIVE_AVG[kind]
        size = _per_dim(mod.output_size, dims)
        if (_float_shape(x, dims) is None or size is None
                or any(o is not None and (not isinstance(o, int) or o < 0) for o in size)):
            return None
        out = tuple(d if o is None else o for o, d in zip(size, x.shape[-dims:], strict=True))
    elif kind in _MAX or kind in _AVG:
        dims = _MAX.get(kind) or _AVG[kind]
        if _float_shape(x, dims) is None or getattr(mod, "return_indices", False):
            return None
        kernel = _per_dim(mod.kernel_size, dims)
        stride = _per_dim(mod.stride if mod.stride is not None else mod.kernel_size, dims)
        padding = _per_dim(mod.padding, dims)
        dilation = _per_dim(getattr(mod, "dilation", 1), dims)
        if None in (kernel, stride, padding, dilation) or not all(
                isinstance(v, int) for v in (*kernel, *stride, *padding, *dilation)):
            return None
        if kind is nn.AvgPool3d and any(n < k for n, k in zip(x.shape[-3:], kernel, strict=True)):
            return None  # torch's CPU avg_pool3d refuses an input smaller than the kernel, padding or not
        sizes = [_pooled_size(n, k, s, p, d, bool(mod.ceil_mode))
                 for n, k, s, p, d in zip(x.shape[-dims:], kernel, stride, padding, dilation, strict=True)]
        if None in sizes:
            return None
        out = tuple(sizes)
    else:
        return None
    return torch.empty((*x.shape[:-dims], *out), dtype=x.dtype, device=META)


def mean_output(x: object, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``x.mean(dim, keepdim)`` / ``torch.mean(x, dim, keepdim)`` of a float32 tensor: the reduced dimensions
    dropped, or kept as 1 (no ``dtype``, ``out`` or repeated dimension; ``dim=None`` reduces all)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or set(kwargs) - {"dim", "keepdim"}:
        return None
    if len(args) > 2 or (not args and "dim" not in kwargs and kwargs):
        return None  # keepdim without dim: torch refuses
    dim = args[0] if args else kwargs.get("dim")
    keepdim = args[1] if len(args) > 1 else kwargs.get("keepdim", False)
    if not isinstance(keepdim, bool):
        return None
    rank = x.dim()
    if dim is None:
        dims = set(range(rank))
    else:
        items = ([dim] if isinstance(dim, int) and not isinstance(dim, bool)
                 else list(dim) if isinstance(dim, (tuple, list)) else None)
        if not items or rank == 0 or not all(isinstance(d, int) and not isinstance(d, bool) and -rank <= d < rank
                                             for d in items):
            return None  # dim=() (every dimension), a 0-d input or a bad dim: left to torch
        dims = {d % rank for d in items}
        if len(dims) != len(items):
            return None
    shape = [1 if i in dims else n for i, n in enumerate(x.shape)] if keepdim else \
        [n for i, n in enumerate(x.shape) if i not in dims]
    return torch.empty(shape, dtype=x.dtype, device=META)


def upsample_output(mod: nn.Module, x: object) -> torch.Tensor | None:
    """An ``nn.Upsample`` (nearest, nearest-exact, (bi/tri)linear, bicubic) output: its ``size``, or
    ``floor(L * scale_factor)`` per spatial dimension (torch.nn.functional.interpolate)."""
    if type(mod) is not nn.Upsample or not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() < 3:
        return None
    dims = x.dim() - 2
    modes = {"nearest": (1, 2, 3), "nearest-exact": (1, 2, 3), "linear": (1,), "bilinear": (2,), "bicubic": (2,),
             "trilinear": (3,)}
    if dims not in modes.get(mod.mode, ()) or any(n <= 0 for n in x.shape):
        return None
    if mod.size is not None and mod.scale_factor is None:
        size = _per_dim(mod.size, dims)
        if size is None or not all(isinstance(n, int) and n > 0 for n in size):
            return None
    elif mod.scale_factor is not None and mod.size is None:
        scale = _per_dim(mod.scale_factor, dims)
        if scale is None or not all(isinstance(f, (int, float)) and f > 0 for f in scale):
            return None
        size = tuple(int(math.floor(float(n) * float(f))) for n, f in zip(x.shape[2:], scale, strict=True))
        if any(n <= 0 for n in size):
            return None
    else:
        return None
    return torch.empty((*x.shape[:2], *size), dtype=x.dtype, device=META)


def cat_output(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``torch.cat(tensors, dim)`` of float32 tensors of one rank (>= 1) that agree off ``dim``: their sizes
    along ``dim`` add up (no legacy empty ``(0,)`` operand, no ``out``)."""
    if not args or len(args) > 2 or set(kwargs) - {"dim"} or (len(args) == 2 and "dim" in kwargs):
        return None
    tensors, dim = args[0], args[1] if len(args) == 2 else kwargs.get("dim", 0)
    if not isinstance(tensors, (tuple, list)) or not tensors or not isinstance(dim, int) or isinstance(dim, bool):
        return None
    if not all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in tensors):
        return None
    rank = tensors[0].dim()
    if rank == 0 or any(t.dim() != rank for t in tensors) or not -rank <= dim < rank:
        return None
    dim %= rank
    first = tensors[0].shape
    if any(t.shape[i] != first[i] for t in tensors for i in range(rank) if i != dim):
        return None
    shape = list(first)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=torch.float32, device=META)
