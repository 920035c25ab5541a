"""Property tests over small random networks (hypothesis)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from scorer import score

COMPARE = ["kind", "param_bits", "mults", "adds", "mul_bits", "add_bits", "ops", "weight_numel", "nonzeros"]


class Net(nn.Module):
    """conv -> act -> (residual add) -> SE-style scale -> global mean -> linear, in three spellings."""

    def __init__(self, form: str, c: int, k: int, groups: int, act: str, bias: bool):
        super().__init__()
        self.form = form
        self.act = act
        self.conv = nn.Conv2d(c, c, k, padding=k // 2, groups=groups, bias=bias)
        self.fc = nn.Linear(c, 5)
        self.relu, self.sig, self.silu, self.hs = nn.ReLU(), nn.Sigmoid(), nn.SiLU(), nn.Hardswish()

    def _act(self, y):
        if self.form == "module":
            return {"relu": self.relu, "sigmoid": self.sig, "silu": self.silu, "hardswish": self.hs}[self.act](y)
        if self.form == "function":
            return {"relu": F.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "hardswish": F.hardswish}[self.act](y)
        if self.act in ("relu", "sigmoid"):
            return getattr(y, self.act)()
        return {"silu": F.silu, "hardswish": F.hardswish}[self.act](y)

    def forward(self, x):
        if self.form == "function":
            y = F.conv2d(x, self.conv.weight, self.conv.bias, padding=self.conv.padding, groups=self.conv.groups)
        else:
            y = self.conv(x)
        y = self._act(y)
        if self.form == "method":
            y = y.add(x)
            y = y.mul(y.mean((2, 3), keepdim=True))
            z = y.mean((2, 3))
            return F.linear(z, self.fc.weight, self.fc.bias)
        if self.form == "function":
            y = torch.add(y, x)
            y = torch.mul(y, torch.mean(y, (2, 3), keepdim=True))
            return self.fc(torch.mean(y, (2, 3)))
        y = y + x
        y = y * F.adaptive_avg_pool2d(y, 1)
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


nets = st.tuples(
    st.sampled_from([4, 8]),
    st.sampled_from([1, 3]),
    st.sampled_from(["dense", "dw"]),
    st.sampled_from(["relu", "sigmoid", "silu", "hardswish"]),
    st.booleans(),
    st.sampled_from([6, 9]),
    st.sampled_from([None, 16]),
)


@settings(max_examples=20, deadline=None)
@given(nets)
def test_module_function_method_forms_identical(params) -> None:
    c, k, g, act, bias, hw, bits = params
    groups = c if g == "dw" else 1
    reports = []
    for form in ("module", "function", "method"):
        torch.manual_seed(1)
        net = Net(form, c, k, groups, act, bias)
        reports.append(score(net, input_shape=(1, c, hw, hw), bits=bits).layers)
    base = reports[0][reports[0].kind != "free"][COMPARE].reset_index(drop=True)
    for other in reports[1:]:
        got = other[other.kind != "free"][COMPARE].reset_index(drop=True)
        assert got.equals(base), f"\n{base}\n{got}"


class ConvLin(nn.Module):
    def __init__(self, ci, co, k, stride, groups, feats):
        super().__init__()
        self.conv = nn.Conv2d(ci, co, k, stride=stride, padding=k // 2, groups=groups)
        self.fc = nn.Linear(feats, 7)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([2, 4]), st.sampled_from([1, 2]), st.sampled_from([1, 3, 5]), st.sampled_from([1, 2]),
       st.sampled_from([5, 8]), st.booleans())
def test_dense_mults_equal_flop_counter_macs(ci_mult, co_mult, k, stride, hw, depthwise) -> None:
    ci = 2 * ci_mult
    co = ci * co_mult
    groups = ci if depthwise else 1
    out = (hw + 2 * (k // 2) - k) // stride + 1
    net = ConvLin(ci, co, k, stride, groups, co * out * out)
    x = torch.randn(1, ci, hw, hw)
    with FlopCounterMode(display=False) as fc:
        net(x)
    macs = fc.get_total_flops() / 2
    rep = score(net, input_shape=(1, ci, hw, hw), rules="micronet2019")
    dot = rep.layers[rep.layers.kind.isin(["conv", "linear"])]
    assert dot.mults.sum() == macs
    assert score(net, input_shape=(1, ci, hw, hw), rules="macs").totals["mults"] == macs
    assert score(net, input_shape=(1, ci, hw, hw), rules="flops").totals["ops"] == 2 * macs


@settings(max_examples=15, deadline=None)
@given(nets, st.sampled_from(["micronet2019", "official_notebook", "flops"]))
def test_totals_equal_sum_of_rows(params, rules) -> None:
    c, k, g, act, bias, hw, bits = params
    net = Net("module", c, k, c if g == "dw" else 1, act, bias)
    rep = score(net, input_shape=(1, c, hw, hw), bits=bits, rules=rules)
    t = rep.totals
    df = rep.layers
    assert t["param_bits"] == df.param_bits.sum()
    assert t["mults"] == df.mults.sum() and t["adds"] == df.adds.sum()
    assert t["ops"] == (df.mults * df.mul_bits / 32 + df.adds * df.add_bits / 32).sum()
    assert t["params"] == t["param_bits"] / 32


@settings(max_examples=15, deadline=None)
@given(nets, st.sampled_from([2, 4, 8, 12, 16, 24]), st.sampled_from([1, 4, 8]))
def test_more_bits_never_lowers_score(params, low, step) -> None:
    c, k, g, act, bias, hw, _ = params
    net = Net("module", c, k, c if g == "dw" else 1, act, bias)
    shape = (1, c, hw, hw)
    lo = score(net, input_shape=shape, bits=low).totals["score"]
    hi = score(net, input_shape=shape, bits=low + step).totals["score"]
    assert hi >= lo


@settings(max_examples=15, deadline=None)
@given(nets, st.floats(0.05, 0.5), st.floats(0.0, 0.45))
def test_more_zeros_in_sparse_tensor_never_raises_score(params, s1, extra) -> None:
    c, k, g, act, bias, hw, bits = params
    net = Net("module", c, k, c if g == "dw" else 1, act, bias)
    w = net.conv.weight
    n = w.numel()
    order = torch.randperm(n)
    with torch.no_grad():
        w.view(-1)[w.view(-1) == 0] = 0.5
        w.view(-1)[order[: max(1, int(n * s1))]] = 0.0
    shape = (1, c, hw, hw)
    before = score(net, input_shape=shape, bits=bits).totals["score"]
    with torch.no_grad():
        w.view(-1)[order[: max(1, int(n * (s1 + extra)))]] = 0.0
    after = score(net, input_shape=shape, bits=bits).totals["score"]
    assert after <= before + 1e-15
