"""The op vocabulary: kinds declared once with traits, every kind costed, every target matched once."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rules import get_ruleset
from rules.kinds import DOT_KINDS, KINDS, PRESERVING_KINDS, SPARSE_KINDS, declare
from scorer import score
from scorer.errors import CaptureError
from scorer.ops import DEFS, is_known_leaf, translate
from scorer.ops.call import make_call
from scorer.ops.registry import register


@pytest.mark.parametrize("rules", ["micronet2019", "official_notebook", "flops"])
def test_every_declared_kind_has_a_formula(rules: str) -> None:
    rs = get_ruleset(rules)
    missing = [k for k in KINDS if not hasattr(rs, "cost_" + k.replace(":", "_")) and k not in rs.activations
               and type(rs).cost is type(get_ruleset("micronet2019")).cost]
    assert not missing


def test_kind_sets_are_derived_from_traits() -> None:
    assert DOT_KINDS == {"conv", "conv_transpose", "linear", "matmul"}
    assert SPARSE_KINDS == DOT_KINDS | {"embedding"}
    assert {"free", "act:relu", "maxpool", "upsample:nearest"} <= PRESERVING_KINDS
    assert "act:sigmoid" not in PRESERVING_KINDS
    with pytest.raises(ValueError, match="twice"):
        declare("conv", "again")


def test_a_target_is_matched_by_one_extractor_only() -> None:
    with pytest.raises(ValueError, match="matched by both"):
        register("relu_again", functions=(F.relu,))(lambda call: None)
    assert "relu_again" not in DEFS


def test_an_extractor_may_only_emit_declared_kinds_with_their_attrs() -> None:
    x = torch.empty(2, 4, device="meta")
    from scorer.ops.values import Val

    call = make_call("function", F.relu, "n", "", (Val(meta=x),), {}, x)
    with pytest.raises(KeyError, match="undeclared"):
        call.op("act:relux")
    with pytest.raises(KeyError, match="attrs"):
        call.op("linear")
    assert [o.kind for o in translate(call)] == ["act:relu"]


class Forms(nn.Module):
    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.act = nn.ReLU()

    def forward(self, x):
        if self.form == "module":
            return self.act(x)
        if self.form == "F":
            return F.relu(x)
        if self.form == "torch":
            return torch.relu(x)
        if self.form == "method":
            return x.relu()
        return x.clone().relu_()


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize("form", ["module", "F", "torch", "method", "inplace"])
def test_every_form_of_one_function_is_one_kind(form: str, capture: str) -> None:
    rep = score(Forms(form), input_shape=(2, 3, 4, 4), capture=capture)
    kinds = [k for k in rep.layers["kind"] if k != "free"]
    assert kinds == ["act:relu"]
    assert rep.totals["mults"] == 3 * 4 * 4  # one comparison per element (official_rules.md §2.2)


def test_known_leaves_come_from_the_registry() -> None:
    assert is_known_leaf(nn.Conv2d(1, 1, 1)) and is_known_leaf(nn.ReLU()) and is_known_leaf(nn.Dropout())
    assert not is_known_leaf(nn.Sequential()) and not is_known_leaf(Forms("F"))


class Softplus(nn.Module):
    """docs/ops.md's worked example, in its module and functional forms."""

    def __init__(self):
        super().__init__()
        self.sp = nn.Softplus(beta=2.0)

    def forward(self, x):
        return self.sp(x) + F.softplus(x)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_the_worked_example_counts_alike_on_every_path(capture: str) -> None:
    rep = score(Softplus(), input_shape=(1, 6), capture=capture)
    n = 6
    # β = 2: comparison, exp, log, ×β, ÷β (5 mults) + 1 add; β = 1: 3 mults + 1 add; then the residual add
    assert (rep.totals["mults"], rep.totals["adds"]) == (5 * n + 3 * n, n + n + n)
    assert sorted(rep.layers["kind"]) == ["act:softplus", "act:softplus", "add"]


class LogicalNot(nn.Module):
    """A causal mask inverted, as attention code writes it (``~mask``), and its other spellings."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.register_buffer("mask", torch.tril(torch.ones(5, 5, dtype=torch.bool)))

    def forward(self, x):
        if self.form == "invert":
            keep = ~self.mask
        elif self.form == "logical_not":
            keep = torch.logical_not(self.mask)
        elif self.form == "method":
            keep = self.mask.logical_not()
        else:
            keep = torch.bitwise_not(self.mask)
        return x.masked_fill(keep, 0.0)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize("form", ["invert", "logical_not", "method", "bitwise_not"])
def test_logical_not_is_one_op_per_element_on_every_path(form: str, capture: str) -> None:
    rep = score(LogicalNot(form), input_shape=(1, 5, 5), capture=capture)
    assert rep.capture == capture
    kinds = [k for k in rep.layers["kind"] if k != "free"]
    assert kinds == ["act:not", "act:select"]
    # "bitwise operations count as one op" (official_rules.md §2.4): 25 nots, then 25 selections
    assert (rep.totals["mults"], rep.totals["adds"]) == (25 + 25, 0)


class MyReLU(nn.ReLU):
    """A user's subclass of a torch.nn layer: counted as the layer it extends."""


