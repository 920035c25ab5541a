"""The ``exit_prune`` stage: magnitude pruning of an early-exit head after the ``exit`` stage (OSI AI).

OSI AI pruned their early-exit module to 50% in 5 gradual rounds with layer-wise normalised magnitudes,
600 epochs per round, the main network frozen (``Lee-Gihun/MicroNet_OSI-AI`` ``Config/reproduce.json``
``early_exit.prune``; team_scores.md §2.1: "Early-exit module: 50% in 5 rounds", 10,280 of 20,560 weights
kept). Here the head's weight tensors (``<head>.*``) are pruned with
:class:`~reference_models.compression.pruning.MagnitudePruner` on the stage's ``schedule``; each round trains
the head alone through :class:`~reference_models.training.exit_head.ExitHeadView` (the masks of the main
network stay as the prune stage left them), and the exit fraction and accuracy are measured again on the
test split at the threshold the ``exit`` stage chose, so the checkpoint's score weights the pruned exit path
by the fraction the pruned head achieves.
"""

from __future__ import annotations

import torch

from reference_models.compression.pruning import MagnitudePruner
from reference_models.training.exit_head import ExitHeadView, exit_block_of, exit_statistics
from reference_models.training.recipes import RecipeError, StageSpec
from reference_models.training.state import PipelineState
from reference_models.training.trainer import RunContext, fit

__all__ = ["stage_exit_prune"]


def stage_exit_prune(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    """Prune the exit head on ``state`` in place and re-measure the exit fraction."""
    model = state.model
    p = stage.params
    exits = [k for k in state.exit_fractions if k != "final"]
    if state.exit_threshold is None or len(exits) != 1:
        raise RecipeError(f"stage {stage.name}: exit_prune needs an exit stage before it (a trained head and threshold)")
    head_name = p["head"]
    try:
        head = model.get_submodule(head_name)
        view = ExitHeadView(model, exit_block_of(model, stage), head_name, bool(p.get("update_backbone_bn", True)))
        pruner = MagnitudePruner(
            model, method=p.get("method", "layer_normalized"), include=[f"{head_name}.*"], exclude=p.get("exclude", [])
        )
    except (AttributeError, ValueError) as exc:
        raise RecipeError(f"stage {stage.name}: {exc} ({state.arch})") from None
    flags = {n: q.requires_grad for n, q in model.named_parameters()}
    for q in model.parameters():
        q.requires_grad_(False)
    for q in head.parameters():
        q.requires_grad_(True)

    def train_round(i: int, target: float) -> None:
        fit(ctx, model, stage.train, f"{stage.name} round {i + 1} ({target:.2%})", forward_module=view)

    try:
        reached = pruner.run_schedule(p["schedule"], train_round=train_round)
    except ValueError as exc:
        raise RecipeError(f"stage {stage.name}: {exc} ({state.arch})") from None
    finally:
        for n, q in model.named_parameters():
            q.requires_grad_(flags[n])
    conf, exit_ok, final_ok = exit_statistics(ctx, model, stage.train.batch_size)
    exited = conf > state.exit_threshold
    fraction = float(exited.double().mean()) if len(conf) else 0.0
    accuracy = float(torch.where(exited, exit_ok, final_ok).double().mean()) if len(conf) else float("nan")
    state.exit_fractions = {exits[0]: fraction, "final": 1.0 - fraction}
    state.accuracy = accuracy
    state.extra = {
        "sparsity_per_round": reached, "head_sparsity": pruner.sparsity(), "head_weights": pruner.total,
        "exit_threshold": state.exit_threshold, "exit_fraction": fraction, "accuracy_with_exit": accuracy,
        "measured_on": int(len(conf)),
    }
    ctx.log(f"{stage.name}: head sparsity {pruner.sparsity():.6f} over {pruner.total} weights; "
            f"{fraction:.2%} of {len(conf)} test images exit, top-1 with exit {accuracy:.2%}")
