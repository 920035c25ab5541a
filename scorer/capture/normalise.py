"""Turn one captured call (a module call, a function call or a tensor-method call) into an Op record.

Each ``from_*`` function receives the call's arguments as ``Val`` objects (meta tensor plus provenance)
and returns an Op, ``None`` when the call produces no tensor (shape arithmetic), or an Op of kind
``unknown:<target>`` that the rules engine reports as an error.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn

from scorer.capture.kinds import (
    ACTIVATION_FUNCTIONS,
    ACTIVATION_METHODS,
    ACTIVATION_MODULES,
    CLAMP_FUNCTIONS,
    CLAMP_METHODS,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    FREE_FUNCTIONS,
    FREE_METHODS,
    FREE_MODULES,
    MATMUL_FUNCTIONS,
    MATMUL_METHODS,
    QUANT_MODULE_NAMES,
    REDUCE_FUNCTIONS,
    REDUCE_METHODS,
)
from scorer.capture.values import Val
from scorer.graph import Op, WeightRef

F = torch.nn.functional

TRANSCENDENTAL_FUNCTIONS = {
    torch.exp: "act:exp",
    torch.log: "act:log",
    torch.sqrt: "act:sqrt",
    torch.rsqrt: "act:rsqrt",
    torch.abs: "act:abs",
    torch.neg: "act:neg",
    torch.reciprocal: "act:reciprocal",
    torch.gt: "act:compare",
    torch.lt: "act:compare",
    torch.ge: "act:compare",
    torch.le: "act:compare",
    torch.eq: "act:compare",
    torch.ne: "act:compare",
    torch.where: "act:select",
    # operator forms fx records for ``x > 0``, ``-x``, ...: the same kinds as torch.gt, torch.neg
    operator.gt: "act:compare",
    operator.lt: "act:compare",
    operator.ge: "act:compare",
    operator.le: "act:compare",
    operator.eq: "act:compare",
    operator.ne: "act:compare",
    operator.neg: "act:neg",
}


def target_name(target: object) -> str:
    """A readable name for a called function, method or module class."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    if isinstance(target, type):
        return f"{target.__module__.replace('torch.nn.modules', 'nn').split('.')[0]}.{target.__name__}"
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or repr(target)
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch"):
        return f"torch.{name}"
    return f"{mod}.{name}" if mod else name


def _weight(role: str, name: str, tensor: torch.Tensor, mask: torch.Tensor | None = None) -> WeightRef:
    return WeightRef(role=role, name=name, tensor=tensor, shape=tuple(tensor.shape), mask=mask)


def _module_weight(mod: nn.Module, path: str, attr: str, role: str) -> tuple[WeightRef | None, int | None]:
    """The effective parameter ``attr`` of ``mod`` (handling torch.nn.utils.prune) and its identity."""
    prefix = f"{path}." if path else ""
    orig = mod._parameters.get(f"{attr}_orig")
    mask = mod._buffers.get(f"{attr}_mask")
    if orig is not None and mask is not None:
        eff = (orig.detach() * mask).detach()
        return _weight(role, f"{prefix}{attr}", eff, mask.detach()), id(orig)
    p = getattr(mod, attr, None)
    if isinstance(p, torch.Tensor):
        return _weight(role, f"{prefix}{attr}", p.detach()), id(p)
    return None, None


def _op(name: str, module: str, kind: str, target: str, acts: list[Val], out: object, **kw) -> Op:
    out_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
    return Op(
        name=name,
        module=module,
        kind=kind,
        target=target,
        in_shapes=[v.shape for v in acts],
        out_shape=out_shape,
        inputs=[v.producer for v in acts if v.producer],
        **kw,
    )


def _acts(vals: list[Val]) -> list[Val]:
    return [v for v in vals if v.is_activation]


def _flat_vals(args: tuple, kwargs: dict) -> list[Val]:
    out: list[Val] = []

    def visit(a: object) -> None:
        if isinstance(a, Val):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            for x in a:
                visit(x)
        elif isinstance(a, dict):
            for x in a.values():
                visit(x)

    visit(args)
    visit(kwargs)
    return out


