"""Unstructured magnitude pruning with exact sparsity targets, schedules and enforced masks.

Methods (``method=``):

* ``"global"``: one threshold over ``|w|`` of every selected tensor.
* ``"layer_normalized"`` (OSI AI): each tensor's magnitudes are divided by its L2 norm, then one global
  threshold over all of them.
* ``"uniform"``: every tensor is pruned to the same sparsity (largest-remainder rounding so the total is
  exact as well; each tensor is within one weight of ``s * numel``).

Selected tensors are parameters with ``ndim > 1`` whose name ends in ``weight`` (conv / linear), further
filtered by ``include`` / ``exclude`` name globs. Masks are bool tensors (``True`` = kept) keyed by parameter
name, stored on the model (read back with :func:`masks_of`) and enforced through optimiser steps by
:class:`MaskEnforcer`. Pruned weights are stored as exact (+0.0) zeros.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from reference_models.compression.schedule import parse_schedule_fractions

__all__ = [
    "MASKS_ATTR",
    "MagnitudePruner",
    "MaskEnforcer",
    "apply_masks",
    "masks_of",
    "prunable_parameters",
    "sparsity_of",
]

MASKS_ATTR = "_compression_masks"
METHODS = ("global", "layer_normalized", "uniform")


def _matches(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def prunable_parameters(
    model: nn.Module,
    include: Iterable[str] = ("*",),
    exclude: Iterable[str] = (),
) -> dict[str, nn.Parameter]:
    """Parameters with ``ndim > 1`` named ``*weight`` selected by ``include`` and not ``exclude`` globs."""
    include, exclude = tuple(include), tuple(exclude)
    return {
        name: p
        for name, p in model.named_parameters()
        if p.ndim > 1 and name.endswith("weight") and _matches(name, include) and not _matches(name, exclude)
    }


def _exact_count(sparsity: float | Fraction, total: int) -> int:
    """``round(sparsity * total)`` computed on the decimal value (half rounds up)."""
    frac = sparsity if isinstance(sparsity, Fraction) else Fraction(str(sparsity))
    if not 0 <= frac <= 1:
        raise ValueError(f"sparsity {float(frac)} outside [0, 1]")
    return int((frac * total + Fraction(1, 2)) // 1)


def masks_of(model: nn.Module, from_zeros: bool = False) -> dict[str, Tensor]:
    """Masks (``True`` = kept) keyed by parameter name.

    Reads the masks stored by :class:`MagnitudePruner` / :func:`apply_masks`, and ``torch.nn.utils.prune``
    ``<name>_mask`` buffers. With ``from_zeros=True`` any prunable tensor without a stored mask gets
    ``weight != 0``.
    """
    out: dict[str, Tensor] = {k: v.clone() for k, v in getattr(model, MASKS_ATTR, {}).items()}
    for mod_name, module in model.named_modules():
        for buf_name, buf in module.named_buffers(recurse=False):
            if buf_name.endswith("_mask"):
                pname = buf_name[: -len("_mask")]
                key = f"{mod_name}.{pname}" if mod_name else pname
                out.setdefault(key, buf.detach().bool().clone())
    if from_zeros:
        for name, p in prunable_parameters(model).items():
            out.setdefault(name, p.detach() != 0)
    return out


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Zero the pruned entries of ``model``'s parameters and store ``masks`` on the model."""
    params = dict(model.named_parameters())
    stored: dict[str, Tensor] = getattr(model, MASKS_ATTR, {})
    with torch.no_grad():
        for name, mask in masks.items():
            if name not in params:
                raise KeyError(f"mask for unknown parameter {name!r}")
            p = params[name]
            if mask.shape != p.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} != parameter {name} {tuple(p.shape)}")
            mask = mask.to(device=p.device, dtype=torch.bool)
            p.masked_fill_(~mask, 0.0)
            stored[name] = mask
    object.__setattr__(model, MASKS_ATTR, stored)


def sparsity_of(model: nn.Module, names: Iterable[str] | None = None) -> float:
    """Fraction of exact zeros over the prunable tensors (or the named parameters)."""
    params = dict(model.named_parameters())
    chosen = [params[n] for n in names] if names is not None else list(prunable_parameters(model).values())
    total = sum(p.numel() for p in chosen)
    zeros = sum(int((p.detach() == 0).sum()) for p in chosen)
    return zeros / total if total else 0.0


