"""Parameter conservation: every parameter the forward reads is stored by exactly one op, or scoring stops
naming it; a parameter the forward never reads is listed in a note, not counted."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from scorer import score
from scorer.errors import ScorerError, UnknownOpError

CAPTURES = ("fx", "export", "dispatch")


class TransposedWeight(nn.Module):
    def __init__(self, form: str):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4))
        self.form = form

    def forward(self, x):
        if self.form == "t":
            return x @ self.w.t()
        if self.form == "T":
            return x @ self.w.T
        if self.form == "view":
            return x @ self.w.view(8, 4).t()
        return x @ self.w.t().contiguous()


@pytest.mark.parametrize("form", ["t", "T", "view", "plain"])
@pytest.mark.parametrize("capture", CAPTURES)
def test_weight_through_a_transpose_is_stored(capture: str, form: str) -> None:
    # x (1, 4) @ w.t() (4, 8): 32 stored weights, 8 outputs of a length-4 dot product
    rep = score(TransposedWeight(form), input_shape=(1, 4), capture=capture)
    assert rep.totals["params"] == 32
    assert (rep.totals["mults"], rep.totals["adds"]) == (8 * 4, 8 * 3)


class GateOnly(nn.Module):
    """A parameter that only feeds a sigmoid (a learned gate): the sigmoid stores it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.fc(x) * torch.sigmoid(self.gate)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_parameter_feeding_only_an_activation_is_stored_there(capture: str) -> None:
    rep = score(GateOnly(), input_shape=(1, 4), capture=capture)
    assert rep.totals["params"] == 4 * 4 + 4 + 4  # fc weight, fc bias, gate
    gate_rows = rep.layers[rep.layers["kind"] == "act:sigmoid"]
    assert gate_rows["param_bits"].sum() == 4 * 32


class UnknownWithWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.table = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return torch.logcumsumexp(self.fc(x) * 1.0, 1) + torch.logcumsumexp(self.table, 0)


def test_allow_unknown_never_drops_storage_silently() -> None:
    # an op without a rule: --allow-unknown may zero its arithmetic, never the storage of what it reads
    with pytest.raises(UnknownOpError):
        score(UnknownWithWeight(), input_shape=(1, 4))
    rep = score(UnknownWithWeight(), input_shape=(1, 4), allow_unknown=True)
    assert rep.unknown
    assert rep.totals["params"] == 4 * 4 + 4 + 4  # fc weight, fc bias, table


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize("capture", CAPTURES)
def test_an_unread_parameter_is_listed_not_counted(capture: str) -> None:
    rep = score(Unused(), input_shape=(1, 4), capture=capture)
    assert rep.totals["params"] == 20
    assert any("spare.weight" in n and "not used by the forward pass" in n for n in rep.notes)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, idx):
        return self.out(self.emb(idx))


def test_tied_weights_are_stored_once_under_fx() -> None:
    rep = score(Tied(), example_inputs=(torch.zeros(1, 3, dtype=torch.long),), capture="fx")
    assert rep.totals["params"] == 40


class ClassToken(nn.Module):
    """timm style: a learned token concatenated in front of the patch tokens, plus a position embedding."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 8, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.head((x + self.pos_embed)[:, 0])


@pytest.mark.parametrize("capture", ["export", "dispatch"])  # fx cannot trace expand(x.shape[0], ...)
def test_a_parameter_moved_by_a_free_op_is_stored_there(capture: str) -> None:
    # conv 3·16·64 + 16 = 3,088; cls token 16; position embedding 17·16 = 272; head 16·10 + 10 = 170
    rep = score(ClassToken(), input_shape=(2, 3, 32, 32), capture=capture)
    assert rep.totals["params"] == 3088 + 16 + 272 + 170


class TiedWithSpare(nn.Module):
    """A tied embedding/decoder pair plus a parameter the forward never reads."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.dec = nn.Linear(8, 50, bias=False)
        self.dec.weight = self.emb.weight
        self.spare = nn.Linear(8, 3)

    def forward(self, idx):
        return self.dec(self.emb(idx))


@pytest.mark.parametrize("capture", CAPTURES)
def test_stored_equals_unique_parameters_minus_listed_exclusions(capture: str) -> None:
    model = TiedWithSpare()
    rep = score(model, example_inputs=(torch.zeros(1, 4, dtype=torch.long),), rules="flops", capture=capture)
    unique = sum(p.numel() for p in model.parameters())  # the tied table once
    assert [e["name"] for e in rep.excluded] == ["spare.weight", "spare.bias"]
    assert {e["reason"] for e in rep.excluded} == {"not used by the forward pass"}
    assert rep.totals["params"] == unique - sum(e["numel"] for e in rep.excluded) == 50 * 8
    assert rep.to_dict()["excluded_params"] == rep.excluded
    cov = rep.coverage()
    assert cov["unsupported"].sum() == 0 and cov["counted"].sum() >= 1


