"""A parameter's own dtype is its stored width when no width is set for it (official_rules.md §2.2, §3.2: a
model's parameters count at the width they are stored at): a float16 or bfloat16 model stores its weights,
biases, folded BN shifts and norm parameters at 16 bits with ``bits=None``; a precision config's or a layer's
explicit width still decides, and ``bits=N`` stores at N unless the dtype is narrower (``_layer_bits``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scorer import Scorer, score

SHAPE = (1, 3, 4, 4)
DTYPES = [torch.float16, torch.bfloat16]


def _net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 10), nn.LayerNorm(10)).eval().to(dtype)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _stored(report) -> dict[str, float]:
    rows = report.layers[report.layers.param_bits > 0]
    return dict(zip(rows.module, rows.param_bits, strict=True))


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_parameter_of_a_half_model_at_16_bits(dtype, capture):
    report = score(_net(dtype), SHAPE, input_dtype=_name(dtype), capture=capture)
    # conv 108 weights + 4 biases (the BN shift folds into them), linear 640 + 10, LayerNorm γ and β 10 + 10
    assert _stored(report) == {"0": (108 + 4) * 16, "4": (640 + 10) * 16, "5": 20 * 16}
    assert report.totals["param_bits"] == (108 + 4 + 640 + 10 + 20) * 16 == 12512
    assert report.totals["param_bits"] == score(_net(dtype), SHAPE, input_dtype=_name(dtype), bits=16,
                                                capture=capture).totals["param_bits"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_folded_shift_and_prelu_slope_at_their_dtype(dtype):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.PReLU(4), nn.Flatten(),
                        nn.Linear(64, 10)).eval().to(dtype)
    report = score(net, SHAPE, input_dtype=_name(dtype))
    # the BN shift becomes the conv's 4 biases, stored at the BN's row; PReLU's 4 slopes
    assert _stored(report) == {"0": 108 * 16, "1": 4 * 16, "2": 4 * 16, "4": (640 + 10) * 16}
    assert report.totals["param_bits"] == (108 + 4 + 4 + 650) * 16


def test_explicit_widths_still_decide():
    half, name = _net(torch.float16), "float16"
    # a config's bias width wins over the dtype, narrower or wider (as its weight width does)
    for bias in (8, 24):
        config = {"layers": {"4": {"bias": bias}}}
        assert _stored(score(half, SHAPE, input_dtype=name, precision=config))["4"] == 640 * 16 + 10 * bias
    # a layer's own bias_bits too
    half[4].bias_bits = 8
    assert _stored(score(half, SHAPE, input_dtype=name))["4"] == 640 * 16 + 10 * 8
    del half[4].bias_bits
    # bits=N: N, or the dtype's width where narrower
    assert score(half, SHAPE, input_dtype=name, bits=8).totals["param_bits"] == 782 * 8
    assert score(half, SHAPE, input_dtype=name, bits=32).totals["param_bits"] == 782 * 16
    # a float32 model is unchanged: every parameter at 32 bits
    assert score(_net(torch.float32), SHAPE).totals["param_bits"] == 782 * 32


def test_rules_that_ignore_bits_store_32():
    assert score(_net(torch.float16), SHAPE, input_dtype="float16", rules="flops").totals["param_bits"] == \
        score(_net(torch.float32), SHAPE, rules="flops").totals["param_bits"]


def test_scorer_as_score():
    half = _net(torch.float16)
    sc = Scorer(half, SHAPE, input_dtype="float16")
    assert sc.score().totals == score(half, SHAPE, input_dtype="float16").totals
    assert sc.score().totals["param_bits"] == 782 * 16
