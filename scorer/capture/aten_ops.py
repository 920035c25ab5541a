"""Map aten-level calls (torch.export graphs, the dispatch recorder) onto the scorer's op kinds."""

from __future__ import annotations

import math

import torch

from scorer.capture.kinds import UNARY_KINDS
from scorer.capture.normalise import _conv_attrs, _pool_kernel, _spatial_is_one
from scorer.capture.values import Val
from scorer.graph import Op, WeightRef

ACT = {**UNARY_KINDS, "where": "act:select"}
ELEMENTWISE = {"add": "add", "sub": "sub", "rsub": "sub", "mul": "mul", "div": "div"}
FREE = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "numpy_T", "mT", "transpose", "permute", "expand", "expand_as",
    "clone", "cat", "concat", "stack", "slice", "select", "squeeze", "unsqueeze", "flatten", "unflatten",
    "detach", "constant_pad_nd", "pad", "dropout", "native_dropout", "alias", "_to_copy", "to", "contiguous",
    "lift_fresh_copy", "split", "split_with_sizes", "chunk", "unbind", "copy", "empty_like", "zeros_like",
    "ones_like", "full_like", "as_strided", "view_as", "reshape_as", "repeat", "roll", "index_select",
    "narrow", "sym_size", "scalar_tensor", "empty", "zeros", "ones", "full", "arange", "_assert_tensor_metadata",
    "feature_dropout", "alpha_dropout", "pixel_shuffle", "pixel_unshuffle", "type_as", "_log_softmax_backward_data",
    "lift", "clone_", "dequantize", "quantize_per_tensor", "getitem",
}
DOT = {"convolution", "_convolution", "conv1d", "conv2d", "conv3d", "linear", "addmm", "mm", "bmm", "matmul"}
BN = {"_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm", "_native_batch_norm_legit",
      "cudnn_batch_norm", "_batch_norm_impl_index", "_native_batch_norm_legit_functional"}


def packet_name(func: object) -> str:
    """The aten operator's base name without an in-place underscore (``add_`` -> ``add``)."""
    name = getattr(getattr(func, "overloadpacket", func), "__name__", str(func))
    name = name.split(".")[-1]
    if name.endswith("_") and not name.startswith("_"):
        name = name[:-1]
    return name


def _w(v: object, role: str) -> list[WeightRef]:
    if isinstance(v, Val) and v.param is not None and v.real is not None and not v.buffer:
        return [WeightRef(role=role, name=v.param, tensor=v.real.detach(), shape=tuple(v.real.shape))]
    return []


def _a(args: tuple, kwargs: dict, i: int, key: str, default: object = None) -> object:
    return args[i] if len(args) > i else kwargs.get(key, default)


def _p(v: object) -> object:
    return v.meta if isinstance(v, Val) else v


