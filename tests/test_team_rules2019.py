"""Team rule sets of issue 10 item 2: each one's distinguishing formula on a one-op model, against hand
arithmetic from the convention quoted (team_scores.md section in each test)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rules import available_rulesets, get_ruleset
from scorer import score
from tests.test_precision_models import linear, row  # one-op models and row lookup, shared

NEW = ["riair2019", "woody2019", "wavecomp2019", "mbpm2019", "dnw2019", "dqstarter2019", "qualcomm2019"]


def test_registered_and_cited() -> None:
    names = available_rulesets()
    for name in NEW:
        assert name in names
        doc = type(get_ruleset(name)).__doc__ or ""
        assert "team_scores.md §" in doc or "official_rules.md §" in doc, name


def test_riair_tree_min_mults_fp16_eltwise() -> None:
    # team_scores.md §3 RIAIR: adder tree with growing widths, mult bits = min(act, weight); FP16 elsewhere;
    # §1.1 notes: the LB is score-type 4 (FP32 avgpool). Linear 5 -> 1, 8-bit input, 4-bit weight:
    # mults 5 at min(8, 4) = 4 bits; adds: 2 at 12, 1 at 13, 1 at 14 bits (flops_utils_final.py adder_tree).
    cfg = {"default": {"weight": 4, "act": 8, "acc": 32}}
    rep = score(linear(), input_shape=(1, 5), rules="riair2019", precision=cfg)
    r = row(rep, "linear")
    assert r.ops == pytest.approx((5 * 4 + 2 * 12 + 13 + 14) / 32)
    # storage (w_element + w_nonzero·bit_width)/32: the mask over a dense weight too
    assert rep.totals["param_bits"] == 5 + 5 * 4
    # a BN folded into the linear is its bias: 1 add per output at FP32 (score-type 4), under the freebie too
    folded = score(nn.Sequential(nn.Linear(5, 2, bias=False), nn.BatchNorm1d(2).eval()), input_shape=(1, 5),
                   rules="riair2019", bits=16)
    assert row(folded, "bn").ops == pytest.approx(2 * 32 / 32)
    # ReLU at FP16 whatever the annotation (32 here): 5 comparisons at 16 bits
    relu = row(score(nn.ReLU(), input_shape=(1, 5), rules="riair2019"), "act:relu")
    assert relu.ops == pytest.approx(5 * 16 / 32)
    # AvgPool2d(2) on 1x1x2x2 at FP32 (score-type 4): 1 mult + 3 adds at 32 bits, under the freebie too
    pool = row(score(nn.AvgPool2d(2), input_shape=(1, 1, 2, 2), rules="riair2019", bits=16), "avgpool")
    assert pool.ops == pytest.approx(1 + 3)


def test_woody_binary_tree() -> None:
    # team_scores.md §3 Woody: "binary-tree" accumulation 2n, 2n+1, ...; Q = 8 for activations and weights:
    # Linear 8 -> 1: 8 mults at 8 bits; adds 4 at 16, 2 at 17, 1 at 18 (50%, 25%, ... of official_rules.md §3.3)
    cfg = {"default": {"weight": 8, "act": 8, "acc": 32}}
    r = row(score(linear(8), input_shape=(1, 8), rules="woody2019", precision=cfg), "linear")
    assert r.ops == pytest.approx((8 * 8 + 4 * 16 + 2 * 17 + 18) / 32)
    common = row(score(linear(8), input_shape=(1, 8), precision=cfg), "linear")
    assert common.ops == pytest.approx((8 * 8 + 7 * 32) / 32)  # the LB's reading: all adds at 32 (§1.1 notes)


def test_wavecomp_storage_and_exponent_ops() -> None:
    # team_scores.md §2.8: Storage = nnz·ParamBits/32 + TotalParameters/32; MathOps = Mults·MultBits/32 +
    # Adds·32/32 + ExponentOps·8/32. Linear 4 -> 2 with bias, 6 of 8 weights nonzero, 9-bit weights,
    # 12-bit activations: parameters (6 + 2 biases) at 9 bits + 10/32 mask; mults 6 at 12 bits (max(12, 9)),
    # adds 4 + 2 at 32 bits; one exponent op per output (2) at 8 bits
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    cfg = {"default": {"weight": 9, "act": 12, "acc": 16}}
    rep = score(linear(4, 2, bias=True, weight=w), input_shape=(1, 4), rules="wavecomp2019", precision=cfg)
    assert rep.totals["param_bits"] == (6 + 2) * 9 + 10
    r = row(rep, "linear")
    assert r.ops == pytest.approx((6 * 12 + 6 * 32 + 2 * 8) / 32)


def test_mbpm_binary_conv_adds_at_input_bits_and_quantiser() -> None:
    # team_scores.md §3 MB-PM: binary-weight convs mults/32 and adds scaled by input bits n/32 (n = 9)
    cfg = {"default": {"weight": 1, "act": 9, "acc": 32}}
    r = row(score(linear(), input_shape=(1, 5), rules="mbpm2019", precision=cfg), "linear")
    assert r.ops == pytest.approx(5 * 1 / 32 + 4 * 9 / 32)
    # BN fp32, not folded: 2C params at 32 bits, 1 mult + 1 add per element at 32 bits (freebie otherwise)
    bn = nn.BatchNorm2d(3).eval()
    rep = score(bn, input_shape=(1, 3, 2, 2), rules="mbpm2019", bits=16)
    r = row(rep, "bn")
    assert r.ops == pytest.approx(12 + 12)
    assert rep.totals["param_bits"] == 2 * 3 * 32  # γ, β at 32 bits under the freebie too


def test_dnw_and_dqstarter_count_multiply_adds_row() -> None:
    # team_scores.md §3 DNW: ops = 2 × multiply-adds; §1.2: 1,030,462,620 = 2 × 515,231,310. DQStarter: FLOPs =
    # 2 × MACs, "460M × 0.75" with 16-bit mults. Linear 5 -> 3 with bias then ReLU: 15 MACs; the ReLU free.
    model = nn.Sequential(linear(5, 3, bias=True), nn.ReLU())
    for rules in ("dnw2019", "dqstarter2019"):
        full = score(model, input_shape=(1, 5), rules=rules)
        assert full.totals["mults"] == 15 and full.totals["adds"] == 15 and full.totals["ops"] == 30
        freebie = score(model, input_shape=(1, 5), rules=rules, bits=16)
        assert freebie.totals["ops"] == pytest.approx(0.75 * 30)  # MACs·(16 + 32)/32


def test_qualcomm_mask_is_nonzeros() -> None:
    # official_rules.md §4.3: QualcommAI flops_counter.py mask = nnz/32; Linear 4 -> 2, 6 of 8 nonzero, no bias
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    rep = score(linear(4, 2, weight=w), input_shape=(1, 4), rules="qualcomm2019", bits=16)
    assert rep.totals["param_bits"] == 6 * 16 + 6
    official = score(linear(4, 2, weight=w), input_shape=(1, 4), bits=16)
    assert official.totals["param_bits"] == 6 * 16 + 8
