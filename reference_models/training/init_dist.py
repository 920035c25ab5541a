"""Initialisation from a trained weight distribution (KAIST AI, seed ``kaist-micronet.txt``, contribution 2).

"the weights of converged networks are very far from the initial weight distribution. [...] trained weight
distribution are always certain. Therefore, we initialized our networks with this obtained weight
distribution." The seed gives no procedure beyond that, so this module states one: the distribution of every
conv / linear weight tensor (parameters with ``ndim > 1`` named ``*weight``, filtered by ``include`` /
``exclude`` globs) of a trained network is recorded, then the network is initialised afresh (every module's
``reset_parameters``: PyTorch's default init, BN at 1 / 0 with fresh running statistics) and each recorded
tensor is redrawn from its own trained distribution:

* ``"empirical"``: i.i.d. draws from the trained values (the empirical distribution, bootstrap);
* ``"normal"``: a normal with the trained tensor's mean and standard deviation.

The ``reinit`` stage does this to the pipeline's model after a ``train`` stage; in the ``kaist_*`` recipes the
probe training and the re-initialisation are the optional stages ``option = "trained_init"``
(``micronet-train kaist_v1 --with trained_init``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from reference_models.compression.pruning import prunable_parameters
from reference_models.training.distributed import broadcast_object
from reference_models.training.recipes import RecipeError, StageSpec
from reference_models.training.state import PipelineState
from reference_models.training.trainer import RunContext

__all__ = ["MODES", "init_from_distributions", "sample_like", "stage_reinit", "weight_distributions"]

MODES = ("empirical", "normal")


def weight_distributions(
    model: nn.Module, include: Iterable[str] = ("*",), exclude: Iterable[str] = ()
) -> dict[str, Tensor]:
    """``{parameter name: its trained values, flattened (CPU float32 copy)}`` for the selected weights."""
    return {n: p.detach().float().cpu().flatten().clone() for n, p in prunable_parameters(model, include, exclude).items()}


def sample_like(values: Tensor, shape: torch.Size, mode: str = "empirical", generator: torch.Generator | None = None) -> Tensor:
    """A tensor of ``shape`` drawn from the distribution of ``values`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if values.numel() == 0:
        raise ValueError("cannot sample from an empty distribution")
    if mode == "empirical":
        index = torch.randint(0, values.numel(), tuple(shape), generator=generator)
        return values.flatten()[index]
    mean, std = values.double().mean(), values.double().std(unbiased=False)
    return (mean + std * torch.randn(tuple(shape), generator=generator, dtype=torch.float64)).float()


@torch.no_grad()
def init_from_distributions(
    model: nn.Module, distributions: Mapping[str, Tensor], mode: str = "empirical", seed: int = 0
) -> list[str]:
    """Reset ``model`` (every module's ``reset_parameters`` / ``reset_running_stats``), then redraw each
    parameter named in ``distributions`` from it; returns the redrawn names. Masks stored on the model
    are left alone (re-initialise before pruning)."""
    for module in model.modules():
        for reset in ("reset_parameters", "reset_running_stats"):
            fn = getattr(module, reset, None)
            if callable(fn):
                fn()
    params = dict(model.named_parameters())
    unknown = sorted(set(distributions) - set(params))
    if unknown:
        raise KeyError(f"distributions for unknown parameters {unknown[:4]}")
    gen = torch.Generator().manual_seed(seed)
    for name in sorted(distributions):
        p = params[name]
        p.copy_(sample_like(distributions[name], p.shape, mode, gen).to(p.device, p.dtype))
    return sorted(distributions)


def stage_reinit(ctx: RunContext, stage: StageSpec, state: PipelineState) -> None:
    """Re-initialise the pipeline's model from the distribution of its current (trained) weights."""
    p = stage.params
    try:
        dists = weight_distributions(state.model, p.get("include", ["*"]), p.get("exclude", []))
        if not dists:
            raise ValueError("no weight tensors selected")
        # rank 0's draws on every process (the same seed gives the same draws; broadcast keeps it explicit)
        dists = broadcast_object(ctx.env, dists)
        names = init_from_distributions(state.model, dists, p.get("mode", "empirical"), seed=ctx.seed)
    except (KeyError, ValueError) as exc:
        raise RecipeError(f"stage {stage.name}: {exc} ({state.arch})") from None
    state.extra = {
        "mode": p.get("mode", "empirical"), "tensors": len(names),
        "trained_std": {n: float(d.std(unbiased=False)) for n, d in dists.items()},
    }
    ctx.log(f"{stage.name}: {len(names)} weight tensors redrawn from their trained distribution ({state.extra['mode']})")
