"""Reference models of the ImageNet (and MSUNet) team entries (issue 10 item 3) under their own rule sets.

Expected numbers are quoted from `shared/spec/team_scores.md` (section beside them) or from the team's public
profile named beside them, or follow by the arithmetic written here; none is the scorer's own output.
Models build on the meta device; each is scored once per module.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from reference_models.registry import build_reference
from rules import get_ruleset
from scorer import score
from scorer.report import Report

IMAGENET = (1, 3, 224, 224)
# team_scores.md "Conventions": ImageNet normalisers 6.9M params, 1170M ops.
IMAGENET_PARAMS, IMAGENET_OPS = 6.9e6, 1170e6


def counted(rep: Report, prefix: str = "") -> list[tuple[str, float, float, float]]:
    """(kind, param bits, mults, adds) of every op that costs something, in execution order, in module
    ``prefix`` or its submodules."""
    df = rep.layers
    df = df[(df["module"] == prefix) | df["module"].str.startswith(prefix + ".")] if prefix else df
    return [(k, p, m, a) for k, p, m, a in zip(df["kind"], df["param_bits"], df["mults"], df["adds"], strict=True)
            if p or m or a]


# ================================================================================================= Sisyphus


@pytest.fixture(scope="module")
def sisyphus() -> Report:
    """OneShot-S+ under sisyphus2019 with the freebie (float16: params/2, mults/2, §1.2 row notes)."""
    return score(build_reference("sisyphus_oneshot_s_plus"), input_shape=IMAGENET, rules="sisyphus2019", bits=16,
                 track="imagenet")


def in_m(x: float) -> float:
    """A count in millions, as the team's tables print it."""
    return x / 1e6


def test_sisyphus_totals(sisyphus: Report) -> None:
    """§2.7 "Published totals": Total 3.652 M params, 301.4 M mults, 288.3 M adds; Total_quant params 3.520 and
    Total_no_quant 0.132 (the shuffles' sparse matrices), Total_no_quant adds 2.105. The team's params are
    16-bit bits / 16 (`utils/micronet_counting.py` ``process_counts``), i.e. param_bits / 16 at bits=16."""
    t = sisyphus.totals
    assert sisyphus.capture in ("fx", "export") and not sisyphus.unknown
    assert round(in_m(t["param_bits"] / 16), 3) == 3.652
    assert round(in_m(t["mults"]), 1) == 301.4
    assert round(in_m(t["adds"]), 1) == 288.3
    df = sisyphus.layers
    shuffle_bits = df.loc[df["kind"] == "shuffle", "param_bits"].sum()
    assert round(in_m(shuffle_bits / 16), 3) == 0.132
    assert round(in_m((t["param_bits"] - shuffle_bits) / 16), 3) == 3.520
    not_quantisable = df["kind"].isin(["act:hardswish", "act:hardsigmoid", "mean", "shuffle"])
    assert round(in_m(df.loc[not_quantisable, "adds"].sum()), 3) == 2.105
    # §1.2 row notes: float16 "param score: 3.652 / 2 / 6.9 = 0.265", "flop score: (301.4 / 2 + 288.3) / 1170
    # = 0.375", Σ 0.640.
    assert round(t["param_score"], 3) == 0.265
    assert round(t["ops_score"], 3) == 0.375
    assert round(t["score"], 3) == 0.640


@pytest.mark.parametrize("module,params,mults", [("blocks.5", 0.002, 0.125), ("blocks.9", 0.007, 0.063),
                                                  ("blocks.19", 0.026, 0.031)])
def test_sisyphus_shuffle_rows(sisyphus: Report, module: str, params: float, mults: float) -> None:
    """`detailed_profiling.md` ``SNB5/SNB9/SNB19_shufflechannels0`` (160, 320, 640 channels at 28, 14, 7): a
    1×1 conv of sparsity (C − 1)/C, i.e. C 16-bit values + C² mask bits = C + C²/16 in the team's 16-bit units,
    and 1 mult per element."""
    df = sisyphus.layers
    row = df[(df["module"] == module) & (df["kind"] == "shuffle")].iloc[0]
    assert round(in_m(row["param_bits"] / 16), 3) == params and round(in_m(row["mults"]), 3) == mults
    assert row["adds"] == 0


