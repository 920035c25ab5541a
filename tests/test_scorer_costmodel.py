"""scorer.Scorer: capture once, then ``score``, ``sweep`` and ``differentiable`` equal ``score()``.

Expected numbers come from ``score()`` on the same model (the contract: a Scorer is score() without the
recapture) or, for the hand-built model, from the official formulas written out here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from reference_models.registry import build_reference
from scorer import Scorer, score
from scorer.errors import ScorerError
from scorer.tracks import get_track

# Reference models as tests/test_team_scores.py scores them (rules, exits), at 32x32 for speed.
MODELS = {
    "resnet18": dict(input_shape=(1, 3, 32, 32), track="imagenet"),
    "mobilenet_v2": dict(input_shape=(1, 3, 32, 32)),
    "kaist_v1": dict(input_shape=(1, 3, 32, 32), rules="kaist2019"),
    "osi_ai": dict(input_shape=(1, 3, 32, 32), rules="osi_ai2019", exit_fractions={"exit4": 0.2929}),
}
_CACHE: dict[str, tuple[nn.Module, Scorer]] = {}


def held(name: str) -> tuple[nn.Module, Scorer]:
    if name not in _CACHE:
        model = build_reference(name)
        _CACHE[name] = (model, Scorer(model, **MODELS[name]))
    return _CACHE[name]


def sweep_config(names: list[str], w, a, d) -> dict:
    """score()'s arguments for one sweep row (the contract's spelling)."""
    return dict(
        precision={"default": {"weight": 32, "act": 32, "acc": 32},
                   "layers": {n: {"weight": int(w[i]), "act": int(a[i])} for i, n in enumerate(names)}},
        sparsity={n: 1 - float(d[i]) for i, n in enumerate(names)},
    )


def assert_same_report(got, want) -> None:
    pd.testing.assert_frame_equal(got.layers, want.layers)
    assert got.totals == want.totals
    assert (got.notes, got.settings, got.excluded, got.capture, got.rules) == (
        want.notes, want.settings, want.excluded, want.capture, want.rules)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_score_equals_score_function(name: str) -> None:
    model, sc = held(name)
    kw = {k: v for k, v in MODELS[name].items() if k != "rules"}
    rules = MODELS[name].get("rules", "micronet2019")
    first = sc.layer_names[0]
    for options in (dict(bits=16), dict(sparsity="uniform:0.5"), dict(),
                    dict(bits=16, precision={"layers": {first: {"weight": 4, "act": 8}}}, sparsity={first: 0.25})):
        assert_same_report(sc.score(**options), score(model, rules=rules, **kw, **options))
    # another rule set at evaluation time, on the same capture
    assert_same_report(sc.score(rules="macs"), score(model, rules="macs", **kw))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "osi_ai"])
def test_sweep_rows_equal_score(name: str) -> None:
    model, sc = held(name)
    names = sc.layer_names
    assert len(set(names)) == len(names) > 0
    rng = np.random.default_rng(12)
    k, n = 3, len(names)
    w = rng.integers(1, 17, (k, n))
    a = rng.integers(1, 17, (k, n))
    d = np.where(rng.random((k, n)) < 0.3, 1.0, rng.uniform(0.05, 1.0, (k, n)))
    d[0] = 1.0  # a dense row: no masks at all
    table = sc.sweep(weight_bits=w, act_bits=a, density=d)
    assert list(table.columns) == ["param_bits", "params", "mults", "adds", "ops", "score"]
    assert len(table) == k
    for i in range(k):
        want = score(model, **MODELS[name], **sweep_config(names, w[i], a[i], d[i])).totals
        for col in table.columns:
            assert table[col][i] == pytest.approx(want[col], rel=1e-12), (i, col)


def test_sweep_and_differentiable_by_the_official_formulas() -> None:
    """Linear(8, 4) -> Linear(4, 2), no biases, input (1, 8) at 32 bits. official_rules.md §2.2 FullyConnected:
    mults Ci·(1−s)·Co, adds (Ci·(1−s) − 1)·Co, storage sparse_size(n, b, s) = n·b·(1−s) + (n if s > 0);
    §3.1: an op counts (widest input)/32, additions at the accumulator (32 here), a ±1 weight 1/32."""
    model = nn.Sequential(nn.Linear(8, 4, bias=False), nn.Linear(4, 2, bias=False))
    sc = Scorer(model, input_shape=(1, 8))
    assert sc.layer_names == ["0", "1"]
    track = get_track("cifar100")
    # layer 0: W 8, A 8, d 0.5 -> 8·4·0.5·8 + 32 mask = 160 bits; 16 mults at max(32 input, 8) = 32; 12 adds
    # layer 1: W 4, d 1 -> 4·2·4 = 32 bits; 8 mults at max(8 from layer 0, 4) = 8; 6 adds at 32
    rows = sc.sweep(weight_bits=[[8, 4], [8, 1]], act_bits=[[8, 16], [8, 16]], density=[[0.5, 1.0], [0.5, 1.0]])
    ops0 = 16 + 12 + 8 * 8 / 32 + 6
    assert rows.loc[0, ["param_bits", "mults", "adds", "ops"]].tolist() == [192, 24, 18, ops0]
    assert rows.loc[0, "score"] == pytest.approx(192 / 32 / track.baseline_params + ops0 / track.baseline_ops,
                                                 rel=1e-15)
    # a 1-bit weight in layer 1: 8 bits stored, its 8 mults at 1/32
    assert rows.loc[1, ["param_bits", "ops"]].tolist() == [160 + 8, 16 + 12 + 8 / 32 + 6]
    w = torch.tensor([8.0, 4.0], requires_grad=True)
    a = torch.tensor([8.0, 16.0], requires_grad=True)
    d = torch.tensor([0.5, 1.0], requires_grad=True)
    s = sc.differentiable(weight_bits=w, act_bits=a, density=d)
    assert s.ndim == 0 and s.item() == pytest.approx(rows.loc[0, "score"], rel=1e-15)
    s.backward()
    # d score / d A_0 = 8 mults / 32 / baseline_ops (layer 1 runs at A_0); d / d W_0 = 16 stored values / 32
    assert a.grad[0].item() == pytest.approx(8 / 32 / track.baseline_ops)
    assert w.grad[0].item() == pytest.approx(16 / 32 / track.baseline_params)
    assert d.grad[0].item() != 0 and d.grad[1].item() != 0  # counts (d_0) and the mask's surrogate at d = 1


@pytest.mark.parametrize("name", ["mobilenet_v2", "osi_ai"])
def test_differentiable_matches_sweep_with_gradients(name: str) -> None:
    _, sc = held(name)
    n = len(sc.layer_names)
    rng = np.random.default_rng(5)
    w, a = rng.integers(2, 17, n), rng.integers(2, 17, n)
    d = rng.uniform(0.2, 1.0, n)
    d[::4] = 1.0
    want = sc.sweep(weight_bits=w, act_bits=a, density=d)["score"][0]
    tw, ta, td = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (w, a, d))
    s = sc.differentiable(weight_bits=tw, act_bits=ta, density=td)
    assert s.item() == pytest.approx(want, rel=1e-12)
    s.backward()
    assert (tw.grad != 0).all()  # every layer stores weights at W
    assert (td.grad[d < 1] != 0).all()  # and counts its nonzeros


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_refresh_rereads_weights() -> None:
    """A held Scorer keeps the nonzeros it read; refresh() reads the model again (in-place edits and new
    parameters alike)."""
    torch.manual_seed(0)
    model = Tiny()
    sc = Scorer(model, input_shape=(1, 3, 8, 8))
    before = sc.score().totals
    assert before == score(model, input_shape=(1, 3, 8, 8)).totals
    with torch.no_grad():
        model.conv.weight[:4] = 0  # half the filters pruned in place
    assert sc.score().totals == before  # stale until refreshed
    sc.refresh()
    after = sc.score().totals
    assert after == score(model, input_shape=(1, 3, 8, 8)).totals
    # 3·3·3·8 = 216 weights, 108 zeros: 108 values fewer at 32 bits, one 216-bit mask (official_rules.md §2.2)
    assert before["param_bits"] - after["param_bits"] == 108 * 32 - 216
    model.fc.weight = nn.Parameter(torch.zeros(10, 8).index_fill_(1, torch.tensor([0]), 1.0))
    assert sc.score().totals == after
    sc.refresh()
    assert sc.score().totals == score(model, input_shape=(1, 3, 8, 8)).totals != after


def test_a_held_scorer_keeps_the_dtypes_it_read() -> None:
    """model.half() after capture swaps every parameter's data (nn.Module._apply): a held Scorer still scores
    the float32 weights it read, refresh() the float16 ones (a parameter's narrower dtype is its stored width,
    a bias's too)."""
    model = Tiny()
    sc = Scorer(model, input_shape=(1, 3, 8, 8))
    before = sc.score().totals
    model.half()
    assert sc.score().totals == before
    sc.refresh()
    assert before["param_bits"] == (3 * 3 * 3 * 8 + 8 * 10 + 10) * 32
    assert sc.score().totals["param_bits"] == (3 * 3 * 3 * 8 + 8 * 10 + 10) * 16


def test_sweep_rejects_what_score_rejects() -> None:
    _, sc = held("resnet18")
    n = len(sc.layer_names)
    ok = np.full((2, n), 8)
    with pytest.raises(ScorerError, match="one column per layer"):
        sc.sweep(weight_bits=ok[:, 1:], act_bits=ok, density=np.ones((2, n)))
    with pytest.raises(ScorerError, match="integers between 1 and 64"):
        sc.sweep(weight_bits=ok + 0.5, act_bits=ok, density=np.ones((2, n)))
    with pytest.raises(ScorerError, match="density"):
        sc.sweep(weight_bits=ok, act_bits=ok, density=np.zeros((2, n)))
    with pytest.raises(ScorerError, match="rows"):
        sc.sweep(weight_bits=ok, act_bits=ok[:1], density=np.ones((2, n)))


def test_sweep_with_block_masks_and_binary_weights() -> None:
    """mask_block held by the Scorer (official_rules.md §4.1: one bit per block), a 1-bit weight layer."""
    model = Tiny()
    sc = Scorer(model, input_shape=(1, 3, 8, 8), mask_block="4x4")
    w, a, d = np.array([[1, 8], [3, 1]]), np.array([[2, 4], [16, 1]]), np.array([[0.5, 1.0], [1.0, 0.3]])
    table = sc.sweep(weight_bits=w, act_bits=a, density=d)
    for i in range(2):
        want = score(model, input_shape=(1, 3, 8, 8), mask_block="4x4", **sweep_config(sc.layer_names, w[i], a[i], d[i]))
        for col in table.columns:
            assert table[col][i] == pytest.approx(want.totals[col], rel=1e-12), (i, col)


def test_sweep_refuses_a_rule_set_it_cannot_model() -> None:
    """A rule whose counts are not affine in the density (here n·d² mults) is an error, not a wrong number."""
    from rules.micronet2019 import Micronet2019

    class Quadratic(Micronet2019):
        name = "quadratic"

        def cost_linear(self, op, ctx):
            cost = self.dot_product(op, ctx)
            cost.mults *= self.density(op.weight("weight"))
            return cost

    model = nn.Sequential(nn.Linear(8, 4))
    sc = Scorer(model, input_shape=(1, 8), rules=Quadratic())
    assert sc.score(sparsity=0.5).totals == score(model, input_shape=(1, 8), rules=Quadratic(), sparsity=0.5).totals
    with pytest.raises(ScorerError, match="does not fit"):
        sc.sweep(weight_bits=[8], act_bits=[8], density=[0.3])


def test_sparsity_keys_name_tensors_or_layers() -> None:
    """A sparsity key may name the tensor or the layer reading it (the layer_names spelling);
    official_rules.md §2.2: 8·4 weights at s = 0.5 store 16 values at 32 bits plus a 32-bit mask."""
    model = nn.Sequential(nn.Linear(8, 4, bias=False))
    by_layer = score(model, input_shape=(1, 8), sparsity={"0": 0.5}).totals
    assert by_layer == score(model, input_shape=(1, 8), sparsity={"0.weight": 0.5}).totals
    assert by_layer["param_bits"] == 16 * 32 + 32