class MaskEnforcer:
    """Keep masked weights at exact zero through every optimiser step.

    Registers a gradient hook per masked parameter (pruned entries get zero gradient) and an optimizer
    step post-hook that re-zeroes pruned weights and the matching entries of per-parameter optimiser state
    (momentum, Adam moments). ``masks`` is read live, so a pruner can update it in place between rounds.
    Call :meth:`remove` (or use as a context manager) to leave nothing behind.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.masks = masks
        self.optimizer = optimizer
        self._params = dict(model.named_parameters())
        self._handles: list[Any] = []
        for name in list(masks):
            self._handles.append(self._params[name].register_hook(self._grad_hook(name)))
        self._handles.append(optimizer.register_step_post_hook(self._post_step))
        self.enforce()

    def _grad_hook(self, name: str) -> Callable[[Tensor], Tensor]:
        def hook(grad: Tensor) -> Tensor:
            mask = self.masks.get(name)
            return grad if mask is None else grad.masked_fill(~mask.to(grad.device), 0.0)

        return hook

    def enforce(self) -> None:
        """Zero pruned weights and pruned entries of the optimiser state now."""
        with torch.no_grad():
            for name, mask in self.masks.items():
                p = self._params[name]
                m = mask.to(p.device)
                p.masked_fill_(~m, 0.0)
                for value in self.optimizer.state.get(p, {}).values():
                    if isinstance(value, Tensor) and value.shape == p.shape:
                        value.masked_fill_(~m, 0.0)

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.enforce()

    def remove(self) -> None:
        """Remove every hook this enforcer registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> MaskEnforcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class MagnitudePruner:
    """Magnitude pruning of a model's weight tensors to exact sparsity targets.

    Args:
        model: the model to prune in place.
        method: ``"global"``, ``"layer_normalized"`` (OSI) or ``"uniform"``.
        include / exclude: parameter-name globs selecting the tensors.
        keep_initial: snapshot all parameters now so :meth:`rewind` can reset surviving weights to them
            (lottery ticket); otherwise :meth:`rewind` raises.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "layer_normalized",
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = (),
        keep_initial: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")
        self.model = model
        self.method = method
        self.params = prunable_parameters(model, include, exclude)
        if not self.params:
            raise ValueError("no prunable parameters selected")
        existing = getattr(model, MASKS_ATTR, {})
        self.masks: dict[str, Tensor] = {
            n: existing.get(n, torch.ones_like(p, dtype=torch.bool)).clone() for n, p in self.params.items()
        }
        self.initial_state: dict[str, Tensor] | None = None
        if keep_initial:
            self.initial_state = {n: p.detach().clone() for n, p in model.named_parameters()}

    @property
    def total(self) -> int:
        """Number of weights in the selected tensors."""
        return sum(p.numel() for p in self.params.values())

    def sparsity(self) -> float:
        """Current mask sparsity over the selected tensors."""
        pruned = sum(int((~m).sum()) for m in self.masks.values())
        return pruned / self.total

    def _scores(self, name: str) -> Tensor:
        w = self.params[name].detach().to(torch.float64).abs()
        if self.method == "layer_normalized":
            norm = torch.linalg.vector_norm(w)
            w = w / norm if norm > 0 else w
        # already-pruned entries stay pruned: rank them first
        return w.masked_fill(~self.masks[name].to(w.device), -1.0).flatten()

    @staticmethod
    def _prune_lowest(scores: Tensor, k: int) -> Tensor:
        """Bool keep-mask with the ``k`` lowest scores removed; ties go to the lower flat index."""
        keep = torch.ones_like(scores, dtype=torch.bool)
        if k > 0:
            order = torch.sort(scores.cpu(), stable=True).indices
            keep[order[:k].to(keep.device)] = False
        return keep

    def compute_masks(self, sparsity: float | Fraction) -> dict[str, Tensor]:
        """Masks that prune exactly ``round(sparsity * total)`` weights (no side effects)."""
        names = list(self.params)
        if self.method == "uniform":
            counts = self._uniform_counts(sparsity)
            return {
                n: self._prune_lowest(self._scores(n), counts[n]).view_as(self.params[n]) for n in names
            }
        k = _exact_count(sparsity, self.total)
        flat = torch.cat([self._scores(n).cpu() for n in names])
        keep = self._prune_lowest(flat, k)
        out: dict[str, Tensor] = {}
        offset = 0
        for n in names:
            p = self.params[n]
            out[n] = keep[offset : offset + p.numel()].view_as(p).to(p.device)
            offset += p.numel()
        return out

    def _uniform_counts(self, sparsity: float | Fraction) -> dict[str, int]:
        frac = sparsity if isinstance(sparsity, Fraction) else Fraction(str(sparsity))
        k_total = _exact_count(frac, self.total)
        exact = {n: frac * p.numel() for n, p in self.params.items()}
        counts = {n: int(v // 1) for n, v in exact.items()}
        leftover = k_total - sum(counts.values())
        by_remainder = sorted(self.params, key=lambda n: -(exact[n] - counts[n]))  # stable: ties by order
        for n in by_remainder[: max(leftover, 0)]:
            counts[n] += 1
        return counts

    def prune_to(self, sparsity: float | Fraction) -> dict[str, Tensor]:
        """Prune to exactly ``round(sparsity * total)`` zeros, update and apply the masks, return them."""
        already = sum(int((~m).sum()) for m in self.masks.values())
        if _exact_count(sparsity, self.total) < already:
            raise ValueError(f"target sparsity {float(sparsity)} is below the current {self.sparsity():.6f}")
        new = self.compute_masks(sparsity)
        for n, m in new.items():
            self.masks[n] = m  # update in place so live enforcers see the new masks
        apply_masks(self.model, self.masks)
        return self.masks

    def rewind(self) -> None:
        """Reset every parameter to its initial value, keeping pruned weights at zero (lottery ticket)."""
        if self.initial_state is None:
            raise RuntimeError("MagnitudePruner(keep_initial=True) is needed to rewind")
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.initial_state:
                    p.copy_(self.initial_state[name])
        apply_masks(self.model, self.masks)

    def enforce(self, optimizer: torch.optim.Optimizer) -> MaskEnforcer:
        """Return a :class:`MaskEnforcer` bound to this pruner's (live) masks."""
        return MaskEnforcer(self.model, self.masks, optimizer)

    def run_schedule(
        self,
        schedule: str | Iterable[float],
        train_round: Callable[[int, float], None] | None = None,
        rewind: bool = False,
    ) -> list[float]:
        """Iterative pruning: for each target, prune, optionally rewind, then ``train_round(i, target)``.

        ``schedule`` is a string for :func:`parse_schedule` or a list of cumulative targets. Returns the
        sparsity reached after each round's pruning step.
        """
        targets: list[Fraction] = (
            parse_schedule_fractions(schedule)
            if isinstance(schedule, str)
            else [Fraction(str(float(t))) for t in schedule]
        )
        reached: list[float] = []
        for i, target in enumerate(targets):
            self.prune_to(target)
            if rewind:
                self.rewind()
            reached.append(self.sparsity())
            if train_round is not None:
                train_round(i, float(target))
        return reached