def test_sisyphus_mid_channels_from_the_source() -> None:
    """``int(out // 2 · scale)``: block 0 (64 out, scale 1.8) has 57 mid channels and block 1 (1.6) 51, as the
    profile's ``SNB0_conv0_fwd`` (Cout 57) and ``SNB1_conv0_fwd`` (Cout 51) rows print."""
    from reference_models.teams.sisyphus_oneshot import mid_channels, se_squeeze

    assert mid_channels(64, 1.8) == 57 and mid_channels(64, 1.6) == 51 and mid_channels(64, 1.4) == 44
    assert se_squeeze(160) == 40 and se_squeeze(320) == 80  # ``SNB8_se0_conv_fwd`` 160→40, SNB16 320→80


# `MicroNetChallenge/detailed_profiling.md` rows (params(M), mults(M), adds(M)), one per costed op; the four
# h-swish rows (plus, clip, div, mul) of the profile are one hardswish op here, their values summed as written.
SISYPHUS_OP_ROWS: dict[str, list[tuple[float, float, float]]] = {
    "first_conv": [(0.000, 5.419, 5.218), (0.0, 0.000 + 0.402 + 0.201 + 0.201, 0.201)],
    "blocks.0": [  # SNB0: projection dw 3×3 s2, 1×1, relu; main 1×1 16→57, relu, dw 3×3 s2, 1×1 57→48, relu
        (0.000, 0.452, 0.401), (0.000, 0.803, 0.753), (0.0, 0.050, 0.0),
        (0.001, 11.440, 10.725), (0.0, 0.715, 0.0), (0.001, 1.609, 1.430), (0.003, 8.580, 8.430), (0.0, 0.151, 0.0),
    ],
    "blocks.1": [  # SNB1: shuffle (1 mult per element, 64 + 64²/16 params), 1×1 32→51, relu, dw, 1×1, relu
        (0.000, 0.201, 0.000), (0.002, 5.118, 4.958), (0.0, 0.160, 0.0), (0.000, 1.439, 1.279),
        (0.002, 5.118, 5.018), (0.0, 0.100, 0.0),
    ],
    "blocks.4": [  # SNB4 (h-swish stage): the h-swish rows are 4 mults + 1 add per element
        (0.001, 0.452, 0.401), (0.004, 3.211, 3.161), (0.0, 0.100 + 0.050 + 0.050, 0.050),
        (0.006, 19.268, 18.967), (0.0, 0.602 + 0.301 + 0.301, 0.301), (0.001, 0.677, 0.602),
        (0.009, 7.225, 7.150), (0.0, 0.150 + 0.075 + 0.075, 0.075),
    ],
    "blocks.8": [  # SNB8, the ShuffleXception block with SE (no row for the SE's broadcast_mul)
        (0.001, 0.282, 0.251), (0.026, 5.018, 4.986), (0.0, 0.062 + 0.031 + 0.031, 0.031),
        (0.001, 0.282, 0.251), (0.015, 3.011, 2.992), (0.0, 0.038 + 0.019 + 0.019, 0.019),
        (0.001, 0.169, 0.151), (0.009, 1.806, 1.788), (0.0, 0.038 + 0.019 + 0.019, 0.019),
        (0.001, 0.169, 0.151), (0.015, 3.011, 2.979), (0.0, 0.062 + 0.031 + 0.031, 0.031),
        (0.000, 0.000, 0.031), (0.006, 0.006, 0.006), (0.0, 0.000, 0.0), (0.007, 0.006, 0.006), (0.0, 0.0, 0.0),
    ],
    "last_conv": [(0.656, 0.655, 0.655), (0.0, 0.002 + 0.001 + 0.001, 0.001)],
    "classifier": [(1.025, 1.024, 1.024)],
}


