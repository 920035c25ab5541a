"""The capture guards (scorer.capture.guard, scorer.capture.eval_mode) on their own: what each stand-in is,
what is put back, and what is reported. Expected values come from the models built in each test."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from scorer.capture import eval_mode
from scorer.capture.guard import meta_like, preserved, substituted, versions_kept
from scorer.errors import CaptureError


class Odd(nn.Module):
    """Parameters and buffers of every layout a stand-in must copy, one weight shared with a child."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.shared = self.lin.weight  # the same Parameter under a second name
        self.frozen = nn.Parameter(torch.zeros(2, 5), requires_grad=False)
        self.cl = nn.Parameter(torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last))
        self.register_buffer("wide", torch.zeros(4, 6)[:, ::2])  # not dense: strides (6, 2)
        self.register_buffer("flipped", torch.zeros(5, 3).t())  # dense, not contiguous
        self.register_buffer("odd_stride", torch.zeros(4, 1, 3).as_strided((4, 1, 3), (3, 100, 1)))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_parameter("missing", None)


def _tables(model: nn.Module) -> list[tuple[str, str, int]]:
    return [(path, k, id(t)) for path, m in model.named_modules() for table in (m._parameters, m._buffers)
            for k, t in table.items()]


def test_meta_stand_ins_copy_layout_type_and_requires_grad_and_keep_shared_weights_shared() -> None:
    model = Odd()
    before = _tables(model)
    reals = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    with substituted(model, meta_like) as real_of:
        stands = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
        assert stands["lin.weight"] is stands["shared"]  # one stand-in per distinct tensor
        assert len(real_of) == len({id(t) for t in reals.values()})
        for name, s in stands.items():
            real = reals[name]
            assert s is not real and s.device.type == "meta", name
            assert (s.shape, s.stride(), s.dtype, s.storage_offset()) == (
                real.shape, real.stride(), real.dtype, 0), name
            assert type(s) is type(real), name
            assert s.requires_grad == real.requires_grad and s.is_leaf and s.grad_fn is None, name
            assert s._version == 0 and s.grad is None, name
            assert real_of[id(s)][1] is real
        assert real_of[id(stands["shared"])][0] == "shared"  # the first name, as named_parameters() gives it
    assert _tables(model) == before


def test_meta_stand_ins_are_made_when_first_read_and_a_copy_of_a_table_meets_no_real_tensor() -> None:
    from torch.overrides import TorchFunctionMode

    class Calls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.seen.append(func)
            return func(*args, **(kwargs or {}))

    model = Odd()
    real_weight = model.lin.weight
    reals = [*model.parameters(), *model.buffers()]
    with substituted(model, meta_like) as real_of:
        assert real_of == {}  # nothing read yet
        table = model.lin.__dict__["_parameters"]
        assert not any(isinstance(v, torch.Tensor) for v in dict.values(table))  # its storage, past its methods
        with Calls() as calls, torch.inference_mode():
            w = model.lin.weight
        assert calls.seen == []  # making the stand-in is no call of the forward's
        assert w.device.type == "meta" and type(w) is nn.Parameter and w.requires_grad and not w.is_inference()
        assert real_of == {id(w): ("shared", real_weight)}  # its first name, in named_parameters() order
        assert model.lin._parameters.get("weight") is w and model.shared is w  # kept, and shared
        assert not {id(t) for t in reals} & {id(t) for t in (*model.parameters(), *model.buffers())}
        assert all(t.device.type == "meta" for t in (*dict(model._buffers).values(), *dict.copy(table).values()))
        assert model.missing is None and model._parameters.get("missing", 1) is None  # a None entry stays None
        bias = model.lin._parameters.pop("bias")
        assert bias.device.type == "meta" and "bias" not in model.lin._parameters  # popped, not put back
    assert model.lin.weight is real_weight and type(model.lin._parameters) is dict
    assert model.lin.bias is not None and model.lin.bias.device.type == "cpu"


def test_read_on_demand_tables_leave_no_route_to_a_real_tensor_and_nothing_behind() -> None:
    import copy

    import torch.utils._pytree as pytree

    model = Odd()
    alias = model.lin._parameters  # another reference to the table, taken before the capture
    real_bias = model.lin.bias
    with substituted(model, meta_like):
        assert not any(isinstance(v, torch.Tensor) for v in alias.values())  # placeholders, no real tensor
        leaves = pytree.tree_leaves(model.lin._parameters)  # flattened as a dict
        assert [t.shape for t in leaves] == [(4, 3), (4,)] and all(t.device.type == "meta" for t in leaves)
        escaped = copy.copy(model.lin)  # shares the table it reads meanwhile
    assert alias["bias"] is real_bias and model.lin._parameters is alias
    assert escaped.bias is real_bias and dict.get(escaped._parameters, "weight") is model.lin.weight


def test_substituted_restores_the_tables_on_error_and_after_the_forward_changed_them() -> None:
    model = Odd()
    before = _tables(model)
    with pytest.raises(ValueError, match="boom"), substituted(model, meta_like):
        model.register_buffer("added", torch.ones(1))  # into a table that held tensors
        del model.lin._parameters["bias"]
        raise ValueError("boom")
    assert _tables(model) == before


