"""Activation memory of recurrent layers (scorer.memory): W_hh h, f * c and z * h read the state arguments
when they are activations and a constant when the state is zero or absent; over T > 1 steps W_hh h reads
the previous steps' h (an activation); a cell reads its hx; a bidirectional layer's output joins both
directions. Numbers are elements per example at 32 bits, by hand; every capture gives the same rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from scorer import score

CAPTURES = ("fx", "export", "dispatch")
TERMS = ("_ih", "_hh", "_gates", "_i", "_f", "_g", "_o", "_fc", "_ig", "_c", "_tanh_c", "_h", "_rz", "_r",
         "_z", "_r_hn", "_n_pre", "_n", "_1mz", "_1mz_n", "_zh", "_out", "_h_n", "_c_n")


def _scores(model: nn.Module, **kw) -> list:
    """One report per capture; the recurrent ops' memory rows and the totals agree across captures."""
    reps = [score(model, capture=c, **kw) for c in CAPTURES]
    cols = ["kind", "out_shape", "act_bits_out", "act_bits_op", "act_bits_live", "mults", "adds"]
    rows = []
    for r in reps:
        df = r.layers[r.layers["name"].str.endswith(TERMS)]
        rows.append([tuple(x) for x in df[cols].itertuples(index=False)])
    assert rows[0] and all(r == rows[0] for r in rows[1:])
    for key in ("mtas_bits", "peak_op_activation_bits", "mults", "adds"):
        assert len({r.totals[key] for r in reps}) == 1, key
    return reps


def _row(rep, term: str) -> dict:
    """The row of the (first) op whose name ends with ``term``, in elements (bits / 32)."""
    df = rep.layers
    row = df[df["name"].str.endswith(term)].iloc[0]
    return {k: row[k] / 32 for k in ("act_bits_out", "act_bits_op", "act_bits_live")}


def _rows(rep, term: str) -> list[dict]:
    df = rep.layers
    return [{k: r[k] / 32 for k in ("act_bits_out", "act_bits_live")} for _, r in df[df["name"].str.endswith(term)].iterrows()]


class Lstm(nn.Module):
    """nn.LSTM(4, 3) on the input, after a linear, or after a linear from a state computed from the input."""

    def __init__(self, variant: str):
        super().__init__()
        self.v, self.p, self.hp, self.l = variant, nn.Linear(4, 4), nn.Linear(4, 3), nn.LSTM(4, 3, batch_first=True)

    def forward(self, x):
        if self.v == "on_input":
            return self.l(x)[0]
        if self.v == "after_linear":
            return self.l(self.p(x))[0]
        h0 = self.hp(x).view(1, 1, 3)
        return self.l(self.p(x), (h0, torch.zeros(1, 1, 3)))[0]


@pytest.mark.parametrize("variant", ["on_input", "after_linear"])
def test_zero_state_one_step_recurrent_term_is_a_constant(variant: str) -> None:
    # T = 1: W_hh·0 + b_hh reads no activation (0 bits). ih 12 + hh 0 + gates 12 = 24 at the gates step
    for rep in _scores(Lstm(variant), input_shape=(1, 1, 4)):
        assert _row(rep, "l0_hh")["act_bits_out"] == 0
        assert rep.totals["mtas_bits"] / 32 == 24


def test_state_from_the_input_is_read_by_the_recurrent_term_and_lives_until_it() -> None:
    # h0 = hp(x) (3), c0 = zeros (constant). hp: x 4 + h0 3 = 7; p: 7 + 4 = 11; ih: h0 3 + p 4 + ih 12 = 19;
    # hh (reads h0): h0 3 + ih 12 + hh 12 = 27, its op h0 3 + hh 12 = 15; gates: 12 + 12 + 12 = 36
    for rep in _scores(Lstm("state"), input_shape=(1, 1, 4)):
        assert _row(rep, "l0_ih")["act_bits_live"] == 19
        assert _row(rep, "l0_hh") == {"act_bits_out": 12, "act_bits_op": 15, "act_bits_live": 27}
        assert _row(rep, "l0_fc")["act_bits_op"] == 3 + 3  # f, fc: c0 is a constant
        assert rep.totals["mtas_bits"] / 32 == 36