def from_aten(name: str, path: str, func: object, args: tuple, kwargs: dict, out: object) -> Op | None:
    """Op for one aten call, or None when it yields no tensor."""
    first = out[0] if isinstance(out, (tuple, list)) and out else out
    if not isinstance(first, torch.Tensor):
        return None
    base = packet_name(func)
    tname = f"aten.{base}"
    flat = [v for v in _flatten((args, kwargs)) if isinstance(v, Val)]
    acts = [v for v in flat if v.is_activation]
    idents = {v.param: v.ident for v in flat if v.param is not None and v.ident is not None}

    def mk(kind: str, weights: list[WeightRef] | None = None, acts_: list[Val] | None = None, **kw) -> Op:
        used = acts if acts_ is None else acts_
        op = Op(
            name=name, module=path, kind=kind, target=tname, in_shapes=[v.shape for v in used],
            out_shape=tuple(first.shape), inputs=[v.producer for v in used if v.producer],
            weights=weights or [], **kw,
        )
        op.attrs["idents"] = idents
        return op

    if base in ("convolution", "_convolution", "conv1d", "conv2d", "conv3d"):
        x, w, b = args[0], args[1], _a(args, kwargs, 2, "bias")
        if base in ("convolution", "_convolution"):
            if _p(args[6]):
                return mk(f"unknown:{tname}(transposed)")
            groups = int(_p(args[8]))
        else:
            groups = int(_p(_a(args, kwargs, 6, "groups", 1)))
        attrs = _conv_attrs(tuple(w.shape), groups, _p(_a(args, kwargs, 3, "stride", 1)),
                            _p(_a(args, kwargs, 4, "padding", 0)), _p(_a(args, kwargs, 5, "dilation", 1)),
                            isinstance(b, Val) and b.is_tensor)
        return mk("conv", _w(w, "weight") + _w(b, "bias"), [x], attrs=attrs)
    if base == "linear":
        x, w, b = args[0], args[1], _a(args, kwargs, 2, "bias")
        attrs = {"vector_len": w.shape[-1], "out_features": w.shape[0], "has_bias": isinstance(b, Val)}
        return mk("linear", _w(w, "weight") + _w(b, "bias"), [x], attrs=attrs)
    if base == "addmm":
        b, x, w = args[0], args[1], args[2]
        if w.param is not None:
            attrs = {"vector_len": x.shape[-1], "out_features": w.shape[-1], "has_bias": True}
            return mk("linear", _w(w, "weight") + _w(b, "bias"), [x], attrs=attrs)
        op = mk("matmul", _w(x, "weight") + _w(w, "weight"), attrs={"vector_len": x.shape[-1]})
        return op
    eq = args[0] if args else None
    if base == "einsum" and isinstance(eq, str) and "->" in eq and "..." not in eq and len(args[1]) == 2:
        a, b = args[1]
        lhs, rhs = eq.replace(" ", "").split("->")
        sizes = {ch: n for spec, v in zip(lhs.split(","), (a, b), strict=True)
                 for ch, n in zip(spec, v.shape, strict=True)}
        contraction = math.prod(sizes[c] for c in sizes if c not in rhs)
        return mk("matmul", _w(a, "weight") + _w(b, "weight"), [v for v in (a, b) if v.is_activation],
                  attrs={"vector_len": contraction})
    if base in ("mm", "bmm", "matmul"):
        a, b = args[0], args[1]
        return mk("matmul", _w(a, "weight") + _w(b, "weight"), [v for v in (a, b) if v.is_activation],
                  attrs={"vector_len": a.shape[-1]})
    if base in BN:
        x = args[0]
        return mk("bn", _w(args[1], "bn_weight") + _w(args[2], "bn_bias"), [x], attrs={"channels": x.shape[1]})
    if base in ("layer_norm", "native_layer_norm"):
        shape = _p(args[1])
        return mk("layernorm", _w(_a(args, kwargs, 2, "weight"), "ln_weight") + _w(_a(args, kwargs, 3, "bias"), "ln_bias"),
                  [args[0]], attrs={"norm_numel": math.prod(shape)})
    if base in ("group_norm", "native_group_norm"):
        if base == "group_norm":
            g, w, b = int(_p(args[1])), _a(args, kwargs, 2, "weight"), _a(args, kwargs, 3, "bias")
        else:
            g, w, b = int(_p(args[6])), args[1], args[2]
        return mk("groupnorm", _w(w, "gn_weight") + _w(b, "gn_bias"), [args[0]],
                  attrs={"groups": g, "channels": args[0].shape[1]})
    if base == "instance_norm":  # per-example, per-channel statistics: GroupNorm with one channel per group
        c = args[0].shape[1]
        return mk("groupnorm", _w(args[1], "gn_weight") + _w(args[2], "gn_bias"), [args[0]],
                  attrs={"groups": c, "channels": c})
    if base in ("prelu", "_prelu_kernel"):
        return mk("act:prelu", _w(args[1], "prelu_weight"), [args[0]])
    if base in ("hardtanh", "relu6"):
        lo = float(_p(_a(args, kwargs, 1, "min_val", 0.0 if base == "relu6" else -1.0)))
        hi = float(_p(_a(args, kwargs, 2, "max_val", 6.0 if base == "relu6" else 1.0)))
        return mk("act:relu6" if (lo, hi) == (0.0, 6.0) else "act:hardtanh")
    if base in ("clamp", "clip", "clamp_min", "clamp_max"):
        bounds = 1 if base in ("clamp_min", "clamp_max") else sum(
            _a(args, kwargs, i, k) is not None for i, k in ((1, "min"), (2, "max")))
        return mk("act:clamp", attrs={"bounds": bounds})
    if base in ("_softmax", "softmax"):
        dim = int(_p(_a(args, kwargs, 1, "dim", -1)))
        return mk("act:softmax", attrs={"n": args[0].shape[dim]})
    if base in ACT:
        return mk(ACT[base])
    if base in ELEMENTWISE:
        tensors = [v for v in args[:2] if isinstance(v, Val) and v.is_tensor]
        weights = [w for v in tensors for w in _w(v, "operand")]
        scalar = len(tensors) < 2 or any(v.meta.dim() == 0 for v in tensors)
        return mk(ELEMENTWISE[base], weights, [v for v in tensors if v.is_activation], scalar_operand=scalar)
    if base in ("mean", "sum"):
        x = args[0]
        reduce = math.prod(x.shape) // max(1, math.prod(first.shape))
        return mk(base, acts_=[x], attrs={"reduce": reduce})
    if base in ("adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool1d"):
        x = args[0]
        if _spatial_is_one(tuple(first.shape)):
            return mk("mean", acts_=[x], attrs={"reduce": math.prod(x.shape[2:])})
        return mk("avgpool", acts_=[x], attrs={"window": _pool_kernel(x.shape, tuple(first.shape), None)})
    if base in ("avg_pool1d", "avg_pool2d", "avg_pool3d"):
        x = args[0]
        return mk("avgpool", acts_=[x], attrs={"window": _pool_kernel(x.shape, tuple(first.shape), _p(args[1]))})
    if base in ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices"):
        x = args[0]
        return mk("maxpool", acts_=[x], attrs={"window": _pool_kernel(x.shape, tuple(first.shape), _p(args[1]))})
    if base in ("adaptive_max_pool2d", "adaptive_max_pool1d"):
        x = args[0]
        return mk("maxpool", acts_=[x], attrs={"window": _pool_kernel(x.shape, tuple(first.shape), None)})
    if base.startswith("upsample_nearest") or base.startswith("_upsample_nearest"):
        return mk("upsample:nearest")
    if base.startswith("upsample_bilinear") or base.startswith("_upsample_bilinear"):
        return mk("upsample:bilinear")
    if base == "embedding":
        return mk("embedding", _w(args[0], "weight"), [args[1]])
    if base in FREE:
        return mk("free", [w for v in flat if v.is_tensor for w in _w(v, "operand")])
    return mk(f"unknown:{tname}")


def _flatten(obj: object):
    if isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _flatten(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _flatten(x)
    else:
        yield obj