def test_substituted_with_another_make_wraps_parameters_without_touching_makes_tensor() -> None:
    model = nn.Linear(2, 2)
    made = []

    def make(t: torch.Tensor) -> torch.Tensor:
        made.append(torch.zeros_like(t))
        return made[-1]

    with substituted(model, make):
        assert type(model.weight) is nn.Parameter and model.weight.requires_grad
    assert all(type(t) is torch.Tensor and not t.requires_grad for t in made)  # make's tensors kept as made


def test_meta_like_keeps_layout_and_gives_a_plain_tensor() -> None:
    class Marked(torch.Tensor):
        pass

    for t in (torch.zeros(4, 6)[:, ::2], torch.zeros(2, 3).t(), nn.Parameter(torch.zeros(3, 3)),
              torch.zeros(3).as_subclass(Marked)):
        s = meta_like(t)
        assert type(s) is torch.Tensor and s.device.type == "meta"
        assert (s.shape, s.stride(), s.dtype) == (t.shape, t.stride(), t.dtype)


class Busy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.config = {"a": 1}
        self.tags = {"x"}
        self.k = torch.zeros(3)  # a small tensor attribute: copied, put back
        self.register_forward_hook(lambda *a: None)


def test_preserved_puts_back_attributes_tables_flags_and_small_tensor_attributes() -> None:
    model = Busy()
    hooks = dict(model._forward_hooks)
    attrs = dict(model.lin.__dict__)
    version = model.k._version
    with preserved(model) as modules:
        assert modules == list(model.modules())
        model.config["b"] = 2
        model.tags.add("y")
        model.lin.register_forward_pre_hook(lambda *a: None)
        model._forward_hooks.clear()
        model.lin.extra = 5
        model.lin.weight.requires_grad_(False)
        model.k.add_(1)
        model.lin.in_features = 7
    assert model.config == {"a": 1} and model.tags == {"x"}
    assert dict(model._forward_hooks) == hooks and not model.lin._forward_pre_hooks
    assert model.lin.__dict__ == attrs and model.lin.weight.requires_grad
    assert torch.equal(model.k, torch.zeros(3)) and model.k._version == version


def test_preserved_names_each_tensor_changed_in_place_that_cannot_be_put_back() -> None:
    model = Busy()
    with pytest.raises(CaptureError, match=r"changed lin\.weight, lin\.bias in place"), preserved(model):
        with torch.no_grad():
            model.lin.bias.add_(1)
            model.lin.weight.add_(1)


def test_preserved_reports_a_change_also_when_the_body_raised() -> None:
    model = Busy()
    with pytest.raises(CaptureError, match=r"changed lin\.bias in place") as info, preserved(model):
        with torch.no_grad():
            model.lin.bias.add_(1)
        raise ValueError("boom")
    assert isinstance(info.value.__cause__, ValueError)


def test_versions_kept_puts_back_version_counters() -> None:
    model = Busy()
    before = [t._version for t in (model.lin.weight, model.k)]
    with versions_kept(model), torch.no_grad():
        model.lin.weight.mul_(1)
        model.k.mul_(1)
    assert [t._version for t in (model.lin.weight, model.k)] == before


class CountsTrain(nn.Module):
    calls = 0

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def train(self, mode: bool = True):
        type(self).calls += 1
        return super().train(mode)


@pytest.mark.parametrize("cls", [lambda: nn.Sequential(nn.Linear(2, 2), nn.Dropout()), CountsTrain])
def test_eval_mode_sets_eval_inside_and_puts_each_flag_back(cls) -> None:
    model = cls()
    model.train()
    children = list(model.modules())[1:]
    children[0].training = False  # a mixed model: each flag comes back as it was
    flags = [m.training for m in model.modules()]
    calls = CountsTrain.calls
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == flags
    if isinstance(model, CountsTrain):
        assert CountsTrain.calls > calls  # an overridden train() still runs


def test_eval_mode_restores_flags_after_an_error() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model.train()
    with pytest.raises(ValueError, match="boom"), eval_mode(model):
        raise ValueError("boom")
    assert all(m.training for m in model.modules())


def test_the_walk_is_named_modules_order_with_shared_and_missing_children() -> None:
    from scorer.capture.guard import module_walk, modules_of

    shared = nn.Linear(2, 2)
    model = nn.Sequential(nn.Sequential(shared, nn.ReLU()), shared, nn.ModuleDict({"a": nn.Identity(), "b": shared}))
    model.add_module("gone", None)
    model[0].add_module("deep", nn.Sequential(nn.Sequential(nn.Tanh())))
    assert module_walk(model) == list(model.named_modules())
    assert modules_of(model) == list(model.modules())


def test_the_walk_follows_a_class_with_its_own_named_modules() -> None:
    from scorer.capture.guard import module_walk

    class Hiding(nn.Sequential):
        def named_modules(self, memo=None, prefix="", remove_duplicate=True):  # noqa: ANN001, ANN201
            yield prefix, self  # its children are not listed

    for model in (Hiding(nn.Linear(2, 2)), nn.Sequential(nn.ReLU(), Hiding(nn.Linear(2, 2)))):
        assert module_walk(model) == list(model.named_modules())