@pytest.mark.parametrize("module", sorted(SISYPHUS_OP_ROWS))
def test_sisyphus_per_op_profile_rows(sisyphus: Report, module: str) -> None:
    """Each costed op matches its profile row to the printed 3 decimals (a summed h-swish to the printed
    precision of each of its rows: 0.0005 per row); params are 16-bit bits / 16."""
    rows = counted(sisyphus, module)
    expected = SISYPHUS_OP_ROWS[module]
    assert len(rows) == len(expected), [r[0] for r in rows]
    for (kind, bits, mults, adds), (p, m, a) in zip(rows, expected, strict=True):
        slack = 0.0015 + 1e-9 if kind == "act:hardswish" else 0.0005 + 1e-9
        assert abs(in_m(bits / 16) - p) <= 0.0005 + 1e-9, (module, kind)
        assert abs(in_m(mults) - m) <= slack, (module, kind)
        assert abs(in_m(adds) - a) <= 0.0005 + 1e-9, (module, kind)


SISYPHUS_PROFILE = Path(__file__).parent / "data" / "sisyphus_profile.csv"


def test_sisyphus_every_profile_row(sisyphus: Report) -> None:
    """All 336 op rows of `detailed_profiling.md`, in order, to the printed 3 decimals: the profile's h-swish
    (plus, clip, div, mul) and h-sigmoid (plus, clip, div) rows are one op here, compared within 0.0005 per
    summed row; its Total rows are §2.7's totals (tested above)."""
    with open(SISYPHUS_PROFILE, newline="") as fh:
        rows = [r for r in csv.DictReader(line for line in fh if not line.startswith("#"))
                if not r["op_name"].startswith("Total")]
    assert len(rows) == 336
    groups: list[list] = []  # [op name, params, mults, adds, rows summed]
    for r in rows:
        act = re.match(r"(.*H(?:Swish|Sigmoid)\d+)_", r["op_name"])
        key = act.group(1) if act else r["op_name"]
        values = [float(r["params_m"]), float(r["mults_m"]), float(r["adds_m"])]
        if act and groups and groups[-1][0] == key:
            groups[-1] = [key, *(a + b for a, b in zip(groups[-1][1:4], values, strict=True)), groups[-1][4] + 1]
        else:
            groups.append([key, *values, 1])
    ops = counted(sisyphus)
    assert len(ops) == len(groups) == 198
    for (kind, bits, mults, adds), (name, p, m, a, n) in zip(ops, groups, strict=True):
        slack = 0.0005 * n + 1e-9
        assert abs(in_m(bits / 16) - p) <= slack and abs(in_m(mults) - m) <= slack, (name, kind)
        assert abs(in_m(adds) - a) <= slack, (name, kind)


# `MicroNetChallenge/README.md` "Searched Model Profiling": per-block rows (params(M), adds(M)) and the number of
# profile rows each sums (the table's block values are sums of the 3-decimal profile rows, so each may be off
# by 0.0005 per row). Its block *mults* count h-swish as 3 mults per element (e.g. SNB4: 32.111 = the
# profile's 32.537 less its 0.426 M h-swish elements), contradicting its own per-op profile and its totals, so
# only the ReLU stage's block mults are compared.
SISYPHUS_BLOCK_ROWS: list[tuple[str, float, float, float | None, int]] = [
    ("blocks.0", 0.005, 21.739, 23.800, 8), ("blocks.1", 0.004, 11.255, 12.136, 6),
    ("blocks.2", 0.002, 9.697, 10.511, 6), ("blocks.3", 0.005, 15.451, 16.389, 6),
    ("blocks.4", 0.021, 30.707, None, 17), ("blocks.5", 0.023, 16.859, None, 13),
    ("blocks.6", 0.014, 9.232, None, 13), ("blocks.7", 0.015, 10.538, None, 13),
    ("blocks.8", 0.082, 13.692, None, 31), ("blocks.9", 0.080, 11.582, None, 26),
    ("blocks.10", 0.051, 6.215, None, 20), ("blocks.11", 0.063, 8.673, None, 20),
    ("blocks.12", 0.080, 11.582, None, 20), ("blocks.13", 0.091, 13.891, None, 20),
    ("blocks.14", 0.098, 15.146, None, 20), ("blocks.15", 0.103, 16.199, None, 20),
    ("blocks.16", 0.323, 25.380, None, 26), ("blocks.17", 0.244, 8.196, None, 20),
    ("blocks.18", 0.298, 10.856, None, 20), ("blocks.19", 0.368, 14.293, None, 20),
]


