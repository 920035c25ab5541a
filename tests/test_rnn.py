"""Recurrent layers count exactly like their documented cell equations written out by hand with the same
weights (nn.Linear, torch.sigmoid, torch.tanh, *, +, 1 − z in a Python loop over time), on every capture
path; under rules="flops" they match FlopCounterMode, which on CPU sees the addmm/mm of the decomposed
recurrence (2·M·N·K each; bias adds and gate arithmetic not counted, as in the flops rule set). On CPU an
nn.LSTM without projection runs as one ``aten.mkldnn_rnn_layer``, which FlopCounterMode counts as 0 FLOPs,
so the reference is taken with oneDNN off (``torch.backends.mkldnn.flags(enabled=False)``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from scorer import score
from scorer.capture import capture_model
from scorer.errors import CaptureError, UnknownOpError

CAPTURES = ("fx", "export", "dispatch")


def _linear(w: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return lin


class HandCell(nn.Module):
    """One layer and direction's step, exactly as the PyTorch documentation writes it."""

    def __init__(self, mode: str, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
        super().__init__()
        self.mode = mode
        self.ih = _linear(w_ih, b_ih)
        self.hh = _linear(w_hh, b_hh)
        self.hr = _linear(w_hr, None) if w_hr is not None else None

    def forward(self, x, h, c=None):
        if self.mode == "lstm":
            i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, -1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            if self.hr is not None:
                h = self.hr(h)
            return h, c
        if self.mode == "gru":
            i_r, i_z, i_n = self.ih(x).chunk(3, -1)
            h_r, h_z, h_n = self.hh(h).chunk(3, -1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return (1 - z) * n + z * h, None
        pre = self.ih(x) + self.hh(h)
        return (torch.tanh(pre) if self.mode == "rnn_tanh" else torch.relu(pre)), None


def _mode(m: nn.Module) -> str:
    if isinstance(m, (nn.LSTM, nn.LSTMCell)):
        return "lstm"
    if isinstance(m, (nn.GRU, nn.GRUCell)):
        return "gru"
    kind = m.mode if isinstance(m, nn.RNN) else m.nonlinearity
    return "rnn_relu" if kind.lower().endswith("relu") else "rnn_tanh"


class HandRNN(nn.Module):
    """nn.LSTM / nn.GRU / nn.RNN unrolled over ``steps`` (static, so fx traces the loop)."""

    def __init__(self, ref: nn.RNNBase, steps: int, batch: int | None):
        super().__init__()
        self.mode, self.steps, self.batch = _mode(ref), steps, batch
        self.layers, self.hidden, self.out_size = ref.num_layers, ref.hidden_size, ref.proj_size or ref.hidden_size
        self.dirs = 2 if ref.bidirectional else 1
        self.tdim = 1 if ref.batch_first and batch is not None else 0
        self.cells = nn.ModuleList()
        for layer in range(ref.num_layers):
            for sfx in ("", "_reverse")[: self.dirs]:
                get = lambda p: getattr(ref, f"{p}_l{layer}{sfx}", None)  # noqa: B023, E731
                self.cells.append(HandCell(self.mode, get("weight_ih"), get("weight_hh"), get("bias_ih"),
                                           get("bias_hh"), get("weight_hr")))

    def forward(self, x):
        lead = () if self.batch is None else (self.batch,)
        ts = [x[(slice(None),) * self.tdim + (t,)] for t in range(self.steps)]
        for layer in range(self.layers):
            outs = []
            for d in range(self.dirs):
                cell = self.cells[layer * self.dirs + d]
                h = torch.zeros(*lead, self.out_size)
                c = torch.zeros(*lead, self.hidden)
                seq = [None] * self.steps
                for t in (range(self.steps) if d == 0 else reversed(range(self.steps))):
                    h, c = cell(ts[t], h, c)
                    seq[t] = h
                outs.append(seq)
            ts = [torch.cat([o[t] for o in outs], -1) if self.dirs == 2 else outs[0][t] for t in range(self.steps)]
        return torch.stack(ts, self.tdim)


class HandCellModel(nn.Module):
    """nn.LSTMCell / nn.GRUCell / nn.RNNCell for one step from zero state."""

    def __init__(self, ref: nn.RNNCellBase, batch: int | None):
        super().__init__()
        self.cell = HandCell(_mode(ref), ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
        self.lead, self.hidden = (() if batch is None else (batch,)), ref.hidden_size

    def forward(self, x):
        h = torch.zeros(*self.lead, self.hidden)
        return self.cell(x, h, torch.zeros(*self.lead, self.hidden))[0]


class WithState(nn.Module):
    """Calls the layer with a given initial state (h0, or (h0, c0) for an LSTM)."""

    def __init__(self, layer: nn.Module, lstm: bool):
        super().__init__()
        self.layer, self.lstm = layer, lstm

    def forward(self, x, h0, c0=None):
        out = self.layer(x, (h0, c0) if self.lstm else h0)
        return out[0] if isinstance(out, tuple) else out


class Model(nn.Module):
    """The layer inside a model (its output, or its first output)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        out = self.layer(x)
        return out[0] if isinstance(out, tuple) else out


T, B, IN, H = 5, 3, 4, 6
LAYERS = {
    "lstm_2l_bidir_proj_bf": (lambda: nn.LSTM(IN, H, num_layers=2, bidirectional=True, proj_size=3, batch_first=True),
                              (B, T, IN)),
    "lstm_nobias_seqfirst": (lambda: nn.LSTM(IN, H, bias=False), (T, B, IN)),
    "lstm_unbatched_proj": (lambda: nn.LSTM(IN, H, proj_size=2), (T, IN)),
    "gru_2l_bidir_bf": (lambda: nn.GRU(IN, H, num_layers=2, bidirectional=True, batch_first=True), (B, T, IN)),
    "gru_nobias_seqfirst": (lambda: nn.GRU(IN, H, bias=False), (T, B, IN)),
    "rnn_tanh_2l_bidir": (lambda: nn.RNN(IN, H, num_layers=2, bidirectional=True), (T, B, IN)),
    "rnn_relu_nobias_unbatched": (lambda: nn.RNN(IN, H, nonlinearity="relu", bias=False), (T, IN)),
    "lstm_cell": (lambda: nn.LSTMCell(IN, H), (B, IN)),
    "gru_cell_nobias_unbatched": (lambda: nn.GRUCell(IN, H, bias=False), (IN,)),
    "rnn_relu_cell": (lambda: nn.RNNCell(IN, H, nonlinearity="relu"), (B, IN)),
    "rnn_tanh_cell_nobias": (lambda: nn.RNNCell(IN, H, bias=False), (B, IN)),
}


def _build(name: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    make, shape = LAYERS[name]
    layer = make()
    x = torch.randn(shape)
    if isinstance(layer, nn.RNNCellBase):
        hand = HandCellModel(layer, shape[0] if len(shape) == 2 else None)
    else:
        batch = None if len(shape) == 2 else shape[0 if layer.batch_first else 1]
        hand = HandRNN(layer, T, batch)
    return Model(layer), hand, x


def _counts(rep) -> tuple[float, float, float]:
    return rep.totals["mults"], rep.totals["adds"], rep.totals["params"]


def _same(got: tuple, want: tuple) -> bool:
    """Equal to 1e-12 (per-example counts are sums divided by the batch, summed in different orders)."""
    return got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_hand_written_reference_computes_the_same(name: str) -> None:
    model, hand, x = _build(name)
    with torch.no_grad():
        torch.testing.assert_close(hand(x), model(x))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_counts_equal_the_cell_equations_written_by_hand(name: str, capture: str) -> None:
    model, hand, x = _build(name)
    want = score(hand, example_inputs=(x,), capture="fx")
    assert _same(_counts(score(model, example_inputs=(x,), capture=capture)), _counts(want))
    assert want.totals["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["lstm_2l_bidir_proj_bf", "gru_2l_bidir_bf", "rnn_relu_nobias_unbatched",
                                  "lstm_cell"])
def test_hand_reference_scores_alike_under_dispatch(name: str) -> None:
    _, hand, x = _build(name)
    assert _same(_counts(score(hand, example_inputs=(x,), capture="dispatch")),
                 _counts(score(hand, example_inputs=(x,), capture="fx")))


def test_lstm_arithmetic_by_the_equations() -> None:
    # one layer, T steps, B batch, no projection: per step and example
    #   W_ih x + b_ih: 4H·IN mults, 4H·(IN−1) + 4H adds; W_hh h + b_hh: 4H·H mults, 4H·H adds; + of the two: 4H
    #   σ×3 (2 mults, 1 add each), tanh(g) (2, 2); f*c, i*g (H mults each); c' add (H); tanh(c') (2, 2); o*· (H)
    layer = nn.LSTM(IN, H, batch_first=True)
    rep = score(Model(layer), input_shape=(B, T, IN), capture="fx")
    per_step_mults = 4 * H * IN + 4 * H * H + 3 * 2 * H + 2 * H + 2 * H + 2 * H + H
    per_step_adds = 4 * H * IN + 4 * H * H + 4 * H + 3 * H + 2 * H + H + 2 * H
    assert rep.totals["mults"] == T * per_step_mults
    assert rep.totals["adds"] == T * per_step_adds
    assert rep.totals["params"] == 4 * H * IN + 4 * H * H + 8 * H


def test_gru_one_minus_z_is_a_subtraction() -> None:
    rep = score(Model(nn.GRU(IN, H, batch_first=True)), input_shape=(1, T, IN), capture="dispatch")
    subs = rep.layers[rep.layers["kind"] == "sub"]
    assert len(subs) == 1 and subs["adds"].sum() == T * H


@pytest.mark.parametrize("name", ["lstm_nobias_seqfirst", "gru_nobias_seqfirst", "lstm_cell"])
@pytest.mark.parametrize("capture", CAPTURES)
def test_given_initial_state_counts_like_zero_state(name: str, capture: str) -> None:
    model, _, x = _build(name)
    layer = model.layer
    lead = x.shape[1:2] if isinstance(layer, nn.RNNBase) else x.shape[:1]
    lead = ((1,) + tuple(lead)) if isinstance(layer, nn.RNNBase) else tuple(lead)
    h0 = torch.zeros(*lead, H)
    state = (x, h0, torch.zeros(*lead, H)) if isinstance(layer, (nn.LSTM, nn.LSTMCell)) else (x, h0)
    lstm = isinstance(layer, (nn.LSTM, nn.LSTMCell))
    assert _same(_counts(score(WithState(layer, lstm), example_inputs=state, capture=capture)),
                 _counts(score(model, example_inputs=(x,), capture="fx")))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_flops_match_flop_counter_mode(name: str) -> None:
    model, _, x = _build(name)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as fc:
        model(x)
    assert fc.get_total_flops() > 0
    batch = x.shape[0] if x.dim() >= 2 else 1  # the scorer divides by dim 0 of the input
    for capture in CAPTURES:
        rep = score(model, example_inputs=(x,), rules="flops", capture=capture)
        assert rep.totals["ops"] == pytest.approx(fc.get_total_flops() / batch, rel=1e-12)
        assert rep.totals["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("capture", CAPTURES)
def test_weights_stored_once_with_their_roles(capture: str) -> None:
    layer = nn.LSTM(IN, H, num_layers=2, bidirectional=True, proj_size=3)
    cap = capture_model(Model(layer), (torch.randn(T, B, IN),), method=capture)
    stored = [(w.name, w.role) for op in cap.ops for w in op.weights]
    want = [(f"layer.{n}", "bias" if n.startswith("bias") else "weight") for n, _ in layer.named_parameters()]
    assert sorted(stored) == sorted(want)
    rep = score(Model(layer), input_shape=(T, B, IN), capture=capture)
    assert rep.totals["params"] == sum(p.numel() for p in layer.parameters())
    assert not rep.unknown


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(IN, H)

    def forward(self, x):
        packed = nn.utils.rnn.pack_padded_sequence(x, [T, T - 1, 2], enforce_sorted=False)
        return self.lstm(packed)[0].data


@pytest.mark.parametrize("capture", CAPTURES)
def test_packed_sequence_is_refused_loudly(capture: str) -> None:
    with pytest.raises((UnknownOpError, CaptureError)):
        score(Packed(), input_shape=(T, B, IN), capture=capture)
