"""Checkpoint export: compression wrappers fold back to the plain architecture's names."""

from __future__ import annotations

import torch
from torch import nn

from reference_models.compression.binarize import SignInput
from reference_models.compression.quantize import quantize_model
from reference_models.registry import build_reference
from reference_models.training.export import (
    checkpoint_bits,
    load_plain_state,
    make_checkpoint,
    plain_key_map,
    plain_state_dict,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.PReLU(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv2(self.act(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_quantised_model_exports_plain_names_and_grid_weights():
    model = Tiny()
    plain_keys = set(model.state_dict())
    quantize_model(model, weight_bits=4, act_bits=8)
    model.conv2 = SignInput(model.conv2)
    mapping = plain_key_map(model)
    assert mapping["act.act.weight"] == "act.weight"
    assert mapping["act.quant.running_max"] is None
    assert mapping["conv2.conv.weight"] == "conv2.weight"
    state = plain_state_dict(model)
    assert set(state) == plain_keys
    # a 4-bit signed weight has at most 2**4 distinct values, on the grid max|w| / 7
    w = model.conv.weight.detach()
    step = float(w.abs().max()) / 7
    q = state["conv.weight"]
    assert len(torch.unique(q)) <= 16
    assert torch.allclose(q / step, (q / step).round(), atol=1e-4)
    bits = checkpoint_bits(model, act_bits=8)
    assert bits["default"] == {"act": 8}
    assert bits["layers"]["conv"] == {"weight": 4} and bits["layers"]["fc"] == {"weight": 4}
    assert bits["layers"]["act"] == {"act": 8}  # the quantiser's width belongs to the activation


def test_plain_state_loads_back_into_the_wrapped_model():
    src = Tiny()
    quantize_model(src, weight_bits=8, act_bits=8)
    state = plain_state_dict(src)
    dst = Tiny()
    quantize_model(dst, weight_bits=8, act_bits=8)
    left = load_plain_state(dst, state)
    assert left == ["act.quant.running_max"]
    assert torch.equal(dst.conv.weight, state["conv.weight"])


def test_checkpoint_of_a_reference_model_fits_the_registry_build():
    model = build_reference("wavecomp_pyramidnet", depth=11, alpha=12)
    quantize_model(model, weight_bits=9, act_bits=12)
    ckpt = make_checkpoint(model, "wavecomp_pyramidnet", {"depth": 11, "alpha": 12}, {}, checkpoint_bits(model, 12),
                           {}, {})
    fresh = build_reference("wavecomp_pyramidnet", depth=11, alpha=12)
    fresh.load_state_dict(ckpt.state_dict, strict=True)
    assert ckpt.bits["layers"]["conv1"] == {"weight": 9}