def test_more_than_one_step_recurrent_term_is_an_activation() -> None:
    # T = 2 from zero state: step 2 reads h1, so W_hh h over both steps is an activation: 2·12 = 24.
    # gates step: ih 24 + hh 24 + gates 24 = 72
    for rep in _scores(Lstm("after_linear"), input_shape=(1, 2, 4)):
        assert _row(rep, "l0_hh")["act_bits_out"] == 24
        assert rep.totals["mtas_bits"] / 32 == 72


class WithState(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.LSTM(4, 3)

    def forward(self, x, h0, c0):
        return self.l(x, (h0, c0))[0]


def test_state_given_as_model_input_keeps_the_inputs_until_f_times_c() -> None:
    # inputs x 4 + h0 3 + c0 3 = 10, live until their last reader f * c0. ih: 10 + 12 = 22;
    # hh (reads h0): 10 + 12 + 12 = 34, its op 10 + 12 = 22; gates: 10 + 3·12 = 46;
    # fc: 10 + i, f, g, o 12 + fc 3 = 25, its op f 3 + c0 (inputs) 10 + fc 3 = 16
    ins = (torch.randn(1, 1, 4), torch.randn(1, 1, 3), torch.randn(1, 1, 3))
    for rep in _scores(WithState(), example_inputs=ins):
        assert _row(rep, "l0_hh") == {"act_bits_out": 12, "act_bits_op": 22, "act_bits_live": 34}
        assert _row(rep, "l0_fc") == {"act_bits_out": 3, "act_bits_op": 16, "act_bits_live": 25}
        assert rep.totals["mtas_bits"] / 32 == 46


class CellLoop(nn.Module):
    """nn.LSTMCell unrolled over 2 steps, then a linear."""

    def __init__(self):
        super().__init__()
        self.cell, self.fc = nn.LSTMCell(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        h, c = self.cell(x[:, 0])
        h, c = self.cell(x[:, 1], (h, c))
        return self.fc(h)


def test_cell_reads_its_state_arguments() -> None:
    # x 8 (held until its last reader, the 2nd cell's ih). Cell 1: hh = W_hh·0 + b (constant);
    # gates1: x 8 + ih 12 + gates 12 = 32. Cell 2: hh reads h1 (12 bits), f * c reads c1 (cell 1's c op,
    # its second output), so h1 and c1 live until then: ih2: x 8 + h1 3 + c1 3 + ih 12 = 26; hh2: h1 + c1 +
    # ih 12 + hh 12 = 30; gates2: c1 3 + ih 12 + hh 12 + gates 12 = 39
    for rep in _scores(CellLoop(), input_shape=(1, 2, 4)):
        assert [r["act_bits_out"] for r in _rows(rep, "_hh")] == [0, 12]
        assert [r["act_bits_live"] for r in _rows(rep, "_ih")] == [20, 26]
        assert [r["act_bits_live"] for r in _rows(rep, "_hh")] == [20, 30]
        assert [r["act_bits_live"] for r in _rows(rep, "_gates")] == [32, 39]
        assert rep.totals["mtas_bits"] / 32 == 39


class GruState(nn.Module):
    def __init__(self):
        super().__init__()
        self.p, self.hp, self.l = nn.Linear(4, 4), nn.Linear(4, 3), nn.GRU(4, 3, batch_first=True)

    def forward(self, x):
        return self.l(self.p(x), self.hp(x).view(1, 1, 3))[0]


def test_gru_z_times_h_reads_the_state() -> None:
    # h0 3 lives until z * h0. After p: ih: h0 3 + p 4 + ih 9 = 16; hh: h0 3 + ih 9 + hh 9 = 21;
    # rz: 21 + rz 6 = 27; r: 27 + 3 = 30; z: 30 + 3 = 33 (rz's last reader); zh: h0 3 + z 3 + (1−z)n 3 + zh 3
    # = 12, its op z 3 + h0 3 + zh 3 = 9
    for rep in _scores(GruState(), input_shape=(1, 1, 4)):
        assert _row(rep, "l0_hh")["act_bits_op"] == 3 + 9
        assert _row(rep, "l0_z")["act_bits_live"] == 33
        assert _row(rep, "l0_zh") == {"act_bits_out": 3, "act_bits_op": 9, "act_bits_live": 12}
        assert rep.totals["mtas_bits"] / 32 == 33


class BiLstm(nn.Module):
    def __init__(self, layers: int = 1):
        super().__init__()
        self.p, self.l = nn.Linear(4, 4), nn.LSTM(4, 3, num_layers=layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(6, 64)

    def forward(self, x):
        return self.fc(self.l(self.p(x))[0])


def test_bidirectional_output_joins_both_directions() -> None:
    # the join (free, no arithmetic) writes the output (6) from both directions' h (3 + 3), op 12; live 18: both
    # directions' c (3 + 3) wait for c_n's join; fc reads all 6: 6 + 64 = 70
    for rep in _scores(BiLstm(), input_shape=(1, 1, 4)):
        join = rep.layers[rep.layers["name"].str.endswith("_l0_out")].iloc[0]
        assert join["kind"] == "free" and join["mults"] == join["adds"] == 0
        assert _row(rep, "_l0_out") == {"act_bits_out": 6, "act_bits_op": 12, "act_bits_live": 18}
        assert rep.totals["mtas_bits"] / 32 == 70


def test_bidirectional_layers_read_the_previous_join() -> None:
    # T = 2: layer 1 (both directions) reads layer 0's joined output (2·6) and writes ih (2·12): op 36
    for rep in _scores(BiLstm(2), input_shape=(1, 2, 4)):
        df = rep.layers
        assert list(df[df["name"].str.endswith(("_l1_ih", "_l1_reverse_ih"))]["act_bits_op"] / 32) == [36, 36]
        joins = df[df["name"].str.endswith(("_l0_out", "_l1_out"))]
        assert len(joins) == 2 and joins["mults"].sum() == joins["adds"].sum() == 0


class LstmState(nn.Module):
    """One-layer LSTM over one step from zero state; its final cell state c_n feeds a linear."""

    def __init__(self):
        super().__init__()
        self.l, self.fc = nn.LSTM(4, 3, batch_first=True), nn.Linear(3, 2)

    def forward(self, x):
        out, (h, c) = self.l(x)
        return self.fc(c[0])


def test_lstm_final_cell_state_is_its_c_term() -> None:
    # x 4. ih: x + 12; hh reads the zero state: nothing; gates 12; i f g o 3 each; f*c0 reads f only; c = fc + ig;
    # c_n (c) is read by fc at the end, so it is live through tanh(c) and h: tanh_c: o 3 + c 3 + tc 3 = 9;
    # h: o + c + tc + h 3 = 12 (c would be dead if c_n were linked to h); fc: c + 2
    for rep in _scores(LstmState(), input_shape=(1, 1, 4)):
        assert _row(rep, "l0_tanh_c")["act_bits_live"] == 9
        assert _row(rep, "l0_h")["act_bits_live"] == 12
        fc = rep.layers[rep.layers["module"] == "fc"].iloc[0]
        assert fc["act_bits_op"] / 32 == 3 + 2
        assert rep.totals["mtas_bits"] / 32 == 24  # ih + gates, or gates + i f g o


class LstmFc(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(8, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


@pytest.mark.parametrize("precision", [{"default": {"weight": 8, "input": 8}},
                                       {"layers": {"rnn": {"act": 8, "weight": 8}}}])
def test_memory_reads_leave_widths_alone(precision) -> None:
    """What a recurrent term holds live (its state) is not what its operand width comes from: under a precision
    config the counts are the same on every capture, and W_hh h multiplies at max(weight, the width of an
    operand no op produces: the input width), as before memory reads existed."""
    reps = [score(LstmFc(), input_shape=(5, 2, 8), capture=c, precision=precision) for c in CAPTURES]
    assert len({r.totals["ops"] for r in reps}) == 1
    input_width = precision["default"].get("input", 32) if "default" in precision else 32
    for r in reps:
        hh = r.layers[r.layers["name"].str.endswith("_l0_hh")].iloc[0]
        assert hh["mul_bits"] == max(8, input_width)


class DeepLstm(nn.Module):
    """A two-layer LSTM whose final hidden states feed a linear: ``h_n`` (2, B, 3) stacks both layers' h."""

    def __init__(self):
        super().__init__()
        self.l, self.fc = nn.LSTM(4, 3, num_layers=2), nn.Linear(3, 2)

    def forward(self, x):
        out, (h, c) = self.l(x)
        return self.fc(h[-1]), c


class DeepLstmWrittenOut(nn.Module):
    """The same math from two one-layer LSTMs, h_n and c_n concatenated by hand."""

    def __init__(self, deep: DeepLstm):
        super().__init__()
        self.l0, self.l1, self.fc = nn.LSTM(4, 3), nn.LSTM(3, 3), deep.fc
        for layer, one in enumerate((self.l0, self.l1)):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                setattr(one, f"{name}_l0", getattr(deep.l, f"{name}_l{layer}"))

    def forward(self, x):
        out0, (h0, c0) = self.l0(x)
        out1, (h1, c1) = self.l1(out0)
        h, c = torch.cat([h0, h1]), torch.cat([c0, c1])
        return self.fc(h[-1]), c


def test_deeper_lstm_final_states_stack_every_layer() -> None:
    # T = B = 1 from zero state. Layer 0 as in the one-layer case; its h (3) and c (3) stay live for h_n and c_n.
    # Layer 1: ih reads h0: c0 3 + h0 3 + ih 12 = 18; gates: 6 + ih 12 + gates 12 = 30 (also at o: 6 + 12 + 4·3).
    # h_n (free) writes 2·3 from h0, h1: c0 + c1 + h0 + h1 + h_n = 18; c_n: h_n 6 (read by fc) + c0 + c1 + c_n 6
    # = 18; fc reads h_n's last row (a view of h_n): 6 + 2
    for rep in _scores(DeepLstm(), input_shape=(1, 1, 4)):
        assert _row(rep, "l1_gates")["act_bits_live"] == 30
        assert _row(rep, "_h_n") == {"act_bits_out": 6, "act_bits_op": 12, "act_bits_live": 18}
        assert _row(rep, "_c_n") == {"act_bits_out": 6, "act_bits_op": 12, "act_bits_live": 18}
        fc = rep.layers[rep.layers["module"] == "fc"].iloc[0]
        assert fc["act_bits_op"] / 32 == 6 + 2
        assert rep.totals["mtas_bits"] / 32 == 30
        joins = rep.layers[rep.layers["name"].str.endswith(("_h_n", "_c_n"))]
        assert set(joins["kind"]) == {"free"} and joins["mults"].sum() == joins["adds"].sum() == 0


@pytest.mark.parametrize("shape", [(1, 1, 4), (3, 2, 4)])
def test_deeper_lstm_equals_its_layers_written_out(shape: tuple) -> None:
    """Module form == the same math written out: the stacked final states are the concatenation of each
    layer's (its h and c terms), so the memory totals and what the head reads agree, as do the counts."""
    deep = DeepLstm()
    for c in CAPTURES:
        a = score(deep, input_shape=shape, capture=c)
        b = score(DeepLstmWrittenOut(deep), input_shape=shape, capture=c)
        for key in ("mtas_bits", "peak_op_activation_bits", "params", "mults", "adds"):
            assert a.totals[key] == b.totals[key], (c, key)
        heads = [r.layers[r.layers["module"] == "fc"].iloc[0]["act_bits_op"] for r in (a, b)]
        # h_n (2, B, 3) + fc's output (B, 2), per example: divided by the input's dim 0 (here the time dim)
        assert heads[0] == heads[1] == (2 * shape[1] * 3 + shape[1] * 2) / shape[0] * 32


class DeepGru(nn.Module):
    def __init__(self, bidirectional: bool):
        super().__init__()
        self.g = nn.GRU(4, 3, num_layers=2, bidirectional=bidirectional, batch_first=True)
        self.fc = nn.Linear(3, 5)

    def forward(self, x):
        return self.fc(self.g(x)[1])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_deeper_gru_h_n_stacks_every_layer_and_direction(bidirectional: bool) -> None:
    # h_n (layers · directions, B, 3) per example: 4 · 3 = 12 bidirectional, 2 · 3 = 6 not; fc reads it all
    n = 4 if bidirectional else 2
    for rep in _scores(DeepGru(bidirectional), input_shape=(2, 5, 4)):
        h_n = rep.layers[rep.layers["name"].str.endswith("_h_n")]
        assert len(h_n) == 1 and h_n.iloc[0]["act_bits_out"] / 32 == n * 3
        assert h_n.iloc[0]["out_shape"] == f"{n}x2x3"
        fc = rep.layers[rep.layers["module"] == "fc"].iloc[0]
        assert fc["act_bits_op"] / 32 == n * 3 + n * 5
