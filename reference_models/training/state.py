"""The model between pipeline stages, how it is built from a recipe and rebuilt from a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from reference_models.compression.pruning import apply_masks
from reference_models.compression.quantize import FP_BITS, quantize_model
from reference_models.registry import build_reference
from reference_models.training.export import load_dropped_state, load_plain_state
from reference_models.training.ghost_bn import convert_ghost_bn
from reference_models.training.recipes import Recipe, RecipeError
from scorer.checkpoint import Checkpoint

__all__ = ["PipelineState", "apply_quantise", "build_model", "restore_state"]


@dataclass
class PipelineState:
    """The model between stages and what the checkpoints record about it."""

    model: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    transforms: list[dict[str, Any]] = field(default_factory=list)
    exit_fractions: dict[str, float] = field(default_factory=dict)
    exit_threshold: float | None = None
    accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def act_bits(self) -> int | None:
        """The activation width set by the last quantisation, if it quantised every activation module (no
        ``exclude``, no per-layer act left in floating point); otherwise None, and only the quantised
        activations carry their width (per layer)."""
        for t in reversed(self.transforms):
            if t.get("op") == "quantise":
                per_layer = t.get("per_layer") or {}
                if t.get("exclude") or any(v.get("act", 0) >= FP_BITS for v in per_layer.values()):
                    return None
                return t.get("act_bits")
        return None


def build_model(recipe: Recipe, arch_kwargs: dict[str, Any]) -> nn.Module:
    """The recipe's architecture in training mode, with Ghost BN if the recipe asks for it."""
    try:
        model = build_reference(recipe.arch, **arch_kwargs)
    except KeyError as exc:
        raise RecipeError(f"{recipe.path}: {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{recipe.path}: bad arguments for {recipe.arch}: {exc}") from None
    if recipe.ghost_batch_size or recipe.ghost_splits:
        convert_ghost_bn(model, splits=recipe.ghost_splits, virtual_batch_size=recipe.ghost_batch_size)
    return model.train()


def apply_quantise(model: nn.Module, spec: dict[str, Any]) -> None:
    quantize_model(
        model,
        weight_bits=spec["weight_bits"],
        act_bits=spec.get("act_bits"),
        per_layer=spec.get("per_layer") or None,
        shared_exponent=spec.get("shared_exponent", False),
        exclude=spec.get("exclude", []),
        act_mode=spec.get("act_mode", "running_max"),
    )


def restore_state(recipe: Recipe, ckpt: Checkpoint) -> PipelineState:
    """Rebuild the pipeline state from a stage checkpoint (for ``--resume``)."""
    model = build_model(recipe, dict(ckpt.arch_kwargs))
    transforms = list(ckpt.meta.get("pipeline", []))
    for t in transforms:
        if t.get("op") == "quantise":
            apply_quantise(model, t)
    load_plain_state(model, ckpt.state_dict)
    load_dropped_state(model, ckpt.meta.get("quantiser_state", {}))
    if ckpt.masks:
        apply_masks(model, ckpt.masks)
    return PipelineState(
        model=model.train(),
        arch=ckpt.arch,
        arch_kwargs=dict(ckpt.arch_kwargs),
        transforms=transforms,
        exit_fractions=dict(ckpt.exit_fractions),
        exit_threshold=ckpt.meta.get("exit_threshold"),
        accuracy=ckpt.meta.get("accuracy"),
    )
