"""scorer.capture.shapes against torch: the shape arithmetic that spares a CLI run torch's Python meta kernels
(and their sympy / torch._dynamo imports) must give torch's shapes, and None wherever torch refuses.
Random configurations from a fixed seed; the reference is torch itself, never the function under test."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scorer.capture.shapes import (
    broadcast_shapes,
    cat_output,
    conv_output,
    mean_output,
    pool_output,
    upsample_output,
)

ROOT = Path(__file__).resolve().parent.parent


def _shape(t: object) -> tuple | None:
    return None if t is None else tuple(t.shape)


def _input(rng: random.Random, channels: int, dims: int, low: int = 0) -> torch.Tensor:
    shape = (channels, *(rng.randint(low, 9) for _ in range(dims)))
    return torch.randn((rng.randint(1, 2), *shape) if rng.random() < 0.7 else shape)


def test_broadcast_shapes_is_torchs() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        a = tuple(rng.choice([0, 1, 2, 3]) for _ in range(rng.randint(0, 4)))
        b = tuple(rng.choice([0, 1, 2, 3]) for _ in range(rng.randint(0, 4)))
        try:
            expected = torch.broadcast_shapes(a, b)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                broadcast_shapes(a, b)
            continue
        assert broadcast_shapes(a, b) == expected, (a, b)


def test_conv_output_is_torchs_meta_conv() -> None:
    """Where conv_output answers, torch's meta convolution (what fx ran before) gives the same shape."""
    rng = random.Random(1)
    answered = 0
    for _ in range(600):
        dims = rng.randint(1, 3)
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        padding = rng.choice([0, 1, 2, 3, "same", "valid"])
        try:
            mod = conv(4, 6, rng.randint(1, 5), stride=1 if padding == "same" else rng.randint(1, 3),
                       padding=padding, dilation=rng.randint(1, 3), groups=rng.choice([1, 2]))
        except ValueError:
            continue
        x = _input(rng, rng.choice([4, 4, 4, 3]), dims).to("meta")
        weight = torch.empty(mod.weight.shape, device="meta")
        try:
            expected = tuple(getattr(F, f"conv{dims}d")(x, weight, None, mod.stride, mod.padding, mod.dilation,
                                                        mod.groups).shape)
        except RuntimeError:
            expected = None
        got = _shape(conv_output(mod, x))
        if got is not None:
            answered += 1
            assert got == expected, (mod, tuple(x.shape))
    assert answered > 200


def _pool(rng: random.Random, dims: int) -> nn.Module:
    kind = rng.choice(["max", "avg", "adaptive"])
    if kind == "adaptive":
        size = rng.choice([1, 2, 5, None, (None, 3)])
        if isinstance(size, tuple):
            size = (*size, *(2,) * (dims - 2)) if dims >= 2 else 3
        return {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dims](size or 4)
    k = rng.randint(1, 4)
    args = {"stride": rng.choice([None, 1, 2, 3]), "padding": rng.randint(0, 2), "ceil_mode": rng.random() < 0.5}
    if kind == "max":
        return {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims](k, dilation=rng.randint(1, 2), **args)
    return {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims](k, **args)


def test_pool_output_is_torchs_forward() -> None:
    """Where pool_output answers, the real layer's output has that shape; where the layer refuses its
    arguments or input, pool_output answers None (the capture then runs torch's kernel and its error)."""
    rng = random.Random(2)
    answered = 0
    for _ in range(900):
        dims = rng.randint(1, 3)
        mod = _pool(rng, dims)
        x = _input(rng, 3, dims, low=1)
        try:
            expected = tuple(mod(x).shape)
        except RuntimeError:
            expected = None
        got = _shape(pool_output(mod, x.to("meta")))
        if got is not None:
            answered += 1
        assert got in (None, expected), (mod, tuple(x.shape), got, expected)
        assert not (expected is None and got is not None)
    assert answered > 400