def _arg(args: tuple, kwargs: dict, i: int, key: str, default: object = None) -> object:
    if len(args) > i:
        return args[i]
    return kwargs.get(key, default)


def _plain(v: object) -> object:
    return v.meta if isinstance(v, Val) else v


def quant_bits(mod: nn.Module) -> int | None:
    """Bit-width of an activation quantiser module, or None when ``mod`` is not one."""
    bits = getattr(mod, "bits", None)
    if isinstance(bits, int) and not isinstance(bits, bool):
        return bits
    if type(mod).__name__ in QUANT_MODULE_NAMES or hasattr(mod, "quant_min") and hasattr(mod, "quant_max"):
        qmin, qmax = getattr(mod, "quant_min", None), getattr(mod, "quant_max", None)
        if isinstance(qmin, int) and isinstance(qmax, int) and qmax > qmin:
            return max(1, math.ceil(math.log2(qmax - qmin + 1)))
        return 32
    return None


def is_known_leaf(mod: nn.Module) -> bool:
    """True for modules the capture keeps whole (their forward is not traced into)."""
    if isinstance(mod, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return False
    if quant_bits(mod) is not None and not isinstance(mod, _COMPUTE_TYPES):
        return True
    return isinstance(mod, _LEAF_TYPES)


_COMPUTE_TYPES: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.PReLU,
    nn.Embedding,
)
_POOL_TYPES: tuple[type, ...] = (
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Upsample,
)
_LEAF_TYPES: tuple[type, ...] = (
    _COMPUTE_TYPES + _POOL_TYPES + tuple(t for t, _ in ACTIVATION_MODULES) + FREE_MODULES + (nn.Hardtanh,)
)


def _hardtanh_kind(lo: float, hi: float) -> str:
    return "act:relu6" if (lo, hi) == (0.0, 6.0) else "act:hardtanh"


def _conv_attrs(weight_shape: tuple[int, ...], groups: int, stride, padding, dilation, bias: bool) -> dict:
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
        "depthwise": groups > 1 and groups == in_per_group * groups and in_per_group == 1,
    }


