"""Channel shuffle under the FAQ ruling, and BatchNorm folded through a MixConv concatenation.

Expected numbers are arithmetic written here from the spec: the site FAQ (official_rules.md §2.4) counts a
permutation as a dense × sparse permutation-matrix product (1 mult per element, as Sisyphus counted it,
team_scores.md §2.7) and its matrix's storage; the official sparse format stores the nonzeros plus a 1-bit
mask of the full shape (§4.1). A BN folded into a bias-free conv is C params + 1 add per element (§2.3).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from rules import Micronet2019
from scorer import score

CAPTURES = ["fx", "export", "dispatch"]
B, C, H, W = 2, 8, 4, 4


class Shuffle(nn.Module):
    """conv 1×1 -> channel shuffle with ``groups`` groups (written several ways) -> relu."""

    def __init__(self, form: str, channels: int = C, groups: int = 2):
        super().__init__()
        self.form, self.c, self.g = form, channels, groups
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x):
        x = self.conv(x)
        c, g = self.c, self.g
        if self.form == "view":  # torchvision ShuffleNetV2
            x = x.view(-1, g, c // g, H, W)
            x = torch.transpose(x, 1, 2).contiguous()
            x = x.view(-1, c, H, W)
        elif self.form == "reshape":
            x = torch.reshape(x.reshape(-1, g, c // g, H, W).transpose(2, 1), (-1, c, H, W))
        elif self.form == "permute":
            x = x.reshape(-1, g, c // g, H, W).permute(0, 2, 1, 3, 4).flatten(1, 2)
        elif self.form == "unflatten":
            x = x.unflatten(1, (g, c // g)).transpose(1, 2).reshape(-1, c, H, W)
        return torch.relu(x)


def _rows(rep):
    cols = (rep.layers.kind, rep.layers.mults, rep.layers.adds, rep.layers.param_bits)
    return [(k, m, a, p) for k, m, a, p in zip(*cols, strict=True) if k != "free"]


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("form", ["view", "reshape", "permute", "unflatten"])
def test_channel_shuffle_is_one_mult_per_element_with_its_matrix_stored(form: str, capture: str) -> None:
    rep = score(Shuffle(form), input_shape=(B, C, H, W), capture=capture)
    n = C * H * W  # elements per example
    conv = ("conv", C * n, (C - 1) * n, C * C * 32.0)
    # the 8×8 permutation matrix: 8 nonzero 32-bit values + a 64-bit mask (official sparse format, §4.1)
    shuffle = ("shuffle", n, 0.0, C * 32.0 + C * C)
    assert _rows(rep) == [conv, shuffle, ("act:relu", n, 0.0, 0.0)]


@pytest.mark.parametrize("capture", CAPTURES)
def test_square_shuffle_groups_equal_to_group_size(capture: str) -> None:
    # g = c/g = 2: the transpose keeps the shape, only the recorded dimension order tells it apart
    rep = score(Shuffle("view", channels=4, groups=2), input_shape=(1, 4, H, W), capture=capture)
    assert [k for k in rep.layers.kind if k not in ("free",)] == ["conv", "shuffle", "act:relu"]


class NoStore(Micronet2019):
    name = "no_store"
    permutation_storage = "none"


@pytest.mark.parametrize("capture", CAPTURES)
def test_permutation_storage_is_a_rule_set_switch(capture: str) -> None:
    rep = score(Shuffle("view"), input_shape=(B, C, H, W), capture=capture, rules=NoStore())
    assert _rows(rep)[1] == ("shuffle", C * H * W, 0.0, 0.0)
    flops = score(Shuffle("view"), input_shape=(B, C, H, W), capture=capture, rules="flops")
    assert flops.totals["params"] == C * C  # peers count the model's parameters only


@pytest.mark.parametrize("capture", CAPTURES)
def test_freebie_stores_the_permutation_values_at_16_bits(capture: str) -> None:
    rep = score(Shuffle("view"), input_shape=(B, C, H, W), capture=capture, bits=16)
    assert _rows(rep)[1][3] == C * 16 + C * C  # the mask stays 1 bit per element


class Layouts(nn.Module):
    """Transposes that are not channel permutations: attention heads, NCHW <-> NHWC, a window partition,
    a split whose factors are not reordered, a shuffle not merged back."""

    def __init__(self, case: str):
        super().__init__()
        self.case = case

    def forward(self, x):  # x: (1, 8, 4, 4)
        if self.case == "heads":  # (B, N, h·d) -> (B, h, N, d) -> back
            t = x.reshape(1, 8, 16).view(1, 8, 2, 8).transpose(1, 2)
            t = torch.relu(t)
            return t.transpose(1, 2).reshape(1, 8, 16)
        if self.case == "nhwc":
            return torch.relu(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
        if self.case == "windows":  # Swin window partition and reverse
            t = x.view(1, 8, 2, 2, 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(4, 8, 2, 2)
            return torch.relu(t).reshape(1, 2, 2, 8, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 8, 4, 4)
        if self.case == "other_dims":  # split channels, but swap H and W
            return torch.relu(x.view(1, 2, 4, 4, 4).transpose(3, 4).reshape(1, 8, 4, 4))
        if self.case == "not_merged":  # the transposed split kept as 5-D
            return torch.relu(x.view(1, 2, 4, 4, 4).transpose(1, 2))
        raise ValueError(self.case)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("case", ["heads", "nhwc", "windows", "other_dims", "not_merged"])
def test_layout_transposes_stay_free(case: str, capture: str) -> None:
    rep = score(Layouts(case), input_shape=(1, 8, 4, 4), capture=capture)
    assert "shuffle" not in set(rep.layers.kind)
    assert rep.totals["mults"] == 128  # the relu only
    assert rep.totals["param_bits"] == 0


class IndexSelect(nn.Module):
    def __init__(self, index: list[int], form: str):
        super().__init__()
        self.form = form
        self.register_buffer("index", torch.tensor(index))

    def forward(self, x):
        if self.form == "method":
            return torch.relu(x.index_select(1, self.index))
        return torch.relu(torch.index_select(x, 1, self.index))


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("form", ["method", "function"])
def test_index_select_by_a_permutation_is_a_shuffle(form: str, capture: str) -> None:
    perm = [3, 1, 0, 2]
    rep = score(IndexSelect(perm, form), input_shape=(2, 4, 5, 5), capture=capture)
    assert _rows(rep) == [("shuffle", 100, 0.0, 4 * 32.0 + 16), ("act:relu", 100, 0.0, 0.0)]
    assert rep.totals["params"] == (4 * 32 + 16) / 32  # the buffer itself is not a parameter


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("index", [[0, 1, 2, 3], [0, 0, 1, 1], [2, 0]])
def test_index_select_that_is_no_permutation_stays_free(index: list[int], capture: str) -> None:
    rep = score(IndexSelect(index, "method"), input_shape=(2, 4, 5, 5), capture=capture)
    assert "shuffle" not in set(rep.layers.kind)
    assert rep.totals["mults"] == len(index) * 25  # the relu only


class MixConv(nn.Module):
    """MixNet's MixConv: split 12 channels in three, depthwise k = 3, 5, 7, concatenate; then BN — once
    after the concatenation (``per_branch=False``) or once per branch before it."""

    def __init__(self, per_branch: bool, reuse_branch: bool = False):
        super().__init__()
        self.per_branch, self.reuse = per_branch, reuse_branch
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, k, padding=k // 2, groups=4, bias=False) for k in (3, 5, 7))
        if per_branch:
            self.bns = nn.ModuleList(nn.BatchNorm2d(4) for _ in range(3))
        else:
            self.bn = nn.BatchNorm2d(12)

    def forward(self, x):
        parts = torch.split(x, [4, 4, 4], dim=1)  # timm MixedConv2d style
        ys = [conv(parts[i]) for i, conv in enumerate(self.convs)]
        if self.per_branch:
            return torch.cat([bn(y) for bn, y in zip(self.bns, ys, strict=True)], 1)
        out = self.bn(torch.cat(ys, dim=1))
        if self.reuse:  # branch 0 also read elsewhere: its conv cannot take the BN's scale
            out = out + ys[0].repeat(1, 3, 1, 1)
        return out


# per example: 12 channels of 8×8; depthwise k×k over 4 channels each
_HW = 64
_CONV_MULTS = (9 + 25 + 49) * 4 * _HW  # k² per output (counting.py DepthWiseConv2D)
_CONV_ADDS = (8 + 24 + 48) * 4 * _HW  # k² − 1 per output
_CONV_PARAMS = (9 + 25 + 49) * 4


@pytest.mark.parametrize("capture", CAPTURES)
def test_bn_after_mixconv_concat_folds_like_a_bn_per_branch(capture: str) -> None:
    cat = score(MixConv(per_branch=False), input_shape=(1, 12, 8, 8), capture=capture)
    branches = score(MixConv(per_branch=True), input_shape=(1, 12, 8, 8), capture=capture)
    # folded: each channel's shift is its conv's bias: 12 params, 1 add per element (§2.3)
    expected = {"mults": _CONV_MULTS, "adds": _CONV_ADDS + 12 * _HW, "params": _CONV_PARAMS + 12}
    assert {k: cat.totals[k] for k in expected} == expected
    assert {k: branches.totals[k] for k in expected} == expected


@pytest.mark.parametrize("rules", ["micronet2019", "official_notebook", "osi_ai2019", "osi_ai2019_prereview",
                                   "kaist2019", "brain2019", "macs", "flops"])
def test_every_rule_set_scores_the_concat_bn_like_bns_per_branch(rules: str) -> None:
    for capture in CAPTURES:
        cat = score(MixConv(per_branch=False), input_shape=(1, 12, 8, 8), capture=capture, rules=rules)
        branches = score(MixConv(per_branch=True), input_shape=(1, 12, 8, 8), capture=capture, rules=rules)
        keys = ("mults", "adds", "params", "score")
        assert {k: cat.totals[k] for k in keys} == pytest.approx({k: branches.totals[k] for k in keys})


@pytest.mark.parametrize("capture", CAPTURES)
def test_concat_with_a_branch_read_elsewhere_does_not_fold(capture: str) -> None:
    rep = score(MixConv(per_branch=False, reuse_branch=True), input_shape=(1, 12, 8, 8), capture=capture)
    bn = rep.layers[rep.layers.kind == "bn"].iloc[0]
    # unfoldable BN: 1 mult + 1 add per element, 2C params (official_rules.md §2.4)
    assert (bn.mults, bn.adds, bn.param_bits) == (12 * _HW, 12 * _HW, 2 * 12 * 32)


class Indexed(nn.Module):
    def __init__(self, index: list[int], form: str):
        super().__init__()
        self.form = form
        self.register_buffer("index", torch.tensor(index))

    def forward(self, x):
        if self.form == "channels":
            return torch.relu(x[:, self.index])
        return torch.relu(x[..., self.index])  # the last dimension (channels-last)


@pytest.mark.parametrize("capture", CAPTURES)
def test_indexing_by_a_permutation_is_a_shuffle(capture: str) -> None:
    rep = score(Indexed([3, 1, 0, 2], "channels"), input_shape=(2, 4, 5, 5), capture=capture)
    assert _rows(rep) == [("shuffle", 100, 0.0, 4 * 32.0 + 16), ("act:relu", 100, 0.0, 0.0)]
    last = score(Indexed([4, 3, 2, 1, 0], "last"), input_shape=(2, 4, 5, 5), capture=capture)
    assert _rows(last) == [("shuffle", 100, 0.0, 5 * 32.0 + 25), ("act:relu", 100, 0.0, 0.0)]
    subset = score(Indexed([3, 1], "channels"), input_shape=(2, 4, 5, 5), capture=capture)
    assert [k for k in subset.layers.kind if k != "free"] == ["act:relu"]
