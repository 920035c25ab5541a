"""Activation memory (scorer/memory.py): per-op output storage, live activations per step, MTAS.

MTAS is named by the scoring page as a future metric without a formula (official_rules.md §7); the expected
numbers below follow scorer/memory.py's definitions, written as arithmetic on hand-counted elements per example
(a tensor is live from its producer to its last consumer; the model input from step 0 to its last reader;
views alias their source; 32-bit activations unless bits=16).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from scorer import score
from scorer.report import TOTAL_KEYS


def conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class Chain(nn.Module):
    """1x3x8x8 -> conv 3->8 -> relu -> conv 8->4 (8x8 spatial throughout)."""

    def __init__(self):
        super().__init__()
        self.c1, self.act, self.c2 = conv(3, 8), nn.ReLU(), conv(8, 4)

    def forward(self, x):
        return self.c2(self.act(self.c1(x)))


# elements per example: input 3*8*8, c1 8*8*8, relu 8*8*8, c2 4*8*8
X, C1, R, C2 = 3 * 64, 8 * 64, 8 * 64, 4 * 64


def rows(rep) -> dict[str, dict]:
    return {r["module"] or r["name"]: r for r in rep.layers.to_dict(orient="records")}


def test_chain() -> None:
    rep = score(Chain(), input_shape=(1, 3, 8, 8))
    by = rows(rep)
    assert [by[m]["act_bits_out"] for m in ("c1", "act", "c2")] == [C1 * 32, R * 32, C2 * 32]
    # step 0: input + c1 out; step 1: c1 out + relu out (input dead); step 2: relu out + c2 out
    assert [by[m]["act_bits_live"] for m in ("c1", "act", "c2")] == [(X + C1) * 32, (C1 + R) * 32, (R + C2) * 32]
    assert [by[m]["act_bits_op"] for m in ("c1", "act", "c2")] == [(X + C1) * 32, (C1 + R) * 32, (R + C2) * 32]
    assert rep.totals["mtas_bits"] == (C1 + R) * 32 == 1024 * 32
    assert rep.totals["peak_op_activation_bits"] == (C1 + R) * 32


def test_per_example_at_batch_two() -> None:
    """Sizes are per example, like every count (Op.out_numel divides by the batch)."""
    assert score(Chain(), input_shape=(2, 3, 8, 8)).totals["mtas_bits"] == (C1 + R) * 32


def test_bits_16_halves() -> None:
    """bits=16: activations (and the input) at 16 bits."""
    rep = score(Chain(), input_shape=(1, 3, 8, 8), bits=16)
    assert rep.totals["mtas_bits"] == (C1 + R) * 16
    assert rows(rep)["c1"]["act_bits_out"] == C1 * 16


def test_precision_config_act_bits_per_layer() -> None:
    """A per-layer act width sizes that layer's output: c1 at 8 bits, the rest at 32."""
    rep = score(Chain(), input_shape=(1, 3, 8, 8), precision={"layers": {"c1": {"act": 8}}})
    by = rows(rep)
    assert by["c1"]["act_bits_live"] == X * 32 + C1 * 8  # the input at the default width
    # a relu holds only values of its input, so it keeps the input's width (scorer/precision.py)
    assert by["act"]["act_bits_live"] == C1 * 8 + R * 8
    assert by["c2"]["act_bits_live"] == R * 8 + C2 * 32


class Residual(nn.Module):
    """stem 4->4, then a branch 4->16 -> relu -> 16->4 added to the stem's output (the skip), 4x4 spatial."""

    def __init__(self):
        super().__init__()
        self.stem, self.c1, self.act, self.c2 = conv(4, 4), conv(4, 16), nn.ReLU(), conv(16, 4)

    def forward(self, x):
        s = self.stem(x)
        return self.c2(self.act(self.c1(s))) + s


def test_residual_skip_stays_live() -> None:
    rep = score(Residual(), input_shape=(1, 4, 4, 4))
    x, s, y, z, w, o = 4 * 16, 4 * 16, 16 * 16, 16 * 16, 4 * 16, 4 * 16
    live = [r["act_bits_live"] for r in rep.layers.to_dict(orient="records")]
    assert list(rep.layers["kind"]) == ["conv", "conv", "act:relu", "conv", "add"]
    assert live == [(x + s) * 32, (s + y) * 32, (s + y + z) * 32, (s + z + w) * 32, (s + w + o) * 32]
    assert rep.totals["mtas_bits"] == (s + y + z) * 32 == 576 * 32
    # the skip s is held across the branch: the relu alone needs y + z
    assert rep.totals["peak_op_activation_bits"] == (y + z) * 32 == 512 * 32


