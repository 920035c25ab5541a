"""SRIP, the spectral restricted isometry property regulariser (Bansal et al., NeurIPS 2018).

KAIST AI attach it to the pointwise (1x1) convolutions only. For a weight reshaped to a matrix ``W`` of
shape (out, in) the penalty is the spectral norm of ``W Wᵀ − I`` (or ``Wᵀ W − I`` when out > in, i.e. the
smaller Gram matrix, so any matrix with orthonormal rows or columns scores exactly 0), estimated by power
iteration. The iteration vector is kept between calls (warm start, as ``torch.nn.utils.spectral_norm``) and
seeded deterministically, so every process of a distributed run computes the same value.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["SRIPRegularizer", "gram_minus_identity", "pointwise_convs", "spectral_norm_power", "srip_penalty"]


def gram_minus_identity(weight: Tensor) -> Tensor:
    """``W Wᵀ − I`` for a weight flattened to (out, rest), using the smaller of the two Gram matrices."""
    w = weight.flatten(1)
    gram = w @ w.t() if w.shape[0] <= w.shape[1] else w.t() @ w
    return gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)


def spectral_norm_power(matrix: Tensor, vector: Tensor | None = None, iters: int = 2) -> tuple[Tensor, Tensor]:
    """Largest singular value of a square matrix by power iteration.

    Returns ``(sigma, v)``: ``sigma = ||A v||`` is differentiable in ``A`` (the iterate ``v`` is not), and
    ``v`` (unit norm) can seed the next call.
    """
    n = matrix.shape[0]
    if vector is None:
        vector = torch.ones(n, dtype=matrix.dtype, device=matrix.device)
    v = vector.detach().to(matrix.dtype)
    v = v / v.norm().clamp(min=1e-12)
    with torch.no_grad():
        for _ in range(iters):
            u = matrix @ v
            norm = u.norm()
            if norm <= 1e-12:  # A v = 0: sigma is 0 along v; for A = 0 it is exactly 0
                break
            v = u / norm
    return (matrix @ v).norm(), v


def srip_penalty(weight: Tensor, vector: Tensor | None = None, iters: int = 2) -> tuple[Tensor, Tensor]:
    """``sigma(W Wᵀ − I)`` for one weight; returns ``(penalty, iteration vector)``."""
    return spectral_norm_power(gram_minus_identity(weight), vector, iters)


def pointwise_convs(
    model: nn.Module, include: Iterable[str] = ("*",), exclude: Iterable[str] = ()
) -> dict[str, nn.Conv2d]:
    """Modules that are 1x1, non-grouped convolutions, by name, filtered by name globs."""
    include, exclude = tuple(include), tuple(exclude)
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
        and tuple(m.kernel_size) == (1, 1)
        and m.groups == 1
        and any(fnmatch.fnmatchcase(name, g) for g in include)
        and not any(fnmatch.fnmatchcase(name, g) for g in exclude)
    }


class SRIPRegularizer:
    """``coefficient * sum`` of :func:`srip_penalty` over a model's pointwise convolutions.

    Args:
        model: the model (the convs are found once, by name, at construction).
        coefficient: the weight of the penalty in the loss.
        iters: power iterations per call.
        include / exclude: module-name globs.
        seed: seeds the initial iteration vectors.
    """

    def __init__(
        self,
        model: nn.Module,
        coefficient: float,
        iters: int = 2,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = (),
        seed: int = 0,
    ) -> None:
        self.coefficient = coefficient
        self.iters = iters
        self.convs = pointwise_convs(model, include, exclude)
        gen = torch.Generator().manual_seed(seed)
        self.vectors: dict[str, Tensor] = {}
        for name, conv in self.convs.items():
            w = conv.weight.flatten(1)
            n = min(w.shape)
            self.vectors[name] = torch.randn(n, generator=gen, dtype=w.dtype)

    def __len__(self) -> int:
        return len(self.convs)

    def __call__(self) -> Tensor:
        """The weighted penalty (a scalar tensor with gradients to the conv weights)."""
        total: Tensor | None = None
        for name, conv in self.convs.items():
            sigma, v = srip_penalty(conv.weight, self.vectors[name].to(conv.weight.device), self.iters)
            self.vectors[name] = v.detach()
            total = sigma if total is None else total + sigma
        if total is None:
            return torch.zeros(())
        return total * self.coefficient
