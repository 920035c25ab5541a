"""WikiText-103 reference models: the §1.2 normalisation baseline LSTM and JNLP's QRNN under its own counter.

Expected numbers are quoted from shared/spec (official_rules.md §1.2, team_scores.md §1.3, §2.8) or written
out as arithmetic here. The 137M/80M-weight tables are built on the meta device (no memory, no values).
Counts are per token: one sequence of one token (official_rules.md §1.1: "counts are per token; batch size
1 sequence; online inference").
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reference_models.registry import build_reference, get_reference
from reference_models.teams.jnlp_qrnn import JnlpQRNN
from scorer import score

CAPTURES = ("fx", "export", "dispatch")
V = 267_735  # official_rules.md §1.1: "word-level vocabulary of 267,735 tokens"


def score_wt(model: nn.Module, **kw):
    """Score one token id of one sequence (the wikitext103 default input, counted per token)."""
    return score(model, input_shape=(1, 1), input_dtype="long", track="wikitext103", **kw)


# ------------------------------------------------------------------------------------- the §1.2 baseline

# Weights: embedding (= tied decoder weight) V·512, LSTM W_ih 4·2048·512 and W_hh 4·2048·2048, projection
# 2048·512; biases: LSTM b_ih + b_hh 2·4·2048, projection 512, softmax V.
LSTM_WEIGHTS = V * 512 + 4 * 2048 * 512 + 4 * 2048 * 2048 + 2048 * 512
LSTM_BIASES = 2 * 4 * 2048 + 512 + V
assert LSTM_WEIGHTS == 159_100_416


@pytest.fixture(scope="module")
def lstm() -> nn.Module:
    return build_reference("wt103_lstm_baseline")


def test_lstm_baseline_is_registered_for_its_track(lstm: nn.Module) -> None:
    info = get_reference("wt103_lstm_baseline")
    assert (info.track, info.rules, info.default_input_shape, info.default_input_dtype) == (
        "wikitext103", "flops", (1, 1), "long")
    assert all(p.device.type == "meta" for p in lstm.parameters())  # 548 MB of table never allocated
    assert lstm.decoder.weight is lstm.embedding.weight


@pytest.mark.parametrize("capture", CAPTURES)
def test_lstm_baseline_matches_the_published_normalisation(lstm: nn.Module, capture: str) -> None:
    """official_rules.md §1.2: WikiText-103 baseline "159M" params, "318M" math ops (318M = 2 × 159M)."""
    rep = score_wt(lstm, rules="flops", capture=capture)
    t = rep.totals
    assert round(t["params"] / 1e6) == 159 and round(t["ops"] / 1e6) == 318
    assert t["params"] == LSTM_WEIGHTS + LSTM_BIASES  # every parameter once, the tied table once
    assert t["ops"] == 2 * LSTM_WEIGHTS  # one multiply-add per weight per token (embedding lookup: none)
    assert rep.excluded == []
    assert t["params"] == sum(p.numel() for p in lstm.parameters())  # conservation (parameters() dedups ties)


def test_lstm_baseline_counts_per_token(lstm: nn.Module) -> None:
    """A sequence of 8 tokens costs 8 times one token: the per-token counts are the same."""
    one = score_wt(lstm, rules="flops")
    eight = score(lstm, input_shape=(1, 8), input_dtype="long", track="wikitext103", rules="flops")
    assert eight.settings["tokens"] == 8 and one.settings["tokens"] == 1
    assert eight.totals == one.totals


def test_lstm_baseline_scores_under_micronet2019(lstm: nn.Module) -> None:
    rep = score_wt(lstm)
    t = rep.totals
    assert rep.excluded == [] and rep.unknown == []
    assert t["params"] == LSTM_WEIGHTS + LSTM_BIASES
    # dot products: n mults, n − 1 adds + 1 bias add per output (every linear here has a bias)
    assert rep.layers.query("kind == 'linear'")["mults"].sum() == LSTM_WEIGHTS
    assert rep.layers.query("kind == 'linear'")["adds"].sum() == LSTM_WEIGHTS
    # the cell equations per token: 3 sigmoids (2, 1), 2 tanh (2, 2), 3 muls, the gate sum 4·2048 and c's add
    h = 2048
    assert t["mults"] == LSTM_WEIGHTS + 3 * 2 * h + 2 * 2 * h + 3 * h
    assert t["adds"] == LSTM_WEIGHTS + 3 * h + 2 * 2 * h + 4 * h + h
    assert 2.0 < t["score"] < 2.01  # about 1 + 1: the baseline against itself at 32 bits


# ------------------------------------------------------------------------------------------------ JNLP

# team_scores.md §2.8 JNLP (README table, `counting.py` at 16-bit params and mults, 32-bit adds):
#   | embedding     | 160.641 | 0.000  | 0.000  | 0.000   |
#   | block_qrnn    | 48.634  | 12.176 | 24.334 | 36.510  |
#   | block_decoder | 0.535   | 40.294 | 80.053 | 120.347 |
#   | total         | 209.811 | 52.470 | 104.387| 156.857 |
# §1.3: LB 0.8232 (209.811/636 + 156.857/318 = 0.82315).
PUBLISHED = {  # module -> (params MBytes, mults M, adds M)
    "encoder": (160.641, 0.000, 0.000),
    "rnns": (48.634, 12.176, 24.334),
    "decoder": (0.535, 40.294, 80.053),
}
# The QRNN layers (in, hidden, window): Linear(window·in, 3·hidden) + bias; per hidden unit tanh (3, 2),
# 2 sigmoids (2, 1), ForgetMult (2, 2); the output-gate product not counted.
LAYERS = [(300, 1800, 2), (1800, 1800, 1), (1800, 1800, 1), (1800, 300, 1)]
QRNN_MULTS = sum(w * i * 3 * h + h * (3 + 2 * 2 + 2) for i, h, w in LAYERS)
QRNN_ADDS = sum((w * i - 1) * 3 * h + 3 * h + h * (2 + 2 * 1 + 2) for i, h, w in LAYERS)
QRNN_PARAMS = sum(w * i * 3 * h + 3 * h for i, h, w in LAYERS)
DECODER_MULTS = 300 * V + V  # tied FC, then GlobalMax V mults
DECODER_ADDS = 299 * V  # no bias add: the bias FC has kernel (0, V): (0 − 1)·V + V = 0


@pytest.fixture(scope="module")
def jnlp() -> nn.Module:
    return build_reference("jnlp_qrnn")


def test_jnlp_arithmetic_reproduces_the_published_table() -> None:
    """The formulas above, by hand, give §2.8's rows (a check of the test's own arithmetic)."""
    assert round(QRNN_PARAMS * 16 / 8 / 1e6, 3) == 48.634
    assert round(QRNN_MULTS * 16 / 32 / 1e6, 3) == 12.176 and round(QRNN_ADDS / 1e6, 3) == 24.334
    assert round(DECODER_MULTS * 16 / 32 / 1e6, 3) == 40.294 and round(DECODER_ADDS / 1e6, 3) == 80.053


@pytest.mark.parametrize("capture", CAPTURES)
def test_jnlp_reproduces_its_published_counts(jnlp: nn.Module, capture: str) -> None:
    rep = score_wt(jnlp, rules="jnlp2019", bits=16, capture=capture)
    t = rep.totals
    assert round(t["param_bits"] / 8 / 1e6, 3) == 209.811
    assert round(t["mults"] * 16 / 32 / 1e6, 3) == 52.470
    assert round(t["adds"] * 32 / 32 / 1e6, 3) == 104.387
    assert round(t["ops"] / 1e6, 3) == 156.857
    assert round(t["score"], 4) == 0.8232
    assert t["score"] == pytest.approx(209.81067 / 636 + 156.8567325 / 318)
    assert t["mults"] == QRNN_MULTS + DECODER_MULTS and t["adds"] == QRNN_ADDS + DECODER_ADDS
    blocks = rep.by_depth(1).set_index("module")
    for module, (mb, mults, adds) in PUBLISHED.items():
        row = blocks.loc[module]
        assert (round(row.param_bits / 8 / 1e6, 3), round(row.mults * 16 / 32 / 1e6, 3),
                round(row.adds / 1e6, 3)) == (mb, mults, adds), module
    assert rep.excluded == []  # the tied table is stored once, by the embedding
    assert t["param_bits"] == 16 * sum(p.numel() for p in jnlp.parameters())


def test_jnlp_rows_agree_on_every_capture_path(jnlp: nn.Module) -> None:
    """fx, torch.export and the dispatch recorder record the same recurrence, op for op."""
    cols = ["module", "kind", "mults", "adds", "param_bits"]
    frames = [score_wt(jnlp, rules="jnlp2019", bits=16, capture=c).layers for c in CAPTURES]
    frames = [f[f.kind != "free"][cols].reset_index(drop=True) for f in frames]
    assert frames[0].equals(frames[1]) and frames[0].equals(frames[2])
    kinds = list(frames[0].query("module == 'rnns.1'").kind)
    assert kinds == ["act:tanh", "act:sigmoid", "act:sigmoid", "mul", "sub", "mul", "add", "mul"]


def test_jnlp_under_micronet2019_differs_as_documented(jnlp: nn.Module) -> None:
    """The faithful count: the output gate o·c counted (1 mult per hidden unit), tanh per the default table
    (2 mults + 2 adds, one mult less), the decoder's bias add counted (V adds) and the max V − 1 comparisons."""
    own = score_wt(jnlp, rules="jnlp2019", bits=16).totals
    common = score_wt(jnlp, bits=16).totals
    hidden = sum(h for _, h, _ in LAYERS)  # 5700 hidden units over the four layers
    assert common["mults"] == own["mults"] + hidden - hidden - 1  # +o·c, −1 per tanh, max V − 1
    assert common["adds"] == own["adds"] + V
    assert common["param_bits"] == own["param_bits"]
    assert common["score"] > own["score"]