class Concat(nn.Module):
    """a = conv 4->4 (x), b = conv 4->8 (x), c = cat(a, b), out = conv 12->4 (c); 4x4 spatial."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = conv(4, 4), conv(4, 8), conv(12, 4)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


def test_concat_inputs_live_until_cat() -> None:
    rep = score(Concat(), input_shape=(1, 4, 4, 4))
    x, a, b, c, o = 4 * 16, 4 * 16, 8 * 16, 12 * 16, 4 * 16
    recs = rep.layers.to_dict(orient="records")
    assert [r["kind"] for r in recs] == ["conv", "conv", "free", "conv"]
    assert [r["act_bits_live"] for r in recs] == [(x + a) * 32, (x + a + b) * 32, (a + b + c) * 32, (c + o) * 32]
    assert recs[2]["act_bits_out"] == c * 32  # a concatenation writes a new tensor
    assert rep.totals["mtas_bits"] == (a + b + c) * 32 == 384 * 32


class Views(nn.Module):
    """1x1x4x4 -> conv 1->4 -> view(1, 64) -> unsqueeze -> flatten -> linear 64->10."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = conv(1, 4), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x).view(1, 64).unsqueeze(1), 1))


def test_view_chain_is_not_double_counted() -> None:
    rep = score(Views(), input_shape=(1, 1, 4, 4))
    x, c, o = 16, 4 * 16, 10
    recs = rep.layers.to_dict(orient="records")
    assert [r["kind"] for r in recs] == ["conv", "free", "free", "free", "linear"]
    assert [r["act_bits_out"] for r in recs] == [c * 32, 0, 0, 0, o * 32]
    assert [r["act_bits_live"] for r in recs] == [(x + c) * 32, c * 32, c * 32, c * 32, (c + o) * 32]
    assert rep.totals["mtas_bits"] == (x + c) * 32 == 80 * 32  # not 2 * c * 32 at a view step


def test_padding_materialises() -> None:
    """A pad grows its input: a new tensor (1x1x4x4 -> 1x1x6x6), not an alias."""
    rep = score(nn.Sequential(nn.ZeroPad2d(1), nn.ReLU()), input_shape=(1, 1, 4, 4))
    assert list(rep.layers["act_bits_out"]) == [36 * 32, 36 * 32]
    assert rep.totals["mtas_bits"] == (36 + 36) * 32


class TwoPaths(nn.Module):
    """Early exit: a small path (linear 8->2) and a large one (linear 8->64 -> linear 64->2)."""

    def __init__(self):
        super().__init__()
        self.small, self.big = nn.Linear(8, 2), nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 2))

    def forward(self, x):
        return self.big(x)

    def exit_paths(self):
        return {"exit": self.small, "final": self.big}


def test_weighted_paths_take_the_max_not_the_weighted_mean() -> None:
    rep = score(TwoPaths(), input_shape=(1, 8), exit_fractions={"exit": 0.9, "final": 0.1})
    # final path, step 1: 64 + 2; step 0: 8 + 64. Largest: 8 + 64 = 72 (unweighted by the 0.1).
    assert rep.totals["mtas_bits"] == (8 + 64) * 32


def test_totals_keys_and_json() -> None:
    rep = score(Chain(), input_shape=(1, 3, 8, 8))
    assert {"mtas_bits", "peak_op_activation_bits"} <= set(TOTAL_KEYS) == set(rep.totals)
    data = json.loads(rep.to_json())
    assert data["totals"]["mtas_bits"] == (C1 + R) * 32
    assert {"act_bits_out", "act_bits_op", "act_bits_live"} <= set(data["layers"][0])


