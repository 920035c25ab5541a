"""Audit fixes of ``scorer.Scorer`` (scorer/costmodel.py): a rule set the cost model only partly fits is
refused, ranges are checked as score() checks them, and a held Scorer keeps everything it read until refresh().

Expected numbers come from ``score()`` called fresh on the model (at capture time, or now)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn

from rules import Micronet2019
from scorer import Scorer, score
from scorer.errors import ScorerError

SHAPE = dict(input_shape=(1, 8))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def sweep_config(names: list[str], w, a, d) -> dict:
    """score()'s arguments for one sweep row (the contract's spelling)."""
    return dict(precision={"default": {"weight": 32, "act": 32, "acc": 32},
                           "layers": {n: {"weight": int(w[i]), "act": int(a[i])} for i, n in enumerate(names)}},
                sparsity={n: 1 - float(d[i]) for i, n in enumerate(names)})


class FloorConv(nn.Module):
    """Nine linear layers, then a conv whose 3 products per output rocker2019 counts as floor(3·d)."""

    def __init__(self) -> None:
        super().__init__()
        self.fcs = nn.ModuleList([nn.Linear(8, 8) for _ in range(9)])
        self.conv = nn.Conv1d(1, 2, 3, bias=False)
        self.out = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.fcs:
            x = torch.relu(f(x))
        return self.out(self.conv(x[:, None, :]).flatten(1))


# ------------------------------------------------------------------ 1. verification catches a partial fit
def test_floor_rule_is_refused_not_mis_scored():
    torch.manual_seed(0)
    model = FloorConv()
    sc = Scorer(model, **SHAPE, rules="rocker2019")
    n = len(sc.layer_names)
    w, d = np.full(n, 8), np.ones(n)
    d[sc.layer_names.index("conv")] = 0.3
    # the exact score exists (score() is the reference); a cost model that cannot match it must refuse
    want = score(model, **SHAPE, rules="rocker2019", **sweep_config(sc.layer_names, w, w, d)).totals["score"]
    try:
        got = sc.sweep(weight_bits=w, act_bits=w, density=d)["score"][0]
    except ScorerError as e:
        assert "does not fit" in str(e)
    else:
        assert got == pytest.approx(want, rel=1e-12)


def test_fitting_rule_still_exact_with_mixed_layers():
    model = FloorConv()
    sc = Scorer(model, **SHAPE)  # micronet2019: affine in d
    n = len(sc.layer_names)
    rng = np.random.default_rng(1)
    w, a, d = rng.integers(1, 17, (3, n)), rng.integers(1, 17, (3, n)), rng.uniform(0.1, 1.0, (3, n))
    table = sc.sweep(weight_bits=w, act_bits=a, density=d)
    for k in range(3):
        want = score(model, **SHAPE, **sweep_config(sc.layer_names, w[k], a[k], d[k])).totals
        assert table["score"][k] == pytest.approx(want["score"], rel=1e-12)
        assert table["ops"][k] == pytest.approx(want["ops"], rel=1e-12)


# ------------------------------------------------------------------ 2. / 3. / 4. / 8. ranges as score()'s
@pytest.mark.parametrize("tiny", [1e-17, 5e-17])
def test_tiny_density_refused_like_score(tiny):
    model = mlp()
    sc = Scorer(model, **SHAPE)
    with pytest.raises(ScorerError):
        score(model, **SHAPE, **sweep_config(sc.layer_names, [8, 8], [8, 8], [tiny, 1.0]))
    with pytest.raises(ScorerError, match="density"):
        sc.sweep(weight_bits=[8, 8], act_bits=[8, 8], density=[tiny, 1.0])
    t = torch.tensor
    with pytest.raises(ScorerError, match="density"):
        sc.differentiable(t([8.0, 8.0]), t([8.0, 8.0]), t([tiny, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("w, a, d", [((8, 8), (8, 8), (0.0, 1.0)), ((8, 8), (8, 8), (1.5, 1.0)),
                                     ((8, 8), (8, 8), (-0.5, 1.0)), ((0, 8), (8, 8), (1.0, 1.0)),
                                     ((100, 8), (8, 8), (1.0, 1.0)), ((8, 8), (0, 0), (1.0, 1.0)),
                                     ((-4, 8), (8, 8), (1.0, 1.0)), ((8, 8), (8, 8), (float("nan"), 1.0))])
def test_differentiable_checks_ranges(w, a, d):
    sc = Scorer(mlp(), **SHAPE)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    with pytest.raises(ScorerError):
        sc.differentiable(t(w), t(a), t(d))


def test_differentiable_valid_keeps_value_and_gradient():
    model = mlp()
    sc = Scorer(model, **SHAPE)
    w = torch.tensor([4.0, 6.0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([8.0, 8.0], dtype=torch.float64, requires_grad=True)
    d = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    s = sc.differentiable(w, a, d)
    want = score(model, **SHAPE, **sweep_config(sc.layer_names, [4, 6], [8, 8], [0.5, 1.0])).totals["score"]
    assert s.item() == pytest.approx(want, rel=1e-12)
    s.backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in (w, a, d))


@pytest.mark.parametrize("chunk", [0, -1, 1.5, True])
def test_chunk_must_be_positive_integer(chunk):
    sc = Scorer(mlp(), **SHAPE)
    with pytest.raises(ScorerError, match="chunk"):
        sc.sweep(weight_bits=np.full((3, 2), 8), act_bits=np.full((3, 2), 8), density=np.ones((3, 2)), chunk=chunk)


def test_chunk_numpy_integer_and_small_chunks_give_every_row():
    sc = Scorer(mlp(), **SHAPE)
    w = np.arange(1, 8)[:, None].repeat(2, axis=1)
    whole = sc.sweep(weight_bits=w, act_bits=w, density=np.ones((7, 2)))
    parts = sc.sweep(weight_bits=w, act_bits=w, density=np.ones((7, 2)), chunk=np.int64(2))
    assert len(parts) == 7 and np.array_equal(parts["score"], whole["score"])


def test_base_with_numpy_integer_refused_like_score():
    model = mlp()
    sc = Scorer(model, **SHAPE)
    base = {"default": {"weight": np.int64(16)}}
    with pytest.raises(ScorerError) as by_score:
        score(model, **SHAPE, precision={"default": {"weight": np.int64(16), "act": 32, "acc": 32}})
    with pytest.raises(ScorerError) as by_sweep:
        sc.sweep(weight_bits=[8, 8], act_bits=[8, 8], density=[1.0, 1.0], base=base)
    assert str(by_sweep.value) == str(by_score.value)
    # the same base with a plain int is accepted (and keyed apart from the refused one)
    row = sc.sweep(weight_bits=[8, 8], act_bits=[8, 8], density=[1.0, 1.0], base={"default": {"weight": 16}})
    want = score(model, **SHAPE, precision={"default": {"weight": 16, "act": 32, "acc": 32},
                                            "layers": {n: {"weight": 8, "act": 8} for n in sc.layer_names}})
    assert row["score"][0] == pytest.approx(want.totals["score"], rel=1e-12)


def test_base_layer_globs_keep_their_order():
    """Of two layer globs matching a layer, the later wins, so two bases differing only in their order are two
    cost models: each sweep row equals score() under its own base, whichever was swept first."""
    model = mlp()
    sc = Scorer(model, **SHAPE)
    n = len(sc.layer_names)
    first = {"layers": {"[0]": {"acc": 8}, "*": {"acc": 16}}}
    second = {"layers": {"*": {"acc": 16}, "[0]": {"acc": 8}}}
    for base in (first, second):
        row = sc.sweep(weight_bits=[8] * n, act_bits=[8] * n, density=[1.0] * n, base=base)
        layers = {**base["layers"], **{name: {"weight": 8, "act": 8} for name in sc.layer_names}}
        want = score(model, **SHAPE, precision={"default": {"weight": 32, "act": 32, "acc": 32}, "layers": layers})
        assert row["score"][0] == pytest.approx(want.totals["score"], rel=1e-12)
    assert score(model, **SHAPE, precision=first).totals["score"] != score(model, **SHAPE, precision=second).totals["score"]


def test_base_entry_named_as_a_swept_layer_refused():
    """``{**base["layers"], name: {...}}`` would drop a base entry keyed by a swept layer's own name."""
    sc = Scorer(mlp(), **SHAPE)
    with pytest.raises(ScorerError, match="swept layer's own name"):
        sc.sweep(weight_bits=[8, 8], act_bits=[8, 8], density=[1.0, 1.0], base={"layers": {sc.layer_names[0]: {"acc": 8}}})