def adaptive_window_sum(n_in: int, n_out: int) -> int:
    """Σ of PyTorch's adaptive pooling window sizes along one dimension: window i spans
    [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out)), so windows may differ in size and overlap."""
    return sum(-((-(i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out))


def _pool_kernel(in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: object) -> float:
    """Values pooled per output. Adaptive pools: the mean window size (windows are products of per-dimension
    windows, so the mean is the product of per-dimension means); × outputs it is the exact total."""
    if kernel is None:
        n = len(out_shape) - 2 if len(out_shape) > 2 else 1
        return math.prod(adaptive_window_sum(i, o) / o for i, o in zip(in_shape[-n:], out_shape[-n:], strict=True))
    if isinstance(kernel, int):
        return kernel ** max(1, len(out_shape) - 2)
    return math.prod(kernel)  # type: ignore[arg-type]


def _upsample_kind(mode: object) -> str:
    """``nearest-exact`` is a copy like ``nearest`` (as aten ``_upsample_nearest_exact*`` is mapped)."""
    return "upsample:nearest" if mode == "nearest-exact" else f"upsample:{mode}"


def _spatial_is_one(shape: tuple[int, ...]) -> bool:
    return len(shape) > 2 and all(s == 1 for s in shape[2:])


def from_module(name: str, path: str, mod: nn.Module, args: tuple, kwargs: dict, out: object) -> Op | None:
    """Op for a call of leaf module ``mod`` at ``path``."""
    vals = _flat_vals(args, kwargs)
    acts = _acts(vals)
    tname = f"nn.{type(mod).__name__}" if type(mod).__module__.startswith("torch.nn") else type(mod).__qualname__
    idents: dict[str, int] = {}

    def weights(*pairs: tuple[str, str]) -> list[WeightRef]:
        out_w = []
        for attr, role in pairs:
            w, ident = _module_weight(mod, path, attr, role)
            if w is not None:
                out_w.append(w)
                idents[w.name] = ident  # type: ignore[assignment]
        return out_w

    def mk(kind: str, **kw) -> Op:
        op = _op(name, path, kind, tname, acts, out, **kw)
        op.attrs.setdefault("idents", idents)
        return op

    qb = quant_bits(mod)
    if isinstance(mod, nn.modules.conv._ConvNd):
        if mod.transposed:
            return mk(f"unknown:{tname}")
        ws = weights(("weight", "weight"), ("bias", "bias"))
        attrs = _conv_attrs(
            tuple(ws[0].shape), mod.groups, mod.stride, mod.padding, mod.dilation, mod.bias is not None
        )
        return mk("conv", attrs=attrs, weights=ws)
    if isinstance(mod, nn.Linear):
        ws = weights(("weight", "weight"), ("bias", "bias"))
        attrs = {"vector_len": mod.in_features, "out_features": mod.out_features, "has_bias": mod.bias is not None}
        return mk("linear", attrs=attrs, weights=ws)
    if isinstance(mod, nn.modules.instancenorm._InstanceNorm):
        # statistics of each example's channel, computed at inference: GroupNorm with one channel per group
        ws = weights(("weight", "gn_weight"), ("bias", "gn_bias"))
        return mk("groupnorm", attrs={"groups": mod.num_features, "channels": mod.num_features}, weights=ws)
    if isinstance(mod, nn.modules.batchnorm._NormBase):
        ws = weights(("weight", "bn_weight"), ("bias", "bn_bias"))
        return mk("bn", attrs={"channels": mod.num_features}, weights=ws)
    if isinstance(mod, nn.LayerNorm):
        ws = weights(("weight", "ln_weight"), ("bias", "ln_bias"))
        return mk("layernorm", attrs={"norm_numel": math.prod(mod.normalized_shape)}, weights=ws)
    if isinstance(mod, nn.GroupNorm):
        ws = weights(("weight", "gn_weight"), ("bias", "gn_bias"))
        return mk("groupnorm", attrs={"groups": mod.num_groups, "channels": mod.num_channels}, weights=ws)
    if isinstance(mod, nn.PReLU):
        return mk("act:prelu", weights=weights(("weight", "prelu_weight")))
    if isinstance(mod, nn.Embedding):
        return mk("embedding", weights=weights(("weight", "weight")))
    if qb is not None:
        return mk("quant", attrs={"bits": qb})
    if isinstance(mod, nn.ReLU6):
        return mk("act:relu6")
    if isinstance(mod, nn.Hardtanh):
        return mk(_hardtanh_kind(mod.min_val, mod.max_val))
    for typ, kind in ACTIVATION_MODULES:
        if isinstance(mod, typ):
            attrs = {}
            if kind == "act:softmax":
                dim = mod.dim if mod.dim is not None else implicit_softmax_dim(acts[0].meta.dim())
                attrs["n"] = acts[0].shape[dim] if acts else 1
            return mk(kind, attrs=attrs)
    if isinstance(mod, FREE_MODULES):
        return mk("free")
    if isinstance(mod, nn.modules.pooling._AdaptiveAvgPoolNd):
        if isinstance(out, torch.Tensor) and _spatial_is_one(tuple(out.shape)):
            return mk("mean", attrs={"reduce": math.prod(acts[0].shape[2:])})
        return mk("avgpool", attrs={"window": _pool_kernel(acts[0].shape, tuple(out.shape), None)})
    if isinstance(mod, nn.modules.pooling._AvgPoolNd):
        attrs = {"window": _pool_kernel(acts[0].shape, tuple(out.shape), mod.kernel_size)}
        if isinstance(mod.kernel_size, int):
            attrs["kernel_int"] = mod.kernel_size
        return mk("avgpool", attrs=attrs)
    if isinstance(mod, nn.modules.pooling._AdaptiveMaxPoolNd):
        return mk("maxpool", attrs={"window": _pool_kernel(acts[0].shape, tuple(out.shape), None)})
    if isinstance(mod, nn.modules.pooling._MaxPoolNd):
        return mk("maxpool", attrs={"window": _pool_kernel(acts[0].shape, tuple(out.shape), mod.kernel_size)})
    if isinstance(mod, nn.Upsample):
        return mk(_upsample_kind(mod.mode))
    return mk(f"unknown:{tname}")


def implicit_ops(op: Op, mod: nn.Module) -> list[Op]:
    """Ops a known layer performs inside its forward beyond its kind: a binary conv with a per-output-channel
    scale (XNOR-Net style, ``scale=True``) multiplies every output by a stored full-precision value
    (MSUNet counted it: one scale per channel stored, one mult per output, official_rules.md §3.3)."""
    if op.kind == "conv" and getattr(mod, "scale", None) is True and getattr(mod, "weight_bits", None) == 1:
        c_out = op.attrs["out_channels"]
        scale = WeightRef(role="scale", name=f"{op.module}.scale", tensor=None, shape=(c_out,))
        return [Op(name=f"{op.name}_scale", module=op.module, kind="mul", target=f"{op.target}.scale",
                   in_shapes=[op.out_shape], out_shape=op.out_shape, weights=[scale], inputs=[op.name],
                   attrs={"idents": {}})]
    return []


def from_function(name: str, path: str, target: object, args: tuple, kwargs: dict, out: object) -> Op | None:
    """Op for a call of function ``target`` (torch.*, F.*, operator.*) inside layer ``path``."""
    if not isinstance(out, torch.Tensor) and not (
        isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)
    ):
        return None  # shape arithmetic, size() and friends
    vals = _flat_vals(args, kwargs)
    acts = _acts(vals)
    tname = target_name(target)
    idents = {v.param: v.ident for v in vals if v.param is not None and v.ident is not None}

    def params() -> list[Val]:
        return [v for v in vals if v.param is not None and v.is_tensor]

    def mk(kind: str, weights: list[WeightRef] | None = None, **kw) -> Op:
        op = _op(name, path, kind, tname, acts, out, weights=weights or [], **kw)
        op.attrs["idents"] = idents
        return op

    def wref(v: Val | None, role: str) -> list[WeightRef]:
        if isinstance(v, Val) and v.param is not None and v.real is not None and not v.buffer:
            return [_weight(role, v.param, v.real.detach())]
        return []

    if target in (F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d):
        x, w = args[0], args[1]
        b = _arg(args, kwargs, 2, "bias")
        groups = int(_plain(_arg(args, kwargs, 6, "groups", 1)))  # type: ignore[arg-type]
        attrs = _conv_attrs(
            tuple(w.meta.shape), groups, _plain(_arg(args, kwargs, 3, "stride", 1)),
            _plain(_arg(args, kwargs, 4, "padding", 0)), _plain(_arg(args, kwargs, 5, "dilation", 1)),
            isinstance(b, Val),
        )
        op = mk("conv", wref(w, "weight") + wref(b, "bias"), attrs=attrs)
        op.in_shapes, op.inputs = [x.shape], [x.producer] if x.producer else []
        return op
    if target is F.linear:
        x, w = args[0], args[1]
        b = _arg(args, kwargs, 2, "bias")
        attrs = {"vector_len": w.meta.shape[-1], "out_features": w.meta.shape[0], "has_bias": isinstance(b, Val)}
        op = mk("linear", wref(w, "weight") + wref(b, "bias"), attrs=attrs)
        op.in_shapes, op.inputs = [x.shape], [x.producer] if x.producer else []
        return op
    if target in MATMUL_FUNCTIONS:
        return _matmul(mk, wref, target, args, tname)
    if target is F.batch_norm:
        w, b = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
        x = args[0]
        op = mk("bn", wref(w, "bn_weight") + wref(b, "bn_bias"), attrs={"channels": x.shape[1]})
        op.in_shapes, op.inputs = [x.shape], [x.producer] if x.producer else []
        return op
    if target is F.layer_norm:
        shape = _plain(_arg(args, kwargs, 1, "normalized_shape"))
        w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
        op = mk("layernorm", wref(w, "ln_weight") + wref(b, "ln_bias"), attrs={"norm_numel": math.prod(shape)})
        op.in_shapes = [args[0].shape]
        return op
    if target is F.group_norm:
        g = int(_plain(_arg(args, kwargs, 1, "num_groups")))  # type: ignore[arg-type]
        w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
        op = mk("groupnorm", wref(w, "gn_weight") + wref(b, "gn_bias"), attrs={"groups": g, "channels": args[0].shape[1]})
        op.in_shapes = [args[0].shape]
        return op
    if target is F.prelu:
        op = mk("act:prelu", wref(args[1], "prelu_weight"))
        op.in_shapes = [args[0].shape]
        return op
    if target in (F.hardtanh, F.hardtanh_):
        lo = float(_plain(_arg(args, kwargs, 1, "min_val", -1.0)))  # type: ignore[arg-type]
        hi = float(_plain(_arg(args, kwargs, 2, "max_val", 1.0)))  # type: ignore[arg-type]
        return mk(_hardtanh_kind(lo, hi))
    if target in ACTIVATION_FUNCTIONS:
        kind = ACTIVATION_FUNCTIONS[target]
        attrs = {}
        if kind == "act:softmax":
            dim = _plain(_arg(args, kwargs, 1, "dim", -1))
            attrs["n"] = acts[0].shape[dim if dim is not None else implicit_softmax_dim(acts[0].meta.dim())]
        return mk(kind, attrs=attrs)
    if target in TRANSCENDENTAL_FUNCTIONS:
        return mk(TRANSCENDENTAL_FUNCTIONS[target])
    if target in CLAMP_FUNCTIONS:
        return mk("act:clamp", attrs={"bounds": _clamp_bounds(target, args, kwargs)})
    if target in ELEMENTWISE_FUNCTIONS:
        return _elementwise(mk, wref, ELEMENTWISE_FUNCTIONS[target], args, kwargs)
    if target in REDUCE_FUNCTIONS:
        return _reduce(mk, REDUCE_FUNCTIONS[target], acts, out)
    if target is F.adaptive_avg_pool2d or target is F.adaptive_avg_pool1d:
        if _spatial_is_one(tuple(out.shape)):
            return mk("mean", attrs={"reduce": math.prod(acts[0].shape[2:])})
        return mk("avgpool", attrs={"window": _pool_kernel(acts[0].shape, tuple(out.shape), None)})
    if target in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d):
        k = _plain(_arg(args, kwargs, 1, "kernel_size"))
        return mk("avgpool", attrs={"window": _pool_kernel(acts[0].shape, tuple(out.shape), k)})
    if target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
        k = _plain(_arg(args, kwargs, 1, "kernel_size"))
        return mk("maxpool", attrs={"window": _pool_kernel(acts[0].shape, tuple(out.shape), k)})
    if target in (F.adaptive_max_pool1d, F.adaptive_max_pool2d):
        return mk("maxpool", attrs={"window": _pool_kernel(acts[0].shape, tuple(out.shape), None)})
    if target in (F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear):
        if target is F.upsample_nearest:
            mode = "nearest"
        elif target is F.upsample_bilinear:
            mode = "bilinear"
        else:
            mode = _plain(_arg(args, kwargs, 3, "mode", "nearest"))
        return mk(_upsample_kind(mode))
    if target is F.embedding:
        op = mk("embedding", wref(args[1], "weight"))
        op.in_shapes = [args[0].shape]
        return op
    if target in FREE_FUNCTIONS:
        return mk("free", [w for v in params() for w in wref(v, "operand")])
    return mk(f"unknown:{tname}")


