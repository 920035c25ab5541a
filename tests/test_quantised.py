"""Quantised models (torch.ao) scored exactly on every capture path (issue 8, item 4).

Expected numbers come from the models' own quantisers and tensors and from the official page (§3.1: an op
counts at the max bit-width of its inputs; an 8-bit parameter is 1/4 parameter; conversions between
FP32-representable formats are free), or from torch.utils.flop_counter.FlopCounterMode.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
import torch.nn as nn
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torch.utils.flop_counter import FlopCounterMode

from scorer import score
from scorer.errors import CaptureError

SHAPE = (1, 3, 8, 8)
PATHS = ("fx", "export", "dispatch")
FUSE = [["conv1", "bn1", "relu1"], ["conv2", "bn2"], ["fc1", "relu2"]]


class Net(nn.Module):
    """conv-bn-relu, conv(no bias)-bn, pool, linear-relu, linear; QuantStub/DeQuantStub for eager mode."""

    def __init__(self, stubs: bool = True):
        super().__init__()
        self.stubs = stubs
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.relu2, self.fc2 = nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x) if self.stubs else x
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        x = self.pool(x).flatten(1)
        x = self.fc2(self.relu2(self.fc1(x)))
        return self.dequant(x) if self.stubs else x


def float_net(stubs: bool = True) -> Net:
    torch.manual_seed(0)
    return Net(stubs).eval()


def eager_qat() -> nn.Module:
    m = float_net().train()
    m = tq.fuse_modules_qat(m, FUSE)
    m.qconfig = tq.get_default_qat_qconfig("fbgemm")
    tq.prepare_qat(m, inplace=True)
    m(torch.randn(4, *SHAPE[1:]))
    return m


def fx_qat() -> nn.Module:
    m = float_net(stubs=False).train()
    m = prepare_qat_fx(m, tq.get_default_qat_qconfig_mapping("fbgemm"), (torch.randn(*SHAPE),))
    m(torch.randn(4, *SHAPE[1:]))
    return m


def converted() -> nn.Module:
    m = tq.fuse_modules(float_net(), FUSE)
    m.qconfig = tq.get_default_qconfig("fbgemm")
    tq.prepare(m, inplace=True)
    m(torch.randn(4, *SHAPE[1:]))
    return tq.convert(m, inplace=True)


def fx_converted() -> nn.Module:
    m = prepare_fx(float_net(stubs=False), tq.get_default_qconfig_mapping("fbgemm"), (torch.randn(*SHAPE),))
    m(torch.randn(4, *SHAPE[1:]))
    return convert_fx(m)


def _bits(lo: int, hi: int) -> int:
    return math.ceil(math.log2(hi - lo + 1))


def _rows(rep) -> list[tuple]:
    """Rows that cost or store something (a free op with nothing to store has no aten counterpart: an
    nn.Identity is an fx row and no aten op)."""
    layers = rep.layers
    keep = layers[(layers.kind != "free") | (layers.param_bits > 0)]
    return [tuple(r) for r in keep[["kind", "mults", "adds", "param_bits", "mul_bits"]].itertuples(index=False)]


@pytest.mark.parametrize("path", PATHS)
def test_eager_qat_activation_bits_reach_the_next_op(path: str) -> None:
    # The observers torch.ao hooks onto a layer quantise its output; the next op multiplies those values.
    m = eager_qat()
    act = m.conv2.activation_post_process
    a_bits = _bits(act.quant_min, act.quant_max)  # fbgemm: 0..127 (reduce_range): 7 bits
    w_fq = m.conv2.weight_fake_quant
    w_bits = _bits(w_fq.quant_min, w_fq.quant_max)  # -128..127: 8 bits
    assert (a_bits, w_bits) == (7, 8)
    rows = score(m, input_shape=SHAPE, capture=path).layers
    by_kind = {k: list(g.mul_bits) for k, g in rows.groupby("kind")}
    # conv1 reads the QuantStub's observer output (7 bits) and 8-bit weights: max = 8 (page §3.1);
    # conv2 reads conv1's observed output; fc2 reads fc1's.
    assert by_kind["conv"] == [max(a_bits, w_bits)] * 2
    # the pool reads conv2's 7-bit observed output; fc1 reads the pool's unobserved 32-bit output.
    assert by_kind["mean"] == [a_bits]
    assert by_kind["linear"] == [32, max(a_bits, w_bits)]
    assert set(rows.query("kind == 'quant'").module) == {
        "quant.activation_post_process", "conv1.activation_post_process", "conv2.activation_post_process",
        "fc1.activation_post_process", "fc2.activation_post_process"}


@pytest.mark.parametrize("make", [eager_qat, fx_qat], ids=["eager", "fx"])
@pytest.mark.parametrize("path", PATHS)
def test_qat_counts_as_the_float_model(make, path: str) -> None:
    # Fused QAT layers count as their parts (conv + folded BN + ReLU); observer buffers are never stored;
    # each parameter (the BN's too) is stored once: params == the float model's unique parameter count, and
    # the dot products equal FlopCounterMode's count of the float model (2 flops per multiply-add).
    ref = float_net(stubs=False)
    n_params = sum(p.numel() for p in ref.parameters())
    with FlopCounterMode(display=False) as fc:
        ref(torch.zeros(*SHAPE))
    t = score(make(), input_shape=SHAPE, rules="flops", capture=path).totals  # no unknown op: it would raise
    assert t["params"] == n_params == 7914
    assert t["mults"] == t["adds"] == fc.get_total_flops() / 2
    q = score(make(), input_shape=SHAPE, capture=path).totals
    f = score(ref, input_shape=SHAPE, capture=path).totals
    assert (q["mults"], q["adds"]) == (f["mults"], f["adds"])  # the same arithmetic, at other widths


@pytest.mark.parametrize("make", [eager_qat, fx_qat], ids=["eager", "fx"])
def test_qat_paths_give_identical_rows(make) -> None:
    m = make()
    rows = {p: _rows(score(m, input_shape=SHAPE, capture=p)) for p in PATHS}
    assert rows["fx"] == rows["export"] == rows["dispatch"]


def _int8_expected_bits(m: nn.Module) -> float:
    """8 bits per packed int8 weight (page §3.1: an 8-bit parameter is 1/4 parameter) plus each bias at the
    width it is stored in: the packed parameters hold it as float32 (fbgemm requantises it at run time)."""
    total = 0.0
    for mod in m.modules():
        if isinstance(mod, (nnq.Conv2d, nnq.Linear)):
            w, b = mod.weight(), mod.bias()
            assert w.dtype == torch.qint8
            total += 8 * w.numel()
            if b is not None:
                assert b.dtype == torch.float32
                total += 32 * b.numel()
    return total


@pytest.mark.parametrize("make", [converted, fx_converted], ids=["eager", "fx"])
def test_converted_int8_model_weights_at_8_bits_on_fx_and_dispatch(make) -> None:
    m = make()
    expected = _int8_expected_bits(m)
    assert expected == 8 * (432 + 4608 + 2048 + 640) + 32 * (16 + 32 + 64 + 10)
    reps = {p: score(m, input_shape=SHAPE, capture=p, sparsity="uniform:0") for p in ("fx", "dispatch")}
    for rep in reps.values():
        assert rep.totals["param_bits"] == expected
        convs = rep.layers.query("kind in ('conv', 'linear')")
        assert list(convs.mul_bits) == [8] * 4  # quint8 activations × qint8 weights (page §3.1: max = 8)
        # a quantised kernel returns its input's dtype: the pool between conv2 and fc1 averages quint8 values
        assert list(rep.layers.query("kind == 'mean'").mul_bits) == [8]
    assert _rows(reps["fx"]) == _rows(reps["dispatch"])
    with pytest.raises(CaptureError, match="packed int8 weights.*fx and dispatch"):
        score(m, input_shape=SHAPE, capture="export")


def test_dynamic_int8_linear() -> None:
    torch.manual_seed(0)
    m = tq.quantize_dynamic(nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5)).eval(), {nn.Linear})
    expected = 8 * (12 * 20 + 20 * 5) + 32 * (20 + 5)
    for path in ("fx", "dispatch"):
        rep = score(m, input_shape=(1, 12), capture=path, sparsity="uniform:0")
        assert rep.totals["param_bits"] == expected
        lin = rep.layers.query("kind == 'linear'")
        assert list(lin.mults) == [12 * 20, 20 * 5]
        assert list(lin.mul_bits) == [32, 32]  # float activations × 8-bit weights: 32 (page §3.1 example)


def observed() -> nn.Module:
    """Post-training prepare: observers watch ranges, nothing is quantised yet."""
    m = tq.fuse_modules(float_net(), FUSE)
    m.qconfig = tq.get_default_qconfig("fbgemm")
    tq.prepare(m, inplace=True)
    m(torch.randn(4, *SHAPE[1:]))
    return m


def fake_quant_off() -> nn.Module:
    m = eager_qat()
    m.apply(tq.disable_fake_quant)
    return m


@pytest.mark.parametrize("make", [observed, fake_quant_off], ids=["observers", "fake-quant-off"])
@pytest.mark.parametrize("path", PATHS)
def test_observers_and_disabled_fake_quant_compute_in_float(make, path: str) -> None:
    # An observer only records min/max and a switched-off fake-quantiser passes its input through: the model
    # computes in float, so every width stays 32 and their range updates are no arithmetic of the model.
    if make is observed and path == "export":  # HistogramObserver's forward branches on data: export refuses
        with pytest.raises(CaptureError, match="data-dependent"):
            score(make(), input_shape=SHAPE, capture=path)
        return
    rep = score(make(), input_shape=SHAPE, capture=path)
    assert set(rep.layers.mul_bits) == {32}
    assert "quant" not in set(rep.layers.kind)
    ref = score(float_net(), input_shape=SHAPE, capture=path).totals
    assert (rep.totals["mults"], rep.totals["adds"]) == (ref["mults"], ref["adds"])


class WidthMarker(nn.Module):
    """A user's activation quantiser that only declares its width (``bits``) and returns its input."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Marked(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.q, self.b = nn.Conv2d(3, 4, 1), WidthMarker(4), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.q(self.a(x)))


