"""``scorer.api._module_tree``: one walk giving what torch's own walks give — ``named_parameters(
remove_duplicate=False)`` (with each tensor's first name flagged) and ``dict(named_modules())`` — on the trees
where they differ from a plain walk: shared modules, tied and missing parameters, empty slots, pruning, and
classes with their own walk (which it leaves to torch)."""

import torch.nn as nn
import torch.nn.utils.prune as prune

import scorer.api as api
from scorer.api import _module_tree


def _torch_walk(model: nn.Module) -> tuple[list, list]:
    seen: set[int] = set()
    named = []
    for name, p in model.named_parameters(remove_duplicate=False):
        named.append((name, p, id(p) not in seen))
        seen.add(id(p))
    return named, list(model.named_modules())


def _check(model: nn.Module) -> None:
    named, modules = _module_tree(model)
    want_named, want_modules = _torch_walk(model)
    assert [(n, id(p), first) for n, p, first in named] == [(n, id(p), first) for n, p, first in want_named]
    assert [(k, id(m)) for k, m in modules.items()] == [(k, id(m)) for k, m in want_modules]


class _Block(nn.Module):
    def __init__(self, shared: nn.Module) -> None:
        super().__init__()
        self.inner = shared
        self.own = nn.Linear(3, 3)
        self.register_parameter("missing", None)


def test_shared_modules_and_tied_parameters():
    shared = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    model = nn.Sequential(_Block(shared), _Block(shared), shared)
    model[1].own.weight = model[0].own.weight  # tied
    _check(model)
    named, modules = _module_tree(model)
    # the shared Linear's weight under three names, its first one flagged; the tied weight twice
    assert [n for n, _, first in named if not first] == ["1.inner.0.weight", "1.inner.0.bias", "1.own.weight",
                                                         "2.0.weight", "2.0.bias"]
    assert "1.inner" not in modules and "2" not in modules and modules["0.inner"] is shared


def test_empty_slots_and_pruning():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2, bias=False))
    model.add_module("gap", None)
    prune.l1_unstructured(model[0], "weight", amount=0.5)  # weight_orig, a weight_mask buffer
    _check(model)


class _OwnWalk(nn.Sequential):
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):  # noqa: ANN001, ANN201
        yield from super().named_modules(memo, prefix, remove_duplicate)


class _OwnEquality(nn.Linear):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OwnEquality)

    __hash__ = nn.Linear.__hash__


def test_classes_with_their_own_walk_are_walked_by_torch(monkeypatch):
    calls = []
    walk = api._named_params
    monkeypatch.setattr(api, "_named_params", lambda m: calls.append(m) or walk(m))
    a = _OwnEquality(2, 2)
    for model in (nn.Sequential(_OwnWalk(nn.Linear(2, 2)), nn.Linear(2, 2)), nn.Sequential(a, _OwnEquality(2, 2), a)):
        _check(model)
    assert len(calls) == 2  # each time _module_tree fell back to torch's walk
