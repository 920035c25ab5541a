"""The op vocabulary: every kind an Op may have, declared once with its traits and the attributes it carries.

Capture extractors (``scorer.ops``) may only emit declared kinds (or ``unknown:<target>``); rule sets give
each kind a formula (``RuleSet.cost_<kind>`` or the activation table). Every kind set the code needs (dot
products, sparsifiable weights, value-preserving ops) is derived here from the traits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One op kind.

    Traits: ``dot`` — a dot product (mults and adds per output from a contracted length ``vector_len``);
    ``sparse`` — its ``weight`` tensor may be sparse (nonzeros credited, mask stored); ``preserving`` — its
    output holds only values of its input, so it keeps the input's bit-width; ``free`` — no arithmetic by
    rule (data movement). ``attrs``: keys its extractor must set in ``Op.attrs``; ``optional``: keys it may set.
    """

    name: str
    doc: str
    dot: bool = False
    sparse: bool = False
    preserving: bool = False
    free: bool = False
    attrs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {}


def declare(name: str, doc: str, **traits: object) -> Kind:
    """Add kind ``name`` to the vocabulary (each name once)."""
    if name in KINDS:
        raise ValueError(f"op kind {name!r} is declared twice")
    KINDS[name] = kind = Kind(name, doc, **traits)  # type: ignore[arg-type]
    return kind


def kinds_where(trait: str) -> frozenset[str]:
    """Names of the kinds with ``trait`` set."""
    return frozenset(k.name for k in KINDS.values() if getattr(k, trait))


def is_unknown(kind: str) -> bool:
    """True for the ``unknown:<target>`` kinds capture emits for calls without an extractor."""
    return kind.startswith("unknown:")


_CONV_ATTRS = ("groups", "kernel", "in_channels", "out_channels", "vector_len", "stride", "padding", "dilation",
               "has_bias", "depthwise")

# dot products over a weight (or a second activation)
declare("conv", "convolution, any dimension and groups", dot=True, sparse=True, attrs=_CONV_ATTRS)
declare("linear", "fully connected layer over the last dimension", dot=True, sparse=True,
        attrs=("vector_len", "out_features", "has_bias"), optional=("scalings",))
declare("matmul", "matmul/bmm/mm/einsum with one contracted length", dot=True, sparse=True, attrs=("vector_len",),
        optional=("has_bias", "scalings"))
declare("embedding", "table lookup (no arithmetic); the table is stored", sparse=True)

# normalisation
declare("bn", "batch normalisation with running statistics", attrs=("channels",))
declare("layernorm", "normalisation over the last dimensions", attrs=("norm_numel",))
declare("groupnorm", "normalisation per example and channel group", attrs=("groups", "channels"))

# activations and unary elementwise functions (costs per output element in the rule set's table)
for _name, _doc in {
    "relu": "max(x, 0)", "relu6": "min(max(x, 0), 6)", "hardtanh": "min(max(x, lo), hi)",
    "sigmoid": "1 / (1 + exp(-x))", "hardsigmoid": "relu6(x + 3) / 6", "silu": "x · sigmoid(x)",
    "hardswish": "x · relu6(x + 3) / 6", "tanh": "hyperbolic tangent", "gelu": "x · Φ(x)",
    "leaky_relu": "x or slope · x", "elu": "x or α(exp(x) − 1)", "selu": "λ · elu(x)", "mish": "x · tanh(softplus(x))",
    "gelu_tanh": "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))", "erf": "erf(x)",
    "sign": "sign(x)", "exp": "exp(x)", "log": "log(x)", "sqrt": "sqrt(x)", "rsqrt": "1 / sqrt(x)",
    "abs": "|x|", "neg": "−x", "reciprocal": "1 / x", "compare": "x > y and friends",
    "not": "logical or bitwise not (~mask)",
    "select": "where(cond, a, b)",
}.items():
    declare(f"act:{_name}", _doc, preserving=_name in ("relu", "relu6", "hardtanh"))
declare("act:clamp", "clamp to one or two bounds", preserving=True, attrs=("bounds",))
declare("act:prelu", "x or a learned slope · x")
declare("act:softmax", "exp(x_i) / Σ exp(x_j) over n values", attrs=("n",))
declare("act:log_softmax", "x_i − log Σ exp(x_j) over n values", attrs=("n",))
declare("act:softplus", "log(1 + exp(β·x)) / β, x itself where β·x > threshold", attrs=("beta",))

# elementwise arithmetic
declare("add", "elementwise addition", optional=("alpha",))
declare("sub", "elementwise subtraction", optional=("alpha",))
declare("mul", "elementwise multiplication")
declare("div", "elementwise division")

# reductions, pools, resampling
declare("mean", "mean over `reduce` values per output", attrs=("reduce",))
declare("sum", "sum over `reduce` values per output", attrs=("reduce",))
declare("avgpool", "average over a window of `window` values", attrs=("window",), optional=("kernel_int",))
declare("maxpool", "maximum over a window of `window` values", preserving=True, attrs=("window",))
declare("max", "maximum (max, amax) or its index (argmax) over `reduce` values per output; the elementwise "
        "max of two tensors is `reduce` 2", attrs=("reduce",))
declare("upsample:nearest", "nearest-neighbour resampling (a copy)", preserving=True)
declare("upsample:bilinear", "bilinear resampling")

# no arithmetic
declare("free", "data movement: view, reshape, permute, cat, slice, pad, dropout in eval", preserving=True,
        free=True, optional=("reshape", "perm", "cat_dim"))
declare("quant", "quantise/dequantise to `bits` (free between FP32-representable formats); `integer`: its output "
        "is a tensor of a quantised integer dtype (a converted model), not fake-quantised floats", free=True,
        attrs=("bits",), optional=("integer",))

# misc (issue 8 item 3): transposed convolution, RMSNorm, powers, running sums
declare("conv_transpose", "transposed convolution (scatter form): `vector_len` the mean number of input·weight "
        "products landing on one output, `covered` the share of outputs receiving at least one", dot=True,
        sparse=True, attrs=(*_CONV_ATTRS, "covered", "scatter_len"))
declare("rmsnorm", "x / sqrt(mean(x²) + eps) over the last dimensions, optional affine γ", attrs=("norm_numel",))
declare("pow", "x ** exponent: `exponent` a number, or None for a tensor exponent", attrs=("exponent",))
declare("cumsum", "running sum along a dimension of length `n`", attrs=("n",))

# permutations (scorer/passes.py, scorer/ops/shuffle.py): the FAQ's dense × sparse permutation-matrix product
declare("shuffle", "a permutation of the n positions along one dimension (channel shuffle, index by a permutation)",
        preserving=True, attrs=("n",), optional=("dim", "perm", "known"))

DOT_KINDS = kinds_where("dot")
SPARSE_KINDS = kinds_where("sparse")
PRESERVING_KINDS = kinds_where("preserving")
FREE_KINDS = kinds_where("free")
