"""Tests that catch cheats (issue 7 part 4).

Every expected number is derived in the test from the model in front of the scorer (shapes, exact nonzero
counts of its weights, output sizes from forward hooks) or from arithmetic written beside it; spec tables
(team_scores.md §2.1, §2.2) are quoted only for architecture facts. A scorer that returns published numbers,
ignores the weights, or memoises by architecture fails here:

* block masks on shapes that blocks do not divide evenly (ceil, not floor);
* adaptive pools whose windows overlap or differ in size (PyTorch's start/end formula);
* pruning masks that only grow under a live enforcer, with momentum holding old velocity;
* the same module scored twice with weights zeroed in between: the totals move by what the arithmetic says;
* KAIST and OSI counted at a sparsity that is not the published one, and dense, from their own layers;
* KAIST and OSI channel widths, kernels and strides against the spec's layer lists.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference_models.compression.pruning import MagnitudePruner
from reference_models.registry import build_reference
from reference_models.teams.nonzeros import nonzero_counts
from scorer import score
from scorer.report import Report
from tests.conftest import zero_fraction

CIFAR_INPUT = (1, 3, 32, 32)
WEIGHTED = (nn.Conv2d, nn.Linear)


# ------------------------------------------------------------------------------------------------ helpers
def io_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """{name: (input shape, output shape)} of every Conv2d / Linear that runs in ``model(x)`` (eval mode)."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def hook(name: str):
        return lambda mod, inp, out: shapes.__setitem__(name, (tuple(inp[0].shape), tuple(out.shape)))

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, WEIGHTED)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def weighted_rows(report: Report) -> dict[str, dict]:
    """The report's conv / linear rows keyed by module path (each module runs once)."""
    rows = report.layers[report.layers["kind"].isin(["conv", "linear"])]
    assert rows["module"].is_unique
    return {r["module"]: r for r in rows.to_dict(orient="records")}


def nnz(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t))


def spatial(shape: tuple[int, ...]) -> int:
    """H·W of an N×C×H×W output (1 for a Linear's N×C output)."""
    return math.prod(shape[2:])


