"""The ``channel_prune`` stage: Hessian (K-FAC OBD) channel pruning with annealing, WaveComp step 2.

The algorithm is :func:`reference_models.compression.hessian_prune.run_annealed_schedule`; this stage feeds
it training batches, fine-tunes after every pruning round (``epochs`` of the stage) and every annealing
(growth) step (``anneal_epochs_fraction`` of them at ``anneal_lr_scale`` times the learning rate: WaveComp's
``main_prune.py`` fine-tunes 200 epochs after pruning, 50 at 10x the learning rate after bringing channels
back), and records the new widths in the checkpoint's ``arch_kwargs`` so that the registry rebuilds the
narrower network. The architecture names its prunable chains (``channel_chains()``) and the keyword
arguments of its current widths (``width_kwargs()``), e.g. ``wavecomp_pyramidnet``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from reference_models.compression.hessian_prune import Selection, run_annealed_schedule
from reference_models.training.data import normalize
from reference_models.training.distributed import broadcast_object
from reference_models.training.recipes import RecipeError, StageSpec
from reference_models.training.state import PipelineState
from reference_models.training.trainer import RunContext, fit

__all__ = ["stage_channel_prune"]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stage_channel_prune(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    """Run the stage on ``state`` (the model is replaced by the narrower one)."""
    model = state.model
    if not (callable(getattr(model, "channel_chains", None)) and callable(getattr(model, "width_kwargs", None))):
        raise RecipeError(
            f"stage {stage.name}: {state.arch} does not name its prunable channels (channel_chains / "
            "width_kwargs), so a channel-pruned checkpoint could not be rebuilt; use e.g. wavecomp_pyramidnet"
        )
    p = stage.params
    tune = stage.train
    anneal_epochs = max(1, round(tune.epochs * p.get("anneal_epochs_fraction", 0.25))) if tune.epochs else 0
    anneal = dataclasses.replace(tune.scaled_to(anneal_epochs), lr=tune.lr * p.get("anneal_lr_scale", 10.0))
    n_batches = int(p.get("fisher_batches", 10))
    if ctx.limit_batches is not None:
        n_batches = min(n_batches, ctx.limit_batches)
    local = ctx.local_batch(tune.batch_size)
    device = ctx.env.device

    def batches(_model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(ctx.train_set), generator=torch.Generator().manual_seed(ctx.seed))
        out = []
        for start in range(0, min(len(order), n_batches * local), local):
            x, y = ctx.train_set.batch(order[start : start + local])
            out.append((normalize(x).to(device), y.to(device)))
        return out

    def train_round(new: nn.Module, i: int, phase: str) -> None:
        state.model = new.to(device)
        label = f"{stage.name} round {i + 1} ({phase})"
        fit(ctx, state.model, tune if phase == "prune" else anneal, label)

    def decide(select: Callable[[], Selection]) -> Selection:  # rank 0 ranks the channels, every process applies them
        return broadcast_object(ctx.env, select() if ctx.env.is_main else None)

    before = _params(model)
    try:
        final, log = run_annealed_schedule(
            model, model.channel_chains(), p["schedule"], batches, train_round,
            back_ratio=float(p.get("back_ratio", 0.25)), limit=float(p.get("limit", 0.5)),
            fisher=p.get("fisher", "true"), seed=ctx.seed, decide=decide,
        )
    except ValueError as exc:
        raise RecipeError(f"stage {stage.name}: {exc} ({state.arch})") from None
    state.model = final.to(device)
    state.arch_kwargs.update(final.width_kwargs())
    after = _params(final)
    state.extra = {
        "rounds": log, "params_before": before, "params_after": after, "params_removed_fraction": 1 - after / before,
    }
    ctx.log(f"{stage.name}: {len(log)} round(s), parameters {before} -> {after} ({1 - after / before:.2%} removed)")
