"""Capture's shortcuts equal what they stand for: the conv/mean shape formulas equal the meta kernels' outputs
(shape, strides, dtype) on many configurations (scorer/capture/shapes.py), and ``module_attr`` equals ``getattr(mod, name, None)``."""

import contextlib
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scorer.capture.shapes import conv_output as _conv_shape_out
from scorer.capture.shapes import mean_output
from scorer.ops.call import module_attr

CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_conv_formula_equals_meta_kernel(dim):
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    checked = 0
    for k, s, p, d, g, length in itertools.product([1, 3], [1, 2], [0, 1], [1, 2], [1, 3], [1, 5, 8]):
        mod = conv(6, 9, k, stride=s, padding=p, dilation=d, groups=g)
        x = torch.empty(2, 6, *[length] * dim, device="meta")
        got = _conv_shape_out(mod, x)
        w = torch.empty(mod.out_channels, mod.in_channels // g, *mod.kernel_size, device="meta")
        try:
            ref = CONV_FN[dim](x, w, None, mod.stride, mod.padding, mod.dilation, g)
        except RuntimeError:
            assert got is None  # an invalid size is left to the meta kernel, which reports it
            continue
        assert got is not None
        assert (got.shape, got.stride(), got.dtype) == (ref.shape, ref.stride(), ref.dtype)
        checked += 1
    assert checked > 50


def test_conv_formula_declines_unusual_inputs():
    mod = nn.Conv2d(3, 4, 3)
    assert _conv_shape_out(mod, torch.empty(1, 5, 8, 8, device="meta")) is None  # channel mismatch
    assert _conv_shape_out(mod, torch.empty(1, 3, 8, 8, dtype=torch.float16, device="meta")) is None


def test_mean_formula_equals_meta_kernel():
    x = torch.empty(2, 3, 5, 7, device="meta")
    checked = 0
    for dims in [1, -1, (2, 3), [1, 2], (0,), (0, 1, 2, 3), (3, -1), (4,), ()]:
        for keepdim in (True, False):
            for margs, kwargs in (((x, dims, keepdim), {}), ((x,), {"dim": dims, "keepdim": keepdim})):
                got = mean_output(margs[0], tuple(margs[1:]), kwargs)
                if got is None:  # duplicates, out of range, empty: the meta op decides
                    continue
                ref = x.mean(dims, keepdim=keepdim)
                assert (got.shape, got.stride(), got.dtype) == (ref.shape, ref.stride(), ref.dtype)
                checked += 1
    assert checked == 24  # 6 valid dim forms x keepdim x (positional, keyword)
    assert mean_output(x, ((2, 3),), {"dtype": torch.float64}) is None
    assert mean_output(torch.empty(3, dtype=torch.long, device="meta"), (0,), {}) is None


def test_module_attr_equals_getattr():
    class WithProperty(nn.Conv2d):
        @property
        def act_bits(self):
            return 4

    class WithGetattr(nn.Linear):
        def __getattr__(self, name):
            return 16 if name == "acc_bits" else super().__getattr__(name)

    conv = nn.Conv2d(3, 4, 3)
    conv.weight_bits = 8
    conv.register_buffer("bias_bits", torch.tensor(2))
    conv.sub = nn.ReLU()
    cases = [(conv, "weight_bits"), (conv, "bias_bits"), (conv, "sub"), (conv, "weight"), (conv, "missing"),
             (conv, "training"), (WithProperty(3, 4, 3), "act_bits"), (WithGetattr(2, 2), "acc_bits"),
             (WithGetattr(2, 2), "missing")]
    for mod, name in cases:
        assert module_attr(mod, name) is getattr(mod, name, None), name


def test_conv_formula_declines_sizes_kept_in_other_forms():
    mod = nn.Conv2d(4, 4, 3)
    mod.padding = 1  # an int where torch keeps a tuple: the meta kernel decides
    assert _conv_shape_out(mod, torch.empty(1, 4, 8, 8, device="meta")) is None
    mod = nn.Conv2d(4, 4, 3)
    mod.groups = 3  # 4 channels do not split in 3 groups: the meta kernel reports it
    assert _conv_shape_out(mod, torch.empty(1, 4, 8, 8, device="meta")) is None


def test_node_names_equal_fx_namespace():
    """fx capture names nodes with ``_create_name`` (the namespace's regular-expression work cached per
    candidate); every name equals what ``fx.graph._Namespace.create_name`` gives for the same sequence."""
    import random

    from torch.fx.graph import _Namespace

    from scorer.capture.fx_capture import _create_name

    pool = ["add", "add_1", "add", "conv", "features.0", "features_0", "0", "1x", "print", "list", "getattr",
            "relu_", "__add__", "layer1.0.conv1", "a-b", "", "x_2", "x", "x_1", "x", "size", "_tensor_constant0",
            "torch.nn.functional.relu", "Linear", "mul_3", "mul", "mul_3", "in", "for", "self"]
    rng = random.Random(0)
    for _ in range(30):
        ours, ref = _Namespace(), _Namespace()
        for _ in range(60):
            c = rng.choice(pool)
            assert _create_name(ours, c) == ref.create_name(c, None), c


def test_quant_bits_shortcut_equals_full_test():
    """``quant_bits`` answers a plain module at once (its class is no torch.ao quantiser and neither it nor its
    class holds ``bits``/``quant_min``/``quant_max``); every kind of module gets the answer of the full test."""
    from torch.ao.quantization import FakeQuantize

    from scorer.ops import quant
    from scorer.ops.registry import memoised

    class Bits(nn.Module):
        bits = 4

    class Ranged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant_min, self.quant_max = 0, 15

    own = nn.ReLU()
    own.bits = 6
    half = nn.ReLU()
    half.quant_min = 0  # a range without its upper end is no quantiser
    mods = [nn.ReLU(), nn.Sequential(), Bits(), Ranged(), own, half, FakeQuantize(), nn.Identity()]
    want = [None, None, 4, 4, 6, None, 8, None]
    for inside in (False, True):
        with memoised() if inside else contextlib.nullcontext():
            assert [quant.quant_bits(m) for m in mods] == want
