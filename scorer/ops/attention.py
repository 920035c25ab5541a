"""Attention, decomposed into existing kinds: scaled dot-product attention (every aten variant) and multi-head
attention (``nn.MultiheadAttention``, ``F.multi_head_attention_forward``, the fast-path aten ops).

SDPA is counted as the reference math of the PyTorch documentation of ``F.scaled_dot_product_attention``:
``Q·Kᵀ`` (matmul over the head dimension E), × scale (1 mult per logit), + the mask where one is given or
``is_causal`` (1 add per logit; a boolean mask is the same addition of 0/−inf), softmax over the S keys,
``· V`` (matmul over S); dropout is free in eval. Grouped-query K, V (fewer heads) are repeated to the
query's heads, a free copy. Multi-head attention is its in-projection (one linear each for Q, K, V), that
SDPA math (one mask add per mask: ``attn_mask`` and ``key_padding_mask``), the out-projection, and, when
it returns head-averaged weights, their mean over the heads.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rules.records import Op, WeightRef
from scorer.ops.call import Call, plain
from scorer.ops.registry import register
from scorer.ops.values import Val

_SDPA_ATEN = (
    "scaled_dot_product_attention", "_scaled_dot_product_attention_math", "_scaled_dot_product_attention_math_for_mps",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)
#: Functions the dispatch capture records whole: their aten decomposition depends on the backend chosen.
WHOLE_FUNCTIONS = (F.scaled_dot_product_attention, F.multi_head_attention_forward)
#: Modules whose forward, around one call of a function recorded whole, only prepares its arguments
#: (batch-first transposes, boolean masks made additive): export and dispatch record nothing else of them,
#: as fx, which keeps them whole, sees nothing else.
QUIET_MODULES = (nn.MultiheadAttention,)
#: The aten packet names of those functions (export records ``F.multi_head_attention_forward`` as one node).
WHOLE_ATEN = frozenset({"multi_head_attention_forward"})


def bound(call: Call) -> dict:
    """The call's arguments by parameter name (aten schema, or the Python signature), defaults filled in."""
    if call.form == "aten":
        schema = call.target._schema  # type: ignore[union-attr]
    elif call.target is F.scaled_dot_product_attention:
        schema = torch.ops.aten.scaled_dot_product_attention.default._schema
    else:
        sig = inspect.signature(call.target)  # type: ignore[arg-type]
        b = sig.bind(*call.args, **call.kwargs)
        b.apply_defaults()
        return dict(b.arguments)
    out = {}
    for i, a in enumerate(schema.arguments):
        if i < len(call.args) and not a.kwarg_only:
            out[a.name] = call.args[i]
        elif a.name in call.kwargs:
            out[a.name] = call.kwargs[a.name]
        else:
            out[a.name] = a.default_value if a.has_default_value() else None
    return out


def _tensor(v: object) -> Val | None:
    return v if isinstance(v, Val) and v.is_tensor else None


def attention_ops(call: Call, qkv: tuple[Val | None, Val | None, Val | None], e: int, masks: list[Val | None],
                  logits: tuple[int, ...], out_shape: tuple[int, ...], inputs: tuple[list[str], list[str]]) -> list[Op]:
    """The reference math over head dimension ``e`` on logits of shape ``logits`` (…, L, S), output
    ``out_shape`` (…, L, Ev).

    ``qkv`` are the operands when they are call arguments (a parameter among them is stored by the matmul
    reading it), ``masks`` one entry per mask added (a Val, or None for a causal mask), ``inputs`` the
    producers of (Q, K) and of V.
    """
    q, k, v = qkv
    qk_in, v_in = inputs
    weights = [w for x in (q, k) for w in call.stored(x, "weight")]
    acts = [x for x in (q, k) if x is not None and x.is_activation]
    ops = [call.op("matmul", weights, acts=acts, attrs={"vector_len": e}, suffix="_qk", out_shape=logits,
                   inputs=qk_in)]
    ops.append(call.op("mul", acts=[], suffix="_scale", out_shape=logits, inputs=[ops[-1].name],
                       scalar_operand=True))
    for i, m in enumerate(masks):
        mask_in = [m.producer] if m is not None and m.producer else []
        ops.append(call.op("add", call.stored(m, "operand"), acts=[m] if m is not None and m.is_activation else [],
                           suffix=f"_mask{i or ''}", out_shape=logits, inputs=[ops[-1].name, *mask_in]))
    ops.append(call.op("act:softmax", acts=[], attrs={"n": logits[-1]}, suffix="_softmax", out_shape=logits,
                       inputs=[ops[-1].name]))
    ops.append(call.op("matmul", call.stored(v, "weight"), acts=[v] if v is not None and v.is_activation else [],
                       attrs={"vector_len": logits[-1]}, suffix="_av", out_shape=out_shape,
                       inputs=[ops[-1].name, *v_in]))
    return ops