class MyLogSoftmax(nn.LogSoftmax):
    pass


@pytest.mark.parametrize(("sub", "base"), [(MyReLU(), nn.ReLU()), (MyLogSoftmax(dim=1), nn.LogSoftmax(dim=1))])
def test_a_subclass_of_a_layer_counts_as_the_layer(sub: nn.Module, base: nn.Module) -> None:
    got = score(nn.Sequential(nn.Linear(4, 6), sub), input_shape=(2, 4))
    want = score(nn.Sequential(nn.Linear(4, 6), base), input_shape=(2, 4))
    assert got.capture == want.capture == "fx"
    assert list(got.layers["kind"]) == list(want.layers["kind"])
    assert got.totals == want.totals


class Conv2dSame(nn.Conv2d):
    """timm-style TF "SAME" padding: the input is padded by its own size, then convolved without padding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__(cin, cout, k, stride=stride, padding=0)

    def forward(self, x):
        size, k, s = x.shape[-1], self.kernel_size[0], self.stride[0]
        pad = max((-(-size // s) - 1) * s + k - size, 0)
        x = F.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride)


def test_a_layer_subclass_whose_forward_changes_the_shape_is_not_scored_as_the_layer() -> None:
    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2))
    with pytest.raises(CaptureError, match="Conv2dSame .*16, 16.* a Conv2d returns .*15, 15"):
        score(model, input_shape=(1, 3, 32, 32), capture="fx")
    rep = score(model, input_shape=(1, 3, 32, 32))
    assert rep.capture == "export"
    # 32 padded to 33, stride 2: 16x16 outputs of 8 channels, each 27 mults and 26 adds + 1 bias add
    assert (rep.totals["mults"], rep.totals["adds"]) == (16 * 16 * 8 * 27, 16 * 16 * 8 * 27)


class LoRALinear(nn.Linear):
    """A low-rank branch added in the layer's own forward."""

    def __init__(self):
        super().__init__(8, 8)
        self.A = nn.Linear(8, 2, bias=False)
        self.B = nn.Linear(2, 8, bias=False)

    def forward(self, x):
        return super().forward(x) + self.B(self.A(x))


class GainLinear(nn.Linear):
    """A fixed gain kept in a plain attribute, applied in the layer's own forward."""

    def __init__(self):
        super().__init__(8, 8)
        self.gain = torch.full((8,), 2.0)

    def forward(self, x):
        return super().forward(x) * self.gain


class BatchNormAct(nn.BatchNorm1d):
    """timm's BatchNormAct2d pattern: the activation is a child called by the norm's own forward."""

    def __init__(self):
        super().__init__(8)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(super().forward(x))


class ScaledConv(nn.Conv1d):
    """Arithmetic on the layer's output in its own forward, shape kept, no tensor of its own."""

    def __init__(self):
        super().__init__(8, 8, 1)

    def forward(self, x):
        return super().forward(x) * 0.5


@pytest.mark.parametrize(("layer", "params", "mults", "adds"), [
    (LoRALinear, 8 * 8 + 8 + 8 * 2 + 2 * 8, 8 * 8 + 8 * 2 + 2 * 8, 8 * 7 + 8 + 2 * 7 + 8 * 1 + 8),  # A, B, the add
    (GainLinear, 8 * 8 + 8 + 8, 8 * 8 + 8, 8 * 7 + 8),  # the gain: stored, one mult per output
    (BatchNormAct, 2 * 8, 8 + 8, 8),  # BN (1 mult, 1 add per element: not foldable here), then ReLU
    (ScaledConv, 8 * 8 + 8, 8 * 8 + 8, 8 * 7 + 8),  # a 1x1 conv over 8 channels at one position, then × 0.5
])
def test_a_layer_subclass_that_does_more_than_the_layer_is_not_scored_as_the_layer(layer, params, mults, adds) -> None:
    shape = (1, 8, 1) if layer is ScaledConv else (1, 8)
    with pytest.raises(CaptureError, match="subclass with its own forward"):
        score(nn.Sequential(layer()), input_shape=shape, capture="fx")
    rep = score(nn.Sequential(layer()), input_shape=shape)
    assert rep.capture == "export"
    assert (rep.totals["params"], rep.totals["mults"], rep.totals["adds"]) == (params, mults, adds)