def from_method(name: str, path: str, method: str, args: tuple, kwargs: dict, out: object) -> Op | None:
    """Op for a tensor-method call ``args[0].method(*args[1:])`` inside layer ``path``."""
    if not isinstance(out, torch.Tensor) and not (
        isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)
    ):
        return None
    vals = _flat_vals(args, kwargs)
    acts = _acts(vals)
    tname = f"Tensor.{method}"
    idents = {v.param: v.ident for v in vals if v.param is not None and v.ident is not None}

    def mk(kind: str, weights: list[WeightRef] | None = None, **kw) -> Op:
        op = _op(name, path, kind, tname, acts, out, weights=weights or [], **kw)
        op.attrs["idents"] = idents
        return op

    def wref(v: Val | None, role: str) -> list[WeightRef]:
        if isinstance(v, Val) and v.param is not None and v.real is not None and not v.buffer:
            return [_weight(role, v.param, v.real.detach())]
        return []

    if method in ACTIVATION_METHODS:
        kind = ACTIVATION_METHODS[method]
        attrs = {}
        if kind == "act:softmax":
            dim = _plain(_arg(args, kwargs, 1, "dim", -1))
            attrs["n"] = acts[0].shape[dim if dim is not None else implicit_softmax_dim(acts[0].meta.dim())]
        return mk(kind, attrs=attrs)
    if method in CLAMP_METHODS:
        return mk("act:clamp", attrs={"bounds": _clamp_bounds(method, args, kwargs)})
    if method in ELEMENTWISE_METHODS:
        return _elementwise(mk, wref, ELEMENTWISE_METHODS[method], args, kwargs)
    if method in MATMUL_METHODS:
        return _matmul(mk, wref, method, args, tname)
    if method in REDUCE_METHODS:
        return _reduce(mk, REDUCE_METHODS[method], acts, out)
    if method in FREE_METHODS:
        return mk("free", [w for v in vals if v.param is not None and v.is_tensor for w in wref(v, "operand")])
    return mk(f"unknown:{tname}")


