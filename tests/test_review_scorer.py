"""Regression tests for bugs found in review; every expectation is official_rules.md or arithmetic written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from scorer import score

SHAPE = (1, 4, 5, 5)  # 100 elements per example, 4 channels of 5x5


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_full_reduction_to_a_scalar_is_costed(capture) -> None:
    # mean over n values: n-1 adds + 1 division (counting.py GlobalAvg, §2.2); n = 100 here
    t = score(Fn(lambda x: x.mean()), input_shape=SHAPE, capture=capture).totals
    assert (t["mults"], t["adds"]) == (1, 99)
    # sum over n values: n-1 adds
    t = score(Fn(lambda x: x.sum()), input_shape=SHAPE, capture=capture).totals
    assert (t["mults"], t["adds"]) == (0, 99)


class ConvInstanceNorm(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.norm = norm

    def forward(self, x):
        return self.norm(self.conv(x))


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_instance_norm_computes_statistics_and_does_not_fold(capture) -> None:
    # InstanceNorm normalises each channel of each example by statistics of that example: it cannot be
    # folded into the conv (unlike BN, §2.3) and costs what GroupNorm with one channel per group costs.
    c, n = 4, 25  # channels; values per (example, channel)
    per_group_mults, per_group_adds = 2 * n + 3, 3 * n - 1  # rules.base layer_norm_counts
    norm_mults = c * per_group_mults + c * n  # + affine scale per element
    norm_adds = c * per_group_adds + c * n  # + affine shift per element
    conv_mults, conv_adds = 4 * 100, 3 * 100  # 1x1 conv, 4 inputs per output, no bias
    conv_bits = 16 * 32
    rep = score(ConvInstanceNorm(nn.InstanceNorm2d(4, affine=True)), input_shape=SHAPE, capture=capture)
    t = rep.totals
    assert t["mults"] == conv_mults + norm_mults
    assert t["adds"] == conv_adds + norm_adds
    assert t["param_bits"] == conv_bits + 2 * c * 32
    assert not any("folded" in str(n) for n in rep.layers["note"])
    ref = score(ConvInstanceNorm(nn.GroupNorm(4, 4)), input_shape=SHAPE, capture=capture).totals
    assert (t["mults"], t["adds"], t["param_bits"]) == (ref["mults"], ref["adds"], ref["param_bits"])


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize("batch", [1, 3])
def test_instance_norm_per_example_on_every_capture(capture, batch) -> None:
    """Per example, whatever the batch: torch runs it as a batch norm over a (1, batch x channels) view, its affine
    repeated per example, which the dispatch recorder once costed as a BN of batch x 4 channels (params 8 x batch).
    Module and functional forms; no affine: 4 groups of 25 (layer_norm_counts), nothing stored."""
    c, n = 4, 25
    shape = (batch, *SHAPE[1:])
    for norm in (nn.InstanceNorm2d(4), Fn(F.instance_norm)):
        t = score(norm, input_shape=shape, capture=capture).totals
        assert (t["mults"], t["adds"], t["params"]) == (c * (2 * n + 3), c * (3 * n - 1), 0)
    t = score(nn.InstanceNorm2d(4, affine=True), input_shape=shape, capture=capture).totals
    assert (t["mults"], t["adds"], t["params"]) == (c * (2 * n + 3) + c * n, c * (3 * n - 1) + c * n, 2 * c)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_instance_norm_with_running_statistics_is_a_channel_affine(capture) -> None:
    """``track_running_stats`` in eval normalises by the running statistics, as BatchNorm does (torch's
    ``use_input_stats = training or not track_running_stats``): one mult and one add per element, γ and β stored;
    after a conv it folds, as BN does (§2.3)."""
    norm = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    t = score(norm, input_shape=SHAPE, capture=capture).totals
    assert (t["mults"], t["adds"], t["params"]) == (100, 100, 8)
    folded = score(ConvInstanceNorm(norm), input_shape=SHAPE, capture=capture).totals
    conv = score(ConvInstanceNorm(nn.Identity()), input_shape=SHAPE, capture=capture).totals
    assert folded["mults"] == conv["mults"]


G = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)


class UsesGlobalTensor(nn.Module):
    def forward(self, x):
        return x * G


def test_fx_capture_leaves_no_attribute_on_the_model() -> None:
    model = UsesGlobalTensor()
    before = set(model.__dict__)
    rep = score(model, input_shape=SHAPE, capture="fx")
    assert rep.totals["mults"] == 100
    assert set(model.__dict__) == before


class CountsCalls(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1)
        return torch.relu(x)


@pytest.mark.parametrize("capture", ["export", "dispatch"])
def test_capture_does_not_change_buffers(capture) -> None:
    model = CountsCalls()
    score(model, input_shape=SHAPE, capture=capture, allow_unknown=True)
    assert model.calls.item() == 0


class ScaledByConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.k = torch.ones(3, 4, 1, 1)  # a plain tensor attribute: a lifted constant under torch.export

    def forward(self, x):
        return self.conv(x) * self.k[:1]


def test_export_batch_comes_from_the_user_input() -> None:
    shape = (2, 4, 6, 6)  # batch 2: counts are per example
    outputs = 4 * 36
    want_mults = 4 * outputs + outputs  # conv: 4 mults per output; then one scale per output
    want_adds = (4 - 1) * outputs + outputs  # conv: 3 adds + 1 bias add per output
    for capture in ("fx", "export", "dispatch"):
        t = score(ScaledByConstant(), input_shape=shape, capture=capture).totals
        assert (t["mults"], t["adds"]) == (want_mults, want_adds), capture


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize(
    ("fn", "mults"),
    [
        (lambda x: (x > 0).float(), 100),  # one comparison per element, as torch.gt / x.gt()
        (lambda x: (x <= 0).float(), 100),
        (lambda x: -x, 100),  # one sign-bit op per element, as torch.neg
        (lambda x: x.long().float(), 0),  # dtype conversions are free, as .float() / .half()
        (lambda x: torch.cat(x.chunk(2, dim=1), dim=1), 0),  # chunk + indexing is data movement
    ],
)
def test_every_form_of_an_op_is_known(capture, fn, mults) -> None:
    t = score(Fn(fn), input_shape=SHAPE, capture=capture).totals
    assert (t["mults"], t["adds"]) == (mults, 0)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_einsum_in_every_capture(capture) -> None:
    # bchw,bdhw->bcd: 4x4 outputs, each a dot product of length 25 (n mults, n-1 adds)
    t = score(Fn(lambda x: torch.einsum("bchw,bdhw->bcd", x, x)), input_shape=SHAPE, capture=capture).totals
    assert (t["mults"], t["adds"]) == (16 * 25, 16 * 24)


class Einsum(nn.Module):
    """``einsum(eq, x, x)``, or ``einsum(eq, x, w)`` with a weight of ``w_shape``."""

    def __init__(self, eq: str, w_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.eq = eq
        self.w = nn.Parameter(torch.randn(w_shape)) if w_shape else None

    def forward(self, x):
        return torch.einsum(self.eq, x, x if self.w is None else self.w)


# (equation, input shape, weight shape, micronet2019 (mults, adds) per example, flops per example = FlopCounterMode's)
EINSUMS = [
    # outer product, no index contracted: torch runs a broadcast mul, 16·16 products (FlopCounterMode: none)
    ("bi,bj->bij", (2, 16), None, (16 * 16, 0), 0),
    # i in x only: torch sums it out first (4 adds for each of 16 values), then (16)@(16,8): 8 outputs of
    # 16 mults and 15 adds; FlopCounterMode counts the mm, 2·16·8
    ("bij,jk->bk", (2, 5, 16), (16, 8), (8 * 16, 16 * 4 + 8 * 15), 2 * 16 * 8),
    # a contraction over d: 6·6 outputs of 8 mults and 7 adds (a bmm)
    ("bqd,bkd->bqk", (2, 6, 8), None, (36 * 8, 36 * 7), 2 * 36 * 8),
]


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize(("eq", "shape", "w_shape", "counts", "flops"), EINSUMS)
def test_einsum_counts_as_torch_lowers_it(capture, eq, shape, w_shape, counts, flops) -> None:
    # README "How it counts": every capture gives the same totals; under flops the ops equal FlopCounterMode's
    m = Einsum(eq, w_shape)
    t = score(m, input_shape=shape, capture=capture).totals
    assert (t["mults"], t["adds"]) == counts
    assert score(m, input_shape=shape, rules="flops", capture=capture).totals["ops"] == flops
    with FlopCounterMode(display=False) as counter:
        m(torch.randn(shape))
    assert counter.get_total_flops() / shape[0] == flops


def _einsum_rows(m: nn.Module, shape: tuple[int, ...], capture: str) -> list[tuple]:
    rows = score(m, input_shape=shape, capture=capture).layers
    rows = rows[rows.kind != "free"]
    cols = ["kind", "mults", "adds", "param_bits", "nonzeros", "act_bits_out", "act_bits_op", "act_bits_live"]
    return [tuple(r) for r in rows[cols].itertuples(index=False)]


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_einsum_presum_rows_match_dispatch(capture) -> None:
    # the pre-summed x feeds the product (its 2x16 sum read by the matmul, then freed); a weight summed over
    # i (an index in w only) is a constant: its 16x8 sum writes no activation and the matmul reads none
    w = torch.randn(16, 8)
    w[:8] = 0  # half the weight zero: the matmul is credited 8 nonzeros per output (§2.2)
    act = Einsum("bij,jk->bk", (16, 8))
    act.w.data.copy_(w)
    for m, shape in ((act, (2, 5, 16)), (Einsum("bj,ijk->bk", (3, 16, 8)), (2, 16))):
        assert _einsum_rows(m, shape, capture) == _einsum_rows(m, shape, "dispatch")
    rows = _einsum_rows(act, (2, 5, 16), capture)
    assert [r[:3] for r in rows] == [("sum", 0, 16 * 4), ("matmul", 8 * 8, 8 * 7)]


def test_functional_and_module_upsample_nearest_exact_agree() -> None:
    a = score(Fn(lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact")), input_shape=SHAPE,
              capture="fx").totals
    b = score(Fn(lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact")), input_shape=SHAPE,
              capture="export").totals
    assert (a["mults"], a["adds"]) == (b["mults"], b["adds"]) == (0, 0)  # a copy, like nearest (§2.4)


def test_qat_layer_weight_fake_quant_sets_weight_bits() -> None:
    # README: bits are read from torch.ao fake-quant ranges. A QAT conv's weight_fake_quant spans -128..127,
    # i.e. 8-bit weights: 1/4 parameter each (official page, §3.1); the bias is not fake-quantised (32 bits).
    import torch.ao.nn.qat as nnqat
    from torch.ao.quantization import get_default_qat_qconfig

    conv = nnqat.Conv2d(3, 8, 3, qconfig=get_default_qat_qconfig("fbgemm"))
    t = score(nn.Sequential(conv), input_shape=(1, 3, 8, 8)).totals
    assert t["param_bits"] == 8 * 3 * 3 * 3 * 8 + 8 * 32