# ------------------------------------------------------------------ 5. a held Scorer: everything as at capture
def _held_equals_capture_time(model, edit, rules="micronet2019", shape=SHAPE):
    """Scorer.score() and a sweep after ``edit`` (no refresh) equal score() before it; after refresh, score() now."""
    sc = Scorer(model, **shape, rules=rules)
    n = len(sc.layer_names)
    cfg = ([8] * n, [8] * n, [1.0] * n)
    before = score(model, **shape, rules=rules).totals
    before_cfg = score(model, **shape, rules=rules, **sweep_config(sc.layer_names, *cfg)).totals
    edit(model)
    after = score(model, **shape, rules=rules).totals
    assert after["score"] != before["score"]  # the edit matters, or the test shows nothing
    assert sc.score().totals["score"] == pytest.approx(before["score"], rel=1e-12)
    try:
        row = sc.sweep(weight_bits=[cfg[0]], act_bits=[cfg[1]], density=[cfg[2]])["score"][0]
        assert row == pytest.approx(before_cfg["score"], rel=1e-12)
    except ScorerError as e:
        assert "does not fit" in str(e)
    sc.refresh()
    assert sc.score().totals["score"] == pytest.approx(after["score"], rel=1e-12)


def test_held_layer_attribute():
    model = mlp()
    model[0].acc_bits = 16

    def edit(m):
        m[0].acc_bits = 32
    _held_equals_capture_time(model, edit)


