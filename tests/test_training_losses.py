"""Losses against hand-computed values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from reference_models.training.losses import (
    WeightedLabelSmoothingLoss,
    class_similarity,
    distillation_kl,
    feature_matching_mse,
    label_smoothing_cross_entropy,
    mixed_loss,
    soft_smoothing_loss,
    weighted_label_smoothing_loss,
)

# one sample, three classes, logits (0, ln 2, ln 3): softmax = (1, 2, 3) / 6
LOGITS = torch.tensor([[0.0, math.log(2.0), math.log(3.0)]])
LOG_P = [math.log(1 / 6), math.log(2 / 6), math.log(3 / 6)]


def test_label_smoothing_spread_over_all_classes():
    # eps = 0.3, K = 3, true class 0: targets 0.7 + 0.1, 0.1, 0.1
    loss = label_smoothing_cross_entropy(LOGITS, torch.tensor([0]), 0.3, spread="all")
    expected = -(0.8 * LOG_P[0] + 0.1 * LOG_P[1] + 0.1 * LOG_P[2])
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_spread_over_other_classes():
    # OSI: 1 - eps on the true class, eps / (K - 1) = 0.15 on each other class
    loss = label_smoothing_cross_entropy(LOGITS, torch.tensor([0]), 0.3, spread="others")
    expected = -(0.7 * LOG_P[0] + 0.15 * LOG_P[1] + 0.15 * LOG_P[2])
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_no_smoothing_is_cross_entropy():
    loss = label_smoothing_cross_entropy(LOGITS, torch.tensor([2]), 0.0)
    assert float(loss) == pytest.approx(-LOG_P[2], rel=1e-6)


def test_weighted_label_smoothing_uses_cosine_similarity_of_classifier_rows():
    # rows: w0 = (1, 0), w1 = (1, 1), w2 = (0, 1), w3 = (-1, 0)
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    sim = class_similarity(weight)
    r = 1 / math.sqrt(2)
    # cos(w0, w1) = 1/sqrt2, cos(w0, w2) = 0, cos(w0, w3) = -1 -> 0 (negatives get no mass)
    assert sim[0].tolist() == pytest.approx([0.0, r, 0.0, 0.0])
    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0), math.log(4.0)]])  # softmax (1,2,3,4)/10
    log_p = [math.log(k / 10) for k in (1, 2, 3, 4)]
    eps = 0.2
    # true class 0: only class 1 is positively similar -> it takes all of eps
    loss0 = weighted_label_smoothing_loss(logits, torch.tensor([0]), weight, eps)
    assert float(loss0) == pytest.approx(-(0.8 * log_p[0] + 0.2 * log_p[1]), rel=1e-6)
    # true class 1: cos(w1, w0) = cos(w1, w2) = 1/sqrt2, cos(w1, w3) = -1/sqrt2 -> eps split 1/2, 1/2, 0
    loss1 = weighted_label_smoothing_loss(logits, torch.tensor([1]), weight, eps)
    assert float(loss1) == pytest.approx(-(0.1 * log_p[0] + 0.8 * log_p[1] + 0.1 * log_p[2]), rel=1e-6)
    # true class 3: no positive similarity -> uniform eps / 3 over the others
    loss3 = weighted_label_smoothing_loss(logits, torch.tensor([3]), weight, eps)
    expected3 = -(eps / 3 * (log_p[0] + log_p[1] + log_p[2]) + 0.8 * log_p[3])
    assert float(loss3) == pytest.approx(expected3, rel=1e-6)
    # the module reads the live classifier and averages over the batch
    linear = torch.nn.Linear(2, 4)
    with torch.no_grad():
        linear.weight.copy_(weight)
    both = WeightedLabelSmoothingLoss(linear, eps)(logits.repeat(2, 1), torch.tensor([0, 1]))
    assert float(both) == pytest.approx((float(loss0) + float(loss1)) / 2, rel=1e-6)


def test_soft_smoothing_weights_cross_entropy_by_one_plus_confidence():
    # max softmax = 3/6 = 0.5: loss = (1 + 0.5) * CE
    loss = soft_smoothing_loss(LOGITS, torch.tensor([0]))
    assert float(loss) == pytest.approx(1.5 * -LOG_P[0], rel=1e-6)
    two = soft_smoothing_loss(torch.cat([LOGITS, torch.zeros(1, 3)]), torch.tensor([0, 1]))
    # second sample: uniform softmax 1/3, CE = ln 3, factor 4/3
    assert float(two) == pytest.approx((1.5 * -LOG_P[0] + 4 / 3 * math.log(3)) / 2, rel=1e-6)


def test_distillation_kl_is_scaled_by_t_squared():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2.0 * math.log(3.0), 0.0]])
    t = 2.0
    # teacher at T=2: softmax(ln 3, 0) = (3/4, 1/4); student uniform (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(distillation_kl(student, teacher, t)) == pytest.approx(kl * t * t, rel=1e-6)
    assert float(distillation_kl(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)


def test_feature_matching_mse_normalises_first():
    s = torch.tensor([[3.0, 4.0]])   # normalised (0.6, 0.8)
    t = torch.tensor([[0.0, 10.0]])  # normalised (0, 1)
    expected = ((0.6 - 0) ** 2 + (0.8 - 1) ** 2) / 2
    assert float(feature_matching_mse(s, t)) == pytest.approx(expected, rel=1e-6)
    assert float(feature_matching_mse(s, t, normalize=False)) == pytest.approx((9 + 36) / 2)


def test_mixed_loss_combines_both_targets():
    def ce(logits, y):
        return torch.nn.functional.cross_entropy(logits, y)

    value = mixed_loss(ce, LOGITS, torch.tensor([0]), torch.tensor([2]), 0.25)
    assert float(value) == pytest.approx(0.25 * -LOG_P[0] + 0.75 * -LOG_P[2], rel=1e-6)