@pytest.mark.parametrize("module,params,adds,mults,n_rows", SISYPHUS_BLOCK_ROWS)
def test_sisyphus_per_block_rows(sisyphus: Report, module: str, params: float, adds: float, mults: float | None,
                                 n_rows: int) -> None:
    """Block sums match the README's block rows within the rounding of the profile rows they add up."""
    rows = counted(sisyphus, module)
    slack = 0.0005 * n_rows + 1e-9
    assert abs(in_m(sum(r[1] for r in rows) / 16) - params) <= slack
    assert abs(in_m(sum(r[3] for r in rows)) - adds) <= slack
    if mults is not None:
        assert abs(in_m(sum(r[2] for r in rows)) - mults) <= slack


class ShuffleSE(nn.Module):
    """A 1×1 conv + BN, a channel shuffle (2 groups) and an SE-style channel scale."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.gate = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x):
        x = self.bn(self.conv(x))
        b, c, h, w = x.shape
        x = x.reshape(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))


def test_sisyphus2019_distinguishing_formula() -> None:
    """On 8 channels of 4×4 at 32 bits: BN costs nothing (micronet2019: 8 params + 128 adds), the SE scale
    costs nothing (micronet2019: 128 mults), the shuffle is 128 mults and 8 values + a 64-bit mask (§2.7)."""
    model, shape = ShuffleSE().eval(), (1, 8, 4, 4)
    own = score(model, input_shape=shape, rules="sisyphus2019")
    off = score(model, input_shape=shape, rules="micronet2019")
    n = 8 * 4 * 4
    assert dict(((k, (p, m, a)) for k, p, m, a in counted(own)))["shuffle"] == (8 * 32 + 64, n, 0)
    assert "bn" not in [r[0] for r in counted(own)]
    assert off.totals["adds"] - own.totals["adds"] == n  # the folded BN's bias add
    assert off.totals["mults"] - own.totals["mults"] == n  # the SE scale
    assert off.totals["param_bits"] - own.totals["param_bits"] == 8 * 32  # the folded BN's bias
    assert get_ruleset("sisyphus2019").activations["act:hardswish"] == (4, 1)  # §2.7: h-swish 4 mults + 1 add


# ================================================================================================= Rocker


@pytest.fixture(scope="module")
def rocker() -> Report:
    """ProfitableNet under rocker2019 with its per-layer sparsity (`submission/model/sparsity.txt`) and the
    widths it carries (8-bit input)."""
    from reference_models.teams.rocker_profitablenet import rocker_sparsity

    return score(build_reference("rocker_profitablenet"), input_shape=IMAGENET, rules="rocker2019", bits=8,
                 track="imagenet", sparsity=rocker_sparsity())


def bit_ops(rep: Report, column: str, bits: str) -> float:
    """Σ count·bits/32: the log's "bit-ops" (32-bit-equivalent operations)."""
    return float((rep.layers[column] * rep.layers[bits] / 32).sum())