def _clamp_bounds(target: object, args: tuple, kwargs: dict) -> int:
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    if name.startswith(("clamp_min", "clamp_max")):
        return 1
    lo = _arg(args, kwargs, 1, "min")
    hi = _arg(args, kwargs, 2, "max")
    return int(lo is not None) + int(hi is not None)


def implicit_softmax_dim(ndim: int) -> int:
    """The dimension torch's softmax uses when none is given (its legacy rule: 0 for 0-, 1- and 3-d, else 1)."""
    return 0 if ndim in (0, 1, 3) else 1


def _elementwise(mk, wref, kind: str, args: tuple, kwargs: dict) -> Op:
    a, b = args[0], _arg(args, kwargs, 1, "other")
    operands = [x for x in (a, b) if isinstance(x, Val) and x.is_tensor]
    weights: list[WeightRef] = []
    for x in operands:
        if x.param is not None:
            weights += wref(x, "operand")
    scalar = len(operands) < 2 or any(x.is_tensor and x.meta.dim() == 0 for x in operands)
    op = mk(kind, weights, scalar_operand=scalar)
    alpha = kwargs.get("alpha")
    if kind in ("add", "sub") and alpha is not None and _plain(alpha) != 1:
        op.attrs["alpha"] = _plain(alpha)  # x + alpha·y: one more multiplication per element
    return op