def test_a_quantiser_export_cannot_see_is_refused_there() -> None:
    """The marker's 4 bits reach the second conv on fx and dispatch (4-bit weights: 16 x 16 mults at 4 bits); export
    records nothing for an identity forward, so it refuses rather than score that conv at 32 bits, and auto stays
    exact."""
    precision = {"default": {"weight": 4, "act": 32, "acc": 32}}
    for path in ("fx", "dispatch", "auto"):
        rep = score(Marked(), input_shape=(1, 3, 4, 4), capture=path, precision=precision)
        assert rep.layers[rep.layers["kind"] == "conv"]["mul_bits"].tolist() == [32, 4], path
    with pytest.raises(CaptureError, match="activation quantiser q .*4 bits"):
        score(Marked(), input_shape=(1, 3, 4, 4), capture="export", precision=precision)


def test_a_dynamic_int8_lstm_is_refused_even_with_allow_unknown() -> None:
    """Its int8 weights are packed where no capture reads them: with ``allow_unknown`` its row stored 0 bits (the
    LSTM's 4H(E+H) weights and 8H biases lost), and ``allow_unknown`` may zero arithmetic, never storage."""
    from scorer.errors import ScorerError

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    m = tq.quantize_dynamic(Tagger().eval(), {nn.LSTM, nn.Linear})
    for capture in ("auto", "dispatch"):
        with pytest.raises(ScorerError, match=r"rnn \(LSTM\).*packed int8"):
            score(m, input_shape=(1, 3, 8), capture=capture, allow_unknown=True)
    for cls in (nnq.Embedding, nnq.EmbeddingBag):  # quantised tables: packed the same way
        with pytest.raises(ScorerError, match=rf"0 \({cls.__name__}\).*packed int8"):
            score(nn.Sequential(cls(32, 8)), example_inputs=(torch.tensor([1, 2]),), track="wikitext103",
                  allow_unknown=True)


class MarkedTwice(Marked):
    """The marker called by a second name (``self.q2 = self.q``), which torch.export runs on a copy."""

    def __init__(self, computes: bool):
        super().__init__()
        if computes:
            self.q = ClampingMarker(4)
        self.q2 = self.q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.q2(self.a(x)))


class ClampingMarker(WidthMarker):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, -1, 1)


def test_a_quantiser_called_by_its_second_name() -> None:
    """Its 4 bits reach the second conv on every capture that scores it; export, which once dropped them silently
    (32), records a computing one by either name and refuses an identity one."""
    precision = {"default": {"weight": 4, "act": 32, "acc": 32}}
    for computes in (True, False):
        for path in ("fx", "dispatch", "auto") + (("export",) if computes else ()):
            rep = score(MarkedTwice(computes), input_shape=(1, 3, 4, 4), capture=path, precision=precision)
            assert rep.layers[rep.layers["kind"] == "conv"]["mul_bits"].tolist() == [32, 4], (computes, path)
    with pytest.raises(CaptureError, match="computes nothing torch.export records"):
        score(MarkedTwice(False), input_shape=(1, 3, 4, 4), capture="export", precision=precision)