def test_rocker_totals(rocker: Report) -> None:
    """§2.6 summary, verbatim: "Total mul operations: 52.9105 M", "Total add operations: 86.754 M", "Total model
    size : 0.478411 M", "Total param score : 0.0693349", "Total bitops score : 0.119371", "Total score :
    0.188706" (printed to 6 significant digits)."""
    t = rocker.totals
    assert rocker.capture in ("fx", "export") and not rocker.unknown
    assert round(bit_ops(rocker, "mults", "mul_bits") / 1e6, 4) == 52.9105
    assert round(bit_ops(rocker, "adds", "add_bits") / 1e6, 3) == 86.754
    assert round(t["params"] / 1e6, 6) == 0.478411
    assert round(t["param_score"], 7) == 0.0693349
    assert round(t["ops_score"], 6) == 0.119371
    assert round(t["score"], 6) == 0.188706


def test_rocker_conv1_storage_arithmetic(rocker: Report) -> None:
    """§2.6: "conv1 storage 124 = (864·0.5·6 + 864 mask bits + 32·16)/32"."""
    row = rocker.layers[rocker.layers["module"] == "conv1"].iloc[0]
    assert row["param_bits"] == 864 * 0.5 * 6 + 864 + 32 * 16 == 124 * 32


# `submission/log/score.log` (Zeitzmz/nips-micronet) ``scoring.cpp:232`` rows: name -> (mul bits, add bits,
# mul bit-ops, add bit-ops, storage in 32-bit units), "-" as None; the log prints integers (truncated).
ROCKER_LOG_ROWS: dict[tuple[str, str], tuple[int | None, int | None, int, int | None, int | None]] = {
    ("conv1", "conv"): (8, 16, 1304576, 2609152, 124),  # conv1/3x3_s2 (§2.6 example row)
    ("conv1_act", "act:relu"): (8, None, 100352, None, None),  # conv1/3x3_s2/relu
    ("conv2_0.dw.0", "conv"): (8, 16, 903168, 1806336, 70),  # conv2_0/3x3_dwconv, sparsity 0
    ("conv3_0.dw.0", "conv"): (8, 16, 940800, 1881600, 249),  # conv3_0/3x3_dwconv (5×5, stride 2)
    ("conv3_1", "add"): (None, 16, 0, 50176, None),  # conv3_1/elt_sum
    ("conv4_0.increase_act", "act:hardswish"): (32, 32, 1204224, 301056, None),
    ("conv4_0.dw.2", "conv"): (8, 16, 150528, 301056, 212),  # conv4_0/3x3_dwconv/slice_2 (7×7)
    ("conv4_0.se.pool", "mean"): (32, 32, 96, 75168, None),  # SE_global_pool
    ("conv4_0.se.bn", "bn"): (16, None, 48, None, None),  # SE_bn, Scale, storage 0
    ("conv4_0.se.fc1", "conv"): (16, 16, 144, 141, 72),
    ("conv4_0.se.relu", "act:relu"): (16, None, 3, None, None),
    ("conv4_0.se.fc2", "conv"): (16, 16, 144, 96, 72),
    ("conv4_0.se.gate", "act:sigmoid"): (32, 32, 192, 96, None),  # SE_weights
    ("conv4_0.se", "mul"): (16, None, 37632, None, None),  # conv4_0/3x3_dwconv/scale
    ("conv4_1.se.fc1", "conv"): (16, 16, 210, 206, 105),
    ("conv7_0.increase", "conv"): (8, 16, 1467648, 2935296, 7718),  # sparsity 0.45
    ("conv7_0.dw.3", "conv"): (8, 16, 77616, 155232, 1639),  # slice_3, 9×9, sparsity 0.45
    ("conv8_0.se.fc1", "conv"): (16, 16, 20736, 20700, 10368),
    ("conv8_0.decrease", "conv"): (8, 16, 2481360, 4962720, 49696),
    ("conv9", "conv"): (8, 16, 2759680, 5519360, 55680),  # conv9/1x1
    ("avepool", "avgpool"): (32, 32, 1280, 61440, None),  # avepool/7x7
    ("classifier", "conv"): (8, 16, 96000, 192000, 112500),  # sparsity 0.7
}


