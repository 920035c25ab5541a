"""Measure early-exit fractions by running a model's exit rule over data.

A model with an early exit implements ``forward_with_exit(x) -> (exit_logits, final_logits)`` and
``exit_paths()`` (docs/contracts.md). A sample leaves at the exit when its largest softmax probability
exceeds the threshold (OSI AI: 0.85, team_scores.md §2.1).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

from scorer.capture import eval_mode
from scorer.errors import ScorerError


def exit_path_names(model: nn.Module) -> tuple[str, str]:
    """(early-exit path, final path) names from ``model.exit_paths()``: the final one is called 'final'."""
    getter = getattr(model, "exit_paths", None)
    if getter is None or not hasattr(model, "forward_with_exit"):
        raise ScorerError(f"{type(model).__name__} has no early exit (exit_paths() and forward_with_exit())")
    names = list(getter())
    early = [n for n in names if n != "final"]
    if "final" not in names or len(early) != 1:
        raise ScorerError(f"cannot tell the early exit from the final path among {names}: pass fractions by hand")
    return early[0], "final"


def measure_exit_fractions(
    model: nn.Module,
    batches: Iterable[torch.Tensor | tuple],
    threshold: float,
    progress: bool = True,
    total: int | None = None,
) -> dict[str, float]:
    """Share of samples leaving at the early exit (max softmax > ``threshold``) and at the end."""
    if not 0.0 <= threshold <= 1.0:
        raise ScorerError(f"exit threshold must be in [0, 1], got {threshold}")
    early, final = exit_path_names(model)
    exited = seen = 0
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("measuring exits"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[rate]}"), transient=True)
        task = bar.add_task("exits", total=total, rate="")
        bar.start()
    try:
        with torch.no_grad(), eval_mode(model):
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                exit_logits, _ = model.forward_with_exit(x)
                conf = torch.softmax(exit_logits.float(), dim=1).amax(dim=1)
                exited += int((conf > threshold).sum())
                seen += int(x.shape[0])
                if bar is not None:
                    bar.update(task, advance=1, rate=f"exit {exited / seen:.2%}")
    finally:
        if bar is not None:
            bar.stop()
    if seen == 0:
        raise ScorerError("no samples to measure exit fractions on")
    frac = exited / seen
    return {early: frac, final: 1.0 - frac}
