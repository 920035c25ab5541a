"""Early exit: head, exit paths, head-only training, thresholds and exit fractions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reference_models.compression.early_exit import (
    EarlyExitModel,
    ExitHead,
    attach_exit,
    choose_threshold,
    collect_exit_stats,
    measure_exit_fraction,
    soft_smoothing_loss,
    train_exit_head,
)


def _hand_model() -> EarlyExitModel:
    """Block "0" is the identity on 2 features and the head is the identity: exit logits = input."""
    backbone = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 3))
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        backbone[0].weight.copy_(torch.eye(2))
        head.weight.copy_(torch.eye(2))
    return attach_exit(backbone, "0", head)


def test_exit_fraction_on_hand_made_model() -> None:
    m = _hand_model()
    # logits [ln 9, 0] -> softmax max 0.9; [0, ln 4] -> 0.8; [ln 3, 0] -> 0.75; [0, 0] -> 0.5
    x = torch.tensor([[math.log(9), 0.0], [0.0, math.log(4)], [math.log(3), 0.0], [0.0, 0.0]])
    loader = [(x[:2], torch.zeros(2, dtype=torch.long)), (x[2:], torch.zeros(2, dtype=torch.long))]
    assert measure_exit_fraction(m, loader, 0.85) == 0.25
    assert measure_exit_fraction(m, loader, 0.76) == 0.5
    assert measure_exit_fraction(m, [x], 0.7) == 0.75  # bare tensors work too
    assert measure_exit_fraction(m, loader, 0.0) == 1.0
    conf, exit_ok, _ = collect_exit_stats(m, loader)
    assert torch.allclose(conf, torch.tensor([0.9, 0.8, 0.75, 0.5]))
    assert exit_ok.tolist() == [True, False, True, True]  # argmax 0, 1, 0, 0 (tie -> 0) vs label 0


def test_choose_threshold_by_accuracy_and_fraction() -> None:
    conf = [0.5, 0.9, 0.75, 0.8]
    ok = [True, True, False, True]
    # sorted by confidence: 0.9 ok, 0.8 ok, 0.75 wrong, 0.5 ok -> accuracy of the top k: 1, 1, 2/3, 3/4
    assert choose_threshold(conf, ok, 1.0) == 0.75  # the top two exit (> 0.75)
    assert choose_threshold(conf, ok, 0.7) == 0.0  # everyone exits
    assert choose_threshold(conf, [False] * 4, 0.5) == 1.0  # nobody may exit
    # overall accuracy with the final classifier right only on the 0.75 sample:
    # k=0: 1/4, k=1: (1+1)/4, k=2: (2+1)/4, k=3: 2/4, k=4: 3/4
    final_ok = [False, False, True, False]
    assert choose_threshold(conf, ok, 0.75, final_correct=final_ok) == 0.0
    assert choose_threshold(conf, ok, 0.8, final_correct=final_ok) == 1.0
    assert choose_threshold(conf, ok, 0.5, mode="fraction") == 0.75  # 2 of 4 exit
    assert choose_threshold(conf, ok, 0.6, mode="fraction") == 0.75  # at most 2.4 -> 2
    assert choose_threshold([0.9, 0.9, 0.5], [1, 1, 1], 0.5, mode="fraction") == 1.0  # ties exit together


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + x)


def _conv_model() -> EarlyExitModel:
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(_Res(4), _Res(4)), _Res(4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    )
    return attach_exit(backbone, "1.0", ExitHead(4, 5, hidden=8), exit_name="exit1")


def test_exit_paths_compute_the_exit_and_final_outputs() -> None:
    m = _conv_model().eval()
    x = torch.randn(2, 3, 6, 6)
    paths = m.exit_paths()
    assert set(paths) == {"exit1", "final"}
    with torch.no_grad():
        exit_logits, final_logits = m.forward_with_exit(x)
        assert torch.allclose(paths["exit1"](x), exit_logits)
        final_out, head_out = paths["final"](x)  # the final path also pays for the exit head
        assert torch.allclose(final_out, final_logits) and torch.allclose(head_out, exit_logits)
        assert torch.allclose(m(x), final_logits)
    exit_params = dict(paths["exit1"].named_parameters())
    assert "backbone.2.conv.weight" not in exit_params  # the exit path stops at block 1.0
    assert exit_params["backbone.0.weight"] is m.backbone[0].weight  # shared, not copied
    picked, exited = m.predict(x, threshold=2.0)
    assert not exited.any() and torch.allclose(picked, final_logits)
    with pytest.raises(ValueError):
        attach_exit(nn.Sequential(nn.Linear(2, 2)), "7", nn.Identity())


def test_scorer_weights_the_exit_paths() -> None:
    score = pytest.importorskip("scorer").score
    m = _conv_model()
    kw = {"input_shape": (1, 3, 6, 6), "rules": "micronet2019", "bits": 16, "track": "cifar100"}
    paths = m.exit_paths()
    ops_exit = score(paths["exit1"], **kw).totals["ops"]
    ops_final = score(paths["final"], **kw).totals["ops"]
    mixed = score(m, exit_fractions={"exit1": 0.25, "final": 0.75}, **kw).totals["ops"]
    assert ops_exit < ops_final
    assert mixed == pytest.approx(0.25 * ops_exit + 0.75 * ops_final)


def test_train_exit_head_only_updates_the_head() -> None:
    m = _conv_model()
    backbone_before = {n: p.detach().clone() for n, p in m.backbone.named_parameters()}
    head_before = {n: p.detach().clone() for n, p in m.exit_head.named_parameters()}
    bn_mean = m.backbone[2].bn.running_mean.clone()
    loader = [(torch.randn(4, 3, 6, 6), torch.randint(0, 5, (4,))) for _ in range(2)]
    history = train_exit_head(m, loader, epochs=2, lr=0.1)
    assert len(history) == 2 and all(math.isfinite(v) for v in history)
    for n, p in m.backbone.named_parameters():
        assert torch.equal(p, backbone_before[n]) and p.grad is None and not p.requires_grad
    assert any(not torch.equal(p, head_before[n]) for n, p in m.exit_head.named_parameters())
    assert not torch.equal(m.backbone[2].bn.running_mean, bn_mean)  # OSI's BN stabilisation


def test_soft_smoothing_loss_value() -> None:
    logits = torch.tensor([[math.log(3), 0.0]])  # softmax [0.75, 0.25]
    target = torch.tensor([0])
    # CE = -ln 0.75, weighted by 1 + 0.75
    assert soft_smoothing_loss(logits, target).item() == pytest.approx(-math.log(0.75) * 1.75)