def test_by_depth_sums_writes_and_takes_max_live() -> None:
    """Grouped rows: act_bits_out summed (what the module writes), act_bits_op/live the module's max."""
    rep = score(Residual(), input_shape=(1, 4, 4, 4))
    s, y, z, w, o = 4 * 16, 16 * 16, 16 * 16, 4 * 16, 4 * 16
    top = rep.by_depth(0)  # two groups: the layers under "" and the top-level add ("<top>")
    assert top["act_bits_out"].sum() == (s + y + z + w + o) * 32
    assert top["act_bits_live"].max() == rep.totals["mtas_bits"]
    assert top["act_bits_op"].max() == rep.totals["peak_op_activation_bits"]
    act = rep.by_depth(1).set_index("module").loc["act"]
    assert (act["act_bits_out"], act["act_bits_live"]) == (z * 32, (s + y + z) * 32)


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_cli_shows_mtas(tmp_path, capsys, fmt) -> None:
    from scorer.cli import main
    from tests.conftest import TINY_MODEL_SRC

    src = tmp_path / "tiny_mtas.py"
    src.write_text(TINY_MODEL_SRC)
    assert main([f"{src}:build", "--input-shape", "1,3,32,32", "--format", fmt]) == 0
    out = capsys.readouterr().out
    # Tiny: input 3*32*32, conv out 2*16*16 (step 0 holds both), flatten aliases it, fc out 10
    mtas = (3 * 32 * 32 + 2 * 16 * 16) * 32
    if fmt == "json":
        assert json.loads(out)["totals"]["mtas_bits"] == mtas
    else:
        cells = {tuple(c.strip() for c in line.strip("|").split("|")) for line in out.splitlines()}
        assert ("mtas_bits", f"{mtas:,}") in cells


@pytest.mark.parametrize("capture", ["export", "dispatch"])
def test_same_on_every_capture(capture) -> None:
    """The aten-level captures see the same tensors: the same numbers as the fx capture's hand arithmetic."""
    assert score(Residual(), input_shape=(1, 4, 4, 4), capture=capture).totals["mtas_bits"] == 576 * 32
    assert score(Concat(), input_shape=(1, 4, 4, 4), capture=capture).totals["mtas_bits"] == 384 * 32
    assert score(Views(), input_shape=(1, 1, 4, 4), capture=capture).totals["mtas_bits"] == 80 * 32


def test_resnet18_peak_is_the_stem() -> None:
    """ResNet-18 at 224x224: the largest step is the stem BN, holding conv1's 64x112x112 output and its own
    (the 3x224x224 input is dead after conv1; every later tensor is at most 64x56x56)."""
    from reference_models.registry import build_reference

    rep = score(build_reference("resnet18"), input_shape=(1, 3, 224, 224), track="imagenet")
    assert rep.totals["mtas_bits"] == 2 * 64 * 112 * 112 * 32


class InputSkip(nn.Module):
    """relu(conv 4->4 (x)) + x: the model's input is read again at the end."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = conv(4, 4), nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)) + x


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_model_input_lives_until_its_last_reader(capture) -> None:
    rep = score(InputSkip(), input_shape=(1, 4, 4, 4), capture=capture)
    x = c = r = o = 4 * 16
    live = list(rep.layers["act_bits_live"])
    assert live == [(x + c) * 32, (x + c + r) * 32, (x + r + o) * 32]


class AddsConstants(nn.Module):
    def forward(self, x):
        return x + torch.arange(4.0) + torch.tensor([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_constants_are_not_activations(capture) -> None:
    """Tensors made from sizes or data (arange, a literal) are constants: a capture recording them as ops
    (export, dispatch) and one folding them (fx) give the same memory."""
    rep = score(AddsConstants(), input_shape=(1, 4), capture=capture)
    # step 1: x + 4 out; step 2: that + 4 out (x dead)
    assert rep.totals["mtas_bits"] == (4 + 4) * 32


class SizeOnly(nn.Module):
    """Three Linears 4->4->4->64 plus a (1, 64) zeros tensor made from x's size or type only."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.c1, self.c2, self.c3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 64)

    def forward(self, x):
        z = torch.zeros_like(x).repeat(1, 16) if self.how == "zeros_like" else x.new_zeros(1, 64)
        return self.c3(self.c2(self.c1(x))) + z


@pytest.mark.parametrize("how", ["zeros_like", "new_zeros"])
@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_tensor_made_from_a_size_is_a_constant(how, capture) -> None:
    """zeros_like(x) and x.new_zeros(n) read x's size and type, not its values: constants, holding nothing."""
    rep = score(SizeOnly(how), input_shape=(1, 4), capture=capture)
    # steps: c1 x 4 + 4; c2 4 + 4; c3 4 + 64; add 64 + 64 (x dead after c1; the zeros are no storage)
    assert rep.totals["mtas_bits"] == (64 + 64) * 32
    assert rep.totals["peak_op_activation_bits"] == (64 + 64) * 32


