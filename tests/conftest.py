"""Shared test helpers."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def zero_fraction(weight: torch.Tensor, fraction: float) -> None:
    """Set the first ``fraction`` of ``weight``'s entries (flattened) to exact zero, in place."""
    with torch.no_grad():
        flat = weight.view(-1)
        flat[: int(round(flat.numel() * fraction))] = 0.0
        # make sure no surviving entry is zero by accident
        rest = flat[int(round(flat.numel() * fraction)) :]
        rest[rest == 0] = 1e-3
