"""Attention counted as its documented reference math, identically on every capture path.

``F.scaled_dot_product_attention`` (PyTorch docs): ``Q·Kᵀ`` (E mults, E−1 adds per logit), × scale (1 mult
per logit), + mask where given or causal (1 add per logit), softmax over the S keys (2S mults, S−1 adds per
row: official_rules.md §2.4, MIT-HAN-Lab), ``· V`` (S mults, S−1 adds per output). Multi-head attention is
its Q, K, V projections, that math per head, and the out-projection. Expected numbers come from that
arithmetic, from the same computation written by hand, or from ``FlopCounterMode``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from scorer import score
from scorer.capture import batch_of, capture_model
from scorer.ops import translate
from scorer.ops.call import make_call
from scorer.ops.values import Val, meta_of

CAPTURES = ("fx", "export", "dispatch")
COMPARE = ["kind", "param_bits", "mults", "adds", "weight_numel"]


def rows(rep):
    df = rep.layers
    return df[df.kind != "free"][COMPARE].reset_index(drop=True)


def same_on_every_path(model: nn.Module, inputs: tuple, rules: str = "micronet2019"):
    """The reports of the three captures, after checking they have identical rows and totals."""
    reps = [score(model, example_inputs=inputs, capture=c, rules=rules) for c in CAPTURES]
    for c, rep in zip(CAPTURES[1:], reps[1:], strict=True):
        assert rows(rep).equals(rows(reps[0])), f"{c}:\n{rows(rep)}\nfx:\n{rows(reps[0])}"
        assert rep.totals == reps[0].totals
    assert not reps[0].unknown
    return reps[0]


def flop_counter_ops(model: nn.Module, inputs: tuple) -> float:
    """FlopCounterMode's total per example, attention on the math backend (FlopCounterMode has no formula
    for the CPU flash kernel and counts it as 0); grad enabled keeps torch's fused layer fast paths off."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(*inputs)
    return fc.get_total_flops() / batch_of(inputs)


def unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------- SDPA


class Sdpa(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, q, k, v, mask=None):
        if mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **self.kw)
        return F.scaled_dot_product_attention(q, k, v, **self.kw)


class HandSdpa(nn.Module):
    """The reference math of the PyTorch docs, written out (a causal or boolean mask as an additive one)."""

    def __init__(self, scale: float | None = None, groups: int = 1):
        super().__init__()
        self.scale = scale
        self.groups = groups

    def forward(self, q, k, v, bias=None):
        if self.groups > 1:  # grouped-query: repeat K, V to the query's heads (a copy)
            b, h, s, e = k.shape
            k = k[:, :, None].expand(b, h, self.groups, s, e).reshape(b, h * self.groups, s, e)
            v = v[:, :, None].expand(b, h, self.groups, s, v.shape[-1]).reshape(b, h * self.groups, s, v.shape[-1])
        scale = self.scale if self.scale is not None else 1 / math.sqrt(q.shape[-1])
        logits = q @ k.transpose(-2, -1) * scale
        if bias is not None:
            logits = logits + bias
        return torch.softmax(logits, dim=-1) @ v


B, H, L, S, E, EV = 2, 4, 5, 7, 8, 6


def sdpa_case(case: str):
    """(model, inputs, hand-written model, hand inputs, has_mask) for one SDPA configuration."""
    q, k, v = torch.randn(B, H, L, E), torch.randn(B, H, S, E), torch.randn(B, H, S, EV)
    bias = torch.randn(L, S)
    if case == "plain":
        return Sdpa(), (q, k, v), HandSdpa(), (q, k, v), False
    if case == "float_mask":
        return Sdpa(), (q, k, v, bias), HandSdpa(), (q, k, v, bias), True
    if case == "bool_mask":
        return Sdpa(), (q, k, v, torch.rand(B, 1, L, S) > 0.3), HandSdpa(), (q, k, v, bias), True
    if case == "causal":
        k, v = k[:, :, :L], v[:, :, :L]
        causal = torch.full((L, L), -math.inf).triu(1)
        return Sdpa(is_causal=True), (q, k, v), HandSdpa(), (q, k, v, causal), True
    if case == "scale":
        return Sdpa(scale=0.3), (q, k, v), HandSdpa(scale=0.3), (q, k, v), False
    if case == "gqa":
        k, v = k[:, :2], v[:, :2]
        return Sdpa(enable_gqa=True), (q, k, v), HandSdpa(groups=2), (q, k, v), False
    if case == "3d":
        q, k, v = q[0], k[0], v[0]
        return Sdpa(), (q, k, v), HandSdpa(), (q, k, v), False
    raise AssertionError(case)


