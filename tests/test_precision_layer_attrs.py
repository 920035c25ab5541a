"""``scorer.precision._bare_layer``: the check that lets annotation skip reading a layer's widths is True only
for a layer where ``getattr(mod, name, None)`` is None for every width name annotation reads, wherever the
attribute would live (instance, buffer, parameter, submodule, class, property, a class's own ``__getattr__``)."""

import torch
import torch.nn as nn

from scorer.precision import _LAYER_ATTRS, _bare_layer


class _WithProperty(nn.Conv2d):
    @property
    def act_bits(self) -> int:
        return 4


class _WithGetattr(nn.Linear):
    def __getattr__(self, name: str) -> object:
        return 16 if name == "acc_bits" else super().__getattr__(name)


class _ClassWidth(nn.Linear):
    bias_bits = 6


def _with_widths() -> list[nn.Module]:
    instance = nn.Conv2d(3, 4, 3)
    instance.weight_bits = 8
    buffer = nn.Linear(2, 2)
    buffer.register_buffer("acc_bits", torch.tensor(24))
    sub = nn.Linear(2, 2)
    sub.weight_fake_quant = nn.Identity()  # a submodule
    parameter = nn.Linear(2, 2)
    parameter.register_parameter("bias_bits", nn.Parameter(torch.ones(1)))
    return [instance, buffer, sub, parameter, _WithProperty(3, 4, 3), _WithGetattr(2, 2), _ClassWidth(2, 2)]


def test_bare_only_where_every_width_is_absent():
    plain: dict[type, bool] = {}  # shared across layers, as in one annotation
    for mod in [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(nn.Linear(2, 2))]:
        assert all(getattr(mod, name, None) is None for name in _LAYER_ATTRS)
        assert _bare_layer(mod, plain), type(mod).__name__
    for mod in _with_widths():
        assert any(getattr(mod, name, None) is not None for name in _LAYER_ATTRS)
        assert not _bare_layer(mod, plain), type(mod).__name__


def test_an_attribute_set_after_a_bare_read_is_seen():
    mod, plain = nn.Conv2d(3, 4, 3), {}
    assert _bare_layer(mod, plain)
    mod.weight_bits = 4  # the class answer is cached, the instance is read again
    assert not _bare_layer(mod, plain)
