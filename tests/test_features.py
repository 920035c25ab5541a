"""Scorer features: BN folding, fallbacks, no mutation, prune masks, precision config, early exit, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

from scorer import score
from scorer.errors import ScorerError, UnknownOpError


def conv_bn(bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8), nn.ReLU())


def test_bn_folds_into_preceding_conv_as_bias() -> None:
    # official_rules.md §2.3: conv + BN is entered with use_bias=True: C params, 1 add per output.
    rep = score(conv_bn(), input_shape=(1, 4, 8, 8))
    bn = rep.layers[rep.layers.kind == "bn"].iloc[0]
    assert bn.param_bits == 8 * 32
    assert (bn.mults, bn.adds) == (0, 8 * 8 * 8)
    conv = rep.layers[rep.layers.kind == "conv"].iloc[0]
    assert conv.adds == (36 - 1) * 512
    # a conv that already has a bias: the BN shift merges into it, nothing extra
    rep = score(conv_bn(bias=True), input_shape=(1, 4, 8, 8))
    bn = rep.layers[rep.layers.kind == "bn"].iloc[0]
    assert (bn.param_bits, bn.mults, bn.adds) == (0, 0, 0)


def test_bn_that_cannot_fold_costs_scale_and_shift() -> None:
    # official_rules.md §2.4: BN after an add (not foldable): 2C params, 1 mult + 1 add per element.
    class Pre(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(x + x)

    bn = score(Pre(), input_shape=(1, 4, 5, 5)).layers.query("kind == 'bn'").iloc[0]
    assert (bn.param_bits, bn.mults, bn.adds) == (2 * 4 * 32, 100, 100)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if float(y.abs().sum()) >= 0:  # data-dependent Python: fx cannot trace it
            y = F.relu(y)
        return y


def test_untraceable_model_falls_back_and_says_so() -> None:
    rep = score(Untraceable(), input_shape=(1, 3, 6, 6), allow_unknown=True)
    assert rep.capture in ("export", "dispatch")
    conv = rep.layers[rep.layers.kind == "conv"].iloc[0]
    assert conv.mults == 27 * 4 * 16
    assert conv.module == "conv"


def test_explicit_capture_methods_agree() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    totals = [score(model, input_shape=(1, 3, 6, 6), capture=c).totals for c in ("fx", "export", "dispatch")]
    assert totals[0] == totals[1] == totals[2]


def test_model_is_not_changed() -> None:
    model = conv_bn()
    model.train()
    model[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    hooks = (len(nn.modules.module._global_forward_hooks), len(nn.modules.module._global_forward_pre_hooks))
    for capture in ("fx", "export", "dispatch"):
        score(model, input_shape=(1, 4, 8, 8), capture=capture)
    with pytest.raises(ScorerError):
        score(model, input_shape=(1, 5, 8, 8), capture="dispatch")
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (len(nn.modules.module._global_forward_hooks), len(nn.modules.module._global_forward_pre_hooks)) == hooks
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_torch_prune_masks_are_read() -> None:
    model = nn.Sequential(nn.Linear(10, 10, bias=False))
    prune.l1_unstructured(model[0], "weight", amount=30)
    rep = score(model, input_shape=(1, 10))
    row = rep.layers.iloc[0]
    assert row.nonzeros == 70
    assert row.param_bits == 70 * 32 + 100
    assert row.mults == 70 and row.adds == 70 - 10


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_torch_prune_masks_are_read_on_every_capture(capture: str) -> None:
    """export and dispatch see the prune hook's ``weight_orig * weight_mask``: it is the masked weight, stored under
    ``weight`` with its mask as fx stores it, not a dense weight plus a product counted as multiplications."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.ReLU(), nn.Linear(10, 4))
    prune.l1_unstructured(model[0], "weight", amount=30)
    prune.l1_unstructured(model[2], "bias", amount=1)
    rep = score(model, input_shape=(1, 10), capture=capture)
    first = rep.layers.iloc[0]
    assert (first.nonzeros, first.param_bits, first.mults, first.adds) == (70, 70 * 32 + 100, 70, 60)
    # params in 32-bit words: 70 values and a 100-bit mask; the second layer's 40 weights and its 4-element bias, a
    # vector stored dense even with a pruned entry (§2.2 credits zeros to matrices); mults: 70, the relu's 10, 40
    assert rep.totals["params"] == (70 * 32 + 100) / 32 + 40 + 4 and rep.totals["mults"] == 70 + 10 + 40
    cols = ["kind", "module", "nonzeros", "param_bits", "mults", "adds"]
    assert rep.layers[cols].values.tolist() == score(model, input_shape=(1, 10), capture="fx").layers[cols].values.tolist()


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_torch_ao_sparsifier_masks_are_read_on_every_capture(capture: str) -> None:
    """torch.ao.pruning's sparsifier masks a weight by a parametrization (``mask * original``) until
    ``squash_mask``: scored as the squashed model is, the masked weight stored under ``weight`` with its mask."""
    from torch.ao.pruning import WeightNormSparsifier

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    sparsifier = WeightNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=4)
    sparsifier.prepare(model, [{"tensor_fqn": "0.weight"}])
    sparsifier.step()
    rep = score(model, input_shape=(1, 16), capture=capture)
    first = rep.layers.iloc[0]
    assert (first.nonzeros, first.param_bits, first.mults) == (128, 128 * 32 + 256 + 16 * 32, 128)
    sparsifier.squash_mask()
    cols = ["kind", "nonzeros", "param_bits", "mults", "adds"]
    assert rep.layers[cols].values.tolist() == score(model, input_shape=(1, 16), capture=capture).layers[cols].values.tolist()


