"""The pipeline stages: train, prune, quantise, binarise, exit.

Each stage function takes the run context, its :class:`~reference_models.training.recipes.StageSpec` and
the :class:`~reference_models.training.state.PipelineState`, changes the model in place and records what
it measured in ``state.extra`` (written to the checkpoint's ``meta["stage_results"]``).
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from reference_models.compression.binarize import BinaryConv2d, binarize_model
from reference_models.compression.early_exit import choose_threshold
from reference_models.compression.pruning import MagnitudePruner, _exact_count
from reference_models.compression.quantize import ActQuant
from reference_models.compression.schedule import parse_schedule_fractions
from reference_models.registry import build_reference, get_reference
from reference_models.training.channel_prune import stage_channel_prune
from reference_models.training.data import normalize
from reference_models.training.distributed import broadcast_buffers
from reference_models.training.exit_head import ExitHeadView, exit_block_of, exit_statistics
from reference_models.training.exit_prune import stage_exit_prune
from reference_models.training.init_dist import stage_reinit
from reference_models.training.precision_search import run_mixed_precision
from reference_models.training.recipes import RecipeError, StageSpec
from reference_models.training.state import PipelineState, apply_quantise
from reference_models.training.trainer import RunContext, evaluate, fit

__all__ = ["STAGES", "ExitHeadView", "calibrate", "run_stage"]


def _stage_train(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    result = fit(ctx, state.model, stage.train, stage.name)
    state.extra = {"train_loss": result.loss, "train_accuracy": result.accuracy}


def _stage_prune(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    p = stage.params
    rewind = bool(p.get("rewind", False))
    try:
        pruner = MagnitudePruner(
            state.model,
            method=p.get("method", "layer_normalized"),
            include=p.get("include", ["*"]),
            exclude=p.get("exclude", []),
            keep_initial=rewind,
        )
        first = parse_schedule_fractions(p["schedule"])[0]
        if _exact_count(first, pruner.total) < pruner.total - sum(int(m.sum()) for m in pruner.masks.values()):
            raise ValueError(f"schedule starts at {float(first):.6f}, below the current sparsity {pruner.sparsity():.6f}")
    except ValueError as exc:
        raise RecipeError(f"stage {stage.name}: {exc} ({state.arch})") from None

    rounds = len(parse_schedule_fractions(p["schedule"]))
    # A quick run (--limit-batches) prunes every step of the schedule but fine-tunes after the last one only:
    # the rounds before it run the same code, and each costs a whole training epoch (OSI's 11 rounds made the
    # README's smoke run spend 22 batches of 128 images, ~5 minutes on a 2-core CPU, in this stage).
    quick = ctx.limit_batches is not None and rounds > 1
    if quick:
        ctx.say(f"{stage.name}: --limit-batches: {rounds} pruning steps, fine-tuning after the last one only")
    tuned: list[int] = []

    def train_round(i: int, target: float) -> None:
        if quick and i < rounds - 1:
            return
        fit(ctx, state.model, stage.train, f"{stage.name} round {i + 1} ({target:.2%})")
        tuned.append(i + 1)

    reached = pruner.run_schedule(p["schedule"], train_round=train_round, rewind=rewind)
    state.extra = {"sparsity_per_round": reached, "sparsity": pruner.sparsity(), "pruned_tensors": len(pruner.params),
                   "fine_tuned_rounds": tuned}
    ctx.log(f"{stage.name}: {len(reached)} round(s), sparsity {pruner.sparsity():.6f} over {len(pruner.params)} tensors")


def _stage_quantise(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    spec = {"op": "quantise", **{k: v for k, v in stage.params.items() if k != "calibrate_batches"}}
    spec.setdefault("act_bits", None)
    try:
        apply_quantise(state.model, spec)
    except ValueError as exc:
        raise RecipeError(f"stage {stage.name}: {exc}") from None
    state.model.to(ctx.env.device)
    state.transforms.append(spec)
    calibrated = calibrate(ctx, state.model, int(stage.params.get("calibrate_batches", 10)), stage.train.batch_size)
    result = fit(ctx, state.model, stage.train, stage.name)
    state.extra = {
        "train_loss": result.loss, "weight_bits": spec["weight_bits"], "act_bits": spec["act_bits"],
        "calibration_batches": calibrated,
    }


@torch.no_grad()
def calibrate(ctx: RunContext, model: nn.Module, batches: int, batch_size: int) -> int:
    """Set activation-quantiser ranges from ``batches`` training batches (the rest of the model in eval
    mode, so BN statistics stay as they are); rank 0's ranges are shared with every process."""
    quantisers = [m for m in model.modules() if isinstance(m, ActQuant)]
    if not quantisers or batches <= 0:
        return 0
    if ctx.limit_batches is not None:
        batches = min(batches, ctx.limit_batches)
    was_training = model.training
    model.eval()
    for q in quantisers:
        q.train()
    local = ctx.local_batch(batch_size)
    order = torch.randperm(len(ctx.train_set), generator=torch.Generator().manual_seed(ctx.seed))
    done = 0
    try:
        for start in range(0, min(len(order), batches * local), local):
            x, _ = ctx.train_set.batch(order[start : start + local])
            model(normalize(x).to(ctx.env.device))
            done += 1
    finally:
        model.train(was_training)
    broadcast_buffers(ctx.env, model)
    return done


