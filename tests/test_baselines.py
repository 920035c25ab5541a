"""Baseline networks against the spec: WRN-28-10 (team_scores.md §0, official_rules.md §5.5) and
EfficientNet-B0 under the official notebook (official_rules.md §5.4, team_scores.md §2.4)."""

from __future__ import annotations

import pytest
import torch.nn as nn

from reference_models import build_reference
from scorer import score


@pytest.fixture(scope="module")
def wrn() -> nn.Module:
    return build_reference("wrn28_10")


@pytest.fixture(scope="module")
def effnet() -> nn.Module:
    return build_reference("efficientnet_b0")


def test_wrn28_10_flops_convention(wrn) -> None:
    # team_scores.md §0: 36,536,884 params (weights + 17,952 BN + 100 FC biases), 2×MACs = 10,486,772,736
    t = score(wrn, input_shape=(1, 3, 32, 32), rules="flops").totals
    assert t["params"] == 36_536_884
    assert t["ops"] == 10_486_772_736


def _without_bn_and_activations(model: nn.Module) -> nn.Module:
    for mod in list(model.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, (nn.BatchNorm2d, nn.ReLU)):
                setattr(mod, name, nn.Identity())
    return model


def test_wrn28_10_official_op_list() -> None:
    # official_rules.md §5.5: no BN, no activations, 32-bit: 36,518,932 / 5,243,387,008 / 5,241,976,704
    model = _without_bn_and_activations(build_reference("wrn28_10"))
    t = score(model, input_shape=(1, 3, 32, 32), rules="micronet2019", sparsity="uniform:0").totals
    assert t["params"] == 36_518_932
    assert t["mults"] == 5_243_387_008
    assert t["adds"] == 5_241_976_704
    # §1.2: mults + adds = 10,485,363,712, consistent with the 10.49B baseline
    assert t["mults"] + t["adds"] == 10_485_363_712


def test_efficientnet_b0_official_notebook(effnet) -> None:
    # official_rules.md §5.4: print_summary(0, 16, 32, 16) -> 84,280,640 / 406,623,188 / 395,601,308
    t = score(effnet, input_shape=(1, 3, 224, 224), rules="official_notebook", bits=16, track="imagenet",
              sparsity="uniform:0").totals
    assert t["param_bits"] == 84_280_640
    assert t["mults"] == 406_623_188
    assert t["adds"] == 395_601_308
    # §5.2 precision scaling: (10.53508 MB, 203.311594 M mults, 395.601308 M adds)
    assert t["param_bits"] / 8 / 1e6 == pytest.approx(10.53508)
    assert t["ops"] == pytest.approx(406_623_188 * 0.5 + 395_601_308)
    # §5.4: implied ImageNet score 0.8936
    assert t["score"] == pytest.approx(2_633_770 / 6.9e6 + 598_912_902 / 1170e6, rel=1e-8)
    assert round(t["score"], 4) == 0.8936


def test_efficientnet_b0_micronet2019_real_skip_channels(effnet) -> None:
    # official_rules.md §5.4: with output channels in the skip add, raw adds are 394,550,748
    t = score(effnet, input_shape=(1, 3, 224, 224), rules="micronet2019", bits=16, track="imagenet",
              sparsity="uniform:0").totals
    assert t["adds"] == 394_550_748
    assert t["mults"] == 406_623_188


# team_scores.md §2.4, published per-block output: params(MBytes), mults(M) (×16/32), adds(M), 3 decimals
PUBLISHED_BLOCKS = {
    "stem": (0.002, 6.021, 11.239), "blocks.0": (0.003, 5.821, 10.839), "blocks.1": (0.012, 17.010, 31.010),
    "blocks.2": (0.021, 14.452, 27.548), "blocks.3": (0.030, 9.992, 18.855), "blocks.4": (0.062, 10.540, 20.514),
    "blocks.5": (0.073, 6.236, 12.000), "blocks.6": (0.204, 8.289, 16.295), "blocks.7": (0.204, 8.289, 16.295),
    "blocks.8": (0.250, 10.547, 20.717), "blocks.9": (0.414, 16.879, 33.361),
    "blocks.10": (0.414, 16.879, 33.361), "blocks.11": (0.522, 11.232, 22.132),
    "blocks.12": (1.171, 11.798, 23.424), "blocks.13": (1.171, 11.798, 23.424),
    "blocks.14": (1.171, 11.798, 23.424), "blocks.15": (1.429, 14.959, 29.689),
}


def test_efficientnet_b0_block_by_block(effnet) -> None:
    rep = score(effnet, input_shape=(1, 3, 224, 224), rules="official_notebook", bits=16, track="imagenet",
                sparsity="uniform:0")
    df = rep.layers
    for block, (mb, mults, adds) in PUBLISHED_BLOCKS.items():
        rows = df[(df.module == block) | df.module.str.startswith(block + ".")]
        assert round(rows.param_bits.sum() / 8 / 1e6, 3) == mb, block
        assert round(rows.mults.sum() * 16 / 32 / 1e6, 3) == mults, block
        assert round(rows.adds.sum() / 1e6, 3) == adds, block