def test_jnlp_counts_come_from_the_model() -> None:
    """A smaller vocabulary on real weights: the counts follow the model in front of the scorer (vocabulary,
    zeros of the tied table), and the eager forward runs one step (logits, next token)."""
    model = JnlpQRNN(vocab_size=1000, device="cpu").eval()
    with torch.no_grad():
        logits, nxt = model(torch.tensor([[7]]))
        assert logits.shape == (1, 1, 1000) and nxt.shape == (1, 1) and torch.isfinite(logits).all()
        t = score_wt(model, rules="jnlp2019", bits=16, sparsity="uniform:0").totals
        assert t["mults"] == QRNN_MULTS + 300 * 1000 + 1000
        assert t["adds"] == QRNN_ADDS + 299 * 1000
        model.encoder.weight[:500] = 0.0  # half the tied table pruned: the decoder's dot products shrink
        rows = score_wt(model, rules="jnlp2019", bits=16).layers.set_index("module")
    nnz = int((model.encoder.weight != 0).sum())
    assert rows.loc["decoder.linear", "mults"] == pytest.approx(nnz)  # n·density mults per output, 1000 outputs
    with pytest.raises(Exception, match="one time step"):
        model(torch.zeros(1, 2, dtype=torch.long))


def test_jnlp_output_gate_is_found_by_structure() -> None:
    """jnlp2019 leaves out a mul of a sigmoid gate and a cell-state sum wherever it is, and only that mul."""

    class Gate(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x) * (x + x), torch.sigmoid(x) * torch.tanh(x)

    rep = score(Gate(), input_shape=(1, 10), rules="jnlp2019")
    muls = rep.layers.query("kind == 'mul'")
    assert list(muls.mults) == [0.0, 10.0]


# ---------------------------------------------------------------------------------------- the max kind


class Maxes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 50)

    def forward(self, x):
        y = self.fc(x)
        return y.argmax(-1), torch.max(y, dim=-1)[0], torch.amax(y), torch.max(y, y)


@pytest.mark.parametrize("capture", CAPTURES)
def test_max_counts_n_minus_one_comparisons_on_every_path(capture: str) -> None:
    """argmax/max over n values: n − 1 comparisons per output, as mults [INF]; elementwise max 1 per output."""
    rep = score(Maxes(), input_shape=(1, 3, 8), capture=capture)
    maxes = rep.layers.query("kind == 'max'")
    assert list(maxes.mults) == [3 * 49, 3 * 49, 150 - 1, 150]
    assert maxes.adds.sum() == 0
