"""Optimisers and learning-rate schedules.

* :func:`param_groups`: two groups, with weight decay on conv/linear weights only; biases (OSI's "no bias
  decay") and normalisation / other 1-D parameters (KAIST ver1's ``batch_wd=False``) get none, each
  switchable.
* :func:`build_optimizer`: SGD (optionally Nesterov) or Adam.
* :class:`CosinePeriodLR`: cosine annealing from the base lr to ``eta_min`` over ``period`` epochs, then
  either a warm restart (KAIST: period 150 in 600 epochs) or a hold at ``eta_min`` (OSI: one period).
* :func:`build_scheduler`: cosine, step (multiply by ``gamma`` at milestones) or constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR

__all__ = ["CosinePeriodLR", "build_optimizer", "build_scheduler", "param_groups"]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
)


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_bias: bool = True,
    no_decay_norm: bool = True,
) -> list[dict[str, Any]]:
    """``[{"params": decayed, "weight_decay": wd}, {"params": not decayed, "weight_decay": 0}]``.

    Only parameters with ``requires_grad`` are included; each appears once (shared parameters too).
    ``no_decay_bias`` exempts parameters named ``*bias``; ``no_decay_norm`` exempts the parameters of
    normalisation layers and every other parameter with fewer than two dimensions (e.g. PReLU slopes).
    Empty groups are dropped.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_bias = p_name.endswith("bias")
            is_norm_or_1d = isinstance(module, _NORM_TYPES) or p.ndim < 2
            if (no_decay_bias and is_bias) or (no_decay_norm and is_norm_or_1d):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    groups: list[dict[str, Any]] | Sequence[nn.Parameter],
    name: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """SGD (``momentum``, ``nesterov``) or Adam (``betas``); ``weight_decay`` is the default for groups
    that do not set their own."""
    groups = list(groups)
    if not groups:
        raise ValueError("no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose 'sgd' or 'adam'")


class CosinePeriodLR(LRScheduler):
    """``lr(t) = eta_min + (base - eta_min) * (1 + cos(pi * tau / period)) / 2``, stepped once per epoch.

    ``tau = t mod period`` with ``restart=True`` (SGDR warm restarts), ``tau = min(t, period)`` otherwise.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, period: int, eta_min: float = 0.0, restart: bool = True,
        last_epoch: int = -1,
    ) -> None:
        if period < 1:
            raise ValueError(f"cosine period must be >= 1 epoch, got {period}")
        self.period = period
        self.eta_min = eta_min
        self.restart = restart
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        """The learning rate at ``epoch`` for a group whose base rate is ``base_lr``."""
        tau = epoch % self.period if self.restart else min(epoch, self.period)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * tau / self.period)) / 2

    def get_lr(self) -> list[float]:  # noqa: D102
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]


class _ConstantLR(LRScheduler):
    def get_lr(self) -> list[float]:
        return list(self.base_lrs)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    period: int = 1,
    eta_min: float = 0.0,
    restart: bool = True,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> LRScheduler:
    """``"cosine"`` (:class:`CosinePeriodLR`), ``"step"`` (MultiStepLR) or ``"constant"``."""
    if kind == "cosine":
        return CosinePeriodLR(optimizer, period, eta_min, restart)
    if kind == "step":
        return MultiStepLR(optimizer, list(milestones), gamma)
    if kind == "constant":
        return _ConstantLR(optimizer)
    raise ValueError(f"unknown scheduler {kind!r}; choose 'cosine', 'step' or 'constant'")