class ShapeFrom(nn.Module):
    """a = Linear 4->16 (x); b = Linear 4->16 (x) viewed 1x4x4; a reshaped to b's shape; Linear 16->2 after."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.b, self.c = nn.Linear(4, 16), nn.Linear(4, 16), nn.Linear(16, 2)

    def forward(self, x):
        a, b = self.a(x), self.b(x).view(1, 4, 4)
        v = a.view_as(b) if self.how == "view_as" else a.reshape_as(b) if self.how == "reshape_as" else a.view(1, 4, 4)
        return self.c(v.flatten(1))


@pytest.mark.parametrize("how", ["view", "view_as", "reshape_as"])
@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_shape_read_from_another_tensor_does_not_read_it(how, capture) -> None:
    """``a.view_as(b)`` is a view of a: b's shape is read, not b (which is dead after its own view)."""
    live = list(score(ShapeFrom(how), input_shape=(1, 4), capture=capture).layers["act_bits_live"])
    # a: x 4 + a 16; b: x + a + b 16; b.view (alias of b): a + b; a's view and flatten: a; c: a + 2
    assert live == [v * 32 for v in (20, 36, 32, 16, 16, 18)]


class Gathers(nn.Module):
    """gather from a 4-wide activation by a constant (1, 100) index: a new 100-element tensor."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(100, 2)

    def forward(self, x):
        idx = torch.arange(4).repeat(25).view(1, 100)
        return self.b(torch.gather(self.a(x), 1, idx))


class Rejoins(nn.Module):
    """cat of the two halves of one tensor: a new tensor, although both inputs are views of one storage."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        y = self.a(x)
        return self.b(torch.cat([y[:, 4:], y[:, :4]], dim=1))


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_writes_larger_than_a_view(capture) -> None:
    """A gather by a bigger constant index, and a concatenation of two views of one tensor, write new storage."""
    rep = score(Gathers(), input_shape=(1, 4), capture=capture)
    # a: x 4 + a 4; gather: a + 100; b: 100 + 2
    assert rep.totals["mtas_bits"] == 104 * 32
    assert max(rep.layers["act_bits_out"]) == 100 * 32
    rep = score(Rejoins(), input_shape=(1, 4), capture=capture)
    # a: x 4 + y 8; the halves are views of y; cat: y + 8; b: 8 + 2
    assert rep.totals["mtas_bits"] == 16 * 32
    assert sorted(rep.layers["act_bits_out"])[-2:] == [8 * 32, 8 * 32]


class Grows(nn.Module):
    """A view of the last step grown to every step (``expand_as``, or ``expand``), and a view of two columns
    gathered by a 6-column index the forward makes: each a new tensor, larger than what it reads."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.fc = how, nn.Linear(2, 2)

    def forward(self, x):  # x (1, 3, 2)
        h = self.fc(x)
        if self.how == "expand_as":
            g = h[:, -1:].expand_as(h)
        elif self.how == "expand":
            g = h[:, -1:].expand(-1, 3, -1)
        else:
            g = h[:, :, :1].flatten(1)[:, torch.tensor([0, 1, 2, 0, 1, 2])].view(1, 3, 2)
        return torch.cat([h, g], -1)


@pytest.mark.parametrize("how", ["expand_as", "expand", "index"])
@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_view_grown_beyond_what_it_reads_writes(how, capture) -> None:
    """``v.expand_as(h)`` reads v (2 elements), not h: it writes 6, as ``expand`` does; a gather by a 6-element
    index made in the forward (a constant, not read) from a 3-element view writes 6."""
    rep = score(Grows(how), input_shape=(1, 3, 2), capture=capture)
    # fc: x 6 + h 6; the grown tensor: h (its source, held for the cat) + 6; cat: h + g + 12
    assert sorted(rep.layers["act_bits_out"])[-3:] == [6 * 32, 6 * 32, 12 * 32]
    assert rep.totals["mtas_bits"] == 24 * 32


class Accumulates(nn.Module):
    """A tensor changed in place and read again by its old name: an accumulator made from a size, a layer's
    output through an in-place ReLU module, ``F.relu(inplace=True)`` and ``torch.sigmoid_``."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.fc, self.act, self.head = how, nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 16)

    def forward(self, x):  # x (1, 4)
        if self.how == "accumulator":
            y = x.new_zeros(x.shape[0], 4)
            y.add_(self.fc(x))
        else:
            y = self.fc(x)
            if self.how == "module":
                self.act(y)
            else:
                torch.nn.functional.relu(y, inplace=True)
                torch.sigmoid_(y)
        return self.head(y)


