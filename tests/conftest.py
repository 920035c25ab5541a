"""Shared test helpers."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one intra-op thread inside, its own count restored after (2 shared CPU cores: one thread is
    several times faster than oversubscribed threads for the training tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_bn_stats(*bns: torch.nn.BatchNorm2d) -> None:
    """Give each BatchNorm non-trivial running statistics and affine parameters (drawn from torch's generator),
    so that folding it or pruning through it is exercised away from the identity."""
    with torch.no_grad():
        for bn in bns:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)


def zero_fraction(weight: torch.Tensor, fraction: float) -> None:
    """Set the first ``fraction`` of ``weight``'s entries (flattened) to exact zero, in place."""
    with torch.no_grad():
        flat = weight.view(-1)
        flat[: int(round(flat.numel() * fraction))] = 0.0
        # make sure no surviving entry is zero by accident
        rest = flat[int(round(flat.numel() * fraction)) :]
        rest[rest == 0] = 1e-3


#: Source of the tiny model file the loading and CLI tests write: Conv2d(3, 2, 3, stride 2) then Linear(512, 10)
#: on 1x3x32x32; ``build(width=2)`` is its factory. Tests append their own extra factories.
TINY_MODEL_SRC = textwrap.dedent(
    """
    import torch
    import torch.nn as nn


    class Tiny(nn.Module):
        def __init__(self, width=2):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
            self.fc = nn.Linear(width * 16 * 16, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))


    def build(width=2):
        return Tiny(width)
    """
)