def prune_smallest_(model: nn.Module, fraction: float) -> None:
    """Zero the round(fraction·numel) smallest-magnitude entries of every conv / linear weight."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WEIGHTED):
                flat = m.weight.view(-1)
                flat[torch.sort(flat.abs(), stable=True).indices[: round(fraction * flat.numel())]] = 0.0


# ============================================================================ 1. block masks, uneven shapes
def block_kept(w: torch.Tensor, bh: int, bw: int) -> int:
    """The elements of the bh × bw tiles of ``w`` (as a C_out × rest matrix, partial tiles at the edges) holding a
    nonzero: what a block mask keeps (§4.1: one bit per block, so a kept block stores all its values)."""
    m = w.detach().reshape(w.shape[0], -1)
    kept = 0
    for r in range(0, m.shape[0], bh):
        for c in range(0, m.shape[1], bw):
            tile = m[r:r + bh, c:c + bw]
            kept += tile.numel() if bool((tile != 0).any()) else 0
    return kept


def test_block_mask_linear_uneven() -> None:
    # Linear(6, 10): a 10×6 weight. 4×4 blocks: ceil(10/4)·ceil(6/4) = 3·2 = 6 mask bits (floor gives 2·1).
    model = nn.Linear(6, 10)
    zero_fraction(model.weight, 0.5)  # 30 of 60 entries zero
    with torch.no_grad():
        model.weight[8:, :4] = 0.0  # one whole edge block (2 × 4) zero: the only one left out
    row = score(model, input_shape=(1, 6), mask_block=(4, 4)).layers.iloc[0]
    assert row.mask_bits == 3 * 2
    kept = block_kept(model.weight, 4, 4)
    assert nnz(model.weight) < kept <= 60 - 8  # zeros inside kept blocks are stored
    assert row.param_bits == kept * 32 + 10 * 32 + 6  # kept blocks' values + bias at 32 bits + mask


@pytest.mark.parametrize(
    ("cin", "cout", "bits"),
    [
        # Conv2d(5, 3, 3): weight 3×5×3×3, blocked as the C_out × (C_in·k·k) = 3×45 matrix (rules/base.py
        # mask_bits: rows = shape[0]): ceil(3/2)·ceil(45/2) = 2·23 = 46 (floor: 1·22 = 22).
        (5, 3, 2 * 23),
        # Conv2d(3, 5, 3): weight 5×3×3×3 = a 5×27 matrix: ceil(5/2)·ceil(27/2) = 3·14 = 42 (floor: 2·13 = 26).
        # The "42 for Conv2d(5, 3, 3)" is this layer: 5 output channels, 3 input channels.
        (3, 5, 3 * 14),
    ],
)
def test_block_mask_conv_uneven(cin: int, cout: int, bits: int) -> None:
    model = nn.Conv2d(cin, cout, 3, bias=False)
    zero_fraction(model.weight, 0.5)
    kept = block_kept(model.weight, 2, 2)
    assert nnz(model.weight) < kept < model.weight.numel()  # some 2 × 2 tiles whole zero, some half
    row = score(model, input_shape=(1, cin, 6, 6), mask_block="2x2").layers.iloc[0]
    assert row.mask_bits == bits
    assert row.param_bits == kept * 32 + bits


# ========================================================================= 2. adaptive pools, uneven windows
def window_sizes(n_in: int, n_out: int) -> list[int]:
    """PyTorch's adaptive pooling window i spans [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out))."""
    return [math.ceil((i + 1) * n_in / n_out) - (i * n_in) // n_out for i in range(n_out)]


@pytest.mark.parametrize("n_in", [7, 10])
def test_window_formula_is_pytorchs(n_in: int) -> None:
    # cross-check the formula: pooling the i-th basis vector reaches exactly the windows that contain i
    hits = F.adaptive_avg_pool1d(torch.eye(n_in).unsqueeze(1), 3).squeeze(1)  # (n_in, 3)
    assert (hits > 0).sum(0).tolist() == window_sizes(n_in, 3)


def pool_expectation(h: int, w: int, out: int, channels: int) -> tuple[float, float]:
    """(Σ window elements, outputs) over all channels: window (i, j) holds rows_i·cols_j values."""
    return channels * sum(window_sizes(h, out)) * sum(window_sizes(w, out)), channels * out * out


def _pool_row(pool: nn.Module, c: int, h: int, w: int, capture: str) -> dict:
    rep = score(nn.Sequential(pool), input_shape=(1, c, h, w), rules="micronet2019", capture=capture)
    return rep.layers.iloc[0].to_dict()


@pytest.mark.parametrize("capture", ["fx", "dispatch"])
def test_adaptive_pools_overlapping_windows_7x7(capture: str) -> None:
    # 7 → 3: windows [0,3), [2,5), [4,7) (floor(7/3) = 2, ceil(14/3) = 5): three windows of 3, overlapping,
    # so every output pools 3·3 = 9 values (kernel = 7 // 3 = 2 would give 4).
    assert window_sizes(7, 3) == [3, 3, 3]
    elems, outputs = pool_expectation(7, 7, 3, channels=2)  # 2·9·9 = 162 values, 2·9 = 18 outputs
    assert (elems, outputs) == (162, 18)
    # micronet2019 (rules/base.py cost_avgpool; official_rules.md §2.4, MSUNet/RIAIR): per output k²−1 adds
    # + 1 mult (the division): 162 − 18 = 144 adds, 18 mults.
    avg = _pool_row(nn.AdaptiveAvgPool2d(3), 2, 7, 7, capture)
    assert (avg["kind"], avg["mults"], avg["adds"]) == ("avgpool", 18, 144)
    # max pooling: k²−1 comparisons per output, counted as mults like ReLU's: 144 mults, 0 adds.
    mx = _pool_row(nn.AdaptiveMaxPool2d(3), 2, 7, 7, capture)
    assert (mx["kind"], mx["mults"], mx["adds"]) == ("maxpool", 144, 0)


@pytest.mark.parametrize("capture", ["fx", "dispatch"])
@pytest.mark.parametrize(("h", "w"), [(5, 5), (8, 8), (7, 5)])
def test_adaptive_pools_unequal_windows(h: int, w: int, capture: str) -> None:
    # 5 → 3: windows 2, 3, 2 (Σ 7); 8 → 3: 3, 4, 3 (Σ 10); 7 → 3: 3, 3, 3 (Σ 9). ceil(5/3) = 2 and
    # ceil(8/3) = 3 miss the middle window, so the count must come from the per-window sizes.
    elems, outputs = pool_expectation(h, w, 3, channels=2)
    avg = _pool_row(nn.AdaptiveAvgPool2d(3), 2, h, w, capture)
    assert (avg["mults"], avg["adds"]) == pytest.approx((outputs, elems - outputs), rel=1e-12)
    mx = _pool_row(nn.AdaptiveMaxPool2d(3), 2, h, w, capture)
    assert (mx["mults"], mx["adds"]) == pytest.approx((elems - outputs, 0), rel=1e-12)


# ================================================================= 3. masks only grow under a live enforcer
def _train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_two_pruning_rounds_with_momentum_keep_zeros() -> None:
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))  # 72 + 48 = 120 weights
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    x, y = torch.randn(32, 6), torch.randint(0, 4, (32,))
    _train(model, opt, x, y, 3)  # momentum buffers hold velocity at every entry
    pruner = MagnitudePruner(model, method="global")
    weights = {n: p for n, p in model.named_parameters() if n in pruner.params}

    def zeros() -> dict[str, torch.Tensor]:
        return {n: p.detach() == 0 for n, p in weights.items()}

    pruner.prune_to(0.3)
    with pruner.enforce(opt):  # one enforcer, live across both rounds
        _train(model, opt, x, y, 4)
        first = zeros()
        assert sum(int(z.sum()) for z in first.values()) == round(0.3 * 120)  # 36
        trained = {n: p.detach().clone() for n, p in weights.items()}
        # the entries round 2 will prune still move: their momentum is not zero
        new_masks = pruner.compute_masks(0.6)
        moving = [opt.state[weights[n]]["momentum_buffer"][~m & ~first[n]] for n, m in new_masks.items()]
        assert torch.cat(moving).abs().gt(0).all()

        pruner.prune_to(0.6)
        _train(model, opt, x, y, 4)
        second = zeros()
        assert sum(int(z.sum()) for z in second.values()) == round(0.6 * 120)  # 72
        for name, p in weights.items():
            assert not (first[name] & ~second[name]).any(), name  # the set of zeros only grows
            pruned = ~pruner.masks[name]
            assert torch.equal(second[name], pruned), name  # every pruned weight is exactly zero ...
            assert not torch.signbit(p.detach()[pruned]).any(), name  # ... +0.0 ...
            assert (opt.state[p]["momentum_buffer"][pruned] == 0).all(), name  # ... with no velocity left
            assert not torch.equal(p.detach()[~pruned], trained[name][~pruned]), name  # survivors trained