@pytest.mark.parametrize("key", sorted(ROCKER_LOG_ROWS))
def test_rocker_log_rows(rocker: Report, key: tuple[str, str]) -> None:
    """A sample of the per-layer log, row by row, to the printed (truncated) integers."""
    module, kind = key
    df = rocker.layers
    rows = df[(df["module"] == module) & (df["kind"] == kind)]
    assert len(rows) == 1, (module, kind)
    r = rows.iloc[0]
    mul_bits, add_bits, mul_ops, add_ops, storage = ROCKER_LOG_ROWS[key]
    if mul_bits is not None:
        assert r["mul_bits"] == mul_bits
    if add_bits is not None:
        assert r["add_bits"] == add_bits
    assert int(r["mults"] * r["mul_bits"] / 32) == mul_ops
    assert int(r["adds"] * r["add_bits"] / 32) == (add_ops or 0)
    assert int(r["param_bits"] / 32 + 1e-9) == (storage or 0)


ROCKER_LOG = Path(__file__).parent / "data" / "rocker_score_log.csv"
#: the log's layer types -> op kinds here
ROCKER_TYPES = {"Convolution": "conv", "ReLU": "act:relu", "HardSwish": "act:hardswish", "Sigmoid": "act:sigmoid",
                "Eltwise": "add", "Scale": ("bn", "mul"), "Pooling": ("mean", "avgpool")}


def test_rocker_every_log_row(rocker: Report) -> None:
    """All 311 per-layer log lines, in execution order: the op kind, the widths and the printed (truncated)
    bit-ops and storage; a conv's layer name maps to its module (``caffe_layer``)."""
    from reference_models.teams.rocker_profitablenet import caffe_layer

    with open(ROCKER_LOG, newline="") as fh:
        log = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    df = rocker.layers
    rows = df[(df["mults"] > 0) | (df["adds"] > 0) | (df["param_bits"] > 0)]
    assert len(log) == len(rows) == 311
    for line, (_, r) in zip(log, rows.iterrows(), strict=True):
        kinds = ROCKER_TYPES[line["type"]]
        assert r["kind"] in (kinds if isinstance(kinds, tuple) else (kinds,)), line["name"]
        if r["kind"] == "conv":
            assert caffe_layer(r["module"]) == line["name"]
        if line["mul_bits"] != "-":
            assert r["mul_bits"] == int(line["mul_bits"]), line["name"]
        if line["add_bits"] != "-":
            assert r["add_bits"] == int(line["add_bits"]), line["name"]
        assert int(r["mults"] * r["mul_bits"] / 32) == (0 if line["mul_bitops"] == "-" else int(line["mul_bitops"]))
        assert int(r["adds"] * r["add_bits"] / 32) == (0 if line["add_bitops"] == "-" else int(line["add_bitops"]))
        assert int(r["param_bits"] / 32 + 1e-9) == (0 if line["storage"] == "-" else int(line["storage"]))


def test_rocker_sparsity_table_covers_every_conv() -> None:
    """Every conv of the model has exactly one line in the sparsity table (132 lines, §2.6) and vice versa."""
    from reference_models.teams.rocker_profitablenet import caffe_layer, rocker_sparsity

    model = build_reference("rocker_profitablenet")
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    table = rocker_sparsity()
    assert set(table) == convs and len(table) == 132
    assert {caffe_layer(name) for name in convs} >= {"conv1/3x3_s2", "conv7_0/3x3_dwconv/slice_3", "classifier"}


