"""Precision models as rule-set settings (issue 10 item 1): each setting's formula on a one-op model, the
expected numbers written out by hand here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rules.base import ClassWidth, RuleSet, adder_tree_bits, adder_tree_bits_mean
from rules.micronet2019 import Micronet2019
from scorer import score

# 8-bit activations (the input too), 4-bit weights, 32-bit accumulator
W4A8 = {"default": {"weight": 4, "act": 8, "acc": 32}}


def linear(n_in: int = 5, n_out: int = 1, bias: bool = False, weight: torch.Tensor | None = None) -> nn.Module:
    m = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        m.weight.copy_(weight if weight is not None else torch.ones(n_out, n_in))
        if bias:
            m.bias.fill_(1.0)
    return m


def row(report, kind: str):
    rows = report.layers[report.layers.kind == kind]
    assert len(rows) == 1
    return rows.iloc[0]


def test_adder_tree_levels_by_hand() -> None:
    # RIAIR flops_utils_final.py adder_tree: level l adds floor(m/2) pairs at base + l - 1 bits, m <- ceil(m/2)
    # n=5, base 12: 2 adds at 12, then 3 values: 1 add at 13, then 2 values: 1 add at 14
    assert adder_tree_bits(5, 12) == 2 * 12 + 1 * 13 + 1 * 14
    # n=8, base 8 (Woody 2Q for Q=4): 4 at 8 (50%), 2 at 9 (25%), 1 at 10
    assert adder_tree_bits(8, 8) == 4 * 8 + 2 * 9 + 1 * 10
    assert adder_tree_bits(1, 8) == adder_tree_bits(0, 8) == 0
    # a mean of 4.5 products: halfway between n=4 (2·8 + 1·9) and n=5 (2·8 + 1·9 + 1·10)
    assert adder_tree_bits_mean(4.5, 8) == pytest.approx((25 + 35) / 2)


class Min(Micronet2019):
    name = "test_min"
    mul_width = "min"


class Tree(Micronet2019):
    name = "test_tree"
    accumulation = "adder_tree"


class TreeSigned(Tree):
    name = "test_tree_signed"
    tree_signed_activations = True


def test_mul_width_max_and_min() -> None:
    # Linear 5 -> 1: 5 mults per output; operands 8-bit activation and 4-bit weight
    official = row(score(linear(), input_shape=(1, 5), precision=W4A8), "linear")
    assert official.mults == 5 and official.mul_bits == 8  # max(8, 4), official page §3.1
    narrow = row(score(linear(), input_shape=(1, 5), rules=Min(), precision=W4A8), "linear")
    assert narrow.mul_bits == 4  # min(8, 4), RIAIR Description.md
    assert narrow.ops == pytest.approx(5 * 4 / 32 + 4 * 32 / 32)


def test_adder_tree_on_one_linear() -> None:
    # 5 products of 8 + 4 = 12 bits: adds 2 at 12, 1 at 13, 1 at 14 = 51 bits over the 4 adds
    r = row(score(linear(), input_shape=(1, 5), rules=Tree(), precision=W4A8), "linear")
    assert r.adds == 4
    assert r.add_bits == pytest.approx(51 / 4)
    assert r.ops == pytest.approx(5 * 8 / 32 + 51 / 32)
    signed = row(score(linear(), input_shape=(1, 5), rules=TreeSigned(), precision=W4A8), "linear")
    assert signed.add_bits == pytest.approx((2 * 11 + 12 + 13) / 4)  # base 8 + 4 - 1


def test_adder_tree_bias_at_the_accumulator_and_per_row_nonzeros() -> None:
    # weight rows with 4 and 2 nonzeros (8-bit operands: base 16); tree bits 2·16 + 17 = 49 and 16;
    # plus one bias add per output at the 32-bit accumulator
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    r = row(score(linear(4, 2, bias=True, weight=w), input_shape=(1, 4), rules=Tree(),
                  precision={"default": {"weight": 8, "act": 8, "acc": 32}}), "linear")
    assert r.adds == (3 + 1) + 2  # n - 1 per output at the mean n = 3, + 2 bias adds
    assert r.add_bits * r.adds == pytest.approx(49 + 16 + 2 * 32)


class Classes(Micronet2019):
    name = "test_classes"
    class_widths = (
        ClassWidth("SE at 16", module="se*", mul_bits=16, add_bits=16),
        ClassWidth("pooling at 32", frozenset({"mean"}), mul_bits=32, add_bits=32),
    )


class SeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.se = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.se(x.mean(dim=(2, 3))))


def test_class_widths() -> None:
    # with the freebie (16-bit mults, 32-bit adds): the SE layer's adds at 16, the mean's mult at 32
    rep = score(SeNet(), input_shape=(1, 4, 2, 2), rules=Classes(), bits=16)
    layers = rep.layers.set_index("module")
    assert layers.loc["se", "add_bits"] == 16 and layers.loc["fc", "add_bits"] == 32
    mean = row(rep, "mean")
    assert mean.mul_bits == 32 and mean.add_bits == 32
    # SE linear: 16 mults + 12 adds + 4 bias adds per example, all at 16 bits
    assert layers.loc["se", "ops"] == pytest.approx((16 + 16) * 16 / 32)


class Exponent(Micronet2019):
    name = "test_exponent"
    exponent_ops = {"linear": 1.0}
    exponent_bits = 8


def test_exponent_ops() -> None:
    # Linear 5 -> 3 at 32 bits: 15 mults, 12 adds, + 3 exponent ops (1 per output) at 8 bits
    r = row(score(linear(5, 3), input_shape=(1, 5), rules=Exponent()), "linear")
    assert r.exp_ops == 3 and r.exp_bits == 8
    assert r.ops == pytest.approx(15 + 12 + 3 * 8 / 32)


class InputAdds(Micronet2019):
    name = "test_input_adds"
    accumulation = "input"


def test_accumulation_at_the_input_width() -> None:
    # 9-bit input, 1-bit (binary) weight: mults at 1/32, adds at 9/32 (MB-PM)
    cfg = {"default": {"weight": 1, "act": 9, "acc": 32}}
    r = row(score(linear(), input_shape=(1, 5), rules=InputAdds(), precision=cfg), "linear")
    assert r.mul_bits == 1 and r.add_bits == 9
    assert r.ops == pytest.approx(5 * 1 / 32 + 4 * 9 / 32)


class MaskAll(Micronet2019):
    name = "test_mask_all"
    mask_policy = "all"


class MaskNonzeros(Micronet2019):
    name = "test_mask_nnz"
    mask_policy = "nonzeros"


def test_mask_policies() -> None:
    # Linear 4 -> 2 with bias, 6 of 8 weights nonzero, 32-bit
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    bits = {}
    for rs in (Micronet2019(), MaskAll(), MaskNonzeros()):
        bits[rs.name] = score(linear(4, 2, bias=True, weight=w), input_shape=(1, 4), rules=rs).totals["param_bits"]
    assert bits["micronet2019"] == 6 * 32 + 8 + 2 * 32  # values + 8-bit mask + bias
    assert bits["test_mask_all"] == 6 * 32 + 8 + 2 * 32 + 2  # + 1 mask bit per bias element (total/32)
    assert bits["test_mask_nnz"] == 6 * 32 + 6 + 2 * 32  # mask nnz/32


def test_default_settings_change_nothing() -> None:
    assert RuleSet.mul_width == "max" and RuleSet.accumulation == "flat" and not RuleSet.class_widths
    assert not RuleSet.exponent_ops
