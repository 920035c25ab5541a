"""``scorer.precision._layer_attrs``: the widths a layer carries, read in one pass, equal ``getattr(mod, name,
None)`` for every name annotation reads, wherever the attribute lives (instance, buffer, submodule, class,
property, a class's own ``__getattr__``) and when it is absent."""

import torch
import torch.nn as nn

from scorer.precision import _LAYER_ATTRS, _layer_attrs


class _WithProperty(nn.Conv2d):
    @property
    def act_bits(self) -> int:
        return 4


class _WithGetattr(nn.Linear):
    def __getattr__(self, name: str) -> object:
        return 16 if name == "acc_bits" else super().__getattr__(name)


class _ClassWidth(nn.Linear):
    bias_bits = 6


def _layers() -> list[nn.Module]:
    plain = nn.Conv2d(3, 4, 3)
    instance = nn.Conv2d(3, 4, 3)
    instance.weight_bits = 8
    buffer = nn.Linear(2, 2)
    buffer.register_buffer("acc_bits", torch.tensor(24))
    sub = nn.Linear(2, 2)
    sub.weight_fake_quant = nn.Identity()  # a submodule
    parameter = nn.Linear(2, 2)
    parameter.register_parameter("bias_bits", nn.Parameter(torch.ones(1)))
    return [plain, instance, buffer, sub, parameter, _WithProperty(3, 4, 3), _WithGetattr(2, 2), _ClassWidth(2, 2),
            nn.ReLU()]


def test_equals_getattr_for_every_name():
    plain: dict[type, bool] = {}  # shared across layers, as in one annotation
    for mod in _layers() * 2:
        got = _layer_attrs(mod, plain)
        want = tuple(getattr(mod, name, None) for name in _LAYER_ATTRS)
        assert len(got) == len(want) and all(g is w for g, w in zip(got, want, strict=True)), type(mod).__name__
    assert _layer_attrs(None, plain) == (None,) * len(_LAYER_ATTRS)


def test_an_attribute_set_after_a_plain_read_is_seen():
    mod, plain = nn.Conv2d(3, 4, 3), {}
    assert _layer_attrs(mod, plain)[0] is None
    mod.weight_bits = 4  # the class answer is cached, the instance is read again
    assert _layer_attrs(mod, plain)[0] == 4