class FixedProjection(nn.Module):
    """A tensor kept in a plain attribute (neither parameter nor buffer, not in the state dict) that the
    forward reads as a weight: a fixed random projection, in a submodule."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.head = nn.Module()
        self.head.proj = torch.randn(3, 6)

    def forward(self, x):
        return nn.functional.linear(self.fc(x), self.head.proj)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_plain_tensor_attribute_read_as_a_weight_is_stored_on_every_path(capture: str) -> None:
    # anything needed for inference counts as a parameter (official_rules.md §3.1)
    model = FixedProjection()
    rep = score(model, input_shape=(1, 4), capture=capture)
    assert rep.capture == capture
    assert rep.totals["params"] == 4 * 6 + 6 + 3 * 6
    assert (rep.totals["mults"], rep.totals["adds"]) == (6 * 4 + 3 * 6, 6 * 3 + 6 + 3 * 5)
    proj_rows = rep.layers[rep.layers["weight_numel"] == 3 * 6]
    assert len(proj_rows) == 1 and proj_rows["param_bits"].sum() == 3 * 6 * 32
    assert any("head.proj" in n and "neither parameters nor buffers" in n for n in rep.notes)
    model.head.proj = torch.zeros(3, 6)  # all zeros: a sparse tensor now, scored with its mask
    assert score(model, input_shape=(1, 4), capture=capture).totals["params"] < rep.totals["params"]


class MaskAsBuffer(nn.Module):
    def __init__(self, plain: bool):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        mask = torch.tril(torch.ones(4, 4))
        if plain:
            self.mask = mask
        else:
            self.register_buffer("mask", mask)

    def forward(self, x):
        return self.fc(x).masked_fill(self.mask == 0, 0.0)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_constant_registered_as_a_buffer_is_not_stored_and_as_a_plain_attribute_is(capture: str) -> None:
    buffered = score(MaskAsBuffer(plain=False), input_shape=(4, 4), capture=capture)
    plain = score(MaskAsBuffer(plain=True), input_shape=(4, 4), capture=capture)
    assert buffered.totals["params"] == 4 * 4 + 4
    assert plain.totals["params"] == 4 * 4 + 4 + 4 * 4
    assert not any("neither parameters nor buffers" in n for n in buffered.notes)


class AliasOf(nn.Module):
    """Plain attributes sharing memory with a parameter or a buffer: the same data, stored once or never."""

    def __init__(self, of: str):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("mask", torch.tril(torch.ones(4, 4)))
        self.of = of
        self.alias = self.fc.weight.detach() if of == "parameter" else self.mask.t()

    def forward(self, x):
        if self.of == "parameter":
            return nn.functional.linear(self.fc(x), self.alias)
        return self.fc(x) * self.alias


@pytest.mark.parametrize("of", ["parameter", "buffer"])
@pytest.mark.parametrize("capture", CAPTURES)
def test_a_plain_attribute_sharing_memory_is_stored_as_what_holds_it(capture: str, of: str) -> None:
    rep = score(AliasOf(of), input_shape=(4, 4), capture=capture)
    assert rep.totals["params"] == 4 * 4 + 4  # fc once; the alias adds nothing
    assert not any("neither parameters nor buffers" in n for n in rep.notes)


class ReadForPython(nn.Module):
    """Plain tensors read for Python values only: a branch, a scalar, split sizes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.flag = torch.tensor(True)
        self.temp = torch.tensor(2.0)
        self.sizes = torch.tensor([6, 10])

    def forward(self, x):
        h = self.fc(x) / self.temp.item()
        if self.flag:
            h = h.relu()
        a, b = h.split(self.sizes.tolist(), dim=1)
        return torch.cat([a, b], dim=1)


def test_fx_traces_a_forward_that_reads_plain_tensors_for_python_values() -> None:
    rep = score(ReadForPython(), input_shape=(1, 16), capture="fx")
    assert rep.totals["params"] == 16 * 16 + 16  # the tensors decided the trace; no op stores them
    assert rep.totals["mults"] == 16 * 16 + 16 + 16  # linear, the division by the scalar, relu


class SplitByBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.register_buffer("sizes", torch.tensor([6, 10]))

    def forward(self, x):
        a, b = self.fc(x).split(self.sizes.tolist(), dim=1)
        return torch.cat([a.relu(), b], dim=1)


def test_sizes_read_off_a_buffer_are_a_capture_error_for_export_not_a_torch_error() -> None:
    from scorer.errors import CaptureError

    with pytest.raises(CaptureError, match="data-dependent shape"):
        score(SplitByBuffer(), input_shape=(2, 16), capture="export")
    rep = score(SplitByBuffer(), input_shape=(2, 16), capture="dispatch")
    assert rep.totals["mults"] == 16 * 16 + 6  # linear, then relu on the first 6 features