def _producers(*vals: object) -> list[str]:
    return [v.producer for v in vals if isinstance(v, Val) and v.producer]


@register("sdpa", functions=(F.scaled_dot_product_attention,), aten=_SDPA_ATEN)
def sdpa(call: Call) -> list[Op]:
    """``F.scaled_dot_product_attention`` and its aten variants (``attn_mask`` or ``attn_bias``, ``is_causal``,
    ``scale``, ``enable_gqa``): the reference math above (with ``enable_gqa``, after repeating the key and value
    heads), whatever backend computed it."""
    a = bound(call)
    q, k, v = (_tensor(a[n]) for n in ("query", "key", "value"))
    if q is None or k is None or v is None:
        return [call.unknown()]
    mask = _tensor(a.get("attn_mask", a.get("attn_bias")))
    masks: list[Val | None] = [mask] if mask is not None else ([None] if plain(a.get("is_causal")) else [])
    out = call.out_shape
    logits = (*out[:-1], k.shape[-2])
    ops: list[Op] = []
    qk_in, v_in = _producers(q, k), _producers(v)
    heads = q.shape[-3] if len(q.shape) >= 3 else None
    if plain(a.get("enable_gqa")) and heads is not None and k.is_activation and v.is_activation and (
            k.shape[-3] != heads or v.shape[-3] != heads):
        # the reference math repeats each key and value head for its group of query heads (repeat_interleave):
        # a copy each (free: data movement), which the matmuls read
        for x, tag in ((k, "k"), (v, "v")):
            ops.append(call.op("free", [], acts=[x], suffix=f"_repeat_{tag}",
                               out_shape=(*x.shape[:-3], heads, *x.shape[-2:]), inputs=_producers(x)))
        qk_in, v_in = [*_producers(q), ops[0].name], [ops[1].name]
    return ops + attention_ops(call, (q, k, v), q.shape[-1], masks, logits, out, (qk_in, v_in))


# ---------------------------------------------------------------------------------------------- multi-head


@dataclass
class _Tensor:
    """A parameter (or a slice of one) an in-projection reads: its name, data and identity."""

    name: str
    tensor: torch.Tensor | None
    ident: object


def _param(call: Call, v: object, name: str) -> _Tensor | None:
    """A parameter argument of a function/aten call (None when absent or not a parameter)."""
    if call.form == "module":
        attr = name.replace("out_proj_", "out_proj.")
        p = call.module.get_parameter(attr) if _has_param(call.module, attr) else None
        if p is None:
            return None
        return _Tensor(f"{call.path}.{attr}" if call.path else attr, p.detach(), id(p))
    if isinstance(v, Val) and v.param is not None and v.real is not None and not v.buffer:
        return _Tensor(v.param, v.real.detach(), v.ident)
    return None


def _has_param(mod: nn.Module, attr: str) -> bool:
    owner, _, leaf = attr.rpartition(".")
    holder = mod.get_submodule(owner) if owner else mod
    return isinstance(holder._parameters.get(leaf), torch.Tensor)


def _ref(t: _Tensor | None, role: str, part: int | None = None, rows: int = 0) -> list[WeightRef]:
    """The WeightRef of ``t``, or of its ``part``-th block of ``rows`` rows (a packed Q/K/V tensor: each block
    is stored by the projection that reads it, with its own identity)."""
    if t is None or t.tensor is None:
        return []
    data, ident = t.tensor, t.ident
    if part is not None:
        data = data[part * rows:(part + 1) * rows]
        ident = (ident, part)
    return [WeightRef(role=role, name=t.name, tensor=data, shape=tuple(data.shape), ident=ident)]  # type: ignore[arg-type]


