"""The ``mixed_precision`` stage: allocate per-layer widths under a score budget, then QAT fine-tune.

Keys (``[[stages]] kind = "mixed_precision"``): ``budget_score`` (a MicroNet score) or ``budget_fraction``
(of the score of the model entering the stage, scored as its checkpoint is: ``[score]`` rules and bits);
``weight_candidates`` (default ``[2, 3, 4, 5, 6, 8]``) and ``act_candidates`` (layer-output widths, default
``[4, 6, 8]``; the default activation width, meaning no output quantiser, is always one); ``act_bits`` (optional:
an ActQuant after every activation module and the checkpoint's default activation width, as ``quantise``);
``exclude`` (layer globs left in floating point), ``sensitivity_batches`` (default 4), ``calibrate_batches``
(default 10), ``act_mode``, and the training keys of the fine-tuning.

The search is :mod:`reference_models.compression.mixed_precision` with ``scorer.Scorer`` as the cost model
under the checkpoint's own defaults (weight ``[score] bits``, activation ``act_bits`` or ``[score] bits``,
accumulator 32); the QAT is the ``quantise`` stage's (``apply_quantise``, ``calibrate``, ``fit``). After the
fine-tuning the checkpoint the pipeline will write is scored exactly as ``micronet-score`` scores it; if weights
that moved during training changed its zeros and it lies over the budget, layers are narrowed further (weights
only, no more training) until it does not, and it is an error if that fails.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reference_models.compression.mixed_precision import (
    QUANTISABLE,
    BudgetError,
    Sensitivity,
    allocate,
    check_candidates,
    matches,
    measure_sensitivity,
    quantised_density,
    resolve_budget,
)
from reference_models.compression.pruning import masks_of
from reference_models.compression.quantize import FP_BITS, ActQuant, QuantConv2d, QuantLinear
from reference_models.registry import build_reference
from reference_models.training.data import normalize
from reference_models.training.export import (
    checkpoint_bits,
    load_plain_state,
    make_checkpoint,
    plain_state_dict,
)
from reference_models.training.recipes import RecipeError, ScoreSpec, StageSpec
from reference_models.training.state import PipelineState, apply_quantise
from reference_models.training.trainer import RunContext, fit

__all__ = ["run_mixed_precision"]

DEFAULT_WEIGHT_CANDIDATES = [2, 3, 4, 5, 6, 8]
DEFAULT_ACT_CANDIDATES = [4, 6, 8]


def _plain_model(state: PipelineState) -> nn.Module:
    """The architecture with the state's weights under plain names, as a checkpoint of it is loaded."""
    plain = build_reference(state.arch, **state.arch_kwargs)
    load_plain_state(plain, plain_state_dict(state.model))
    return plain.eval()


def _scorer(model: nn.Module, spec: ScoreSpec, state: PipelineState) -> Any:
    from scorer import Scorer

    return Scorer(model, input_shape=tuple(spec.input_shape), track=spec.track, rules=spec.rules,
                  exit_fractions=dict(state.exit_fractions) or None)


def _batches(ctx: RunContext, count: int, batch_size: int) -> list[torch.Tensor]:
    """The first ``count`` training batches of the seed's order, the same on every process (so every process
    allocates the same widths)."""
    if ctx.limit_batches is not None:
        count = min(count, ctx.limit_batches)
    size = min(ctx.global_batch(batch_size), len(ctx.train_set))
    order = torch.randperm(len(ctx.train_set), generator=torch.Generator().manual_seed(ctx.seed))
    out = []
    for start in range(0, min(len(order), count * size), size):
        x, _ = ctx.train_set.batch(order[start : start + size])
        out.append(normalize(x).to(ctx.env.device))
    return out


def exact_checkpoint_score(state: PipelineState, spec: ScoreSpec) -> float:
    """The score ``micronet-score`` gives the checkpoint the pipeline writes for ``state`` now."""
    from reference_models.training.export import score_checkpoint
    from scorer.checkpoint import save_checkpoint

    meta = {"input_shape": list(spec.input_shape), "track": spec.track, "rules": spec.rules, "bits": spec.bits}
    ckpt = make_checkpoint(state.model, state.arch, state.arch_kwargs, masks_of(state.model),
                           checkpoint_bits(state.model, state.act_bits), state.exit_fractions, meta)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(ckpt, Path(tmp) / "candidate.ckpt")
        return float(score_checkpoint(path).totals["score"])


