"""Running a recipe: the stages in order, their checkpoints and score reports, and ``--resume``.

Every stage leaves ``OUT/<stage>.ckpt`` (a :mod:`scorer.checkpoint` file: architecture name and keyword
arguments, plain state dict, pruning masks, per-layer bits, exit fractions, meta) and
``OUT/<stage>.score.json`` (``scorer.score`` of that checkpoint as ``micronet-score`` would load it, so the
report is the one anybody re-scoring the file gets); the last stage also leaves ``OUT/final.ckpt``.
``OUT/run.json`` lists the completed stages, which ``--resume`` continues after. Only rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from reference_models.compression.pruning import masks_of
from reference_models.training.distributed import barrier
from reference_models.training.export import checkpoint_bits, dropped_state, make_checkpoint, score_checkpoint
from reference_models.training.recipes import Recipe, RecipeError, StageSpec
from reference_models.training.stages import run_stage
from reference_models.training.state import PipelineState, build_model, restore_state
from reference_models.training.trainer import RunContext
from scorer.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["RUN_FILE", "run_pipeline", "score_checkpoint", "write_stage"]

RUN_FILE = "run.json"


def _meta(recipe: Recipe, stage: StageSpec, index: int, state: PipelineState, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "recipe": recipe.name,
        "recipe_file": str(recipe.path),
        "stage": stage.name,
        "stage_kind": stage.kind,
        "stage_index": index,
        "accuracy": state.accuracy,
        "input_shape": list(recipe.score.input_shape),
        "track": recipe.score.track,
        "rules": recipe.score.rules,
        "bits": recipe.score.bits,
        "pipeline": state.transforms,
        "quantiser_state": dropped_state(state.model),
        "exit_threshold": state.exit_threshold,
        "stage_results": state.extra,
        "run": run,
    }


def write_stage(
    recipe: Recipe, stage: StageSpec, index: int, state: PipelineState, out: Path, run: dict[str, Any]
) -> tuple[Path, dict[str, float]]:
    """Write ``OUT/<stage>.ckpt`` and ``OUT/<stage>.score.json``; returns the checkpoint path and totals."""
    ckpt = make_checkpoint(
        state.model,
        state.arch,
        state.arch_kwargs,
        masks_of(state.model),
        checkpoint_bits(state.model, state.act_bits),
        state.exit_fractions,
        json.loads(json.dumps(_meta(recipe, stage, index, state, run), default=float)),
    )
    path = save_checkpoint(ckpt, out / f"{stage.name}.ckpt")
    report = score_checkpoint(path)
    (out / f"{stage.name}.score.json").write_text(report.to_json())
    return path, report.totals


def _read_run(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_pipeline(
    ctx: RunContext, recipe: Recipe, out: Path, resume: bool, run_info: dict[str, Any], model: nn.Module | None = None
) -> Path:
    """Run (or continue) the recipe's stages; returns ``OUT/final.ckpt``. ``model``: the recipe's freshly built
    architecture (:func:`build_model`), when the caller built it already to check its arguments."""
    env = ctx.env
    names = [s.name for s in recipe.stages]
    start = 0
    state: PipelineState | None = None
    if resume:
        done = _read_run(out).get("completed", [])
        if done and names[: len(done)] != done:
            raise RecipeError(f"{out}: the completed stages {done} are not a prefix of this recipe's {names}")
        if done:
            last = out / f"{done[-1]}.ckpt"
            try:
                state = restore_state(recipe, load_checkpoint(last))
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise RecipeError(f"{last}: cannot resume from it ({exc})") from None
            start = len(done)
            ctx.log(f"resuming after stage {done[-1]} ({start}/{len(names)} done)")
    if state is None:
        kwargs = dict(recipe.arch_kwargs)
        model = model if model is not None else build_model(recipe, kwargs)
        state = PipelineState(model=model, arch=recipe.arch, arch_kwargs=kwargs)
    completed = names[:start]
    final = out / "final.ckpt"
    for index in range(start, len(recipe.stages)):
        stage = recipe.stages[index]
        ctx.say(f"stage {stage.name} ({stage.kind}, {index + 1}/{len(recipe.stages)}) started")
        began = time.perf_counter()
        run_stage(ctx, stage, state)
        if env.is_main:
            path, totals = write_stage(recipe, stage, index, state, out, run_info)
            completed.append(stage.name)
            (out / RUN_FILE).write_text(json.dumps({"recipe": recipe.name, "completed": completed}, indent=2))
            if index == len(recipe.stages) - 1:
                shutil.copyfile(path, final)
            ctx.say(
                f"stage {stage.name} ({stage.kind}) done in {time.perf_counter() - began:.1f}s: "
                f"top-1 {state.accuracy:.2%}, score {totals['score']:.6f} "
                f"(params {totals['param_score']:.6f} + ops {totals['ops_score']:.6f}) -> {path}"
            )
        barrier(env)
    if start == len(recipe.stages) and env.is_main and not final.exists():
        shutil.copyfile(out / f"{names[-1]}.ckpt", final)
    return final

