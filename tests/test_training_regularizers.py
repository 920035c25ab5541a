"""SRIP: zero for (semi-)orthonormal weights, the spectral norm of W Wᵀ − I otherwise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reference_models.training.regularizers import SRIPRegularizer, pointwise_convs, srip_penalty


def test_zero_for_identity_and_rotation():
    assert float(srip_penalty(torch.eye(4))[0]) == 0.0
    a = 0.3
    rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    assert float(srip_penalty(rotation)[0]) == pytest.approx(0.0, abs=1e-6)


def test_zero_for_orthonormal_rows_or_columns_of_a_conv_weight():
    rows = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]).view(2, 4, 1, 1)  # 2 out, 4 in
    assert float(srip_penalty(rows)[0]) == 0.0
    cols = rows.view(2, 4).t().contiguous().view(4, 2, 1, 1)  # 4 out, 2 in: Wᵀ W = I
    assert float(srip_penalty(cols)[0]) == 0.0


def test_positive_otherwise_with_the_expected_value():
    # W = diag(2, 1): W Wᵀ − I = diag(3, 0), spectral norm 3
    assert float(srip_penalty(torch.diag(torch.tensor([2.0, 1.0])), iters=20)[0]) == pytest.approx(3.0, rel=1e-5)
    # W = 0.5 I (3x3): W Wᵀ − I = -0.75 I, spectral norm 0.75
    assert float(srip_penalty(0.5 * torch.eye(3))[0]) == pytest.approx(0.75, rel=1e-6)


def test_regularizer_sums_pointwise_convs_only_and_has_gradients():
    model = nn.Sequential(
        nn.Conv2d(2, 2, 1, bias=False),             # pointwise: counted
        nn.Conv2d(2, 2, 3, padding=1, bias=False),  # 3x3: not counted
        nn.Conv2d(2, 2, 1, groups=2, bias=False),   # depthwise 1x1: not counted
    )
    assert list(pointwise_convs(model)) == ["0"]
    with torch.no_grad():
        model[0].weight.copy_((2 * torch.eye(2)).view(2, 2, 1, 1))  # 4I − I = 3I: sigma 3
    reg = SRIPRegularizer(model, coefficient=0.5)
    value = reg()
    assert float(value.detach()) == pytest.approx(0.5 * 3.0, rel=1e-5)
    value.backward()
    assert model[0].weight.grad is not None and model[1].weight.grad is None