def run_mixed_precision(ctx: RunContext, stage: StageSpec, state: PipelineState, calibrate: Any) -> None:
    """The stage (module docstring); ``calibrate`` is ``stages.calibrate`` (the quantise stage's)."""
    p = stage.params
    spec: ScoreSpec = p["score"]
    where = f"stage {stage.name}"
    model = state.model
    if any(isinstance(m, (QuantConv2d, QuantLinear, ActQuant)) for m in model.modules()):
        raise RecipeError(f"{where}: the model is already quantised; mixed_precision starts from a float model")
    weight_default = spec.bits or FP_BITS
    act_global = p.get("act_bits")
    act_default = act_global or weight_default
    try:
        wc, ac = check_candidates(p.get("weight_candidates", DEFAULT_WEIGHT_CANDIDATES),
                                  p.get("act_candidates", DEFAULT_ACT_CANDIDATES), act_default, weight_default)
    except ValueError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    base = {"default": {"weight": weight_default, "act": act_default, "acc": 32}}
    sc = _scorer(_plain_model(state), spec, state)
    report = sc.score(bits=spec.bits)
    entering = float(report.totals["score"])
    try:
        budget = resolve_budget(p.get("budget_score"), p.get("budget_fraction"), entering)
    except BudgetError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    exclude = list(p.get("exclude", []))
    searched = [n for n in sc.layer_names if not matches(n, exclude)]
    if not searched:
        raise RecipeError(f"{where}: exclude leaves no layer to search (layers: {sc.layer_names[:6]})")
    odd = [n for n in searched if type(model.get_submodule(n)) not in QUANTISABLE]
    if odd:
        raise RecipeError(f"{where}: layers {odd[:4]} are not nn.Conv2d / nn.Linear, which the QAT quantises; "
                          "exclude them (exclude = [...])")
    counted = report.layers.groupby("module")[["nonzeros", "weight_numel"]].sum()
    fixed_density = {n: float(counted.loc[n, "nonzeros"] / counted.loc[n, "weight_numel"])
                     for n in sc.layer_names if n not in searched}  # as the scorer counts them
    sens = measure_sensitivity(model, _batches(ctx, int(p.get("sensitivity_batches", 4)), stage.train.batch_size),
                               searched, wc, ac, default_act=act_default)
    try:
        plan = allocate(sc, budget, sens, base, fixed_density)
    except BudgetError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    per_layer: dict[str, dict[str, int]] = {n: {"weight": FP_BITS} for n in sc.layer_names if n not in searched}
    for n in searched:
        per_layer[n] = {"weight": plan.weight_bits[n]}
        if plan.act_bits[n] < act_default:
            per_layer[n]["out"] = plan.act_bits[n]
    transform = {"op": "quantise", "weight_bits": FP_BITS, "act_bits": act_global, "per_layer": per_layer,
                 "act_mode": p.get("act_mode", "running_max")}
    apply_quantise(model, transform)
    model.to(ctx.env.device)
    state.transforms.append(transform)
    calibrated = calibrate(ctx, model, int(p.get("calibrate_batches", 10)), stage.train.batch_size)
    result = fit(ctx, model, stage.train, stage.name)
    exact, narrowed = _meet_budget(state, spec, sc, sens, base, fixed_density, budget, transform, where)
    weights = [transform["per_layer"][n]["weight"] for n in searched]
    outs = [transform["per_layer"][n].get("out", act_default) for n in searched]
    state.extra = {
        "train_loss": result.loss, "calibration_batches": calibrated, "budget": budget,
        "entering_score": entering, "minimum_score": plan.minimum, "predicted_score": plan.score,
        "score": exact, "narrowed_after_training": narrowed, "allocation_steps": plan.steps,
        "sensitivity": "relative output error per layer and width (reference_models.compression.mixed_precision)",
        "sensitivity_batches": sens.batches, "total_sensitivity": plan.sensitivity,
        "weight_bits": {n: w for n, w in zip(searched, weights, strict=True)},
        "out_bits": {n: a for n, a in zip(searched, outs, strict=True) if a < act_default},
        "act_bits": act_global, "mean_weight_bits": float(np.mean(weights)),
    }
    ctx.say(f"{stage.name}: budget {budget:.6f} (entering {entering:.6f}, minimum {plan.minimum:.6f}); weight bits "
            f"{min(weights)}..{max(weights)} (mean {np.mean(weights):.2f}) over {len(weights)} layers, "
            f"{len(state.extra['out_bits'])} quantised outputs; checkpoint score {exact:.6f}")


def _meet_budget(state: PipelineState, spec: ScoreSpec, sc: Any, sens: Sensitivity, base: dict, fixed: dict,
                 budget: float, transform: dict, where: str, tries: int = 4) -> tuple[float, list[str]]:
    """Score the checkpoint; while over the budget, re-read the zeros of the trained weights at each candidate
    and narrow weights (no training) until the sweep and then the exact score say it fits."""
    narrowed: list[str] = []
    model = state.model
    exact = exact_checkpoint_score(state, spec)
    for _ in range(tries):
        if exact <= budget:
            return exact, narrowed
        layers = sens.layers
        density = np.array([[quantised_density(model.get_submodule(n).weight, b) for b in sens.weight_candidates]
                            for n in layers])
        fresh = Sensitivity(layers, sens.weight_candidates, sens.act_candidates, sens.weight, sens.act, density)
        per_layer = transform["per_layer"]
        act_default = base["default"]["act"]
        start = {n: (per_layer[n]["weight"], per_layer[n].get("out", act_default)) for n in layers}
        now = allocate(sc, float("inf"), fresh, base, fixed, start=start, widen=False, weights_only=True).score
        target = budget - max(0.0, exact - now)  # what the sweep misses (rounding) comes off the budget
        try:
            plan = allocate(sc, target, fresh, base, fixed, start=start, widen=False, weights_only=True)
        except BudgetError as exc:
            raise RuntimeError(f"{where}: the trained checkpoint scores {exact:.6g}, over the budget {budget:.6g}, "
                               f"and narrowing cannot bring it under ({exc})") from None
        for n in layers:
            if plan.weight_bits[n] != per_layer[n]["weight"]:
                model.get_submodule(n).weight_bits = plan.weight_bits[n]
                per_layer[n]["weight"] = plan.weight_bits[n]
                narrowed.append(n)
        exact = exact_checkpoint_score(state, spec)
    if exact > budget:
        raise RuntimeError(f"{where}: the checkpoint scores {exact:.6g}, over the budget {budget:.6g}, after "
                           f"{tries} narrowing passes")
    return exact, narrowed
