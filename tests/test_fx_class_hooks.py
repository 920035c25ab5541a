"""The fx trace routes attribute reads through its wrapper by setting it on the classes of the model's modules,
not on ``nn.Module`` (scorer/capture/fx_capture.py ``_attribute_hook``), and catches module calls at
``nn.Module._call_impl`` rather than ``__call__`` (``_call_hook``): the rows are those of every other capture
path, and every class is as it was afterwards, also after a failed trace or a trace inside a trace."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scorer import score

HOOKS = ("__getattr__", "__call__", "_call_impl")


def _class_tables() -> dict[type, tuple]:
    """Which classes hold their own ``__getattr__``/``__call__``/``_call_impl``, and what: every nn.Module
    subclass."""
    out, stack = {}, [nn.Module]
    while stack:
        c = stack.pop()
        if c not in out:
            out[c] = tuple(c.__dict__.get(h) for h in HOOKS)
            stack.extend(c.__subclasses__())
    return out


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))) + x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(Block(), Block())
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(x.mean((2, 3)))


class Delegating(nn.Module):
    """A wrapper with its own ``__getattr__`` that reaches nn.Module's through ``super()`` (as
    transformers-style wrappers do): fx's way, ``nn.Module`` itself, is taken for it."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, x):
        return self.inner(x) * self.weight.mean()  # self.weight: the inner layer's, read through the wrapper


def _rows(rep) -> list:
    """Each costed row (the dispatch recorder also lists free allocations) and the totals."""
    rows = rep.layers[rep.layers.kind != "free"]
    return [rows[["module", "kind", "weight_numel", "mults", "adds"]].values.tolist(), rep.totals]


def test_rows_equal_the_dispatch_recorders_and_every_class_is_put_back() -> None:
    before = _class_tables()
    model = Net()
    fx_rep = score(model, input_shape=(1, 3, 8, 8))
    assert fx_rep.capture == "fx"
    assert _class_tables() == before
    assert _rows(fx_rep) == _rows(score(model, input_shape=(1, 3, 8, 8), capture="dispatch"))


def test_a_class_with_its_own_getattr_takes_fx_s_way_and_is_put_back() -> None:
    before = _class_tables()
    model = Delegating(nn.Linear(4, 4))
    rep = score(model, input_shape=(2, 4))
    assert rep.capture == "fx"
    assert _class_tables() == before
    assert rep.totals["params"] == 4 * 4 + 4  # the inner layer's weight and bias, stored once
    assert _rows(rep) == _rows(score(model, input_shape=(2, 4), capture="dispatch"))


class Fails(Net):
    def forward(self, x):
        x = self.stem(x)
        raise RuntimeError("boom")


def test_a_failed_trace_puts_every_class_back() -> None:
    before = _class_tables()
    with pytest.raises(Exception, match="boom"):
        score(Fails(), input_shape=(1, 3, 8, 8), capture="fx")
    assert _class_tables() == before


class Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.full((4,), 0.5))
        self.register_buffer("std", torch.full((4,), 2.0))

    def forward(self, x):
        return (x - self.mean) / self.std


class OutsideTheTree(nn.Module):
    """Layers the module tree does not hold: one in a plain list (its buffers are no parameters), one made in
    the forward. fx refuses them as not submodules; the fallback counts what they compute."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.pre = [Normalize()]

    def forward(self, x):
        return nn.GELU()(self.fc(self.pre[0](x)))


def test_layers_outside_the_module_tree_count_as_on_every_path() -> None:
    model = OutsideTheTree()
    rep = score(model, input_shape=(2, 4))
    assert rep.capture != "fx"
    assert _rows(rep) == _rows(score(model, input_shape=(2, 4), capture="dispatch"))
    assert rep.totals["params"] == 4 * 4 + 4  # the linear layer's; the list's buffers are not parameters


class Nested(nn.Module):
    """A forward that scores another model while it is traced (a trace inside a trace)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.inner = [nn.Sequential(nn.Linear(4, 3), nn.ReLU())]
        self.seen: list = []

    def forward(self, x):
        rep = score(self.inner[0], input_shape=(2, 4), capture="fx")
        self.seen.append((rep.capture, rep.totals["params"]))
        return self.fc(x)


def test_a_trace_inside_a_trace_gives_both_models_their_own_counts() -> None:
    before = _class_tables()
    model = Nested()
    rep = score(model, input_shape=(2, 4))
    assert rep.capture == "fx" and rep.totals["params"] == 4 * 4 + 4
    assert model.seen == [("fx", 4 * 3 + 3)]
    assert _class_tables() == before
    x = torch.randn(2, 4)
    assert torch.equal(model.fc(x), F.linear(x, model.fc.weight, model.fc.bias))  # layers run normally after


class OwnCall(nn.Module):
    """A class with its own ``__call__`` reaching nn.Module's through ``super()``: fx's way, ``__call__``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_a_class_with_its_own_call_is_traced_fx_s_way_and_put_back() -> None:
    before = _class_tables()
    model = nn.Sequential(OwnCall(), nn.Linear(4, 2))
    rep = score(model, input_shape=(2, 4))
    assert rep.capture == "fx"
    assert _class_tables() == before
    assert _rows(rep) == _rows(score(model, input_shape=(2, 4), capture="dispatch"))
