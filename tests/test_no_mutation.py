"""score() never changes the user's model, whichever capture path runs and whether or not it succeeds, and
never allocates an input of the requested size."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scorer import score
from scorer.errors import ScorerError

CAPTURES = ["fx", "export", "dispatch", "auto"]


class BufferCounter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.n = 0  # a plain Python counter

    def forward(self, x):
        self.calls += 1
        self.n += 1
        return self.fc(x)


class ClipsWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4) * 3)

    def forward(self, x):
        self.w.data.clamp_(-0.1, 0.1)
        for p in self.parameters():  # not an attribute read: fx does not proxy it
            p.data.mul_(0.5)
        return x @ self.w.t()


class RenormsEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 16, max_norm=1.0)  # renormalises the looked-up rows in place

    def forward(self, idx):
        return F.embedding(idx, self.emb.weight, max_norm=1.0).sum(-1)


class RaisesAfterMutating(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.n = 0

    def forward(self, x):
        self.calls.add_(1)
        self.fc.weight.data.zero_()
        self.fc.weight.requires_grad_(False)
        self.n += 1
        self.extra = torch.ones(1)
        self.register_forward_hook(lambda *a: None)
        raise ValueError("boom")


class DataDependentMutator(nn.Module):
    """Needs real values, so the dispatch recorder runs it on real zeros (against clones)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.n = 0

    def forward(self, x):
        self.calls += 1
        self.n += 1
        self.fc.weight.data.clamp_(-0.01, 0.01)
        self.fc.bias = nn.Parameter(torch.ones(4))
        y = self.fc(x)
        if float(y.sum()) >= 0:
            y = y.relu()
        return y


def _snapshot(model: nn.Module) -> dict:
    mods = dict(model.named_modules())
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "ids": {k: id(v) for k, v in list(model.named_parameters()) + list(model.named_buffers())},
        "grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in mods.items()},
        "hooks": {k: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for k, m in mods.items()},
        "attrs": {k: set(m.__dict__) for k, m in mods.items()},
        "n": getattr(model, "n", None),
        "global": (dict(nn.modules.module._global_forward_hooks),
                   dict(nn.modules.module._global_forward_pre_hooks)),
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in after["state"].items():
        assert v.dtype == before["state"][k].dtype and torch.equal(v, before["state"][k]), k
    for key in ("ids", "grad", "training", "hooks", "attrs", "n", "global"):
        assert after[key] == before[key], key


CASES = [
    (BufferCounter, {"input_shape": (2, 4)}),
    (ClipsWeights, {"input_shape": (2, 4)}),
    (RenormsEmbedding, {"example_inputs": torch.tensor([[1, 2, 3]])}),
    (RaisesAfterMutating, {"input_shape": (2, 4)}),
    (DataDependentMutator, {"input_shape": (2, 4)}),
]


@pytest.mark.filterwarnings("ignore:The tensor attribute:UserWarning")  # torch.export on RaisesAfterMutating
@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_model_is_unchanged_on_every_capture_path(cls, kwargs, capture) -> None:
    model = cls()
    model.train()
    model.register_forward_hook(lambda *a: None)
    before = _snapshot(model)
    try:
        score(model, capture=capture, allow_unknown=True, **kwargs)
    except ScorerError:
        pass
    _assert_unchanged(model, before)


def test_renorming_embedding_really_renorms() -> None:
    # the model above changes its weight when it runs: the test would catch a capture that ran it on it
    model = RenormsEmbedding()
    before = model.emb.weight.detach().clone()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    assert not torch.equal(before, model.emb.weight)


def test_a_failing_capture_reports_the_forwards_error_and_changes_nothing() -> None:
    model = RaisesAfterMutating()
    before = _snapshot(model)
    with pytest.raises(ScorerError, match="ValueError: boom"):
        score(model, input_shape=(2, 4), capture="dispatch")
    _assert_unchanged(model, before)


class PlainTensorAttribute(nn.Module):
    def __init__(self, n: int = 3):
        super().__init__()
        self.k = torch.zeros(n)  # neither parameter nor buffer: torch.export runs in-place ops on it for real

    def forward(self, x):
        self.k.add_(1)
        return x * 2


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_small_tensor_attribute_changed_in_place_is_put_back(capture) -> None:
    model = PlainTensorAttribute()
    version = model.k._version
    assert score(model, input_shape=(2, 3), capture=capture).totals["mults"] == 3
    assert torch.equal(model.k, torch.zeros(3)) and model.k._version == version