@pytest.mark.parametrize("how", ["accumulator", "module", "functions"])
@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_tensor_changed_in_place_is_read_as_changed(how, capture) -> None:
    """The head reads the changed tensor (an activation: 4), not the constant or value it was made as; in-place
    calls write a new tensor each (an upper bound, scorer.memory). head: 4 + 16 = 20."""
    rep = score(Accumulates(how), input_shape=(1, 4), capture=capture)
    head = rep.layers[rep.layers["module"] == "head"].iloc[0]
    assert (head["act_bits_out"], head["act_bits_op"]) == (16 * 32, 20 * 32)
    assert rep.totals["mtas_bits"] == 20 * 32


class FillsSteps(nn.Module):
    """A decoder loop writing each step into a tensor made from sizes (``out[:, t] = h``, ``out[:, t].copy_(h)``,
    ``out.narrow(1, t, 1).copy_(...)``), then a head reading it; or the steps stacked."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.fc, self.head = how, nn.Linear(2, 2), nn.Linear(2, 3)

    def forward(self, x):  # x (1, 2, 2)
        if self.how == "stack":
            return self.head(torch.stack([torch.tanh(self.fc(x[:, t])) for t in range(2)], 1))
        out = x.new_zeros(1, 2, 2)
        for t in range(2):
            h = torch.tanh(self.fc(x[:, t]))
            if self.how == "setitem":
                out[:, t] = h
            elif self.how == "copy":
                out[:, t].copy_(h)
            else:
                out.narrow(1, t, 1).copy_(h.unsqueeze(1))
        return self.head(out)


@pytest.mark.parametrize("how", ["setitem", "copy", "narrow"])
@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_writes_into_a_view_change_the_whole_tensor(how, capture) -> None:
    """The head reads the filled tensor (4), not the zeros it was made as; each write leaves it changed as a whole
    (a new 4-element tensor, as every in-place call counts). head: 4 + 6; first write: x 4 + h 2 + 4. Stacking the
    steps instead gives the same MTAS."""
    if capture == "fx" and how == "setitem":
        pytest.skip("fx cannot trace item assignment (auto falls back to export)")
    rep = score(FillsSteps(how), input_shape=(1, 2, 2), capture=capture)
    head = rep.layers[rep.layers["module"] == "head"].iloc[0]
    assert (head["act_bits_out"], head["act_bits_op"]) == (6 * 32, 10 * 32)
    assert rep.totals["mtas_bits"] == 10 * 32
    assert rep.totals["mtas_bits"] == score(FillsSteps("stack"), input_shape=(1, 2, 2), capture=capture).totals["mtas_bits"]


class QuantTimesMadeFromIt(nn.Module):
    """An 8-bit fake-quantised y times ones_like(y) and times a buffer expanded to y's shape."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 8)
        self.register_buffer("b", torch.ones(1, 8))

    def forward(self, x):
        y = torch.fake_quantize_per_tensor_affine(self.l(x), 0.1, 0, -128, 127)
        return y * torch.ones_like(y) + y * self.b.expand_as(y)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_size_only_reads_keep_widths(capture) -> None:
    """ones_like(y) and b.expand_as(y) hold none of y live, but their widths still follow y (8 bits): both
    products multiply at 8 bits on every capture."""
    rep = score(QuantTimesMadeFromIt().eval(), input_shape=(2, 8), capture=capture)
    assert list(rep.layers[rep.layers["kind"] == "mul"]["mul_bits"]) == [8, 8]