SDPA_CASES = ["plain", "float_mask", "bool_mask", "causal", "scale", "gqa", "3d"]


@pytest.mark.parametrize("case", SDPA_CASES)
def test_sdpa_is_its_reference_math_on_every_path(case: str) -> None:
    model, inputs, hand, hand_inputs, has_mask = sdpa_case(case)
    rep = same_on_every_path(model, inputs)
    want = ["matmul", "mul", *(["add"] if has_mask else []), "act:softmax", "matmul"]
    assert list(rows(rep).kind) == want
    hand_rep = score(hand, example_inputs=hand_inputs)
    for key in ("mults", "adds", "params"):
        assert rep.totals[key] == hand_rep.totals[key], key


@pytest.mark.parametrize("case", ["plain", "float_mask", "causal", "gqa"])
def test_sdpa_counts_are_the_documented_arithmetic(case: str) -> None:
    model, inputs, _, _, has_mask = sdpa_case(case)
    q, k, v = inputs[:3]
    per_example = q.shape[0] if q.dim() == 4 else 1
    heads, lq, s, e, ev = q.shape[-3], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    logits = heads * lq * s  # per example
    mults = logits * e + logits + 2 * logits + heads * lq * ev * s  # QKᵀ, scale, softmax (2n), ·V
    adds = logits * (e - 1) + (logits if has_mask else 0) + heads * lq * (s - 1) + heads * lq * ev * (s - 1)
    rep = score(model, example_inputs=inputs)
    assert per_example == batch_of(inputs)
    assert (rep.totals["mults"], rep.totals["adds"]) == (mults, adds)


@pytest.mark.parametrize("case", ["plain", "float_mask", "causal", "gqa", "3d"])
def test_sdpa_flops_equal_flop_counter(case: str) -> None:
    model, inputs, *_ = sdpa_case(case)
    rep = same_on_every_path(model, inputs, rules="flops")
    assert rep.totals["ops"] == flop_counter_ops(model, inputs)


def _val(t: torch.Tensor) -> Val:
    return Val(meta=meta_of(t))


@pytest.mark.parametrize("variant", [
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_cudnn_attention", "scaled_dot_product_attention",
])
def test_every_aten_variant_is_the_same_math(variant: str) -> None:
    # the variants a backend may dispatch to (flash, efficient, cudnn, math): argument layouts differ
    q, k, v = (_val(torch.empty(B, H, L, E)), _val(torch.empty(B, H, S, E)), _val(torch.empty(B, H, S, E)))
    mask = _val(torch.empty(L, S))
    out = torch.empty(B, H, L, E, device="meta")
    op = getattr(torch.ops.aten, variant).default
    if variant in ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
        args, kwargs = (q, k, v, mask, False, 0.0, False), {"scale": 0.5}
    elif variant == "_scaled_dot_product_flash_attention_for_cpu":
        args, kwargs = (q, k, v, 0.0, False), {"attn_mask": mask, "scale": 0.5}
    elif variant == "_scaled_dot_product_flash_attention":  # no mask argument: a causal one instead
        args, kwargs = (q, k, v, 0.0, True), {"scale": 0.5}
    else:
        args, kwargs = (q, k, v, mask, 0.0, False), {"scale": 0.5}
    ops = translate(make_call("aten", op, "sdpa", "", args, kwargs, (out, out)))
    ref = translate(make_call("function", F.scaled_dot_product_attention, "sdpa", "", (q, k, v, mask), {}, out))
    assert [(o.kind, o.attrs, o.out_shape) for o in ops] == [(o.kind, o.attrs, o.out_shape) for o in ref]