def test_a_big_tensor_attribute_changed_in_place_is_reported() -> None:
    model = PlainTensorAttribute((1 << 22) + 1)  # just over the 16 MiB copied
    with pytest.raises(ScorerError, match=r"changed k in place"):
        score(model, input_shape=(2, 3), capture="export")


def test_fx_traces_an_in_place_update_of_a_tensor_attribute_on_its_proxy() -> None:
    model = PlainTensorAttribute((1 << 22) + 1)  # too big to copy: fx never runs the update for real
    rep = score(model, input_shape=(2, 3), capture="fx")
    assert not model.k.any()
    assert rep.totals["adds"] == model.k.numel() / 2  # one add per element of k, per example (batch 2)


class ScriptedCounter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1)
        return self.fc(x)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still loadable
def test_a_torchscript_module_is_recorded_on_fake_tensors_and_unchanged() -> None:
    model = torch.jit.script(ScriptedCounter())
    version = model.calls._version
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rep = score(model, input_shape=(1_000_000, 4))  # fake: the input is not allocated
    assert rep.capture == "dispatch" and rep.totals["mults"] == 32
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.calls._version == version


_BIG = """
import resource
import torch.nn as nn
from scorer import score
from scorer.errors import ScorerError
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a 16 GB input cannot be allocated here
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for capture in ("export", "dispatch"):
    t = score(nn.Linear(4, 8), input_shape=(1_000_000_000, 4), capture=capture).totals
    assert (t["mults"], t["adds"]) == (32, 32), (capture, t)

class NeedsValues(nn.Module):  # data-dependent: only a real run can capture it
    def forward(self, x):
        return x * 2 if float(x.sum()) >= 0 else x

try:
    score(NeedsValues(), input_shape=(1_000_000_000, 4), capture="dispatch")
except ScorerError as exc:
    assert "allocate 14.9 GiB of input zeros" in str(exc), exc
else:
    raise AssertionError("no error")
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start
assert grown_kb < 1 << 20, grown_kb
print("ok")
"""


def test_a_huge_input_shape_is_scored_without_allocating_it_or_refused() -> None:
    # in a subprocess whose address space is capped, so that a regression fails instead of eating 16 GB
    done = subprocess.run([sys.executable, "-c", _BIG], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


class KVCache(nn.Module):
    """A cache kept in a plain attribute and rebound by the forward (``self.cache = cat(...)``)."""

    def __init__(self, branch: bool = False):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.cache = torch.zeros(1, 0, 4)
        self.branch = branch

    def forward(self, x):
        self.cache = torch.cat([self.cache, self.fc(x)], dim=1)
        h = self.cache.sum(1)
        if self.branch and h.sum() > 0:  # data-dependent: fx and fake tensors fail here, real zeros do not
            return h
        return h * 2


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_rebound_cache_is_read_as_it_was_on_entry(capture) -> None:
    model = KVCache()
    rep = score(model, input_shape=(1, 3, 4), capture=capture)
    # linear 3·4 outputs of 4 mults, 3 + 1 adds; the sum over 3 cached rows: 2·4 adds; ×2: 4 mults (per example)
    assert (rep.totals["mults"], rep.totals["adds"]) == (3 * 4 * 4 + 4, 3 * 4 * 4 + 2 * 4)
    assert model.cache.shape == (1, 0, 4)


def test_a_method_that_fails_leaves_the_next_one_the_model_as_it_was() -> None:
    # fx and the fake-tensor run fail at the branch after rebinding the cache; the real run must start
    # from the empty cache, not from what a failed run left
    model = KVCache(branch=True)
    rep = score(model, input_shape=(1, 3, 4))
    assert rep.capture == "dispatch"
    # as above, plus the test: h.sum() (3 adds), > 0 (one comparison); real zeros take the `h * 2` branch
    assert (rep.totals["mults"], rep.totals["adds"]) == (3 * 4 * 4 + 1 + 4, 3 * 4 * 4 + 2 * 4 + 3)
    assert model.cache.shape == (1, 0, 4)


class GradOff(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        torch.set_grad_enabled(False)  # a forward that switches autograd off for good
        return self.fc(x)


@pytest.mark.parametrize("capture", CAPTURES)
def test_the_grad_mode_is_put_back(capture) -> None:
    assert torch.is_grad_enabled()
    score(GradOff(), input_shape=(1, 4), capture=capture)
    assert torch.is_grad_enabled()