# ==================================================== 4. the same module scored twice with different weights
def _delta(before: Report, after: Report) -> dict[str, float]:
    a, b = before.totals, after.totals
    return {k: b[k] - a[k] for k in ("param_bits", "mults", "adds", "ops")}


def test_small_cnn_scored_twice() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    before = score(model, input_shape=(1, 3, 16, 16))
    w = model[2].weight  # 16·8·3·3 = 1152 weights, output 8×8 ((16 + 2 − 3)//2 + 1 = 8)
    dense = nnz(w)
    zero_fraction(w, 0.5)
    removed = dense - nnz(w)
    assert removed == 576
    after = score(model, input_shape=(1, 3, 16, 16))
    d = _delta(before, after)
    # micronet2019 (official_rules.md §4.2): 32-bit values of the nonzeros, plus a 1152-bit mask now that the
    # tensor is sparse; mults and adds per output both drop by the removed weights of that filter: Δ = Δnnz·H·W
    assert d["param_bits"] == -removed * 32 + 1152
    assert d["mults"] == d["adds"] == -removed * 8 * 8
    assert d["ops"] == -2 * removed * 64
    assert after.totals["score"] < before.totals["score"]


def _team_delta(name: str, rules: str, layer: str, fraction: float) -> tuple[dict, dict, int, int, int]:
    """Score ``name`` (bits=16), zero ``fraction`` of ``layer``'s weight, score again: (Δ totals, per-row Δ of
    the other conv/linear rows, weights removed, H·W of ``layer``'s output, mask bits the layer gained)."""
    model = build_reference(name)
    hw = spatial(io_shapes(model, torch.randn(*CIFAR_INPUT))[layer][1])
    before = score(model, input_shape=CIFAR_INPUT, rules=rules, bits=16)
    w = model.get_submodule(layer).weight
    dense = nnz(w)
    zero_fraction(w, fraction)
    removed = dense - nnz(w)
    after = score(model, input_shape=CIFAR_INPUT, rules=rules, bits=16)
    rows_b, rows_a = weighted_rows(before), weighted_rows(after)
    others = {m: (rows_a[m]["param_bits"] - r["param_bits"], rows_a[m]["mults"] - r["mults"])
              for m, r in rows_b.items() if m != layer}
    gained_mask = rows_a[layer]["mask_bits"] - rows_b[layer]["mask_bits"]
    return _delta(before, after), others, removed, hw, gained_mask