def _accepts(arch: str, argument: str) -> bool:
    try:
        return argument in inspect.signature(get_reference(arch).factory).parameters
    except (KeyError, TypeError, ValueError):
        return False


def _stage_binarise(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    if not _accepts(state.arch, "binary_weights"):
        raise RecipeError(
            f"stage {stage.name}: binarise needs an architecture with a binary_weights argument "
            f"(e.g. bnn_resnet18), so that the scorer can rebuild the binary network; {state.arch} has none"
        )
    if state.arch_kwargs.get("binary_weights", True) is not False:
        raise RecipeError(
            f"stage {stage.name}: start from binary_weights = false ([model] kwargs): stage 1 trains "
            "full-precision weights with binary activations"
        )
    stage1, stage2 = stage.params["stage1"], stage.params["stage2"]
    first = fit(ctx, state.model, stage1, f"{stage.name} stage 1")
    teacher = copy.deepcopy(state.model).eval() if stage2.distill_alpha > 0 else None
    binarize_model(state.model, "weights_only")
    state.arch_kwargs["binary_weights"] = True
    expected = {n for n, m in build_reference(state.arch, **state.arch_kwargs).named_modules()
                if isinstance(m, BinaryConv2d)}
    got = {n for n, m in state.model.named_modules() if isinstance(m, BinaryConv2d)}
    if expected != got:
        raise RuntimeError(f"binarised layers {sorted(got ^ expected)[:4]} differ from {state.arch}(binary_weights=True)")
    state.model.to(ctx.env.device)
    second = fit(ctx, state.model, stage2, f"{stage.name} stage 2", teacher=teacher)
    state.extra = {"stage1_loss": first.loss, "stage2_loss": second.loss, "binary_layers": len(got)}

def _stage_exit(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    model = state.model
    p = stage.params
    if not (callable(getattr(model, "exit_paths", None)) and callable(getattr(model, "forward_with_exit", None))):
        raise RecipeError(
            f"stage {stage.name}: {state.arch} has no built-in exit (exit_paths / forward_with_exit), so a "
            "checkpoint could not be re-scored; use an architecture with an exit head (osi_ai)"
        )
    try:
        head = model.get_submodule(p["head"])
        model.get_submodule(exit_block_of(model, stage))
    except AttributeError as exc:
        raise RecipeError(f"stage {stage.name}: {exc}") from None
    names = [k for k in model.exit_paths() if k != "final"]
    exit_name = p.get("exit_name") or (names[0] if len(names) == 1 else None)
    if exit_name not in names:
        raise RecipeError(f"stage {stage.name}: exit_name must be one of {names}")
    view = ExitHeadView(model, exit_block_of(model, stage), p["head"], bool(p.get("update_backbone_bn", True)))
    flags = {n: q.requires_grad for n, q in model.named_parameters()}
    for q in model.parameters():
        q.requires_grad_(False)
    for q in head.parameters():
        q.requires_grad_(True)
    try:
        result = fit(ctx, model, stage.train, stage.name, forward_module=view)
    finally:
        for n, q in model.named_parameters():
            q.requires_grad_(flags[n])
    conf, exit_ok, final_ok = exit_statistics(ctx, model, stage.train.batch_size)
    if "threshold" in p:
        threshold = float(p["threshold"])
    elif "target_fraction" in p:
        threshold = choose_threshold(conf, exit_ok, float(p["target_fraction"]), "fraction")
    else:
        threshold = choose_threshold(conf, exit_ok, float(p["target_accuracy"]), "accuracy", final_correct=final_ok)
    exited = conf > threshold
    fraction = float(exited.double().mean()) if len(conf) else 0.0
    accuracy = float(torch.where(exited, exit_ok, final_ok).double().mean()) if len(conf) else float("nan")
    state.exit_fractions = {exit_name: fraction, "final": 1.0 - fraction}
    state.exit_threshold = threshold
    state.extra = {
        "head_loss": result.loss, "exit_threshold": threshold, "exit_fraction": fraction,
        "exit_accuracy_all": float(exit_ok.double().mean()) if len(conf) else float("nan"),
        "accuracy_with_exit": accuracy, "measured_on": int(len(conf)),
    }
    state.accuracy = accuracy
    ctx.log(f"{stage.name}: threshold {threshold:.4f}, {fraction:.2%} of {len(conf)} test images exit, "
            f"top-1 with exit {accuracy:.2%}")


def _stage_mixed_precision(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    run_mixed_precision(ctx, stage, state, calibrate)  # reference_models/training/precision_search.py


STAGES = {
    "train": _stage_train,
    "prune": _stage_prune,
    "channel_prune": stage_channel_prune,
    "quantise": _stage_quantise,
    "binarise": _stage_binarise,
    "exit": _stage_exit,
    "exit_prune": stage_exit_prune,
    "reinit": stage_reinit,
    "mixed_precision": _stage_mixed_precision,
}


def run_stage(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    """Run one stage on ``state`` (in place) and measure the test accuracy."""
    state.model.to(ctx.env.device)
    STAGES[stage.kind](ctx, stage, state)
    if stage.kind not in ("exit", "exit_prune"):  # those measure the accuracy with the exit
        state.accuracy = evaluate(ctx, state.model, ctx.local_batch(stage.train.batch_size))
