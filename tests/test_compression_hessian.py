"""Hessian (K-FAC OBD) channel pruning, channel growth and the annealed schedule, on small models.

Expected values come from the formulas in the module docstring worked by hand or written out independently
here (trace form of the Kronecker quadratic, softmax-minus-one-hot gradients), never from the tool's output.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference_models.compression.hessian_prune import (
    AnnealingPool,
    channel_importance,
    hessian_prune,
    kfac_factors,
    run_annealed_schedule,
    select_channels,
)
from reference_models.compression.surgery import add_channels, remove_channels
from reference_models.registry import build_reference
from tests.conftest import random_bn_stats


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _net() -> nn.Sequential:
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )
    random_bn_stats(m[1], m[4])
    return m.eval()


def _batches(n: int = 2, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, 6, 6, generator=g), torch.randint(0, 5, (size,), generator=g)) for _ in range(n)]


def test_linear_importance_by_hand() -> None:
    # W = [[1, 2, 0], [3, 0, 1]], A = diag(1, 2, 3), S = I: dL_c = 1/2 * A_cc * |W[:, c]|^2
    # columns: |(1,3)|^2 = 10, |(2,0)|^2 = 4, |(0,1)|^2 = 1 -> 1/2 * (10*1, 4*2, 1*3) = (5, 4, 1.5)
    w = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    s = torch.eye(2, dtype=torch.float64)
    assert channel_importance(w, a, s).tolist() == [5.0, 4.0, 1.5]
    # S = [[2, 1], [1, 1]]: column 0 (1, 3): 2*1 + 2*1*3 + 9 = 17 -> 1/2 * 17 * A_00 = 8.5
    s = torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert channel_importance(w, a, s)[0].item() == 8.5


def test_conv_importance_is_the_kronecker_quadratic_of_removing_the_channel() -> None:
    # 1/2 vec(dW)^T (A (x) S) vec(dW) = 1/2 tr(S dW A dW^T) with dW = W on channel c's patch columns only
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    d = 3 * 2 * 2
    x = torch.randn(d, d, dtype=torch.float64)
    y = torch.randn(4, 4, dtype=torch.float64)
    a, s = x @ x.T, y @ y.T
    got = channel_importance(w, a, s)
    flat = w.reshape(4, d)
    for c in range(3):
        dw = torch.zeros_like(flat)
        dw[:, c * 4 : (c + 1) * 4] = flat[:, c * 4 : (c + 1) * 4]
        expected = 0.5 * torch.trace(s @ dw @ a @ dw.T)
        assert torch.isclose(got[c], expected, rtol=1e-12)


def test_kfac_factors_of_the_last_linear_layer() -> None:
    model = _net()
    batches = _batches()
    factors = kfac_factors(model, ["8", "3"], batches, fisher="empirical")
    feats = [model[:8](x) for x, _ in batches]
    n = sum(len(f) for f in feats)
    a = sum(f.double().T @ f.double() for f in feats) / n
    # the per-example gradient of cross entropy w.r.t. the logits is softmax - one_hot
    gs = [torch.softmax(model(x), 1).double() - F.one_hot(y, 5).double() for x, y in batches]
    s = sum(g.T @ g for g in gs) / n
    assert torch.allclose(factors["8"][0], a, atol=1e-10)
    assert torch.allclose(factors["8"][1], s, atol=1e-10)
    # conv "3" (3x3, padding 1, 6x6 maps): A sums the 36 patches per image, S averages over 36 positions
    a3, s3 = factors["3"]
    assert a3.shape == (8 * 9, 8 * 9) and s3.shape == (6, 6)
    acts = [model[:3](x).double() for x, _ in batches]
    centre = 4  # the centre tap of each channel's 3x3 patch: the activation itself, never padding
    diag = sum((t ** 2).sum(dim=(0, 2, 3)) for t in acts) / n
    assert torch.allclose(a3.diagonal()[centre::9], diag, atol=1e-9)


def test_true_fisher_samples_labels_reproducibly() -> None:
    model = _net()
    one = kfac_factors(model, ["8"], _batches(), generator=torch.Generator().manual_seed(3))
    two = kfac_factors(model, ["8"], _batches(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(one["8"][1], two["8"][1])
    with pytest.raises(ValueError, match="fisher"):
        kfac_factors(model, ["8"], _batches(), fisher="diagonal")


def test_select_channels_global_ranking_with_caps() -> None:
    importance = {
        "a": torch.tensor([0.1, 0.5, 0.2, 0.9], dtype=torch.float64),
        "b": torch.tensor([0.05, 0.3], dtype=torch.float64),
    }
    # global order: b0 0.05, a0 0.1, a2 0.2, b1 0.3, a1 0.5; caps: a floor(0.5*4) = 2, b min(1, 2-1) = 1
    assert select_channels(importance, 3, limit=0.5) == {"a": [0, 2], "b": [0]}
    # the caps stop at 3 in all even when 5 are asked for
    assert select_channels(importance, 5, limit=0.5) == {"a": [0, 2], "b": [0]}
    assert select_channels(importance, 0) == {"a": [], "b": []}


def test_removing_channels_equals_zeroing_their_consumer_inputs() -> None:
    model = _net()
    small, removed, importance = hessian_prune(model, 5, _batches())
    assert sum(map(len, removed.values())) == 5
    assert small[0].out_channels == 8 - len(removed["0"]) and small[3].in_channels == small[0].out_channels
    reference = _net()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference[3].weight[:, removed["0"]] = 0
        reference[8].weight[:, removed["3"]] = 0
    x = torch.randn(4, 3, 6, 6)
    assert torch.allclose(small(x), reference(x), atol=1e-5)
    assert set(importance) == {"0", "3"} and all((v >= 0).all() for v in importance.values())


def test_a_dead_channel_goes_first() -> None:
    model = _net()
    with torch.no_grad():
        model[3].weight[:, 2] = 0  # channel 2 of conv 0 reaches nothing: importance exactly 0
    _, removed, importance = hessian_prune(model, 1, _batches())
    assert importance["0"][2].item() == 0.0
    assert removed == {"0": [2], "3": []}


def test_add_channels_keeps_the_function_and_copies_the_last_filter() -> None:
    model = _net()
    chains = [("0", "1", ["3"])]
    grown = add_channels(model, chains, {"0": 2}, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert grown[0].out_channels == 10 and grown[1].num_features == 10 and grown[3].in_channels == 10
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(grown(x), model(x), atol=1e-6)  # new consumer inputs start at zero
    last = model[0].weight[-1]
    for new in grown[0].weight[-2:]:
        ratio = new / last
        assert ((ratio >= 1) & (ratio <= 1.01)).all()  # last * (1 + 0.01 * U(0, 1))
    assert torch.equal(grown[1].running_mean[-2:], model[1].running_mean[-1:].expand(2))
    assert torch.equal(remove_channels(grown, chains, {"0": [8, 9]})(x), grown(x))


def test_pool_running_average_and_largest_remainder_split() -> None:
    pool = AnnealingPool(momentum=0.5)
    imp = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([2.0, 4.0])}  # total 10
    pool.record(imp, {"a": [0], "b": [1]})  # shares 0.1 and 0.4
    assert pool.scores == pytest.approx({"a": 0.1, "b": 0.4})
    pool.record(imp, {"a": [0, 1], "b": []})  # shares 0.4 and 0: 0.5*0.1 + 0.5*0.4 = 0.25, 0.5*0.4 = 0.2
    assert pool.scores == pytest.approx({"a": 0.25, "b": 0.2})
    # 7 channels: exact 7*0.25/0.45 = 3.889, 7*0.2/0.45 = 3.111 -> floors 3, 3, the leftover to a
    assert pool.allocate(7) == {"a": 4, "b": 3}
    assert pool.allocate(0) == {"a": 0, "b": 0}


def test_annealed_schedule_counts_rounds_and_channels() -> None:
    model = _net()
    calls = []
    final, log = run_annealed_schedule(
        model, [("0", "1", ["3"]), ("3", "4", ["8"])], "linear:0.5:2", lambda m: _batches(1),
        train_round=lambda m, i, phase: calls.append((i, phase, sum(c.out_channels for c in (m[0], m[3])))),
        back_ratio=0.25,
    )
    # 14 channels: round 1 to round(0.25*14) = 4 removed -> 10, grow floor(0.25*4) = 1 -> 11;
    # round 2 to round(0.5*14) = 7 removed -> 7 left (4 removed), no annealing after the last round
    assert calls == [(0, "prune", 10), (0, "anneal", 11), (1, "prune", 7)]
    assert [e["removed"] for e in log] == [4, 4] and log[0]["grown"] == 1
    assert log[-1]["channel_fraction_removed"] == pytest.approx(0.5)
    assert final[0].out_channels + final[3].out_channels == 7
    assert model[0].out_channels == 8  # the input model is untouched


def test_pyramidnet_prunes_inner_widths_and_rebuilds_from_kwargs() -> None:
    model = build_reference("wavecomp_pyramidnet", depth=11, alpha=12).eval()
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,)))]
    small, removed, _ = hessian_prune(model, 20, batches, triples=model.channel_chains())
    widths = small.width_kwargs()
    assert sum(sum(p) for p in widths["mid_widths"]) == 2 * (20 + 24 + 28) - 20
    rebuilt = build_reference("wavecomp_pyramidnet", depth=11, alpha=12, **widths)
    rebuilt.load_state_dict(small.state_dict())  # strict: same keys and shapes
    with pytest.raises(ValueError, match="mid_widths"):
        build_reference("wavecomp_pyramidnet", depth=11, alpha=12, mid_widths=[[1, 1]])
