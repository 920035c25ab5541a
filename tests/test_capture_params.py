"""What the capture backends say about parameters: tied weights once on every path, buffers never stored as
parameters, and fx tracing of shape arithmetic (``B, T, _ = x.shape``) without falling back."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scorer import score
from scorer.capture import capture_model
from scorer.errors import CaptureError

CAPTURES = ("fx", "export", "dispatch")


class TiedLM(nn.Module):
    """decoder.weight is embedding.weight (500 x 64): one table of 32,000 plus the decoder bias 500."""

    def __init__(self, vocab: int = 500, d: int = 64):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.decoder = nn.Linear(d, vocab)
        self.decoder.weight = self.embedding.weight

    def forward(self, idx):
        return self.decoder(torch.tanh(self.embedding(idx)))


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_tied_table_is_stored_once_on_every_path(capture: str) -> None:
    rep = score(TiedLM(), example_inputs=(torch.zeros(1, 10, dtype=torch.long),), capture=capture, rules="flops")
    assert rep.totals["params"] == 500 * 64 + 500


def test_tied_totals_agree_across_paths() -> None:
    idx = torch.zeros(1, 10, dtype=torch.long)
    totals = {c: score(TiedLM(), example_inputs=(idx,), capture=c).totals for c in CAPTURES}
    assert totals["export"] == totals["fx"] and totals["dispatch"] == totals["fx"]


class WindowAttention(nn.Module):
    """Swin style: a registered ``attn_mask`` buffer (shifted-window mask) added to the attention logits,
    and a BatchNorm whose running statistics are buffers too."""

    def __init__(self, d: int = 16, heads: int = 2, n: int = 9):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.BatchNorm1d(n)
        self.register_buffer("attn_mask", torch.randn(1, 1, n, n))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * 0.5
        att = torch.softmax(att + self.attn_mask, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        return self.norm(self.proj(y))


@pytest.mark.parametrize("capture", CAPTURES)
def test_buffers_are_never_stored_as_parameters(capture: str) -> None:
    model = WindowAttention()
    cap = capture_model(model, (torch.empty(2, 9, 16, device="meta"),), capture)
    stored = {w.name for op in cap.ops for w in op.weights}
    assert "attn_mask" not in stored
    assert not any("running" in s or "num_batches" in s for s in stored)
    # qkv 16·48 + 48, proj 16·16 + 16, BN weight and bias 2·9: no 81 mask entries, no running stats
    rep = score(model, input_shape=(2, 9, 16), capture=capture, rules="flops")
    assert rep.totals["params"] == 16 * 48 + 48 + 16 * 16 + 16 + 2 * 9


class ShapeArithmetic(nn.Module):
    def __init__(self, d: int = 16, heads: int = 4):
        super().__init__()
        self.h = heads
        self.q = nn.Linear(d, d)

    def forward(self, x):
        B, T, _ = x.shape
        y = self.q(x).view(B, T, self.h, -1)
        z = y.reshape(B, T, -1)
        return z.view(x.shape[:2] + (self.h, -1)).flatten(2)


def test_fx_traces_shape_arithmetic_without_falling_back() -> None:
    rep = score(ShapeArithmetic(), input_shape=(2, 5, 16))
    assert rep.capture == "fx"
    # Linear(16, 16) on 5 tokens per example: 16·16 + 16 weights, 5·16·16 mults
    assert rep.totals["params"] == 16 * 16 + 16
    assert rep.totals["mults"] == 5 * 16 * 16


class NewZeros(nn.Module):
    def forward(self, x):
        return x + x.new_zeros(x.shape)


def test_fx_traces_a_tensor_made_from_a_shape() -> None:
    cap = capture_model(NewZeros(), (torch.empty(2, 5, 16, device="meta"),), "fx")
    assert cap.method == "fx"
    assert tuple(cap.ops[-1].out_shape) == (2, 5, 16)


class ReadsDotData(nn.Module):
    """A weight read through ``.data`` (old BNN and weight-clipping code), 16 of its 32 entries zero."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 8))
        with torch.no_grad():
            self.w[:, :4] = 0

    def forward(self, x):
        return F.linear(x, self.w.data)


def test_a_weight_read_through_data_is_stored_or_refused() -> None:
    """fx and dispatch store w (16 nonzeros x 16 bits + a 32-bit mask; 4 outputs x 4 nonzero mults); export lifts
    ``w.data`` as a constant without values (it listed w as unused and stored nothing): it refuses, so auto stays
    exact."""
    for capture in ("fx", "dispatch", "auto"):
        rep = score(ReadsDotData(), input_shape=(1, 8), bits=16, capture=capture)
        assert (rep.totals["param_bits"], rep.totals["mults"], rep.excluded) == (16 * 16 + 32, 16, []), capture
    with pytest.raises(CaptureError, match="w.data"):
        score(ReadsDotData(), input_shape=(1, 8), bits=16, capture="export")


class TiedTable(nn.Module):
    """An embedding table reused as the output layer's weight, and a layer held under a second name, called by it."""

    def __init__(self):
        super().__init__()
        self.emb, self.out = nn.Embedding(100, 16), nn.Linear(16, 100, bias=False)
        self.out.weight = self.emb.weight
        self.a = nn.Linear(100, 8, bias=False)
        self.b = self.a

    def forward(self, tokens):
        return self.b(self.out(self.emb(tokens)))


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_tied_tensors_and_shared_layers_go_by_their_first_names(capture) -> None:
    """One tensor, one name (``named_parameters()``'s first: emb.weight); one layer, one name (``named_modules()``'s
    first: a), whatever name the forward reads it by; so a sparsity glob on either first name acts on every capture,
    on storage and products alike (0.5 of the 100 x 16 table: 800 values x 16 bits + a 1600-bit mask; of a's
    8 x 100: 400 x 16 + 800)."""
    rep = score(TiedTable(), input_shape=(1, 1), input_dtype="long", bits=16, capture=capture)
    assert rep.layers[rep.layers.param_bits > 0].module.tolist() == ["emb", "a"]
    t = score(TiedTable(), input_shape=(1, 1), input_dtype="long", bits=16, capture=capture,
              sparsity={"emb.weight": 0.5, "a": 0.5}).totals
    assert t["param_bits"] == 800 * 16 + 1600 + 400 * 16 + 800
    assert t["mults"] == 800 + 400  # the output layer multiplies the half-zero table, a its half-zero weight