def test_kaist_scored_twice() -> None:
    # layers.5.conv1: 1×1 conv 48→144 (6,912 weights) on a 16×16 map; zero 3/4 of it.
    d, others, removed, hw, gained_mask = _team_delta("kaist_v1", "kaist2019", "layers.5.conv1", 0.75)
    assert (removed, hw) == (5_184, 16 * 16)
    # kaist2019 (team_scores.md §2.2): mults = adds = nnz·H·W per conv, params nnz + C_out at 16 bits (the
    # freebie), the bitmask is on every tensor already (mask unchanged), flops = adds + mults/2.
    assert gained_mask == 0
    assert d["param_bits"] == -removed * 16
    assert d["mults"] == d["adds"] == -removed * hw
    assert d["ops"] == pytest.approx(-removed * hw * 1.5, abs=1e-6)
    assert all(v == (0.0, 0.0) for v in others.values())


def test_osi_scored_twice() -> None:
    # _blocks.6._expand_conv: 1×1 conv 64→384 (24,576 weights) on the 15×15 map; zero 3/4 of it.
    d, others, removed, hw, gained_mask = _team_delta("osi_ai", "osi_ai2019", "_blocks.6._expand_conv", 0.75)
    assert (removed, hw) == (18_432, 15 * 15)
    # osi_ai2019 = official arithmetic: 16-bit nonzeros plus a 24,576-bit mask once the tensor is sparse;
    # mults and adds (n − 1 per output, n = nnz / C_out) both drop by Δnnz·H·W; ops = mults/2 + adds.
    assert gained_mask == 24_576
    assert d["param_bits"] == -removed * 16 + 24_576
    assert d["mults"] == pytest.approx(-removed * hw, abs=1e-6)
    assert d["adds"] == pytest.approx(-removed * hw, abs=1e-6)
    assert d["ops"] == pytest.approx(-removed * hw * 1.5, abs=1e-6)
    assert all(v == (0.0, 0.0) for v in others.values())