@pytest.mark.parametrize("rules", ["kaist2019", "mit_han2019"])
def test_held_bias_nonzeros(rules):
    def edit(m):
        with torch.no_grad():
            m[0].bias.zero_()
            m[0].weight[:4].zero_()
    _held_equals_capture_time(mlp(), edit, rules)


@pytest.mark.parametrize("rules", ["riair2019", "woody2019"])
def test_held_adder_tree_rows(rules):
    model = nn.Sequential(nn.Linear(16, 4, bias=False), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].weight[0, :12] = 0  # rows 4, 16, 16, 16 nonzeros

    def edit(m):  # rows 13 each: the same 52 nonzeros, other rows
        with torch.no_grad():
            m[0].weight.fill_(0.5)
            m[0].weight[:, :3] = 0
    _held_equals_capture_time(model, edit, rules, dict(input_shape=(1, 16)))


class QatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant, self.c, self.r = tq.QuantStub(), nn.Conv2d(3, 8, 3), nn.ReLU()
        self.fc, self.dq = nn.Linear(8 * 6 * 6, 10), tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dq(self.fc(self.r(self.c(self.quant(x))).flatten(1)))


def test_held_qat_toggle():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = QatNet().train()
        model.qconfig = tq.get_default_qat_qconfig("fbgemm")
        tq.prepare_qat(model, inplace=True)
        model(torch.randn(4, 3, 8, 8))
        model.eval()
        _held_equals_capture_time(model, lambda m: m.apply(tq.disable_fake_quant),
                                  shape=dict(input_shape=(1, 3, 8, 8)))


def test_held_shared_weight_stays_shared():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    model = Tied()
    assert Scorer(model, **SHAPE).score().totals["score"] == pytest.approx(
        score(model, **SHAPE).totals["score"], rel=1e-12)


# ------------------------------------------------------------------ 6. a rule's error while probing
class RefusesSparse(Micronet2019):
    """micronet2019, but a linear layer below density 1 is an error (as a rule may refuse a configuration)."""

    def cost_linear(self, op, ctx):
        if self.density(op.weight("weight")) < 1:
            raise ValueError("refused")
        return super().cost_linear(op, ctx)


def test_rule_error_while_probing_is_does_not_fit():
    model = mlp()
    sc = Scorer(model, **SHAPE, rules=RefusesSparse())
    assert sc.score().totals["score"] == pytest.approx(score(model, **SHAPE).totals["score"], rel=1e-12)
    with pytest.raises(ScorerError, match="does not fit.*ValueError: refused"):
        sc.sweep(weight_bits=[8, 8], act_bits=[8, 8], density=[1.0, 1.0])


def test_adder_tree_message_is_not_self_contradictory():
    # riair2019, a depthwise 3x3 conv at d = 0.1: 0.9 products per output, the formula's adds negative
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError) as e:
        score(model, input_shape=(1, 4, 6, 6), rules="riair2019", sparsity={"0": 0.9})
    text = str(e.value)
    assert "density 0.1 " in text and "max(n − 1, 0)" in text
    counted, tree = text.split("counts ")[1].split(" adds")[0], text.rsplit("= ", 1)[1]
    assert float(counted) < float(tree)  # the two numbers the message compares differ as it says


def test_snapshot_copies_each_stored_tensor_once() -> None:
    """A pruned layer called three times: capture makes its effective weight and mask anew per call, and the held
    Scorer keeps one copy of each (and of the bias), not one per call."""
    import torch.nn.utils.prune as prune

    class Thrice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = prune.l1_unstructured(nn.Linear(16, 16), "weight", amount=0.5)

        def forward(self, x):
            return self.fc(self.fc(self.fc(x)))

    sc = Scorer(Thrice(), input_shape=(1, 16))
    held = {id(t) for p in sc._cap.paths for op in p.ops for w in op.weights for t in (w.tensor, w.mask)
            if isinstance(t, torch.Tensor)}
    assert len(held) == 3  # weight (orig * mask), its mask, the bias
    assert sc.score().totals == score(sc.model, input_shape=(1, 16)).totals
