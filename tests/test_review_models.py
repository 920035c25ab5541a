"""Review checks of the reference models and the published-score table against shared/spec.

Every expected value is quoted from shared/spec (section beside it) or from the seeds; none comes from
running the code under test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from reference_models.registry import build_reference

PUBLISHED = Path(__file__).parent / "data" / "published_scores.csv"


def _published_rows() -> list[dict[str, str]]:
    with open(PUBLISHED, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def _row(track: str, rank: str, entry: str) -> dict[str, str]:
    (row,) = [r for r in _published_rows() if (r["track"], r["rank"], r["entry"]) == (track, rank, entry)]
    return row


# ------------------------------------------------------------------------------- published_scores.csv

# team_scores.md §1.1 prints the normalised components of these rows next to their params and ops:
# row 2 KAIST ver1 "108108.75 (0.0029619)" / "26052109.0 (0.0024835)";
# row 3 KAIST ver2 "112858.5 (0.0030920)" / "26534584.0 f32 / 26534582.51 exact (0.0025295)";
# row 19 BrAIn "626,240 (0.0171573)" / "634,161,360 (0.0604539)";
# row 22 Frenzy "8.43MB = 2.1075M 32-bit params (0.057740)" / "828.928e6 (0.079021)".
PRINTED_COMPONENTS = {
    ("cifar100", "2", "ver1"): ("0.0029619", "0.0024835"),
    ("cifar100", "3", "ver2"): ("0.0030920", "0.0025295"),
    ("cifar100", "19", "DenseNet-BC-196 k=8"): ("0.0171573", "0.0604539"),
    ("cifar100", "22", "pruned WRN"): ("0.057740", "0.079021"),
}


@pytest.mark.parametrize("key", list(PRINTED_COMPONENTS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_published_components_transcribed(key: tuple[str, str, str]) -> None:
    """Printed components of §1.1 are in the CSV, so test_published_scores checks them against params/ops."""
    row = _row(*key)
    assert (row["param_score"], row["ops_score"]) == PRINTED_COMPONENTS[key]


# team_scores.md §1.1 Source column: rows 2-3 `Kthyeon/micronet_neurips_challenge`; §1.2 row 3
# `yashbhalgat/QualcommAI-MicroNet-submission-MixNet` `Report_MixNet.pdf` Table 1.
SOURCE_REPOS = {
    ("cifar100", "2", "ver1"): "Kthyeon/micronet_neurips_challenge",
    ("cifar100", "3", "ver2"): "Kthyeon/micronet_neurips_challenge",
    ("imagenet", "3", "MixNet"): "yashbhalgat/QualcommAI-MicroNet-submission-MixNet",
}


@pytest.mark.parametrize("key", list(SOURCE_REPOS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_published_sources_name_the_repository(key: tuple[str, str, str]) -> None:
    """The source cell names the repository the spec cites for the row."""
    assert SOURCE_REPOS[key] in _row(*key)["source"]


# ------------------------------------------------------------------------------------ architecture guards


def _macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Conv + Linear multiply-accumulates (no bias) of one forward pass."""
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out[0].numel() * k
        else:
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.randn(shape))
    for h in handles:
        h.remove()
    return total


def test_baseline_macs() -> None:
    """team_scores.md §0: WRN-28-10 5,243,386,368 MACs (2× = 10,486,772,736); peers.md §5 golden tests:
    ResNet-18 1,814,073,344, MobileNetV2 300,774,272, EfficientNet-B0 385,814,752 Conv+Linear MACs (224)."""
    assert 2 * _macs(build_reference("wrn28_10"), (1, 3, 32, 32)) == 10_486_772_736
    assert _macs(build_reference("resnet18"), (1, 3, 224, 224)) == 1_814_073_344
    assert _macs(build_reference("mobilenet_v2", num_classes=1000), (1, 3, 224, 224)) == 300_774_272
    assert _macs(build_reference("efficientnet_b0"), (1, 3, 224, 224)) == 385_814_752


def test_kaist_stem_and_head_details() -> None:
    """§2.2: stem BN momentum 0.01; head AdaptiveAvgPool2d(1) → Dropout(0.3) → Linear(last, 100, bias);
    SE fc1/fc2 are 1×1 convs with bias; conv1/conv2/conv3 and shortcut convs have none."""
    for name, last in (("kaist_v1", 106), ("kaist_v2", 114)):
        model = build_reference(name)
        assert model.bn1.momentum == 0.01 and model.conv1.bias is None
        assert model.dropout.p == 0.3 and model.linear.in_features == last and model.linear.bias is not None
        for block in model.layers:
            assert block.fc1.bias is not None and block.fc2.bias is not None
            assert block.conv1.bias is None and block.conv2.bias is None and block.conv3.bias is None
            assert block.conv2.kernel_size == (3, 3) and block.conv2.padding == (1, 1)


def test_osi_head_and_exit_details() -> None:
    """§2.1: dropout 0.2 before the FC 136→100 (bias); swish activations; early-exit head dw 3×3 (48, no bias)
    → 1×1 48→136 (no bias) → GAP → 1×1 136→100 with bias."""
    model = build_reference("osi_ai")
    assert model._dropout.p == 0.2 and model._fc.bias is not None
    assert isinstance(model._swish, nn.SiLU)
    ex = model._exit
    assert ex._depthwise_conv.groups == 48 and ex._depthwise_conv.bias is None
    assert (ex._expand_conv.in_channels, ex._expand_conv.out_channels) == (48, 136)
    assert ex._expand_conv.bias is None and ex._fc.bias is not None


def test_bnn_block_order_follows_seed() -> None:
    """bnn-training-tricks.txt trick 1: BN(inplanes) → BinActive → conv → += residual → PReLU(planes);
    the residual is downsample(x) on the block *input* (not on BN(x))."""
    model = build_reference("bnn_resnet18")
    block = model.layer2[0]
    assert block.bn.num_features == 64 and block.prelu.num_parameters == 128
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        expected = block.prelu(block.conv(block.ba(block.bn(x))) + block.downsample(x))
        assert torch.equal(block(x), expected)