class TensorsInATuple(nn.Module):
    """RoPE-style tables kept together in a tuple attribute, and a list of projections."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.cs = (torch.randn(4, 4), torch.randn(4))
        self.projs = [torch.randn(4, 4)]

    def forward(self, x):
        return nn.functional.linear(self.fc(x), self.cs[0], self.cs[1]) @ self.projs[0]


@pytest.mark.parametrize("capture", CAPTURES)
def test_tensors_in_a_list_or_tuple_attribute_are_stored_on_every_path(capture: str) -> None:
    rep = score(TensorsInATuple(), input_shape=(1, 4), capture=capture)
    assert rep.totals["params"] == (4 * 4 + 4) * 2 + 4 * 4  # fc, the tuple's linear, the list's matrix
    assert any("cs.0, cs.1, projs.0" in n for n in rep.notes)


class TensorInADict(nn.Module):
    """A scale kept in a config dict attribute (``self.cfg = {"scale": ...}``)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.cfg = {"scale": torch.randn(4), "name": "head"}

    def forward(self, x):
        return self.fc(x) * self.cfg["scale"]


class TensorNestedInADict(TensorInADict):
    """The scale under an int key, nested in a dict, or in a list in an OrderedDict."""

    def __init__(self, form: str):
        super().__init__()
        t = self.cfg["scale"]
        self.cfg = {"int": {0: t}, "nested": {"a": {"scale": t}}, "list": OrderedDict(a=[t])}[form]
        self.form = form

    def forward(self, x):
        held = {"int": lambda c: c[0], "nested": lambda c: c["a"]["scale"], "list": lambda c: c["a"][0]}[self.form]
        return self.fc(x) * held(self.cfg)


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_tensor_in_a_dict_attribute_is_stored_on_every_path(capture: str) -> None:
    """Needed for inference, so stored (§3.1), as cfg.scale, on every capture (export and dispatch left it out),
    also nested or under an int key."""
    rep = score(TensorInADict(), input_shape=(1, 4), capture=capture)
    assert rep.totals["params"] == 4 * 4 + 4 + 4
    assert any("cfg.scale" in n for n in rep.notes)
    for form, name in (("int", "cfg.0"), ("nested", "cfg.a.scale"), ("list", "cfg.a.0")):
        rep = score(TensorNestedInADict(form), input_shape=(1, 4), capture=capture)
        assert rep.totals["params"] == 4 * 4 + 4 + 4, form
        assert any(name in n for n in rep.notes), (form, rep.notes)


class Pieces(nn.Module):
    """Two attributes cut from one tensor (same storage, different elements), and a slice of a parameter
    reduced (dispatch sees the slice of the stored parameter)."""

    def __init__(self):
        super().__init__()
        self.cos, self.sin = torch.randn(2, 10).unbind(0)
        self.pos = nn.Parameter(torch.randn(16, 10))

    def forward(self, x):
        return x * self.cos + self.sin + self.pos[: x.shape[0]].sum(0)


@pytest.mark.parametrize("capture", CAPTURES)
def test_pieces_of_one_storage_are_each_stored_and_a_slice_costs_its_own_rows(capture: str) -> None:
    rep = score(Pieces(), input_shape=(4, 10), capture=capture)
    assert rep.totals["params"] == 10 + 10 + 16 * 10
    # per example (batch 4): 10 mults; adds 10 (+ sin) + 10 (+ the row sum) + 3·10 / 4 (summing 4 rows)
    assert (rep.totals["mults"], rep.totals["adds"]) == (10, 10 + 10 + 3 * 10 / 4)


def test_a_lazy_module_not_run_yet_is_refused_by_name() -> None:
    """nn.LazyLinear has no weight shape before its first forward pass: nothing to count (loud, not a guess)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.LazyLinear(5))
    with pytest.raises(ScorerError, match=r"1 \(LazyLinear\).*forward pass"):
        score(model, input_shape=(1, 3))
    model(torch.zeros(1, 3))  # now 4 -> 5
    assert score(model, input_shape=(1, 3)).totals["params"] == 3 * 4 + 4 + 4 * 5 + 5


class ScalesItsDictTensor(TensorInADict):
    """A forward that changes the tensor its dict holds in place."""

    def forward(self, x):
        self.cfg["scale"].mul_(2)
        return self.fc(x) * self.cfg["scale"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_tensor_held_in_a_dict_is_put_back(capture: str) -> None:
    """score() leaves the model as it was: export ran the in-place update for real on the dict's tensor."""
    model = ScalesItsDictTensor()
    before = model.cfg["scale"].clone()
    score(model, input_shape=(1, 4), capture=capture)
    assert torch.equal(model.cfg["scale"], before)
