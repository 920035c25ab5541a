"""Activation memory links each op to the op that wrote each tensor it reads, the same in every capture:
attention's output and weights come from different ops of one call (``Call.producers``), and a layer fx hands
whole to the dispatch recorder links each of its ops to the arguments that op reads. Sizes are elements per
example at 32 bits (columns / 32)."""

import pytest
import torch.nn as nn

from scorer import score

CAPTURES = ("fx", "export", "dispatch")


def _rows(r) -> list[tuple]:
    """(kind, written, working set, live) of each row, in elements, aliases left out (free rows writing
    nothing): fx alone records a tuple's items, export alone an eval dropout."""
    rows = r.layers[(r.layers.kind != "free") | (r.layers.act_bits_out != 0)]
    return [(k, o / 32, p / 32, lv / 32) for k, o, p, lv in
            zip(rows.kind, rows.act_bits_out, rows.act_bits_op, rows.act_bits_live, strict=True)]


def _live(r, suffix: str) -> float:
    return float(r.layers[r.layers.name.str.endswith(suffix)].act_bits_live.iloc[0]) / 32


class _MHA(nn.Module):
    def __init__(self, average: bool = True):
        super().__init__()
        self.a = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 64)
        self.average = average

    def forward(self, x):
        y, w = self.a(x, x, x, average_attn_weights=self.average)  # need_weights defaults to True
        return (self.fc(y), w.sum(-1)) if not self.average else self.fc(y)


def test_mha_output_comes_from_out_proj_weights_from_mean():
    # L=5, E=8, H=2: x 40, q=k=v 40, logits 2*5*5 = 50, av 40, out_proj 40, weights mean 5*5 = 25, fc 5*64 = 320
    #  mean step: softmax 50 (read here) + out_proj 40 (held for fc) + mean 25 = 115 (linked to the mean: 75)
    #  fc step: out_proj 40 + fc 320 = 360 (linked to the mean: 25 + 320 = 345); qk step 40*3 + 50 = 170
    rows = {}
    for cap in CAPTURES:
        r = score(_MHA(), input_shape=(1, 5, 8), capture=cap)
        assert _live(r, "weights_mean") == 115, cap
        fc = r.layers.iloc[-1]
        assert (fc.act_bits_op / 32, fc.act_bits_live / 32) == (360, 360), cap
        assert r.totals["mtas_bits"] / 32 == 360 and r.totals["peak_op_activation_bits"] / 32 == 360, cap
        rows[cap] = _rows(r)
    assert rows["fx"] == rows["export"] == rows["dispatch"]


def test_mha_per_head_weights_come_from_softmax():
    # average_attn_weights=False: the weights are the softmax's (1x2x5x5 = 50), read by w.sum(-1) (2*5 = 10)
    #  after fc, so the softmax is held across out_proj and fc (linked to out_proj instead: 40 held)
    #  out_proj step: av 40 + out_proj 40 + softmax 50 = 130; fc step: out_proj 40 + fc 320 + softmax 50 = 410
    rows = {}
    for cap in CAPTURES:
        r = score(_MHA(average=False), input_shape=(1, 5, 8), capture=cap)
        assert _live(r, "out_proj") == 130, cap
        assert r.totals["mtas_bits"] / 32 == 410, cap
        rows[cap] = _rows(r)
    assert rows["fx"] == rows["export"] == rows["dispatch"]


class _Decoder(nn.Module):
    def __init__(self, project: bool = True):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        self.layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.project = project

    def forward(self, x, m):
        return self.layer(self.a(x), self.b(m)) if self.project else self.layer(x, m)


def test_delegated_layer_links_each_op_to_the_arguments_it_reads():
    # fx keeps nn.TransformerDecoderLayer whole (dispatch recorder); tgt = a(x) 1x2x8 = 16, memory = b(m) 1x20x8
    # = 160, E=8, H=2. Self-attention reads tgt alone: q_proj's working set a 16 + q 16 = 32 (not + memory 160);
    # tgt is dead after the first residual add. Cross-attention's v_proj step: memory 160 + norm1 16 + q 16 +
    # k 160 + v 160 = 512, the maximum (tgt held to there as well: 528)
    rows = {}
    for cap in CAPTURES:
        r = score(_Decoder(), input_shape=[(1, 2, 8), (1, 20, 8)], capture=cap)
        q = r.layers[r.layers.name.str.endswith("q_proj")].iloc[0]
        assert q.act_bits_op / 32 == 32, cap
        assert r.totals["mtas_bits"] / 32 == 512, cap
        rows[cap] = _rows(r)
    assert rows["fx"] == rows["export"] == rows["dispatch"]


@pytest.mark.parametrize("cap", CAPTURES)
def test_delegated_layer_on_the_model_inputs(cap):
    # the layer reads the model's inputs (16 + 160 = 176), held together until the last op reading one:
    # cross-attention's v_proj, whose step is 176 + norm1 16 + q 16 + k 160 + v 160 = 528
    r = score(_Decoder(project=False), input_shape=[(1, 2, 8), (1, 20, 8)], capture=cap)
    assert r.totals["mtas_bits"] / 32 == 528


class _PassThrough(nn.Module):
    """A torch.nn wrapper fx hands whole to the dispatch recorder, around a layer that returns its input as it
    is (dropout in eval mode): the wrapper's output is the model's input."""

    def __init__(self):
        super().__init__()
        self.dp, self.a, self.b = nn.DataParallel(nn.Dropout()), nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, x):
        return self.a(x) + self.b(self.dp(x))


@pytest.mark.parametrize("cap", CAPTURES)
def test_delegated_layer_returning_the_input_keeps_it_live(cap):
    # x 8 is read by a and by b (through the wrapper): live until b. a: x + 4 = 12; b: x + a + b = 16; add: 12
    r = score(_PassThrough().eval(), input_shape=(1, 8), capture=cap)
    assert r.totals["mtas_bits"] / 32 == 16
