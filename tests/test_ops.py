"""Per-op counts for the op families of issue 2, each expectation from official_rules.md or hand arithmetic."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scorer import score

SHAPE = (1, 4, 5, 5)  # 100 elements per example


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# (module, per-element (mults, adds)); sources: official_rules.md §2.2 table and §2.4 rulings
SPEC_ACTIVATIONS = [
    (nn.ReLU(), (1, 0)),  # §2.2 relu
    (nn.SiLU(), (3, 1)),  # §2.2 swish
    (nn.Sigmoid(), (2, 1)),  # §2.2 sigmoid
    (nn.ReLU6(), (2, 0)),  # §2.4 relu6, organisers via KAIST
    (nn.Hardswish(), (4, 1)),  # §2.4 hswish, KAIST and Rocker
    (nn.Hardsigmoid(), (3, 1)),  # §2.4 hard-sigmoid by the same decomposition
    (Fn(lambda x: F.hardtanh(x, 0.0, 6.0)), (2, 0)),  # relu6 spelled as hardtanh
    (Fn(lambda x: torch.clamp(x, 0, 6)), (2, 0)),  # two clamps
    (Fn(lambda x: x.clamp_min(0)), (1, 0)),  # one comparison
]


@pytest.mark.parametrize(("mod", "per_element"), SPEC_ACTIVATIONS)
def test_spec_activations(mod, per_element) -> None:
    t = score(mod, input_shape=SHAPE).totals
    assert (t["mults"], t["adds"]) == (100 * per_element[0], 100 * per_element[1])


@pytest.mark.parametrize("mod", [nn.Tanh(), nn.GELU(), nn.LeakyReLU(), nn.ELU(), nn.Mish(), nn.PReLU(4),
                                 Fn(torch.exp), Fn(lambda x: x.sqrt()), Fn(torch.abs)])
def test_other_activations_have_rules(mod) -> None:
    rep = score(mod, input_shape=SHAPE)
    assert not rep.unknown and rep.totals["mults"] > 0


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_selu_is_elu_then_its_scale(capture) -> None:
    """SELU = λ · ELU: ELU's comparison, exp and α scale plus the −1 add (3 mults, 1 add [INF]) and one more mult for
    λ, per element, in module and functional form (aten runs it as an ``elu`` with a scale)."""
    for mod in (nn.SELU(), Fn(F.selu)):
        t = score(mod, input_shape=SHAPE, capture=capture).totals
        assert (t["mults"], t["adds"]) == (4 * 100, 100)


class ActivationBias(nn.Module):
    """A 16 -> 8 product whose added term is computed in the forward (a hand-written RNN cell's ``addmm(h, x, W)``,
    a hypernetwork's ``F.linear(x, W, b)``), or addmm scaled by beta and alpha."""

    def __init__(self, form: str):
        super().__init__()
        self.w, self.b, self.form = nn.Parameter(torch.randn(16, 8)), nn.Parameter(torch.randn(8)), form

    def forward(self, x):
        h = x[:, :8] * 1.0  # 8 mults
        if self.form == "addmm":
            return torch.addmm(h, x, self.w)
        if self.form == "linear":
            return F.linear(x, self.w.t(), h)
        return torch.addmm(self.b, x, self.w, beta=0.5, alpha=2.0) + h  # + 8 adds


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_an_added_activation_costs_its_add_per_output(capture) -> None:
    """§2.2: n mults and n − 1 adds per output, + 1 add per output for the added term, stored or computed (8 x 16
    mults, 8 x 15 + 8 adds, + h's 8 mults); beta and alpha other than 1 are one mult per output each (as ``add``'s
    alpha), then h added."""
    for form in ("addmm", "linear"):
        t = score(ActivationBias(form), input_shape=(1, 16), capture=capture).totals
        assert (t["mults"], t["adds"]) == (8 * 16 + 8, 8 * 15 + 8), form
    t = score(ActivationBias("scaled"), input_shape=(1, 16), capture=capture).totals
    assert (t["mults"], t["adds"]) == (8 * 16 + 2 * 8 + 8, 8 * 15 + 8 + 8)
    t = score(ActivationBias("addmm"), input_shape=(1, 16), capture=capture, rules="mit_han2019").totals
    assert t["adds"] == 8 * 15 + 8  # the team's dot product adds the term too (its scalar x * 1.0 is free there)


class IgnoredInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 8))

    def forward(self, x):
        return torch.addmm(x[:, :8] * 1.0, x, self.w, beta=0)


class IgnoredBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(16, 8)), nn.Parameter(torch.randn(8))

    def forward(self, x):
        return torch.addmm(self.b, x, self.w, beta=0)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_addmm_with_beta_zero_adds_nothing(capture) -> None:
    """beta = 0: torch ignores the input, so no add per output and no beta mult: 8 x 16 (+ 8 for h) mults, 8 x 15
    adds; a parameter input is still stored (the forward reads it): 128 + 8 parameters."""
    t = score(IgnoredInput(), input_shape=(1, 16), capture=capture).totals
    assert (t["mults"], t["adds"]) == (8 * 16 + 8, 8 * 15)
    t = score(IgnoredBias(), input_shape=(1, 16), capture=capture).totals
    assert (t["mults"], t["adds"], t["params"]) == (8 * 16, 8 * 15, 128 + 8)


