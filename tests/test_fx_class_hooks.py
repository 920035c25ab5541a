"""The fx trace routes module calls and attribute reads through its wrappers by setting them on the classes
of the model's modules, not on ``nn.Module`` (scorer/capture/fx_capture.py ``_module_hooks``): the rows are
those of every other capture path, and every class is as it was afterwards, also after a failed trace."""

import pytest
import torch.nn as nn
import torch.nn.functional as F

from scorer import score

HOOKS = ("__getattr__", "__call__")


def _class_tables() -> dict[type, tuple]:
    """Which classes hold their own ``__getattr__``/``__call__``, and what: every nn.Module subclass."""
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


class MakesALayer(nn.Module):
    """A layer made inside the forward, outside the module tree: it holds nothing, its forward is traced."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return nn.GELU()(self.fc(x))


def test_a_layer_made_in_the_forward_is_counted_as_every_path_counts_it() -> None:
    model = MakesALayer()
    rep = score(model, input_shape=(2, 4))
    ref = score(model, input_shape=(2, 4), capture="dispatch")
    assert rep.totals == pytest.approx(ref.totals)
    assert rep.totals["mults"] > 4 * 4  # per sample: the GELU is counted, not only the linear layer