def _matmul(mk, wref, target: object, args: tuple, tname: str) -> Op:
    if target is torch.einsum:
        eq = args[0]
        operands = [a for a in args[1:] if isinstance(a, Val)]
        if len(operands) == 1 and isinstance(operands[0].meta, (list, tuple)):
            return mk(f"unknown:{tname}")
        if not isinstance(eq, str) or len(operands) != 2 or "..." in eq:
            return mk(f"unknown:{tname}")
        lhs, rhs = eq.replace(" ", "").split("->")
        in_specs = lhs.split(",")
        sizes: dict[str, int] = {}
        for spec, v in zip(in_specs, operands, strict=True):
            for ch, n in zip(spec, v.meta.shape, strict=True):
                sizes[ch] = n
        contraction = math.prod(sizes[c] for c in sizes if c not in rhs)
        weights = [w for v in operands for w in wref(v, "weight")]
        return mk("matmul", weights, attrs={"vector_len": contraction})
    a, b = args[0], args[1]
    k = a.meta.shape[-1] if a.meta.dim() >= 1 else 1
    weights = wref(a, "weight") + wref(b, "weight")
    return mk("matmul", weights, attrs={"vector_len": k})


def _reduce(mk, kind: str, acts: list[Val], out: object) -> Op:
    in_n = math.prod(acts[0].shape) if acts else 1
    out_n = math.prod(out.shape) if isinstance(out, torch.Tensor) else 1
    return mk(kind, attrs={"reduce": in_n // max(1, out_n)})
