"""Magnitude pruning: exact counts, the three criteria, enforced masks, rewinding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from reference_models.compression.pruning import (
    MagnitudePruner,
    apply_masks,
    masks_of,
    prunable_parameters,
    sparsity_of,
)


def _two_layer(w1: list[float], w2: list[float]) -> nn.Sequential:
    m = nn.Sequential(nn.Linear(len(w1), 1, bias=True), nn.Linear(1, len(w2), bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([w1]))
        m[0].bias.fill_(5.0)
        m[1].weight.copy_(torch.tensor(w2).view(-1, 1))
    return m


def test_prunable_selection_by_glob() -> None:
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3, 4))
    assert list(prunable_parameters(m)) == ["0.weight", "3.weight"]  # no biases, no BN
    assert list(prunable_parameters(m, exclude=["3.*"])) == ["0.weight"]


def test_global_threshold_exact_count() -> None:
    # 8 weights: [1, 2, 3, 4] and [10, 20, 30, 40]; 50% global -> the four smallest (all of layer 0)
    m = _two_layer([1, -2, 3, -4], [10, 20, -30, 40])
    masks = MagnitudePruner(m, method="global").prune_to(0.5)
    assert masks["0.weight"].sum() == 0
    assert masks["1.weight"].sum() == 4
    assert torch.equal(m[0].weight, torch.zeros(1, 4))
    assert m[0].bias.item() == 5.0  # biases are not pruned


def test_layer_normalised_threshold_differs_from_global() -> None:
    # layer 0: [1,2,3,4], norm sqrt(30)=5.477 -> [0.183, 0.365, 0.548, 0.730]
    # layer 1: [10,20,30,40], norm sqrt(3000)=54.77 -> the same normalised values
    # 50% -> 4 pruned: both 0.183s and both 0.365s, i.e. the two smallest in each layer
    m = _two_layer([1, -2, 3, -4], [10, 20, -30, 40])
    masks = MagnitudePruner(m, method="layer_normalized").prune_to(0.5)
    assert masks["0.weight"].tolist() == [[False, False, True, True]]
    assert masks["1.weight"].flatten().tolist() == [False, False, True, True]


def test_uniform_and_tie_breaking() -> None:
    # all magnitudes equal: ties are broken by flat index, lowest first
    m = _two_layer([1, 1, 1, 1], [1, 1, 1, 1])
    masks = MagnitudePruner(m, method="uniform").prune_to(0.25)
    assert masks["0.weight"].tolist() == [[False, True, True, True]]
    assert masks["1.weight"].flatten().tolist() == [False, True, True, True]
    g = _two_layer([1, 1, 1, 1], [1, 1, 1, 1])
    gm = MagnitudePruner(g, method="global").prune_to(0.375)  # 3 of 8, first three in parameter order
    assert gm["0.weight"].tolist() == [[False, False, False, True]]
    assert gm["1.weight"].all()


@pytest.mark.parametrize("method", ["global", "layer_normalized", "uniform"])
def test_prune_to_hits_exact_counts(method: str) -> None:
    m = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(20, 7))  # 135 + 140 = 275 weights
    pruner = MagnitudePruner(m, method=method)
    for s, zeros in [(0.1, 28), (0.525, 144), (0.64, 176)]:  # round(s * 275): 27.5->28, 144.375, 176
        pruner.prune_to(s)
        n_zero = int((m[0].weight == 0).sum() + (m[2].weight == 0).sum())
        assert n_zero == zeros
        assert sum(int((~k).sum()) for k in masks_of(m).values()) == zeros
    if method == "uniform":  # each tensor within one weight of 64%: 135*.64 = 86.4, 140*.64 = 89.6
        assert int((m[0].weight == 0).sum()) in (86, 87)
        assert int((m[2].weight == 0).sum()) in (89, 90)


def test_masks_are_monotone_and_below_current_raises() -> None:
    m = nn.Sequential(nn.Linear(6, 6))
    pruner = MagnitudePruner(m, method="global")
    first = pruner.prune_to(0.5)["0.weight"].clone()
    with torch.no_grad():
        m[0].weight.add_(10.0)  # pruned entries become the largest
    second = pruner.prune_to(0.75)["0.weight"]
    assert not (second & ~first).any()  # nothing pruned comes back
    with pytest.raises(ValueError):
        pruner.prune_to(0.25)


def test_masks_enforced_through_sgd_momentum_weight_decay() -> None:
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    # build up momentum before pruning, so the buffer holds non-zero values at the pruned entries
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    pruner = MagnitudePruner(m, method="global")
    masks = pruner.prune_to(0.5)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with pruner.enforce(opt) as enforcer:
        for _ in range(4):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            for name, mask in masks.items():  # gradients of pruned entries are zeroed by the hook
                assert (dict(m.named_parameters())[name].grad[~mask] == 0).all()
            opt.step()
            for name, mask in masks.items():
                w = dict(m.named_parameters())[name]
                assert (w[~mask] == 0).all()
                assert not torch.signbit(w[~mask]).any()  # +0.0, not -0.0
        assert len(enforcer._handles) == len(masks) + 1
    assert enforcer._handles == []
    assert sparsity_of(m) == 0.5
    assert not torch.equal(before["0.weight"], m[0].weight)  # surviving weights did train
    # hooks are gone: a further step is no longer masked
    opt.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
    assert (m[0].weight != 0).sum() > (masks["0.weight"]).sum()


def test_schedule_with_lottery_ticket_rewind() -> None:
    m = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 5))  # 40 weights
    init = {n: p.detach().clone() for n, p in m.named_parameters()}
    pruner = MagnitudePruner(m, method="layer_normalized", keep_initial=True)
    rounds: list[tuple[int, float]] = []

    def train_round(i: int, target: float) -> None:
        rounds.append((i, target))
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.5)  # "training" moves every weight (masks are re-applied next round)

    reached = pruner.run_schedule("25%*2+10%", train_round, rewind=True)
    assert rounds == [(0, 0.25), (1, 0.5), (2, 0.6)]
    assert reached == [0.25, 0.5, 0.6]  # 10, 20, 24 of 40
    pruner.prune_to(0.6)
    pruner.rewind()
    for name, p in m.named_parameters():
        mask = pruner.masks.get(name)
        expected = init[name] if mask is None else init[name] * mask
        assert torch.equal(p, expected)


def test_masks_of_reads_torch_prune_and_apply_masks() -> None:
    m = nn.Sequential(nn.Linear(3, 2))
    torch_prune.l1_unstructured(m[0], "weight", amount=2)
    assert masks_of(m)["0.weight"].sum() == 4
    m2 = nn.Sequential(nn.Linear(2, 2))
    apply_masks(m2, {"0.weight": torch.tensor([[True, False], [False, True]])})
    assert (m2[0].weight == 0).sum() == 2
    assert masks_of(m2)["0.weight"].tolist() == [[True, False], [False, True]]