def test_mean_output_is_torchs() -> None:
    rng = random.Random(3)
    answered = 0
    for _ in range(1500):
        x = torch.randn(tuple(rng.randint(0, 3) for _ in range(rng.randint(0, 4))))
        choice = rng.random()
        dim = (None if choice < 0.15 else rng.randint(-5, 4) if choice < 0.5
               else tuple(rng.randint(-4, 3) for _ in range(rng.randint(0, 3))))
        keepdim = rng.random() < 0.5
        as_kwargs = rng.random() < 0.5
        args, kwargs = ((), {"keepdim": keepdim} | ({} if dim is None else {"dim": dim})) if as_kwargs else \
            (((dim, keepdim) if dim is not None else ()), {})
        try:
            expected = tuple(x.mean(*args, **kwargs).shape)
        except (RuntimeError, IndexError, TypeError):
            expected = None
        got = _shape(mean_output(x.to("meta"), args, kwargs))
        if got is not None:
            answered += 1
            assert got == expected, (tuple(x.shape), args, kwargs)
    assert answered > 500
    assert mean_output(torch.ones(2, 3, device="meta"), (1,), {"dtype": torch.float64}) is None
    assert mean_output(torch.ones(2, 3, dtype=torch.long, device="meta"), (1,), {}) is None


def test_upsample_output_is_torchs_forward() -> None:
    rng = random.Random(4)
    answered = 0
    for _ in range(600):
        dims = rng.randint(1, 3)
        mode = rng.choice(["nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear"])
        if rng.random() < 0.5:
            mod = nn.Upsample(size=rng.choice([5, tuple(rng.randint(1, 9) for _ in range(dims))]), mode=mode)
        else:
            mod = nn.Upsample(scale_factor=rng.choice([2, 1.5, 0.7, tuple(rng.choice([0.5, 1, 2.5]) for _ in range(dims))]),
                              mode=mode)
        x = _input(rng, 2, dims, low=1)
        if x.dim() == dims + 1:
            x = x[None]
        try:
            expected = tuple(mod(x).shape)
        except (RuntimeError, ValueError, NotImplementedError):
            expected = None
        got = _shape(upsample_output(mod, x.to("meta")))
        if got is not None:
            answered += 1
            assert got == expected, (mod, tuple(x.shape))
    assert answered > 100


def test_cat_output_is_torchs() -> None:
    rng = random.Random(5)
    answered = 0
    for _ in range(1500):
        rank = rng.randint(0, 3)
        base = [rng.randint(0, 3) for _ in range(rank)]
        tensors = []
        for _ in range(rng.randint(1, 3)):
            shape = [n if rng.random() < 0.8 else rng.randint(0, 3) for n in base]
            if rng.random() < 0.1:
                shape = [0]  # torch's legacy empty operand
            tensors.append(torch.randn(shape, dtype=torch.float32 if rng.random() < 0.9 else torch.float64))
        dim = rng.randint(-4, 3)
        args, kwargs = ((tensors, dim), {}) if rng.random() < 0.5 else ((tensors,), {"dim": dim})
        try:
            expected = tuple(torch.cat(*args, **kwargs).shape)
        except (RuntimeError, IndexError):
            expected = None
        got = _shape(cat_output(([t.to("meta") for t in tensors], *args[1:]), kwargs))
        if got is not None:
            answered += 1
            assert got == expected, ([tuple(t.shape) for t in tensors], dim)
    assert answered > 300


def test_a_cli_score_imports_neither_sympy_nor_dynamo() -> None:
    """Scoring the README's CNNs stays off torch's Python meta kernels (behaviour, not timing)."""
    code = ("import sys, io, contextlib\nfrom scorer.cli import main\n"
            "for model in ('reference:resnet18', 'reference:mobilenet_v2', 'reference:efficientnet_b0', "
            "'reference:osi_ai', 'reference:brain_densenet_bc196'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        assert main([model, '--format', 'json']) == 0\n"
            "print('MODULES', sorted(m for m in ('sympy', 'torch._dynamo') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "MODULES []"