def test_uniform_sparsity_override_on_every_weight_tensor() -> None:
    model = nn.Sequential(nn.Linear(10, 20, bias=False), nn.Linear(20, 5, bias=False))
    rep = score(model, input_shape=(1, 10), sparsity="uniform:0.64", bits=16)
    # sparse_size(n, 16, 0.64) = n·16·0.36 + n
    assert rep.totals["param_bits"] == pytest.approx((200 + 100) * (16 * 0.36 + 1))


def test_unknown_op_is_an_error_naming_op_and_layer() -> None:
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4))

        def forward(self, x):
            return torch.logcumsumexp(self.inner(x), 1)

    with pytest.raises(UnknownOpError) as err:
        score(Odd(), input_shape=(1, 4))
    assert "logcumsumexp" in str(err.value)
    assert err.value.unknown[0][2].endswith("logcumsumexp")
    rep = score(Odd(), input_shape=(1, 4), allow_unknown=True)
    assert rep.unknown and rep.unknown[0]["target"].endswith("logcumsumexp")
    assert any("WARNING" in n for n in rep.notes)


def test_precision_config_file_globs(tmp_path) -> None:
    cfg = tmp_path / "bits.toml"
    cfg.write_text('[default]\nweight = 16\nact = 16\nacc = 32\n\n[layers."1"]\nweight = 4\nact = 8\n')
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 2, bias=False), nn.ReLU())
    rep = score(model, input_shape=(1, 8), precision=cfg)
    rows = rep.layers
    assert rows.iloc[0].param_bits == 64 * 16 and rows.iloc[0].mul_bits == 16
    assert rows.iloc[1].param_bits == 16 * 4
    assert rows.iloc[1].mul_bits == 16  # max(input 16 bits, weight 4 bits)
    assert rows.iloc[2].mul_bits == 8  # the output of layer "1" is an 8-bit tensor
    bad = tmp_path / "bad.toml"
    bad.write_text("[layers.x]\nweight = 0\n")
    with pytest.raises(ScorerError):
        score(model, input_shape=(1, 8), precision=bad)