# ============================================ 5. team models counted from their own layers, not the tables
@pytest.fixture(scope="module")
def pruned70() -> dict[str, tuple[nn.Module, Report, dict]]:
    """KAIST ver1 and OSI with every conv / linear weight magnitude-pruned to 70% (not the published 60% /
    64%), scored under the team's rules with the freebie: {name: (model, report, io shapes)}."""
    out = {}
    for name, rules in (("kaist_v1", "kaist2019"), ("osi_ai", "osi_ai2019")):
        torch.manual_seed(0)
        model = build_reference(name)
        prune_smallest_(model, 0.7)
        shapes = io_shapes(model, torch.randn(*CIFAR_INPUT))
        out[name] = (model, score(model, input_shape=CIFAR_INPUT, rules=rules, bits=16), shapes)
    return out


def _ran_layers(model: nn.Module, shapes: dict) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, WEIGHTED) and n in shapes}


@pytest.mark.parametrize("name", ["kaist_v1", "osi_ai"])
def test_pruned70_not_the_published_table(pruned70: dict, name: str) -> None:
    model, _, shapes = pruned70[name]
    published = nonzero_counts(name)
    layers = _ran_layers(model, shapes)
    differ = [n for n, m in layers.items() if nnz(m.weight) != published[n + ".weight"]]
    assert len(differ) == len(layers)  # every layer is counted away from the table


def test_kaist_pruned70_per_layer(pruned70: dict) -> None:
    """kaist2019 (team_scores.md §2.2 count_hooks): conv mults = adds = nnz·H_out·W_out, params nnz + C_out;
    Linear mults = nnz, adds = (in − 1)·out·d = nnz·(in − 1)/in, params nnz(weight) + nnz(bias); every tensor
    pays its numel-bit mask; values at 16 bits."""
    model, report, shapes = pruned70["kaist_v1"]
    rows = weighted_rows(report)
    layers = _ran_layers(model, shapes)
    assert set(rows) == set(layers) and len(rows) == 16 * 5 + 4 + 1 + 1  # 16 blocks, 4 shortcuts, stem, fc
    for n, m in layers.items():
        k, hw, row = nnz(m.weight), spatial(shapes[n][1]), rows[n]
        if isinstance(m, nn.Conv2d):
            expect = (k * hw, k * hw, (k + m.out_channels) * 16 + m.weight.numel())
        else:
            expect = (k, k * (m.in_features - 1) / m.in_features, (k + nnz(m.bias)) * 16 + m.weight.numel())
        got = (row["mults"], row["adds"], row["param_bits"])
        assert got == pytest.approx(expect, rel=1e-12), n


def test_osi_pruned70_per_layer(pruned70: dict) -> None:
    """osi_ai2019 (official arithmetic, official_rules.md §2.2/§4.2): mults = nnz·H·W, adds = (nnz − C_out)·H·W
    plus C_out·H·W for a bias, params nnz + bias at 16 bits plus the numel-bit mask of a sparse tensor."""
    model, report, shapes = pruned70["osi_ai"]
    rows = weighted_rows(report)
    layers = _ran_layers(model, shapes)
    assert set(rows) == set(layers) and not any(n.startswith("_exit") for n in rows)  # no exit path scored
    for n, m in layers.items():
        k, hw, row = nnz(m.weight), spatial(shapes[n][1]), rows[n]
        c_out = m.weight.shape[0]
        bias = 0 if m.bias is None else m.bias.numel()
        expect = (k * hw, (k - c_out) * hw + bias * hw, (k + bias) * 16 + m.weight.numel())
        assert (row["mults"], row["adds"], row["param_bits"]) == pytest.approx(expect, rel=1e-12), n


def dense_mults(m: nn.Module, out_shape: tuple[int, ...]) -> int:
    """C_out·C_in/g·kh·kw·H_out·W_out for a conv, in·out for a linear."""
    if isinstance(m, nn.Conv2d):
        return m.out_channels * m.in_channels // m.groups * math.prod(m.kernel_size) * spatial(out_shape)
    return m.in_features * m.out_features