def _mha_args(call: Call) -> dict:
    """The arguments of ``F.multi_head_attention_forward`` for any form of the call (module, function, aten)."""
    if call.form != "module":
        a = bound(call)
        if call.base == "_native_multi_head_attention":  # batch first, packed weights, one mask
            return {"query": a["query"], "key": a["key"], "value": a["value"], "num_heads": a["num_head"],
                    "in_proj_weight": a["qkv_weight"], "in_proj_bias": a["qkv_bias"], "bias_k": None,
                    "bias_v": None, "add_zero_attn": False, "out_proj_weight": a["proj_weight"],
                    "out_proj_bias": a["proj_bias"], "key_padding_mask": None, "attn_mask": a["mask"],
                    "need_weights": a["need_weights"], "average_attn_weights": a["average_attn_weights"],
                    "use_separate_proj_weight": False, "batch_first": True}
        return {**a, "batch_first": False}
    mod: nn.MultiheadAttention = call.module  # type: ignore[assignment]
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")
    defaults = (None, None, None, None, True, None, True, False)
    a = {n: call.arg(i, n, d) for i, (n, d) in enumerate(zip(names, defaults, strict=True))}
    return {**a, "num_heads": mod.num_heads, "in_proj_weight": None, "in_proj_bias": None, "bias_k": None,
            "bias_v": None, "add_zero_attn": mod.add_zero_attn, "out_proj_weight": None, "out_proj_bias": None,
            "use_separate_proj_weight": not mod._qkv_same_embed_dim, "batch_first": mod.batch_first}


def _seq_batch(x: Val, batch_first: bool) -> tuple[int, int]:
    """(sequence length, batch) of a (L, N, E) or batch-first (N, L, E) input; an unbatched (L, E) has N = 1."""
    s = x.shape
    if len(s) == 2:
        return s[0], 1
    return (s[1], s[0]) if batch_first else (s[0], s[1])


@register("mha", modules=(nn.MultiheadAttention,), functions=(F.multi_head_attention_forward,),
          aten=("multi_head_attention_forward", "_native_multi_head_attention"), weighted=True)
def multi_head_attention(call: Call) -> list[Op]:
    """Multi-head attention: Q, K, V projections, the SDPA reference math per head, the out-projection, and
    the mean of the attention weights over the heads when they are returned averaged."""
    a = _mha_args(call)
    if _tensor(a.get("static_k")) is not None or _tensor(a.get("static_v")) is not None:
        return [call.unknown("(static_k/static_v)")]  # precomputed keys/values: no rule yet
    return _mha_ops(call, a)


def _mha_ops(call: Call, a: dict) -> list[Op]:
    """The ops of multi-head attention with ``F.multi_head_attention_forward``'s arguments ``a`` (plus
    ``batch_first``); its output has the call's (first) output shape."""
    q, k, v = a["query"], a["key"], a["value"]
    heads = int(plain(a["num_heads"]))  # type: ignore[arg-type]
    bf = a["batch_first"]
    lq, n = _seq_batch(q, bf)
    s, _ = _seq_batch(k, bf)
    e_out = call.out_shape[-1]
    hd = e_out // heads
    pname = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight", "bias_k",
             "bias_v", "out_proj_weight", "out_proj_bias")
    p = {name: _param(call, a.get(name), name) for name in pname}
    separate = bool(plain(a["use_separate_proj_weight"]))
    ops: list[Op] = []
    projected = []
    for i, (x, tag) in enumerate(((q, "q"), (k, "k"), (v, "v"))):
        w = _ref(p[f"{tag}_proj_weight"], "weight") if separate else _ref(p["in_proj_weight"], "weight", i, e_out)
        b = _ref(p["in_proj_bias"], "bias", i, e_out)
        length = lq if tag == "q" else s
        shape = (length, n, e_out) if not bf else (n, length, e_out)
        attrs = {"vector_len": x.shape[-1], "out_features": e_out, "has_bias": bool(b)}
        ops.append(call.op("linear", w + b, acts=[x], attrs=attrs, suffix=f"_{tag}_proj", out_shape=shape,
                           inputs=_producers(x)))
        projected.append(ops[-1].name)
    kv_in = [projected[1]], [projected[2]]
    appended = []  # one more key and value: learned biases (each stored by its own op), then zeros per head
    if p["bias_k"] is not None or p["bias_v"] is not None:
        appended.append(("bias", (_ref(p["bias_k"], "operand"), _ref(p["bias_v"], "operand"))))
    if plain(a["add_zero_attn"]):
        appended.append(("zero_attn", ([], [])))
    for name, weights in appended:  # a concatenation each (free), writing k' and v'
        s += 1
        shape = (s, n, e_out) if not bf else (n, s, e_out)
        for i, tag in enumerate("kv"):
            ops.append(call.op("free", weights[i], acts=[], suffix=f"_{name}_{tag}", out_shape=shape, inputs=kv_in[i]))
        kv_in = [ops[-2].name], [ops[-1].name]
    masks = [m for m in (_tensor(a.get("attn_mask")), _tensor(a.get("key_padding_mask"))) if m is not None]
    if not masks and plain(a.get("is_causal")):
        masks = [None]
    logits = (n, heads, lq, s)
    ops += attention_ops(call, (None, None, None), hd, masks, logits, (n, heads, lq, hd),
                         ([projected[0], *kv_in[0]], kv_in[1]))
    heads_out = ops[-1].name
    attrs = {"vector_len": e_out, "out_features": e_out, "has_bias": p["out_proj_bias"] is not None}
    weights = _ref(p["out_proj_weight"], "weight") + _ref(p["out_proj_bias"], "bias")
    ops.append(call.op("linear", weights, acts=[], attrs=attrs, suffix="_out_proj", out_shape=call.out_shape,
                       inputs=[heads_out]))
    if plain(a.get("need_weights")):  # (output, weights): out_proj writes the output; the weights are the
        out_by, weights_by = ops[-1].name, ops[-3].name  # softmax's, or their mean over the heads
        if plain(a.get("average_attn_weights")):
            ops.append(call.op("mean", acts=[], attrs={"reduce": heads}, suffix="_weights_mean",
                               out_shape=(n, lq, s), inputs=[weights_by]))
            weights_by = ops[-1].name
        call.producers = [out_by, weights_by]
    return ops