def test_prelu_stores_its_slopes() -> None:
    t = score(nn.PReLU(4), input_shape=SHAPE, bits=16).totals
    assert t["param_bits"] == 4 * 16
    assert t["mults"] == 2 * 100  # comparison + slope multiplication [INF]


def test_softmax_3n_minus_1() -> None:
    # official_rules.md §2.4: softmax over n logits = n exp + (n−1) adds + n divisions
    t = score(nn.Softmax(dim=1), input_shape=(1, 10)).totals
    assert t["mults"] + t["adds"] == 3 * 10 - 1


class Elementwise(nn.Module):
    def forward(self, x):
        y = x * 0.5  # 100 mults (scalar)
        y = y + 3  # 100 adds (scalar)
        y += x  # 100 adds (in-place residual)
        y.mul_(x)  # 100 mults (in-place)
        y = y / 6  # 100 mults (division)
        y = y - x  # 100 adds
        return y


def test_elementwise_scalar_and_inplace_forms() -> None:
    rep = score(Elementwise(), input_shape=SHAPE)
    assert list(rep.layers.kind) == ["mul", "add", "add", "mul", "div", "sub"]
    assert (rep.totals["mults"], rep.totals["adds"]) == (300, 300)


class MatMuls(nn.Module):
    def forward(self, x):  # x: (B, 6, 8)
        a = x @ x.transpose(-1, -2)  # (B,6,6), k=8
        b = torch.bmm(x, x.transpose(1, 2))
        c = torch.einsum("bik,bjk->bij", x, x)
        return a + b + c


def test_matmul_bmm_einsum_forms_agree() -> None:
    rows = score(MatMuls(), input_shape=(2, 6, 8)).layers
    mm = rows[rows.kind == "matmul"]
    assert len(mm) == 3
    # per example: 36 outputs × 8 mults and 7 adds
    assert (mm.mults == 36 * 8).all() and (mm.adds == 36 * 7).all()


def test_linear_over_leading_dims() -> None:
    t = score(nn.Linear(8, 3), input_shape=(1, 5, 8)).totals
    assert (t["mults"], t["adds"]) == (5 * 3 * 8, 5 * 3 * 8)  # n mults, n−1 adds + bias per output


def test_layernorm_and_groupnorm() -> None:
    # LayerNorm over n = 8, 5 groups: (2n+3) mults, (3n−1) adds per group, plus affine n mults + n adds
    t = score(nn.LayerNorm(8), input_shape=(1, 5, 8)).totals
    assert (t["mults"], t["adds"]) == (5 * (2 * 8 + 3) + 40, 5 * (3 * 8 - 1) + 40)
    assert t["param_bits"] == 16 * 32
    g = score(nn.GroupNorm(2, 4), input_shape=SHAPE).totals  # 2 groups of 50
    assert (g["mults"], g["adds"]) == (2 * (2 * 50 + 3) + 100, 2 * (3 * 50 - 1) + 100)


def test_pools_and_upsample() -> None:
    # official_rules.md §2.4: AvgPool k×k = k²−1 adds + 1 mult per output; MaxPool k²−1 comparisons
    avg = score(nn.AvgPool2d(2), input_shape=(1, 4, 4, 4)).totals
    assert (avg["mults"], avg["adds"]) == (16, 16 * 3)
    mx = score(nn.MaxPool2d(2), input_shape=(1, 4, 4, 4)).totals
    assert (mx["mults"], mx["adds"]) == (16 * 3, 0)
    near = score(nn.Upsample(scale_factor=2), input_shape=(1, 3, 4, 4)).totals
    assert (near["mults"], near["adds"]) == (0, 0)  # a copy under micronet2019
    bil = score(Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")), input_shape=(1, 3, 4, 4)).totals
    assert (bil["mults"], bil["adds"]) == (4 * 192, 3 * 192)
    osi = score(nn.Upsample(size=(63, 63)), input_shape=(1, 3, 32, 32), rules="osi_ai2019").totals
    assert osi["mults"] == 63 * 63 * 3  # team_scores.md §2.1.1: 11,907


def test_conv1d_and_dilated_grouped_conv() -> None:
    c1 = score(nn.Conv1d(4, 6, 3, padding=1, bias=False), input_shape=(1, 4, 10)).totals
    assert c1["mults"] == 12 * 60 and c1["adds"] == 11 * 60
    c2 = score(nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2, bias=False), input_shape=(1, 4, 6, 6)).totals
    assert c2["mults"] == 18 * 8 * 36  # vector length k²·C_in/groups = 18


def test_free_ops_cost_nothing() -> None:
    class Moves(nn.Module):
        def forward(self, x):
            y = torch.cat([x, x], 1).permute(0, 2, 3, 1).reshape(1, -1)
            return F.dropout(F.pad(y, (1, 1)), training=False).view(1, -1)[:, :5]

    t = score(Moves(), input_shape=SHAPE).totals
    assert t["ops"] == 0 and t["param_bits"] == 0


def test_add_with_alpha_and_implicit_softmax_dim() -> None:
    t = score(Fn(lambda x: torch.add(x, x, alpha=2.0)), input_shape=SHAPE).totals
    assert (t["mults"], t["adds"]) == (100, 100)  # alpha·y, then the add
    # nn.Softmax() on a 4-d tensor normalises over dim 1 (4 values): 100/4 groups of 2·4 mults, 3 adds
    s = score(nn.Softmax(), input_shape=SHAPE).totals
    assert (s["mults"], s["adds"]) == (25 * 8, 25 * 3)