class LearnedQuery(nn.Module):
    """A learned query (a parameter as an SDPA operand) and a learned additive bias: both stored, once."""

    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, H, 3, E))
        self.bias = nn.Parameter(torch.zeros(3, S))

    def forward(self, k, v):
        return F.scaled_dot_product_attention(self.query, k, v, attn_mask=self.bias)


def test_sdpa_parameters_are_stored_once_on_every_path() -> None:
    model = LearnedQuery()
    inputs = (torch.randn(1, H, S, E), torch.randn(1, H, S, E))
    rep = same_on_every_path(model, inputs)
    assert rep.totals["params"] == unique_params(model) == H * 3 * E + 3 * S
    assert same_on_every_path(model, inputs, rules="flops").totals["params"] == unique_params(model)


# ------------------------------------------------------------------------------------------------- MHA

EMB, HEADS, NB, LQ, LK = 16, 4, 2, 5, 7


class Mha(nn.Module):
    def __init__(self, batch_first=True, kdim=None, vdim=None, bias=True, add_bias_kv=False, need_weights=False,
                 kpm=False, mask=None, self_attn=False, add_zero_attn=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(EMB, HEADS, bias=bias, add_bias_kv=add_bias_kv, kdim=kdim, vdim=vdim,
                                          batch_first=batch_first, add_zero_attn=add_zero_attn)
        self.need_weights, self.self_attn = need_weights, self_attn
        # masks are data (buffers, never stored): boolean True = not attended, or an additive float mask
        self.register_buffer("kpm", torch.zeros(NB, LK, dtype=torch.bool) if kpm else None)
        attn_mask = {"bool": torch.ones(LQ, LK, dtype=torch.bool).triu(1), "float": torch.zeros(LQ, LK)}
        self.register_buffer("mask", attn_mask[mask] if mask else None)

    def forward(self, q, k, v):
        if self.self_attn:
            k = v = q
        kw = {"need_weights": self.need_weights}
        if self.kpm is not None:
            kw["key_padding_mask"] = self.kpm
        if self.mask is not None:
            kw["attn_mask"] = self.mask
        out, weights = self.attn(q, k, v, **kw)
        return out + weights.sum() if self.need_weights else out


def mha_inputs(model: Mha) -> tuple:
    a = model.attn
    kd, vd = a.kdim, a.vdim
    if a.batch_first:
        return torch.randn(NB, LQ, EMB), torch.randn(NB, LK, kd), torch.randn(NB, LK, vd)
    return torch.randn(LQ, NB, EMB), torch.randn(LK, NB, kd), torch.randn(LK, NB, vd)


MHA_CASES = {
    "self": dict(self_attn=True),
    "seq_first": dict(batch_first=False),
    "kdim_vdim": dict(kdim=12, vdim=10),
    "no_bias": dict(bias=False),
    "bias_kv": dict(add_bias_kv=True),
    "zero_attn": dict(add_zero_attn=True, batch_first=False),
    "need_weights": dict(need_weights=True),
    "key_padding_mask": dict(kpm=True),
    "bool_mask": dict(mask="bool"),
    "float_mask_and_kpm": dict(mask="float", kpm=True, batch_first=False),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_mha_is_identical_on_every_path_and_conserves_parameters(case: str) -> None:
    model = Mha(**MHA_CASES[case]).eval()
    inputs = mha_inputs(model)
    rep = same_on_every_path(model, inputs)
    kinds = list(rows(rep).kind)
    assert kinds[:3] == ["linear"] * 3 and "act:softmax" in kinds
    assert rep.totals["params"] == unique_params(model)
    flops = same_on_every_path(model, inputs, rules="flops")
    assert flops.totals["params"] == unique_params(model)
    assert flops.totals["ops"] == flop_counter_ops(model, inputs)


class HandMha(nn.Module):
    """nn.MultiheadAttention written out with the same weights: Q, K, V projections, heads, the reference
    math, out-projection (and the weights averaged over the heads)."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        e, kd, vd = mha.embed_dim, mha.kdim, mha.vdim
        bias = mha.in_proj_bias is not None
        self.q, self.k, self.v = nn.Linear(e, e, bias), nn.Linear(kd, e, bias), nn.Linear(vd, e, bias)
        with torch.no_grad():
            ws = ([mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight] if not mha._qkv_same_embed_dim
                  else list(mha.in_proj_weight.chunk(3)))
            for lin, w, i in zip((self.q, self.k, self.v), ws, range(3), strict=True):
                lin.weight.copy_(w)
                if bias:
                    lin.bias.copy_(mha.in_proj_bias[i * e:(i + 1) * e])
        self.out = mha.out_proj
        self.bias_k, self.bias_v = mha.bias_k, mha.bias_v
        self.heads, self.batch_first, self.zero_attn = mha.num_heads, mha.batch_first, mha.add_zero_attn

    def forward(self, q, k, v, biases=(), need_weights=False):
        if not self.batch_first:
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        n, lq, e = q.shape
        h = self.heads
        q, k, v = self.q(q), self.k(k), self.v(v)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(n, 1, e)], 1)
            v = torch.cat([v, self.bias_v.expand(n, 1, e)], 1)
        q = q.view(n, lq, h, e // h).transpose(1, 2)
        k = k.view(n, -1, h, e // h).transpose(1, 2)
        v = v.view(n, -1, h, e // h).transpose(1, 2)
        if self.zero_attn:
            k = torch.cat([k, k.new_zeros(n, h, 1, e // h)], 2)
            v = torch.cat([v, v.new_zeros(n, h, 1, e // h)], 2)
        logits = q @ k.transpose(-2, -1) * (1 / math.sqrt(e // h))
        for bias in biases:  # attn_mask, key_padding_mask: each added to every logit
            logits = logits + bias
        w = torch.softmax(logits, dim=-1)
        out = self.out((w @ v).transpose(1, 2).reshape(n, lq, e))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out + w.mean(1).sum() if need_weights else out


@pytest.mark.parametrize("case", ["self", "seq_first", "kdim_vdim", "no_bias", "bias_kv", "zero_attn",
                                  "need_weights", "float_mask_and_kpm"])
def test_mha_counts_like_the_same_computation_by_hand(case: str) -> None:
    cfg = MHA_CASES[case]
    model = Mha(**cfg).eval()
    inputs = mha_inputs(model)
    rep = score(model, example_inputs=inputs)
    hand = HandMha(model.attn)
    s = LK + (1 if cfg.get("add_bias_kv") else 0) + (1 if cfg.get("add_zero_attn") else 0)
    masks = (cfg.get("mask") is not None) + bool(cfg.get("kpm"))
    hand_inputs = (*inputs, *([torch.zeros(LQ, s)] if masks else []))  # an additive mask per logit
    hand_rep = score(_Bound(hand, cfg.get("need_weights", False), masks, cfg.get("self_attn", False)),
                     example_inputs=hand_inputs)
    for key in ("mults", "adds", "params"):
        assert rep.totals[key] == hand_rep.totals[key], key


@pytest.mark.parametrize("case", ["self", "seq_first", "kdim_vdim", "no_bias", "bias_kv", "zero_attn", "need_weights"])
def test_mha_activation_memory_like_the_same_computation_by_hand(case: str) -> None:
    """Module form == written out, row by row for the rows that write or hold activations (the hand form's
    views and transposes are aliases): with ``add_bias_kv`` or ``add_zero_attn`` k' and v' are two concatenations,
    each written."""
    cfg = MHA_CASES[case]
    model = Mha(**cfg).eval()
    inputs = mha_inputs(model)
    hand = _Bound(HandMha(model.attn), cfg.get("need_weights", False), 0, cfg.get("self_attn", False))
    cols = ["kind", "act_bits_out", "act_bits_op", "act_bits_live"]
    got: list[tuple[list, list]] = []
    for m in (model, hand):
        df = score(m, example_inputs=inputs).layers
        df = df[(df.kind != "free") | (df.act_bits_out != 0)]
        got.append((list(df.kind), [x for r in df[cols[1:]].itertuples(index=False) for x in r]))
    assert got[0][0] == got[1][0]
    assert got[0][1] == pytest.approx(got[1][1], rel=1e-12)  # per example: a sum in another order


class _Bound(nn.Module):
    """HandMha with an additive mask added once per mask the module was given (attn_mask, key_padding_mask)."""

    def __init__(self, hand: HandMha, need_weights: bool, masks: int, self_attn: bool):
        super().__init__()
        self.hand, self.need_weights, self.masks, self.self_attn = hand, need_weights, masks, self_attn

    def forward(self, q, k, v, bias=None):
        if self.self_attn:
            k = v = q
        return self.hand(q, k, v, [bias] * self.masks, self.need_weights)


# ---------------------------------------------------------------------------------------- transformer layers


class Stack(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "encoder_layer":
            self.body = nn.TransformerEncoderLayer(EMB, HEADS, 32, batch_first=True)
        elif kind == "encoder_layer_norm_first_gelu":
            self.body = nn.TransformerEncoderLayer(EMB, HEADS, 32, batch_first=True, norm_first=True,
                                                   activation="gelu")
        elif kind == "encoder":
            self.body = nn.TransformerEncoder(nn.TransformerEncoderLayer(EMB, HEADS, 32, batch_first=True), 2,
                                              enable_nested_tensor=False)
        else:
            self.body = nn.TransformerDecoderLayer(EMB, HEADS, 32, batch_first=True)

    def forward(self, x):
        return self.body(x, x) if self.kind == "decoder_layer" else self.body(x)


@pytest.mark.parametrize("kind", ["encoder_layer", "encoder_layer_norm_first_gelu", "encoder", "decoder_layer"])
def test_transformer_layers_are_identical_on_every_path(kind: str) -> None:
    model = Stack(kind).eval()
    inputs = (torch.randn(NB, LQ, EMB),)
    rep = same_on_every_path(model, inputs)
    attentions = 2 if kind in ("encoder", "decoder_layer") else 1
    assert list(rows(rep).kind).count("act:softmax") == attentions
    assert rep.totals["params"] == unique_params(model)
    flops = same_on_every_path(model, inputs, rules="flops")
    assert flops.totals["params"] == unique_params(model)
    assert flops.totals["ops"] == flop_counter_ops(model, inputs)


def test_a_bare_encoder_layer_scores_under_fx() -> None:
    # fx cannot trace the layer's forward (its fast-path checks): it is recorded whole, like dispatch does
    layer = nn.TransformerEncoderLayer(EMB, HEADS, 32, batch_first=True).eval()
    reps = [score(layer, input_shape=(NB, LQ, EMB), capture=c) for c in CAPTURES]
    assert reps[0].totals == reps[1].totals == reps[2].totals
    assert reps[0].totals["params"] == unique_params(layer)


# ------------------------------------------------------------------------------------------ fused fast paths


class _Catch(TorchDispatchMode):
    """Catches the aten calls named ``names`` of a real eager run (their arguments, their output)."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names, self.calls = names, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in self.names:
            self.calls.append((func, args, kwargs or {}, out))
        return out


def _signature(ops) -> list:
    return [(o.kind, o.attrs, math.prod(o.out_shape), [(w.name, w.numel) for w in o.weights])
            for o in ops if o.kind != "free"]


@pytest.mark.parametrize("norm_first", [False, True])
def test_fused_fast_paths_are_the_slow_path_ops(norm_first: bool) -> None:
    # eval + no_grad on CPU: torch runs _transformer_encoder_layer_fwd (a layer) or _native_multi_head_attention
    layer = nn.TransformerEncoderLayer(EMB, HEADS, 32, batch_first=True, norm_first=norm_first,
                                       activation="gelu").eval()
    x = torch.randn(NB, LQ, EMB)
    names = {id(p): n for n, p in layer.named_parameters()}
    for target, model, kw in (("_transformer_encoder_layer_fwd", layer, {}),
                              ("_native_multi_head_attention", layer.self_attn, {"need_weights": False})):
        catch = _Catch((target,))
        with torch.no_grad(), catch:
            model(x, x, x, **kw) if kw else model(x)
        assert catch.calls, f"torch did not take the {target} fast path"
        func, args, kwargs, out = catch.calls[0]

        def val(t):
            if isinstance(t, torch.Tensor) and id(t) in names:
                return Val(meta=meta_of(t), param=names[id(t)], real=t, ident=id(t))
            return Val(meta=meta_of(t)) if isinstance(t, torch.Tensor) else t

        vargs = tuple(val(a) for a in args)
        vkw = {k: val(v) for k, v in kwargs.items()}
        out = tuple(meta_of(o) for o in out) if isinstance(out, tuple) else meta_of(out)
        fused = translate(make_call("aten", func, "fused", "", vargs, vkw, out))
        slow = capture_model(model, (x, x, x) if kw else (x,), method="dispatch").ops
        if kw:  # the capture's own call returns the weights too (need_weights defaults to True)
            slow = [o for o in slow if o.kind != "mean"]
        prefix = "self_attn." if model is layer.self_attn else ""
        for o in slow:
            for w in o.weights:
                w.name = prefix + w.name
        assert _signature(fused) == _signature(slow)


class _CausalSelfAttention(nn.Module):
    """nanoGPT-style: raw projections, a causal-mask buffer sliced to the traced length ``[:, :, :T, :T]``."""

    def __init__(self, d: int = 16, heads: int = 2, block: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.register_buffer("bias", torch.tril(torch.ones(block, block)).view(1, 1, block, block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = F.softmax(att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))


def test_a_mask_sliced_to_the_traced_length_is_captured_by_fx() -> None:
    """``self.bias[:, :, :T, :T]`` with T read off the input's shape: fx captures it (the slice's bounds are the
    traced ints) and counts what the dispatch recorder counts."""
    model = _CausalSelfAttention().eval()
    fx_report = score(model, input_shape=(2, 4, 16), rules="flops", capture="fx")
    dispatch_report = score(model, input_shape=(2, 4, 16), rules="flops", capture="dispatch")
    assert fx_report.capture == "fx"
    assert fx_report.totals == dispatch_report.totals
    # parameters: c_attn 16*48 + 48, c_proj 16*16 + 16 (the mask is a buffer, not stored)
    assert fx_report.totals["params"] == 16 * 48 + 48 + 16 * 16 + 16


class Gqa(nn.Module):
    """Grouped-query attention: 4 query heads, 2 key/value heads; by ``enable_gqa`` or written out as
    transformers' ``repeat_kv`` does (expand, reshape) before plain SDPA."""

    def __init__(self, written_out: bool):
        super().__init__()
        self.written_out, self.q, self.kv = written_out, nn.Linear(4, 4 * 2), nn.Linear(4, 2 * 2 * 2)

    def forward(self, x):  # (1, 2, 4)
        q = self.q(x).view(1, 2, 4, 2).transpose(1, 2)
        k, v = self.kv(x).view(1, 2, 4, 2).transpose(1, 2).chunk(2, 1)
        if not self.written_out:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        k, v = (h[:, :, None].expand(1, 2, 2, 2, 2).reshape(1, 4, 2, 2) for h in (k, v))
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_gqa_repeats_key_and_value_heads_as_written_out(capture: str) -> None:
    """SDPA's reference math repeats each key/value head for its query heads (a copy each: 16 elements written
    from 8): the same rows that write, the same counts and MTAS as the written-out form."""
    reps = [score(Gqa(w), input_shape=(1, 2, 4), capture=capture) for w in (False, True)]
    writes = [sorted(r.layers["act_bits_out"][r.layers["act_bits_out"] > 0] / 32) for r in reps]
    assert writes[0] == writes[1] == [16] * 8  # q, kv, k and v repeated, qk, scale, softmax, av
    for key in ("mults", "adds", "mtas_bits", "peak_op_activation_bits"):
        assert reps[0].totals[key] == reps[1].totals[key], key
