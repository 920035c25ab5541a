"""The official counting code's single-op numbers (official_rules.md §5.2) and the page examples (§5.1).

Expected values are quoted from the spec tables; values at sparsity 0.5 that the spec does not list are
computed here with the official formulas of official_rules.md §2.2, written out in ``official_*``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from scorer import score
from tests.conftest import zero_fraction

B = 16  # §5.2 lists param bits at b = 16


def sparse_size(n: int, b: int, s: float) -> float:
    """official_rules.md §2.2: n·b·(1−s) + (n if s > 0 else 0)."""
    return n * b * (1 - s) + (n if s > 0 else 0)


def official_conv(size_out: int, k: int, ci: int, co: int, s: float, bias: bool, act: tuple[int, int], dw=False):
    """(param bits, mults, adds) of Conv2D / DepthWiseConv2D per official_rules.md §2.2."""
    n_out = size_out * size_out * co
    vec = k * k * (1 if dw else ci)
    pbits = sparse_size(vec * co, B, s) + (co * B if bias else 0)
    mults = vec * (1 - s) * n_out + act[0] * n_out
    adds = (vec * (1 - s) - 1) * n_out + (n_out if bias else 0) + act[1] * n_out
    return pbits, mults, adds


def official_fc(ci: int, co: int, s: float, bias: bool, act: tuple[int, int]):
    """(param bits, mults, adds) of FullyConnected per official_rules.md §2.2."""
    pbits = sparse_size(ci * co, B, s) + (co * B if bias else 0)
    mults = ci * (1 - s) * co + act[0] * co
    adds = (ci * (1 - s) - 1) * co + (co if bias else 0) + act[1] * co
    return pbits, mults, adds


RELU, SWISH, SIGMOID, NONE = (1, 0), (3, 1), (2, 1), (0, 0)


def conv_block(ci, co, k, stride, padding, bias, act, groups=1):
    layers = [nn.Conv2d(ci, co, k, stride=stride, padding=padding, bias=bias, groups=groups)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


# (id, module factory, input shape, spec (param bits, mults, adds) at s=0, official formula for any s)
ROWS = [
    ("conv_bias_relu", lambda: conv_block(16, 32, 3, 1, 1, True, nn.ReLU()), (1, 16, 32, 32),
     (74_240, 4_751_360, 4_718_592), lambda s: official_conv(32, 3, 16, 32, s, True, RELU)),
    ("conv_plain", lambda: conv_block(16, 32, 3, 1, 1, False, None), (1, 16, 32, 32),
     (73_728, 4_718_592, 4_685_824), lambda s: official_conv(32, 3, 16, 32, s, False, NONE)),
    ("effnet_stem", lambda: conv_block(3, 32, 3, 2, 1, True, nn.SiLU()), (1, 3, 224, 224),
     (14_336, 12_042_240, 11_239_424), lambda s: official_conv(112, 3, 3, 32, s, True, SWISH)),
    ("osi_stem_valid", lambda: conv_block(3, 24, 3, 2, 0, False, nn.SiLU()), (1, 3, 63, 63),
     (10_368, 691_920, 622_728), lambda s: official_conv(31, 3, 3, 24, s, False, SWISH)),
    ("dw_s2_swish", lambda: conv_block(64, 64, 3, 2, 1, True, nn.SiLU(), groups=64), (1, 64, 32, 32),
     (10_240, 196_608, 163_840), lambda s: official_conv(16, 3, 64, 64, s, True, SWISH, dw=True)),
    ("dw_5x5_sigmoid", lambda: conv_block(672, 672, 5, 1, 2, True, nn.Sigmoid(), groups=672), (1, 672, 14, 14),
     (279_552, 3_556_224, 3_424_512), lambda s: official_conv(14, 5, 672, 672, s, True, SIGMOID, dw=True)),
    ("fc_bias", lambda: nn.Linear(1280, 1000), (1, 1280),
     (20_496_000, 1_280_000, 1_280_000), lambda s: official_fc(1280, 1000, s, True, NONE)),
    ("fc_relu", lambda: nn.Sequential(nn.Linear(640, 100, bias=False), nn.ReLU()), (1, 640),
     (1_024_000, 64_100, 63_900), lambda s: official_fc(640, 100, s, False, RELU)),
    ("se_reduce", lambda: conv_block(96, 4, 1, 1, 0, True, nn.SiLU()), (1, 96, 1, 1),
     (6_208, 396, 388), lambda s: official_conv(1, 1, 96, 4, s, True, SWISH)),
]


def _totals(model: nn.Module, shape, **kw):
    t = score(model, input_shape=shape, bits=16, **kw).totals
    return t["param_bits"], t["mults"], t["adds"]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_section_5_2_dense(row) -> None:
    _, factory, shape, expected, formula = row
    got = _totals(factory(), shape)
    assert got == pytest.approx(expected, abs=1e-6)
    assert formula(0.0) == pytest.approx(expected)  # the transcribed formula agrees with the spec table


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_section_5_2_half_sparse_measured_and_uniform(row) -> None:
    _, factory, shape, _, formula = row
    expected = formula(0.5)
    model = factory()
    weight = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))).weight
    uniform = _totals(model, shape, sparsity="uniform:0.5")
    zero_fraction(weight, 0.5)
    measured = _totals(model, shape)
    assert measured == pytest.approx(expected, abs=1e-6)
    assert uniform == pytest.approx(expected, abs=1e-6)


def test_section_5_2_listed_half_sparse_values() -> None:
    # The three rows that §5.2 lists at s = 0.5.
    assert official_conv(32, 3, 16, 32, 0.5, True, RELU) == (41_984, 2_392_064, 2_359_296)
    assert official_conv(16, 3, 64, 64, 0.5, True, SWISH, dw=True) == (6_208, 122_880, 90_112)
    assert official_fc(1280, 1000, 0.5, True, NONE) == (11_536_000, 640_000, 640_000)


class Gap(nn.Module):
    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        if self.form == "module":
            return self.pool(x)
        if self.form == "function":
            return torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return x.mean((2, 3), keepdim=True)


@pytest.mark.parametrize("form", ["module", "function", "method"])
def test_global_avg(form: str) -> None:
    # §5.2: GlobalAvg(7, 1280) -> 0 / 1,280 / 61,440
    assert _totals(Gap(form), (1, 1280, 7, 7)) == (0, 1_280, 61_440)


class Scale(nn.Module):
    def forward(self, x):
        return x * x.mean((2, 3), keepdim=True)


def test_scale_and_add() -> None:
    # §5.2: Scale(14, 96) -> 18,816 mults; the mean in front is GlobalAvg(14, 96): 96 mults, 195·96 adds
    rows = score(Scale(), input_shape=(1, 96, 14, 14), bits=16).layers
    mul = rows[rows.kind == "mul"].iloc[0]
    assert (mul.mults, mul.adds) == (18_816, 0)

    class Add(nn.Module):
        def forward(self, x):
            return x + torch.relu(x)

    rows = score(Add(), input_shape=(1, 24, 14, 14), bits=16).layers
    add = rows[rows.kind == "add"].iloc[0]
    assert (add.mults, add.adds) == (0, 4_704)  # §5.2: Add(14, 24)


def test_page_example_score_0_862() -> None:
    # §5.1: 3M params and 500M ops on ImageNet score 3M/6.9M + 500M/1170M = 0.862133...
    # A bias-free linear layer of 3,000,000 weights at 32 bits holds exactly 3M params.
    model = nn.Linear(3000, 1000, bias=False)
    rep = score(model, input_shape=(1, 3000), track="imagenet", rules="micronet2019")
    assert rep.totals["params"] == 3_000_000
    # its ops are 3,000,000 mults + 2,999,000 adds; rescale the ops share to 500M by arithmetic
    ops_score = 500e6 / 1170e6
    assert rep.totals["param_score"] + ops_score == pytest.approx(0.8621330, abs=5e-7)
    assert rep.totals["param_score"] == pytest.approx(3e6 / 6.9e6)


def test_page_example_block_mask_4096_bits() -> None:
    # §5.1/§4.1: a 512×128 matrix with 4×4 block sparsity needs a 4,096-bit mask (128·32 blocks).
    model = nn.Linear(128, 512, bias=False)
    with torch.no_grad():
        model.weight[:256] = 0.0  # whole 4x4 blocks are zero
    rep = score(model, input_shape=(1, 128), mask_block="4x4")
    row = rep.layers.iloc[0]
    assert row.mask_bits == 4_096
    assert row.param_bits == 256 * 128 * 32 + 4_096


class _Quant(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, x):
        return x


class _QLinear(nn.Linear):
    def __init__(self, i: int, o: int, weight_bits: int):
        super().__init__(i, o, bias=False)
        self.weight_bits = weight_bits


@pytest.mark.parametrize(("act_bits", "weight_bits", "expected_mul_bits"), [(5, 3, 5), (8, 32, 32), (32, 8, 32)])
def test_page_example_mixed_bit_mults(act_bits: int, weight_bits: int, expected_mul_bits: int) -> None:
    # §5.1: a 3-bit × 5-bit mult counts 5/32 op; a 32-bit × 8-bit mult counts 1 op.
    model = nn.Sequential(_Quant(act_bits), _QLinear(10, 4, weight_bits))
    rep = score(model, input_shape=(1, 10))
    lin = rep.layers[rep.layers.kind == "linear"].iloc[0]
    assert lin.mul_bits == expected_mul_bits
    assert lin.mults == 40
    assert lin.ops == pytest.approx(40 * expected_mul_bits / 32 + 36 * 32 / 32)


def test_page_example_8bit_param_is_quarter() -> None:
    # §5.1: an 8-bit parameter counts 1/4 parameter.
    model = _QLinear(10, 4, weight_bits=8)
    rep = score(model, input_shape=(1, 10))
    assert rep.totals["params"] == 40 / 4


def test_binary_weight_sign_bit_rule() -> None:
    # §3.1: ±1 weight times a value with a standalone sign bit counts 1/32 op, whatever the other width.
    model = _QLinear(10, 4, weight_bits=1)
    rep = score(model, input_shape=(1, 10), bits=16)
    lin = rep.layers.iloc[0]
    assert lin.mul_bits == 1
    assert lin.ops == pytest.approx(40 / 32 + 36)  # adds stay at 32 bits
    assert rep.totals["param_bits"] == 40


def test_freebie_precision_scaling_matches_process_counts() -> None:
    # §5.2: process_counts(…, mul_bits=16, add_bits=32) scales mults by 1/2 and adds by 1.
    model = conv_block(16, 32, 3, 1, 1, True, nn.ReLU())
    rep = score(model, input_shape=(1, 16, 32, 32), bits=16)
    assert rep.totals["ops"] == pytest.approx(4_751_360 * 16 / 32 + 4_718_592)
    assert rep.totals["params"] == 74_240 / 32


def test_negative_adds_artefact_reproduced() -> None:
    # §4.2: FC [4,10] at s = 0.9 gives adds (4·0.1 − 1)·10 = −6; a faithful reimplementation reproduces it.
    model = nn.Linear(4, 10, bias=False)
    rep = score(model, input_shape=(1, 4), sparsity="uniform:0.9")
    assert rep.totals["adds"] == pytest.approx(-6.0)
    assert rep.totals["mults"] == pytest.approx(4.0)


def test_mask_only_when_sparse_and_bias_dense() -> None:
    model = nn.Linear(8, 4)
    dense = score(model, input_shape=(1, 8)).totals["param_bits"]
    assert dense == (32 + 4) * 32
    zero_fraction(model.weight, 0.25)
    sparse = score(model, input_shape=(1, 8)).totals["param_bits"]
    assert sparse == 24 * 32 + 32 + 4 * 32  # nonzeros, 1-bit mask over all 32, dense bias


def test_track_baselines() -> None:
    model = nn.Linear(4, 4, bias=False)
    for track, (bp, bo) in {"cifar100": (36.5e6, 10.49e9), "imagenet": (6.9e6, 1170e6),
                            "wikitext103": (159e6, 318e6)}.items():
        t = score(model, input_shape=(1, 4), track=track).totals
        assert t["param_score"] == pytest.approx(16 / bp)
        assert t["ops_score"] == pytest.approx((16 + 12) / bo)
        assert math.isclose(t["score"], t["param_score"] + t["ops_score"])
