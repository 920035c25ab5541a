"""Fixed-point fake quantisation: grids, shared exponent, STE, model conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reference_models.compression.quantize import (
    ActQuant,
    QuantConv2d,
    QuantizedAct,
    QuantLinear,
    bits_of,
    fake_quantize,
    int_range,
    quant_step,
    quantize_model,
)


def test_int_ranges() -> None:
    assert int_range(4, signed=True) == (-8, 7)
    assert int_range(4, signed=False) == (0, 15)
    assert int_range(1, signed=False) == (0, 1)
    with pytest.raises(ValueError):
        int_range(1, signed=True)


def test_three_bit_grid_and_shared_exponent() -> None:
    x = torch.linspace(-2, 2, 101)
    # 3-bit signed, range 1: step 1/3, clipped to [-1, 1] -> the 7 values k/3, k = -3..3
    q = fake_quantize(x, 3, 1.0, signed=True)
    assert torch.allclose(q.unique() * 3, torch.arange(-3.0, 4.0))
    # shared exponent: 1/3 -> 2^ceil(log2(1/3)) = 2^-1 -> values k/2, k = -2..2
    assert float(quant_step(1.0, 3, True, shared_exponent=True)) == 0.5
    qe = fake_quantize(x, 3, 1.0, signed=True, shared_exponent=True)
    assert qe.unique().tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_n_bit_quantiser_takes_at_most_2n_values_on_its_grid(bits: int, signed: bool) -> None:
    x = torch.randn(4000) * 3
    r = 2.5
    step = r / (2 ** (bits - 1) - 1 if signed else 2**bits - 1)
    q = fake_quantize(x, bits, r, signed=signed)
    assert q.unique().numel() <= 2**bits
    k = q / step
    assert torch.allclose(k, k.round(), atol=1e-4)  # integers times the step
    lo, hi = int_range(bits, signed)
    assert k.round().min() >= lo and k.round().max() <= hi
    qe = fake_quantize(x, bits, r, signed=signed, shared_exponent=True)
    e_step = float(quant_step(r, bits, signed, shared_exponent=True))
    assert e_step >= step and torch.log2(torch.tensor(e_step)) % 1 == 0  # a power of two covering the range
    assert qe.unique().numel() <= 2**bits
    assert torch.equal(qe / e_step, (qe / e_step).round())


def test_weight_quantisation_of_a_conv() -> None:
    conv = QuantConv2d(1, 2, 1, bias=False, weight_bits=4)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.9, -0.3]).view(2, 1, 1, 1))
    # 4 bits: qmax 7, step 0.9/7; -0.3/(0.9/7) = -2.33 -> -2 -> -1.8/7
    assert torch.allclose(conv.quantized_weight().flatten(), torch.tensor([0.9, -1.8 / 7]))
    conv.shared_exponent = True  # step 2^ceil(log2(0.9/7)) = 2^-2: 0.9 -> 3.6 -> 4 -> 1.0; -0.3 -> -1.2 -> -0.25
    assert conv.quantized_weight().flatten().tolist() == [1.0, -0.25]
    assert conv(torch.ones(1, 1, 1, 1)).flatten().tolist() == [1.0, -0.25]


def test_straight_through_gradients_and_learned_clip() -> None:
    x = torch.tensor([-3.0, -0.4, 0.2, 0.7, 5.0], requires_grad=True)
    fake_quantize(x, 4, 1.0, signed=True).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # identity inside, clipped outside
    aq = ActQuant(bits=4, signed=False, mode="learned", init_range=2.0)
    y = torch.tensor([-1.0, 0.5, 1.0, 3.0, 4.0], requires_grad=True)
    aq(y).sum().backward()
    assert aq.clip.grad.item() == 2.0  # PACT: one per input above the clip (3 and 4)
    assert y.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]


def test_actquant_running_max() -> None:
    aq = ActQuant(bits=2, signed=False, momentum=0.1)
    aq.train()
    aq(torch.tensor([0.0, 1.0, 4.0]))
    assert aq.running_max.item() == 4.0  # first batch initialises
    aq(torch.tensor([2.0]))
    assert aq.running_max.item() == pytest.approx(0.9 * 4 + 0.1 * 2)
    aq.eval()
    out = aq(torch.tensor([0.0, 1.0, 2.0, 3.0, 9.0]))  # range 3.8, 2 bits unsigned: step 3.8/3
    assert aq.running_max.item() == pytest.approx(3.8)
    assert out.unique().numel() <= 4
    assert out.max().item() == pytest.approx(3.8)
    assert aq.bits == 2 and isinstance(aq.bits, int)


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
    )


def test_quantize_model_swaps_layers_and_reports_bits() -> None:
    m = _net()
    w0 = m[0].weight.detach().clone()
    x = torch.randn(2, 3, 6, 6)
    quantize_model(m, weight_bits=8, act_bits=6, per_layer={"7": {"weight": 4}, "4": {"act": 12}},
                   shared_exponent=True)
    assert isinstance(m[0], QuantConv2d) and isinstance(m[0], nn.Conv2d) and m[0].weight_bits == 8
    assert isinstance(m[7], QuantLinear) and isinstance(m[7], nn.Linear) and m[7].weight_bits == 4
    assert torch.equal(m[0].weight, w0)  # the latent weights are copied
    assert isinstance(m[2], QuantizedAct) and isinstance(m[2].act, nn.ReLU)
    assert m[2].quant.bits == 6 and m[2].quant.signed is False
    assert m[4].quant.bits == 12 and m[4].quant.signed is True  # swish goes negative
    assert bits_of(m) == {
        "0": {"weight": 8}, "2.quant": {"act": 6}, "3": {"weight": 8}, "4.quant": {"act": 12}, "7": {"weight": 4},
    }
    assert m(x).shape == (2, 10)
    quantize_model(m, weight_bits=8, act_bits=6)  # idempotent
    assert isinstance(m[2].act, nn.ReLU) and bits_of(m)["2.quant"] == {"act": 6}


def test_quantize_model_exclusions_and_fp_widths() -> None:
    m = _net()
    quantize_model(m, weight_bits=8, act_bits=None, per_layer={"3": {"weight": 32}}, exclude=["0"])
    assert type(m[0]) is nn.Conv2d and type(m[3]) is nn.Conv2d  # excluded / left at 32 bits
    assert isinstance(m[7], QuantLinear)
    assert isinstance(m[2], nn.ReLU)  # act_bits=None leaves activations alone
    q = QuantLinear(3, 2, weight_bits=6, act_bits=8)
    assert bits_of(nn.Sequential(q)) == {"0": {"weight": 6, "act": 8}}


def test_actquant_called_twice_in_one_forward_backpropagates() -> None:
    # a shared activation quantiser (KAIST's Hardswish, PyramidNet's ReLU are called several times per forward)
    q = ActQuant(8)
    q.train()
    x = torch.randn(4, 3, requires_grad=True)
    y = q(q(x) * 2.0)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