class SparseConvHswish(nn.Module):
    """One 3×3 conv (3→4, bias, 6-bit weights, 16-bit bias and accumulation) and an h-swish."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv.weight_bits, self.conv.bias_bits, self.conv.acc_bits = 6, 16, 16
        self.act = nn.Hardswish()

    def forward(self, x):
        return self.act(self.conv(x))


def test_rocker2019_distinguishing_formula() -> None:
    """At sparsity 0.5 on 8×8 (256 outputs, n = 27): rocker2019 floors 13.5 → 13 products (13 mults, 12 adds
    + 1 bias add per output), micronet2019 keeps 13.5; h-swish is 4 mults + 1 add at 32 bits under
    rocker2019, at the 8-bit input width under micronet2019. Storage (108·0.5·6 + 108 + 4·16) bits for both."""
    model, shape = SparseConvHswish().eval(), (1, 3, 8, 8)
    own = score(model, input_shape=shape, rules="rocker2019", bits=8, sparsity={"conv": 0.5})
    off = score(model, input_shape=shape, rules="micronet2019", bits=8, sparsity={"conv": 0.5})
    outputs = 4 * 8 * 8
    conv_own, act_own = counted(own)
    conv_off, act_off = counted(off)
    assert conv_own == ("conv", 108 * 0.5 * 6 + 108 + 4 * 16, 13 * outputs, 13 * outputs)
    assert conv_off == ("conv", 108 * 0.5 * 6 + 108 + 4 * 16, 13.5 * outputs, 13.5 * outputs)
    assert act_own == act_off == ("act:hardswish", 0.0, 4 * outputs, outputs)
    ops = own.layers.set_index("kind")
    assert (ops.loc["act:hardswish", "mul_bits"], ops.loc["act:hardswish", "add_bits"]) == (32, 32)
    assert ops.loc["conv", "mul_bits"] == 8 and ops.loc["conv", "add_bits"] == 16
    assert off.layers.set_index("kind").loc["act:hardswish", "mul_bits"] == 8


# ================================================================================================= MixNet-S, MSUNet-v3


def test_arch_def_decoding() -> None:
    """timm block strings (team_scores.md §2.8): kernels, expansion, SE ratio, swish, grouped 1×1 convs."""
    from reference_models.teams.mixnet import decode, split_channels

    a = decode("ir_r1_k3.5_a1.1_p1.1_s1_e6_c128_se0.5_nsw")
    assert (a.kind, a.repeats, a.kernels, a.stride, a.expansion, a.out_chs, a.se, a.swish) == (
        "ir", 1, (3, 5), 1, 6.0, 128, 0.5, True)
    assert (a.exp_groups, a.pw_groups) == (2, 2)
    d = decode("ds_r1_k3_s1_e1_c64")
    assert (d.kind, d.kernels, d.se, d.swish, d.exp_groups) == ("ds", (3,), None, False, 1)
    assert split_channels(320, 3) == [108, 106, 106]  # remainder on the first group


def test_msunet_v3_structure() -> None:
    """§2.8: stem 64 at stride 1, blocks 64 → 64 → 128 (stride 2) → 128 → 256 (stride 2) → 256, 256 features;
    block 2.0 expands 64·5 = 320 channels split 3×3/5×5/7×7 and squeezes int(64·0.5) = 32; the ternary layers
    are the 1×1 convs but the stem and SE (`counting.py` ``Model_binary_patch``)."""
    from reference_models.teams.mixnet import ternary_convs

    model = build_reference("msunet_v3")
    assert model.conv_stem.stride == (1, 1) and model.conv_stem.out_channels == 64
    outs = [b.bn3.num_features for stage in model.blocks for b in stage]
    assert outs == [64, 64, 128, 128, 256, 256]
    blk = model.blocks[2][0]
    assert [c.kernel_size[0] for c in blk.conv_dw.children()] == [3, 5, 7]
    assert sum(c.out_channels for c in blk.conv_dw.children()) == 320
    assert blk.se.conv_reduce.out_channels == 32
    assert model.conv_head.out_channels == 256 and model.classifier.out_features == 100
    names = ternary_convs(model)
    assert "blocks.2.0.conv_pw.0" in names and "conv_stem" not in names
    assert not any(".se." in n for n in names) and all(dict(model.named_modules())[n].weight_bits == 1 for n in names)


def test_mixnet_s_builds_and_scores() -> None:
    """MixNet-S: 16-channel stride-2 stem, the 1536-feature head, 4.1 M parameters (MixConv paper,
    arXiv 1907.09595, Table: MixNet-S 4.1M; timm model card ``mixnet_s``: "Params (M): 4.1"); scores with no
    unknown op."""
    model = build_reference("mixnet_s")
    assert model.conv_stem.stride == (2, 2) and model.conv_head.out_channels == 1536
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 4.1
    rep = score(model, input_shape=IMAGENET, rules="micronet2019", bits=16, track="imagenet")
    assert not rep.unknown and rep.totals["mults"] > 0


class TernaryThenDepthwise(nn.Module):
    """A ternary 1×1 conv (8→8, ``weight_bits = 1``) and a 3×3 depthwise conv on 8 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.tern = nn.Conv2d(8, 8, 1, bias=False)
        self.tern.weight_bits = 1
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)

    def forward(self, x):
        return self.dw(self.tern(x))