class Exits(nn.Module):
    """stem -> exit head | stem -> body -> head; the exit path pays stem + exit head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(8, 8, bias=False)
        self.exit = nn.Linear(8, 3, bias=False)
        self.body = nn.Linear(8, 8, bias=False)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))

    def exit_paths(self):
        return {"exit": nn.Sequential(self.stem, self.exit), "final": nn.Sequential(self.stem, self.body, self.head)}


def test_early_exit_weighting() -> None:
    model = Exits()
    rep = score(model, input_shape=(1, 8), exit_fractions={"exit": 0.25})
    t = rep.totals
    exit_ops = (64 + 56) + (24 + 21)
    final_ops = (64 + 56) * 2 + (24 + 21)
    assert t["ops"] == pytest.approx(0.25 * exit_ops + 0.75 * final_ops)
    assert t["param_bits"] == (64 + 24 + 64 + 24) * 32  # each weight stored once
    with pytest.raises(ScorerError):
        score(model, input_shape=(1, 8), exit_fractions={"exit": 0.5, "final": 0.6})
    with pytest.raises(ScorerError):
        score(nn.Linear(2, 2), input_shape=(1, 2), exit_fractions={"exit": 0.5})


def test_skip_add_quirk_of_official_notebook() -> None:
    # official_rules.md §2.3: the notebook counts an MBConv residual add over the expanded channels.
    class MB(nn.Module):
        def __init__(self):
            super().__init__()
            self.expand = nn.Conv2d(8, 48, 1, bias=False)
            self.dw = nn.Conv2d(48, 48, 3, padding=1, groups=48, bias=False)
            self.project = nn.Conv2d(48, 8, 1, bias=False)

        def forward(self, x):
            return x + self.project(self.dw(self.expand(x)))

    official = score(MB(), input_shape=(1, 8, 5, 5)).layers.query("kind == 'add'").iloc[0]
    notebook = score(MB(), input_shape=(1, 8, 5, 5), rules="official_notebook").layers.query("kind == 'add'").iloc[0]
    assert official.adds == 25 * 8
    assert notebook.adds == 25 * 48


def test_shared_weights_stored_once() -> None:
    lin = nn.Linear(4, 4, bias=False)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    rep = score(model, input_shape=(1, 4))
    assert rep.totals["param_bits"] == 16 * 32
    assert rep.totals["mults"] == 16 + 4 + 16


def test_batch_dimension_is_divided_out() -> None:
    model = nn.Linear(4, 3)
    assert score(model, input_shape=(8, 4)).totals == score(model, input_shape=(1, 4)).totals


def test_bad_arguments() -> None:
    with pytest.raises(ScorerError):
        score(nn.Linear(2, 2), input_shape=(1, 2), track="mnist")
    with pytest.raises(ScorerError):
        score(nn.Linear(2, 2), input_shape=(1, 2), rules="nope")
    with pytest.raises(ScorerError):
        score(nn.Linear(2, 2), input_shape=(1, 2), sparsity="uniform:1.5")
    with pytest.raises(ScorerError):
        score(nn.Linear(2, 2), input_shape=(1, 3))


def test_fake_quant_modules_and_dtypes_set_bits() -> None:
    from torch.ao.quantization import FakeQuantize

    model = nn.Sequential(FakeQuantize(), nn.Linear(6, 3, bias=False))  # quant range 0..255: 8 bits
    lin = score(model, input_shape=(1, 6)).layers.query("kind == 'linear'").iloc[0]
    assert lin.mul_bits == 32  # max(8-bit input, 32-bit weight)
    half = nn.Linear(6, 3, bias=False).half()
    row = score(half, example_inputs=(torch.zeros(1, 6, dtype=torch.half),)).layers.iloc[0]
    assert row.param_bits == 18 * 16


def test_plot_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    rep = score(conv_bn(), input_shape=(1, 4, 8, 8))
    out = rep.plot(tmp_path / "layers.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_binary_conv_scale_is_counted() -> None:
    from reference_models.compression.binarize import BinaryConv2d

    conv = BinaryConv2d(4, 8, 3, padding=1, bias=False, scale=True)
    rows = score(conv, input_shape=(1, 4, 5, 5), bits=16).layers
    main, scale = rows.iloc[0], rows.iloc[1]
    assert main.mul_bits == 1 and main.mults == 36 * 8 * 25
    assert main.param_bits == 8 * 36  # 1 bit per ±1 weight
    assert scale.kind == "mul" and scale.mults == 8 * 25 and scale.mul_bits == 16
    assert scale.param_bits == 8 * 16  # one 16-bit scale per output channel


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Flatten(), nn.Linear(10, 2)),  # 3·2·2 = 12 features arrive
    nn.Sequential(nn.BatchNorm2d(5)),
    nn.Sequential(nn.Identity(), nn.LayerNorm(7)),
])
def test_wrong_input_shape_inside_a_model_is_an_error(model) -> None:
    with pytest.raises(ScorerError) as err:
        score(model, input_shape=(1, 3, 2, 2))
    assert "\\n" not in str(err.value)


def test_settings_record_the_completed_exit_fractions() -> None:
    rep = score(Exits(), input_shape=(1, 8), exit_fractions={"exit": 0.25})
    assert rep.settings["exit_fractions"] == {"exit": 0.25, "final": 0.75}
