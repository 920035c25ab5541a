"""Parameter groups, optimisers and learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reference_models.training.optim import CosinePeriodLR, build_optimizer, build_scheduler, param_groups


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.PReLU(4), nn.Flatten(), nn.Linear(4, 2))


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_no_decay_on_biases_and_bn_and_1d_params():
    model = _model()
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert _names(model, decay) == {"0.weight", "4.weight"}
    assert _names(model, no_decay) == {"0.bias", "1.weight", "1.bias", "2.weight", "4.bias"}


def test_switches_for_bias_and_norm_decay():
    model = _model()
    groups = param_groups(model, 1e-5, no_decay_bias=True, no_decay_norm=False)  # KAIST ver2-like
    decay, no_decay = groups
    assert _names(model, no_decay) == {"0.bias", "1.bias", "4.bias"}
    assert "1.weight" in _names(model, decay) and "2.weight" in _names(model, decay)
    everything = param_groups(model, 1e-5, no_decay_bias=False, no_decay_norm=False)
    assert len(everything) == 1 and len(everything[0]["params"]) == 7


def test_frozen_parameters_are_left_out():
    model = _model()
    model[0].weight.requires_grad_(False)
    names = set().union(*(_names(model, g) for g in param_groups(model, 0.1)))
    assert "0.weight" not in names


def test_sgd_nesterov_and_adam():
    model = _model()
    sgd = build_optimizer(param_groups(model, 1e-4), "sgd", lr=0.1, momentum=0.9, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] is True
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4, 0.0]
    adam = build_optimizer(model.parameters(), "adam", lr=1e-3)
    assert isinstance(adam, torch.optim.Adam)
    with pytest.raises(ValueError):
        build_optimizer(model.parameters(), "lamb")


def _lrs(scheduler, optimizer, epochs: int) -> list[float]:
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_with_warm_restarts():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = CosinePeriodLR(opt, period=4, eta_min=0.0005, restart=True)
    lrs = _lrs(sched, opt, 9)
    expected = [0.0005 + (0.1 - 0.0005) * (1 + math.cos(math.pi * (t % 4) / 4)) / 2 for t in range(9)]
    assert lrs == pytest.approx(expected)
    assert lrs[4] == pytest.approx(0.1) and lrs[8] == pytest.approx(0.1)  # restarts at 4 and 8


def test_cosine_without_restart_holds_the_minimum():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.13)
    lrs = _lrs(CosinePeriodLR(opt, period=2, restart=False), opt, 4)
    assert lrs == pytest.approx([0.13, 0.065, 0.0, 0.0])


def test_step_schedule():
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-3)
    lrs = _lrs(build_scheduler(opt, "step", milestones=[2, 3], gamma=0.2), opt, 4)
    assert lrs == pytest.approx([1e-3, 1e-3, 2e-4, 4e-5])


def test_norm_exemption_covers_norm_biases_even_when_biases_decay() -> None:
    # docstring: no_decay_norm exempts the parameters of normalisation layers (γ and β alike)
    import torch.nn as nn

    from reference_models.training.optim import param_groups

    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    groups = param_groups(model, 1e-4, no_decay_bias=False, no_decay_norm=True)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model[1].bias) not in decayed and id(model[1].weight) not in decayed
    assert id(model[0].weight) in decayed
    assert id(model[0].bias) not in decayed  # 1-D: "every other parameter with fewer than two dimensions"