@pytest.mark.parametrize("dw_sparsity", [0.3, 0.5])
def test_msunet2019_distinguishing_formula(dw_sparsity: float) -> None:
    """§2.8/§3 on 4×4 (128 outputs per layer), at 16 bits. Ternary conv at 50% zeros: n = 8·0.5 = 4 one-bit
    products + 1 FP16 scale mult per output (4·128/32 + 128·16/32 = 80 ops of mults), 3 adds per output at
    32 bits; storage 32 nonzero bits + a 64-bit mask + a 16-bit scale. Depthwise at sparsity 0.3 < 0.4 counts
    dense (9 mults per output, 72·16 bits, no mask); at 0.5, 4.5 mults per output and 36·16 + 72 bits."""
    model = TernaryThenDepthwise().eval()
    rep = score(model, input_shape=(1, 8, 4, 4), rules="msunet2019", bits=16,
                sparsity={"tern": 0.5, "dw": dw_sparsity})
    tern, dw = rep.layers.iloc[0], rep.layers.iloc[1]
    assert tern["mults"] == 5 * 128 and tern["ops"] == 4 * 128 / 32 + 128 * 16 / 32 + 3 * 128 * 32 / 32
    assert tern["param_bits"] == 32 + 64 + 16
    if dw_sparsity < 0.4:
        assert (dw["mults"], dw["param_bits"]) == (9 * 128, 72 * 16)
    else:
        assert (dw["mults"], dw["param_bits"]) == (4.5 * 128, 36 * 16 + 72)
    assert get_ruleset("msunet2019").min_sparsity == 0.4


def test_leaderboard_rows() -> None:
    """The issue-10 reference rows: own rules reproduce the published score to the printed digit (Sisyphus
    float16 0.640, §1.2 #14; Rocker 0.188706, §2.6), or name why not (Sisyphus fp32, MSUNet-v3)."""
    from scorer.leaderboard import leaderboard

    board = leaderboard(keys=["sisyphus_fp16", "sisyphus_fp32", "rocker", "msunet_v3"]).set_index("entry")
    assert round(board.loc["OneShot-S+ float16", "own_score"], 3) == 0.640
    assert round(board.loc["ProfitableNet (W6/A8, FP16 accumulation)", "own_score"], 6) == 0.188706
    for entry in ("OneShot-S+ fp32", "v3 (architecture only)"):
        assert any("not" in why for why in board.loc[entry, "why"])  # the caveat says what is not public
    assert (board.loc[["OneShot-S+ float16", "ProfitableNet (W6/A8, FP16 accumulation)"], "track"] == "imagenet").all()


def test_cli_scores_rocker_with_its_sparsity(capsys: pytest.CaptureFixture) -> None:
    """``micronet-score reference:rocker_profitablenet`` uses the registered rules, bits and per-layer sparsity:
    §2.6 "Total score : 0.188706"."""
    import json

    from scorer.cli import main

    assert main(["reference:rocker_profitablenet", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rules"] == "rocker2019" and round(out["totals"]["score"], 6) == 0.188706
