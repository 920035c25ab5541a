"""Binarisation: sign STE, binary conv, the two-stage model conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reference_models.compression.binarize import (
    BinaryConv2d,
    SignActivation,
    SignInput,
    SignSTE,
    TwoStageSchedule,
    binarize_model,
    binarize_stage,
)


def test_sign_ste_forward_and_clipped_gradient() -> None:
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    y = SignSTE.apply(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]  # sign(0) = +1: outputs are exactly +-1
    (y * torch.arange(1.0, 8.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]  # passes where |x| <= 1
    assert SignActivation.bits == 1 and SignActivation()(torch.tensor([-0.1])).item() == -1.0


def test_binary_conv_forward_and_gradient() -> None:
    conv = BinaryConv2d(2, 1, 1, bias=False)
    assert conv.weight_bits == 1 and isinstance(conv, nn.Conv2d)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.5, -2.0]).view(1, 2, 1, 1))
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    out = conv(x)
    assert out.item() == 3.0 * 1 + 4.0 * -1  # sign(weight) = [+1, -1]
    out.backward()
    assert conv.weight.grad.flatten().tolist() == [3.0, 0.0]  # STE: dout/dwb = x, zero where |w| > 1
    conv.scale = True  # per-output-channel scale mean|W| = 1.25
    assert conv(x).item() == pytest.approx(-1.25)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.prelu = nn.PReLU(c_out)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.conv(self.bn(x)) + self.downsample(x))


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Block(4, 4), _Block(4, 8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_binarize_model_two_stages() -> None:
    m = _net()
    w = m[1].conv.weight.detach().clone()
    binarize_model(m, "activations")
    assert type(m[0]) is nn.Conv2d  # first conv stays full precision
    for blk in (m[1], m[2]):
        assert isinstance(blk.conv, SignInput) and type(blk.conv.conv) is nn.Conv2d
        assert type(blk.downsample[0]) is nn.Conv2d  # full-precision downsampling
    feats: list[torch.Tensor] = []
    m[2].conv.sign.register_forward_hook(lambda _m, _i, o: feats.append(o))
    assert m(torch.randn(2, 3, 4, 4)).shape == (2, 10)
    assert set(feats[0].unique().tolist()) <= {-1.0, 1.0}

    binarize_model(m, "weights")
    for blk in (m[1], m[2]):
        assert isinstance(blk.conv.conv, BinaryConv2d)
        assert type(blk.downsample[0]) is nn.Conv2d
    assert torch.equal(m[1].conv.conv.weight, w)  # latent weights copied
    assert type(m[0]) is nn.Conv2d and type(m[5]) is nn.Linear  # first conv, last linear untouched
    binarize_model(m, "weights")  # idempotent
    assert type(m[1].conv.conv) is BinaryConv2d and isinstance(m[1].conv, SignInput)
    assert not isinstance(m[1].conv.conv, SignInput)
    m(torch.randn(2, 3, 4, 4)).sum().backward()
    assert m[1].conv.conv.weight.grad is not None


def test_weights_only_and_straight_to_weights() -> None:
    m = binarize_model(_net(), "weights_only")
    assert isinstance(m[1].conv, BinaryConv2d)  # binary weights, full-precision activations
    m2 = binarize_model(_net(), "weights")  # stage 2 applied directly also binarises activations
    assert isinstance(m2[1].conv, SignInput) and isinstance(m2[1].conv.conv, BinaryConv2d)
    with pytest.raises(ValueError):
        binarize_model(_net(), "both")


def test_two_stage_schedule() -> None:
    assert [binarize_stage(e, 3) for e in range(5)] == ["activations"] * 3 + ["weights"] * 2
    sched = TwoStageSchedule(stage1_epochs=350)
    assert sched.stage_at(349) == "activations" and sched.stage_at(350) == "weights"
    assert sched.hparams(0) == {"lr": 1e-3, "weight_decay": 1e-5}
    assert sched.hparams(400) == {"lr": 2e-4, "weight_decay": 0.0}