class ExpandsToOther(nn.Module):
    """``src.expand_as(y)`` (``as_other``) or the same written with y's sizes, ``src.expand(y.shape)``; ``src`` is
    the model's first input (``quantised``: a 4-bit fake-quantised slice of the second), then multiplied by y or
    by a 4-bit-weight layer."""

    def __init__(self, as_other: bool, quantised: bool = False):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 4, bias=False)
        self.as_other, self.quantised = as_other, quantised

    def forward(self, m, x):
        y = self.fc(x)
        src = torch.fake_quantize_per_tensor_affine(x[:1], 0.5, 0, -8, 7) if self.quantised else m
        e = src.expand_as(y) if self.as_other else src.expand(y.shape)
        return self.head(e) if self.quantised else y * e


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_expand_as_reads_only_its_own_tensor(capture) -> None:
    """m (1x4, a model input) expanded to y's 8x4 writes 32 new elements; y's size alone is read. Expand: inputs
    (4 + 32) + y 32 + its own 32 live; mul: y + e + out. The same as ``m.expand(y.shape)``, on every capture."""
    shapes = [(1, 4), (8, 4)]
    rep = score(ExpandsToOther(as_other=True), input_shape=shapes, capture=capture)
    expand = rep.layers[rep.layers["kind"] == "free"].iloc[0]
    assert (expand["act_bits_out"], expand["act_bits_live"]) == (32 * 32, (36 + 32 + 32) * 32)
    assert rep.totals["peak_op_activation_bits"] == 3 * 32 * 32
    assert rep.totals["mtas_bits"] == (36 + 32 + 32) * 32
    written = score(ExpandsToOther(as_other=False), input_shape=shapes, capture=capture)
    cols = ["kind", "act_bits_out", "act_bits_op", "act_bits_live"]
    assert rep.layers[cols].values.tolist() == written.layers[cols].values.tolist()


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_expand_as_keeps_its_own_tensors_width(capture) -> None:
    """A 4-bit tensor expanded to the size of a 32-bit y stays 4-bit: the 4-bit-weight head multiplies at 4 bits,
    as for ``expand(y.shape)`` (y's width is not the expanded values')."""
    precision = {"default": {"weight": 4, "act": 32, "acc": 32}}
    shapes = [(1, 4), (8, 4)]
    for as_other in (True, False):
        rep = score(ExpandsToOther(as_other, quantised=True), input_shape=shapes, capture=capture,
                    precision=precision)
        assert rep.layers.iloc[-1]["mul_bits"] == 4, as_other


class ScaleExpandedToOther(nn.Module):
    """A per-channel scale parameter ``p`` expanded to y's size (``p.expand_as(y)``, or ``p.expand(y.shape)``) and
    multiplied by y."""

    def __init__(self, as_other: bool):
        super().__init__()
        self.fc, self.p, self.as_other = nn.Linear(4, 4), nn.Parameter(torch.randn(1, 4)), as_other

    def forward(self, x):
        y = self.fc(x)
        return y * (self.p.expand_as(y) if self.as_other else self.p.expand(y.shape))


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_parameter_expanded_to_another_size_keeps_its_width(capture) -> None:
    """``p.expand_as(y)`` is still the 32-bit parameter p, not a value of y's 4-bit width: y * p multiplies 8 x 4 = 32
    elements at max(4, 32) = 32 bits, as for ``p.expand(y.shape)``; p stored once (4 of 24 + 4 parameters)."""
    precision = {"default": {"weight": 32, "act": 4, "acc": 32}}
    for as_other in (True, False):
        rep = score(ScaleExpandedToOther(as_other), input_shape=(8, 4), capture=capture, precision=precision)
        mul = rep.layers[rep.layers["kind"] == "mul"].iloc[0]
        assert (mul["mul_bits"], mul["mults"] * 8) == (32, 32), as_other
        assert rep.totals["params"] == 16 + 4 + 4, as_other


class WritesIntoAnItem(nn.Module):
    """y (1x4x8) split into pieces (chunk, split or unbind), one piece doubled in place, the pieces joined again."""

    def __init__(self, how: str):
        super().__init__()
        self.fc, self.how = nn.Linear(8, 8), how

    def forward(self, x):
        y = self.fc(x)
        if self.how == "unbind":
            rows = y.unbind(1)
            rows[0].mul_(2.0)
            return torch.stack(rows, 1)
        a, b = y.chunk(2, -1) if self.how == "chunk" else torch.split(y, [4, 4], -1)
        a.mul_(2.0)
        return torch.cat([a, b], -1)


@pytest.mark.parametrize("how", ["chunk", "split", "unbind"])
@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_write_into_one_piece_changes_the_whole_tensor(how, capture) -> None:
    """The write into one piece (a view of y) leaves y changed as a whole: a new 32-element tensor, as every in-place
    call counts. The join reads it and the other pieces (still y's storage): y 32 + written 32 + joined 32."""
    rep = score(WritesIntoAnItem(how), input_shape=(1, 4, 8), capture=capture)
    assert rep.layers[rep.layers["kind"] == "mul"].iloc[0]["act_bits_out"] == 32 * 32
    assert rep.totals["mtas_bits"] == 3 * 32 * 32
