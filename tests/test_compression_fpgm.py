"""FPGM filter selection and channel surgery."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reference_models.compression.fpgm import (
    FPGMError,
    find_sequential_chains,
    fpgm_prune,
    fpgm_select,
    fpgm_soft_prune,
    geometric_median_scores,
)
from tests.conftest import random_bn_stats


def test_select_on_1d_filters() -> None:
    # filters are the scalars 0, 1, 2, 4, 10; sum of distances to the others:
    # 0: 1+2+4+10=17, 1: 1+1+3+9=14, 2: 2+1+2+8=13, 4: 4+3+2+6=15, 10: 10+9+8+6=33
    w = torch.tensor([0.0, 1.0, 2.0, 4.0, 10.0]).view(5, 1, 1, 1)
    assert geometric_median_scores(w).tolist() == [17.0, 14.0, 13.0, 15.0, 33.0]
    assert fpgm_select(w, 1) == [2]
    assert fpgm_select(w, 2) == [1, 2]  # not the smallest-norm filter 0
    assert fpgm_select(w, 0) == []
    with pytest.raises(FPGMError):
        fpgm_select(w, 5)


def test_select_on_2d_filters_center_point() -> None:
    # corners of a 6x8 rectangle plus its centre: centre sums 4*5=20, each corner 6+8+10+5=29
    pts = [[0, 0], [6, 0], [0, 8], [6, 8], [3, 4]]
    w = torch.tensor(pts, dtype=torch.float32).view(5, 2, 1, 1)
    assert geometric_median_scores(w).tolist() == [29.0, 29.0, 29.0, 29.0, 20.0]
    assert fpgm_select(w, 1) == [4]
    assert fpgm_select(w, 2) == [0, 4]  # tie among the corners -> lowest index


def _chain_model() -> nn.Sequential:
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    )
    random_bn_stats(m[1], m[4])
    return m.eval()


def test_sequential_surgery_matches_original_on_kept_channels() -> None:
    m = _chain_model()
    assert find_sequential_chains(m) == [("0", "1", ["3"]), ("3", "4", ["8"])]
    small, removed = fpgm_prune(m, 0.5)
    assert [len(removed["0"]), len(removed["3"])] == [3, 2]
    keep0 = [i for i in range(6) if i not in removed["0"]]
    keep3 = [i for i in range(4) if i not in removed["3"]]
    assert (small[0].out_channels, small[1].num_features, small[3].in_channels) == (3, 3, 3)
    assert (small[3].out_channels, small[4].num_features, small[8].in_features) == (2, 2, 2)
    assert small[0].weight.shape == (3, 3, 3, 3) and small[8].weight.shape == (5, 2)
    assert m[0].weight.shape == (6, 3, 3, 3)  # original untouched
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        # the first block's activations are the original's kept channels
        assert torch.allclose(small[:3](x), m[:3](x)[:, keep0], atol=1e-6)
        # the whole network equals the original with the removed channels cut from the consumers
        ref = copy.deepcopy(m)
        ref[3].weight[:, removed["0"]] = 0
        ref[8].weight[:, removed["3"]] = 0
        assert torch.allclose(small(x), ref(x), atol=1e-5)
        assert torch.allclose(small[:6](x), ref[:6](x)[:, keep3], atol=1e-6)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.c2(torch.relu(self.bn1(self.c1(x))))) + x)


def test_explicit_triples_and_residual_refusal() -> None:
    m = _Residual().eval()
    small, removed = fpgm_prune(m, {"c1": 1}, triples=[("c1", "bn1", "c2")])
    assert small.c1.out_channels == 3 and small.c2.in_channels == 3 and small.c2.out_channels == 4
    x = torch.randn(1, 4, 5, 5)
    ref = copy.deepcopy(m)
    with torch.no_grad():
        ref.c2.weight[:, removed["c1"]] = 0
        assert torch.allclose(small(x), ref(x), atol=1e-6)
    with pytest.raises(FPGMError, match="residual add"):
        fpgm_prune(m, 0.25, triples=[("c2", "bn2", "c1")])
    forced, _ = fpgm_prune(m, 0.25, triples=[("c2", "bn2", "c1")], safe=["c2"])  # caller's responsibility
    assert forced.c2.out_channels == 3


def test_refuses_grouped_conv_and_wrong_consumer() -> None:
    m = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert find_sequential_chains(m) == []
    with pytest.raises(FPGMError, match="grouped"):
        fpgm_prune(m, 0.5, triples=[("0", None, "2")])
    with pytest.raises(FPGMError):
        fpgm_prune(m, 0.5, triples=[("2", None, "0")])


def test_soft_prune_zeroes_selected_filters() -> None:
    m = nn.Sequential(nn.Conv2d(1, 5, 1), nn.ReLU(), nn.Conv2d(5, 1, 1))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([0.0, 1.0, 2.0, 4.0, 10.0]).view(5, 1, 1, 1))
    removed = fpgm_soft_prune(m, {"0": 2})
    assert removed == {"0": [1, 2]}
    assert m[0].weight.flatten().tolist() == [0.0, 0.0, 0.0, 4.0, 10.0]
    assert m[0].bias[1] == 0 and m[0].bias[2] == 0
