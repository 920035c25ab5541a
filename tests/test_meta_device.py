"""Models built under ``torch.device("meta")`` (weights without data, how large models are inspected): every
capture scores them with dense weights and says so, and never allocates a tensor of a weight's size."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from scorer import score
from scorer.errors import CaptureError

CAPTURES = ("fx", "export", "dispatch")


class MLP(nn.Module):
    def __init__(self, d_in: int = 16, d_hidden: int = 32, d_out: int = 8):
        super().__init__()
        self.a = nn.Linear(d_in, d_hidden)
        self.b = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


# Linear(16, 32) + Linear(32, 8): 16·32 + 32 + 32·8 + 8 = 808 weights
MLP_PARAMS = 16 * 32 + 32 + 32 * 8 + 8


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_meta_model_scores_dense_on_every_path(capture: str) -> None:
    with torch.device("meta"):
        model = MLP()
    rep = score(model, input_shape=(1, 16), capture=capture)
    assert rep.capture == capture
    assert rep.totals["params"] == MLP_PARAMS
    assert any("meta device" in n and "sparsity" in n for n in rep.notes)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_meta_model_counts_like_the_same_model_with_dense_real_weights(capture: str) -> None:
    with torch.device("meta"):
        meta = MLP()
    real = MLP()
    got, want = score(meta, input_shape=(1, 16), capture=capture), score(real, input_shape=(1, 16), capture=capture)
    assert got.totals == want.totals
    assert not any("meta device" in n for n in want.notes)


@pytest.mark.parametrize("rules", ["kaist2019", "mit_han2019", "osi_ai2019"])
def test_a_meta_model_counts_like_its_dense_twin_under_team_rules(rules: str) -> None:
    """The team rule sets that count a bias's nonzeros read a meta bias as dense, as micronet2019 does."""
    with torch.device("meta"):
        meta = MLP()
    got = score(meta, input_shape=(1, 16), rules=rules).totals
    want = score(MLP(), input_shape=(1, 16), rules=rules).totals
    assert {k: got[k] for k in ("params", "mults", "adds")} == {k: want[k] for k in ("params", "mults", "adds")}


@pytest.mark.parametrize("capture", CAPTURES)
def test_some_real_some_meta_parameters(capture: str) -> None:
    model = MLP()
    with torch.no_grad():
        model.a.weight[:8] = 0.0  # half of a real weight is zero: measured there, dense on meta
    model.b = model.b.to("meta")
    rep = score(model, input_shape=(1, 16), capture=capture, rules="flops")
    # the flops rule set credits no sparsity: every weight counted once, whatever device it is on
    assert rep.totals["params"] == MLP_PARAMS
    assert any("meta device" in n and "b.weight" in n for n in rep.notes)
    # micronet2019 measures the real tensor's zeros (a.weight: 256 of 512) and takes b dense
    sparse = score(model, input_shape=(1, 16), capture=capture)
    dense = score(MLP(), input_shape=(1, 16), capture=capture)
    assert sparse.totals["params"] < dense.totals["params"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_meta_weight_larger_than_memory_is_never_allocated(capture: str) -> None:
    # a 2^20 x 2^20 weight is 4 TiB of float32: any real tensor of its size fails to allocate
    n = 1 << 20
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(n, n, bias=False), nn.ReLU())
    rep = score(model, input_shape=(1, n), capture=capture, rules="flops")
    assert rep.totals["params"] == n * n


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_meta_cnn_with_meta_buffers_matches_its_real_twin(capture: str) -> None:
    with torch.device("meta"):
        meta = _cnn()
    got = score(meta, input_shape=(1, 3, 16, 16), capture=capture)
    assert got.totals == score(_cnn(), input_shape=(1, 3, 16, 16), capture=capture).totals


class Transformerish(nn.Module):
    """Embedding, RMSNorm and per-head attention written out (the forward reads a parameter directly), untied
    head: the shapes of a small LM."""

    def __init__(self, vocab: int = 50, d: int = 16, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.emb = nn.Embedding(vocab, d)
        self.norm = nn.Parameter(torch.ones(d))
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.emb(idx)
        x = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * self.norm
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return self.head(x + self.proj(y))


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_meta_transformer_matches_its_real_twin(capture: str) -> None:
    with torch.device("meta"):
        meta = Transformerish()
    idx = torch.zeros(1, 6, dtype=torch.long)
    got = score(meta, example_inputs=(idx,), capture=capture, rules="flops")
    want = score(Transformerish(), example_inputs=(idx,), capture=capture, rules="flops")
    assert got.totals == want.totals
    # 50·16 + 16 + 16·48 + 48 + 16·16 + 16 + 16·50
    assert got.totals["params"] == 800 + 16 + 768 + 48 + 256 + 16 + 800


class NeedsValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y if bool(y.sum() > 0) else -y


def test_a_meta_model_that_needs_values_is_refused_loudly() -> None:
    with torch.device("meta"):
        model = NeedsValues()
    with pytest.raises(CaptureError, match="meta device .*cannot be run for real"):
        score(model, input_shape=(1, 4), capture="dispatch")