@register("transformer_encoder_layer", aten=("_transformer_encoder_layer_fwd",))
def transformer_encoder_layer(call: Call) -> list[Op]:
    """The fused fast path of ``nn.TransformerEncoderLayer`` (batch first, packed Q/K/V): its slow path's ops,
    self-attention, residual adds, the two LayerNorms (before each block with ``norm_first``, else after
    each residual add) and the feed-forward block (linear, ReLU or GELU, linear)."""
    a = bound(call)
    src: Val = a["src"]
    e = src.shape[-1]
    shape = src.shape
    norm_first = bool(plain(a["norm_first"]))
    ops: list[Op] = []
    last = _producers(src)

    def add(op: Op) -> Op:
        ops.append(op)
        last[:] = [op.name]
        return op

    def norm(i: int) -> None:
        ws = call.stored(a[f"norm_weight_{i}"], "ln_weight") + call.stored(a[f"norm_bias_{i}"], "ln_bias")
        add(call.op("layernorm", ws, acts=[], attrs={"norm_numel": e}, suffix=f"_norm{i}", out_shape=shape,
                    inputs=list(last)))

    def residual(i: int, skip: list[str]) -> None:
        add(call.op("add", acts=[], suffix=f"_residual{i}", out_shape=shape, inputs=[*last, *skip]))

    skip = list(last)
    if norm_first:
        norm(1)
    x = Val(meta=src.meta, producer=last[0] if last else None)
    mha = {"query": x, "key": x, "value": x, "num_heads": a["num_heads"], "in_proj_weight": a["qkv_weight"],
           "in_proj_bias": a["qkv_bias"], "bias_k": None, "bias_v": None, "add_zero_attn": False,
           "out_proj_weight": a["proj_weight"], "out_proj_bias": a["proj_bias"], "key_padding_mask": None,
           "attn_mask": a["mask"], "need_weights": False, "average_attn_weights": False,
           "use_separate_proj_weight": False, "batch_first": True}
    for op in _mha_ops(call, mha):
        add(op)
    residual(1, skip)
    if not norm_first:
        norm(1)
    skip = list(last)
    if norm_first:
        norm(2)
    hidden = a["ffn_weight_1"].shape[0]
    for i, (n_in, n_out) in enumerate(((e, hidden), (hidden, e)), start=1):
        ws = call.stored(a[f"ffn_weight_{i}"], "weight") + call.stored(a[f"ffn_bias_{i}"], "bias")
        attrs = {"vector_len": n_in, "out_features": n_out, "has_bias": True}
        add(call.op("linear", ws, acts=[], attrs=attrs, suffix=f"_linear{i}", out_shape=(*shape[:-1], n_out),
                    inputs=list(last)))
        if i == 1:
            kind = "act:gelu" if plain(a["use_gelu"]) else "act:relu"
            add(call.op(kind, acts=[], suffix="_activation", out_shape=(*shape[:-1], n_out), inputs=list(last)))
    residual(2, skip)
    if not norm_first:
        norm(2)
    return ops
