"""Issue 8, "Done when" (zoo): real model families written the way their libraries write them (tests/zoo.py)
score under micronet2019 with no unknown op, conserve their parameters, and read their weights.

A family that cannot be scored is listed in MISSING (a strict xfail naming what it lacks).
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn as nn

from scorer import score
from tests.zoo import ZOO, build

#: What a family lacks (a strict xfail per entry, naming it); every family of issue 8 scores today.
MISSING: dict[str, str] = {}


def _cases() -> list:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=f"issue 8: {MISSING[name]}"))
        if name in MISSING else name
        for name in ZOO
    ]


def unique_param_numel(model: nn.Module) -> int:
    """Elements of the model's parameters, a tensor tied under several names counted once."""
    by_identity = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    return sum(by_identity.values())


def _score(model: nn.Module, inputs: tuple, rules: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return score(model, example_inputs=inputs, rules=rules)


def _built(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(name)


@functools.cache
def _micronet_totals(name: str) -> dict[str, float]:
    report = _score(*_built(name), "micronet2019")
    assert report.unknown == []
    return report.totals


def test_zoo_is_complete() -> None:
    assert set(MISSING) <= set(ZOO)
    assert {"vit", "swin", "bert", "gpt2", "lstm_lm", "gru_lm", "shufflenet_v2", "mixnet_s", "eager_qat",
            "fx_qat"} <= set(ZOO)


@pytest.mark.parametrize("name", _cases())
def test_scores_under_micronet2019_with_no_unknown_op(name: str) -> None:
    totals = _micronet_totals(name)
    assert totals["params"] > 0 and totals["mults"] > 0


@pytest.mark.parametrize("name", _cases())
def test_every_unique_parameter_is_stored_once(name: str) -> None:
    # the flops rule set stores every parameter element once, at 32 bits (rules/peers.py)
    model, inputs = _built(name)
    assert _score(model, inputs, "flops").totals["params"] == unique_param_numel(model)


@pytest.mark.parametrize("name", _cases())
def test_scores_read_the_weights(name: str) -> None:
    # zeroing half of the largest weight matrix leaves fewer nonzeros to store and to multiply by
    before = _micronet_totals(name)
    model, inputs = _built(name)
    weight = max((p for p in model.parameters() if p.dim() >= 2), key=lambda p: p.numel())
    with torch.no_grad():
        weight.view(-1)[: weight.numel() // 2] = 0.0
    after = _score(model, inputs, "micronet2019").totals
    assert after["params"] < before["params"]
    assert after["mults"] < before["mults"]