@pytest.mark.parametrize(("name", "rules"), [("kaist_v1", "kaist2019"), ("osi_ai", "osi_ai2019")])
def test_dense_team_models_from_shapes(name: str, rules: str) -> None:
    model = build_reference(name)
    shapes = io_shapes(model, torch.randn(*CIFAR_INPUT))
    layers = _ran_layers(model, shapes)
    for rule_set in (rules, "micronet2019"):
        rows = weighted_rows(score(model, input_shape=CIFAR_INPUT, rules=rule_set, sparsity="uniform:0"))
        assert set(rows) == set(layers)
        for n, m in layers.items():
            assert rows[n]["mults"] == dense_mults(m, shapes[n][1]), (rule_set, n)
    # micronet2019, dense, 32-bit: every parameter the forward uses, each BatchNorm folded into the conv before
    # it as a C-channel bias (its γ folds into the weights): Σ numel − Σ C_bn. OSI's exit head does not run.
    used = {n: p for n, p in model.named_parameters() if not n.startswith("_exit.")}
    bn_channels = sum(m.num_features for n, m in model.named_modules()
                      if isinstance(m, nn.BatchNorm2d) and not n.startswith("_exit."))
    expect_params = sum(p.numel() for p in used.values()) - bn_channels
    report = score(model, input_shape=CIFAR_INPUT, rules="micronet2019", sparsity="uniform:0")
    assert report.totals["params"] == expect_params
    if name == "kaist_v1":
        # kaist2019 with the freebie (§2.2 score): params = Σ(numel + C_out)/2 over convs + (numel + bias)/2
        # for the linear + Σ numel/32 bitmask over every tensor of ndim > 1.
        convs = [m for m in layers.values() if isinstance(m, nn.Conv2d)]
        count = sum(m.weight.numel() + m.out_channels for m in convs) + model.linear.weight.numel() + 100
        mask = sum(m.weight.numel() for m in layers.values())
        t = score(model, input_shape=CIFAR_INPUT, rules="kaist2019", bits=16, sparsity="uniform:0").totals
        assert t["params"] == count / 2 + mask / 32


# ====================================================== 6. channel widths, kernels, strides vs the spec
# team_scores.md §2.1 OSI layer list: idx -> (in H×W, k, s, e, in ch, expanded, out ch, SE width).
OSI_LAYERS = [
    (31, 3, 1, 1, 24, 24, 16, 4), (31, 3, 1, 6, 16, 96, 24, 3), (31, 3, 2, 6, 24, 144, 40, 4),
    (15, 3, 1, 6, 40, 240, 40, 8), (15, 3, 1, 6, 40, 240, 48, 8), (15, 3, 1, 6, 48, 288, 64, 9),
    (15, 3, 1, 6, 64, 384, 64, 12), (15, 3, 2, 6, 64, 384, 80, 12), (7, 3, 1, 6, 80, 480, 80, 16),
    (7, 3, 1, 6, 80, 480, 96, 16),
]


def conv_spec(m: nn.Conv2d) -> tuple[int, int, int, int, int]:
    """(in, out, kernel, stride, groups) of a square conv."""
    assert m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
    return m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups


def test_osi_layers_match_spec_table() -> None:
    model = build_reference("osi_ai")
    shapes = io_shapes(model, torch.randn(*CIFAR_INPUT))
    expected: dict[str, tuple[int, int, int, int, int]] = {"_conv_stem": (3, 24, 3, 2, 1)}  # stem 3→24, k3 s2
    for i, (hw, k, s, e, cin, hidden, cout, se) in enumerate(OSI_LAYERS):
        b = f"_blocks.{i}"
        if e != 1:  # expand 1×1 only when e ≠ 1
            expected[f"{b}._expand_conv"] = (cin, hidden, 1, 1, 1)
        expected[f"{b}._conv"] = (hidden, hidden, k, s, hidden)  # depthwise
        expected[f"{b}._se_reduce"] = (hidden, se, 1, 1, 1)  # SE on the expanded channels
        expected[f"{b}._se_expand"] = (se, hidden, 1, 1, 1)
        expected[f"{b}._project_conv"] = (hidden, cout, 1, 1, 1)
        first = f"{b}._expand_conv" if e != 1 else f"{b}._conv"
        assert shapes[first][0][2:] == (hw, hw), b  # the table's "in H×W" (63 → 31 → 15 → 7)
    expected["_conv_head"] = (96, 136, 1, 1, 1)  # head 96→136, on 7×7
    # early exit (§2.1): depthwise 3×3 on 48 channels, 1×1 48→136, 1×1 136→100 (the FC)
    expected.update({"_exit._depthwise_conv": (48, 48, 3, 1, 48), "_exit._expand_conv": (48, 136, 1, 1, 1),
                     "_exit._fc": (136, 100, 1, 1, 1)})
    convs = {n: conv_spec(m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs == expected
    assert shapes["_conv_head"][0][2:] == (7, 7)
    assert (model._fc.in_features, model._fc.out_features) == (136, 100)  # GAP + FC 136→100 with bias
    assert model._fc.bias is not None
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] == ["_fc"]


# team_scores.md §2.2 block lists: (in, out, planes, stride, shortcut conv); stem 3→32; FC last→100.
KAIST_BLOCKS = {
    "kaist_v1": [(32, 16, 96, 1, True), (16, 16, 48, 1, False), (16, 32, 48, 2, False), (32, 32, 96, 1, False),
                 (32, 48, 96, 1, True), *[(48, 48, 144, 1, False)] * 2, (48, 72, 144, 2, False),
                 *[(72, 72, 216, 1, False)] * 4, (72, 80, 216, 2, False), (80, 88, 240, 1, True),
                 (88, 88, 264, 1, False), (88, 106, 264, 1, True)],
    "kaist_v2": [(32, 20, 80, 1, True), (20, 20, 50, 1, False), (20, 36, 50, 2, False), (36, 36, 90, 1, False),
                 (36, 56, 90, 1, True), *[(56, 56, 140, 1, False)] * 2, (56, 80, 140, 2, False),
                 *[(80, 80, 200, 1, False)] * 4, (80, 88, 200, 2, False), (88, 96, 220, 1, True),
                 (96, 96, 240, 1, False), (96, 114, 240, 1, True)],
}


@pytest.mark.parametrize("name", list(KAIST_BLOCKS))
def test_kaist_layers_match_spec_table(name: str) -> None:
    model = build_reference(name)
    shapes = io_shapes(model, torch.randn(*CIFAR_INPUT))
    blocks = KAIST_BLOCKS[name]
    assert len(blocks) == 16
    expected = {"conv1": (3, 32, 3, 1, 1)}  # stem Conv3×3 s1 p1, 3→32
    for i, (cin, cout, planes, s, sc) in enumerate(blocks):
        b = f"layers.{i}"
        expected[f"{b}.conv1"] = (cin, planes, 1, 1, 1)
        expected[f"{b}.conv2"] = (planes, planes, 3, s, planes)  # depthwise 3×3 (not 2), stride s
        expected[f"{b}.conv3"] = (planes, cout, 1, 1, 1)
        expected[f"{b}.fc1"] = (cout, int(cout * 0.25), 1, 1, 1)  # SE on the block output: int(out·0.25)
        expected[f"{b}.fc2"] = (int(cout * 0.25), cout, 1, 1, 1)
        if sc:
            expected[f"{b}.shortcut.0"] = (cin, cout, 1, 1, 1)
    convs = {n: conv_spec(m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs == expected
    # spatial sizes 32 → 16 (block 2) → 8 (block 7) → 4 (block 12)
    out_hw = [shapes[f"layers.{i}.conv2"][1][2] for i in range(16)]
    assert out_hw == [32] * 2 + [16] * 5 + [8] * 5 + [4] * 4
    assert (model.linear.in_features, model.linear.out_features) == (blocks[-1][1], 100)
