"""The epoch loop: augmentation, mixing, losses, regularisers, masks, DDP, evaluation.

:func:`fit` trains a model for one :class:`~reference_models.training.recipes.TrainConfig` (a fresh
optimiser and schedule each call, as the teams restarted them per stage and per pruning round);
:func:`evaluate` measures top-1 accuracy on the test split. Both are DDP-aware: each process handles its
shard of every global batch (:class:`~reference_models.training.data.ShardedBatchSampler`), gradients are
averaged by :class:`~torch.nn.parallel.DistributedDataParallel`, and metrics are summed over processes.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from reference_models.compression.pruning import MaskEnforcer, masks_of
from reference_models.training import augment as aug
from reference_models.training.data import Cifar100Dataset, ShardedBatchSampler, eval_batches, normalize
from reference_models.training.distributed import DistEnv, all_reduce_sum, broadcast_buffers
from reference_models.training.losses import (
    WeightedLabelSmoothingLoss,
    distillation_kl,
    label_smoothing_cross_entropy,
    mixed_loss,
    soft_smoothing_loss,
)
from reference_models.training.optim import build_optimizer, build_scheduler, param_groups
from reference_models.training.progress import ProgressReporter
from reference_models.training.recipes import RecipeError, TrainConfig
from reference_models.training.regularizers import SRIPRegularizer

__all__ = ["FitResult", "RunContext", "build_augment", "build_criterion", "evaluate", "fit"]

Criterion = Callable[[Tensor, Tensor], Tensor]


@dataclass
class RunContext:
    """What every stage needs: the process environment, the data and the run-wide limits.

    ``log`` receives per-epoch details (shown with ``--verbose``), ``say`` the stage summaries.
    """

    env: DistEnv
    train_set: Cifar100Dataset
    test_set: Cifar100Dataset
    progress: ProgressReporter
    limit_batches: int | None = None
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda _msg: None)
    say: Callable[[str], None] = field(default=lambda _msg: None)

    def local_batch(self, global_batch: int) -> int:
        """Per-process batch size for a global batch (clamped to the training set)."""
        return self.global_batch(global_batch) // self.env.world_size

    def global_batch(self, requested: int) -> int:
        """The global batch actually used: ``requested``, at most the training-set size, and a multiple of
        the world size."""
        world = self.env.world_size
        size = min(requested, len(self.train_set))
        size -= size % world
        if size < world:
            raise RecipeError(f"the training set ({len(self.train_set)} images) is too small for {world} processes")
        return size


@dataclass
class FitResult:
    """Mean training loss and accuracy of the last epoch, and the steps run."""

    loss: float = float("nan")
    accuracy: float = float("nan")
    steps: int = 0


def build_augment(cfg: TrainConfig) -> aug.Compose:
    """The per-batch augmentations of ``cfg`` that act on [0, 1] images (everything but Cutout)."""
    ops: list[Callable[..., Tensor]] = []
    for name in cfg.augment:
        if name == "crop":
            ops.append(lambda x, generator=None: aug.random_crop(x, cfg.crop_padding, generator=generator))
        elif name == "flip":
            ops.append(lambda x, generator=None: aug.random_hflip(x, generator=generator))
        elif name == "rotation":
            ops.append(lambda x, generator=None: aug.random_rotation(x, cfg.rotation, generator=generator))
        elif name == "autoaugment":
            ops.append(aug.AutoAugment(cfg.autoaugment_policy))
    return aug.Compose(ops)


def _classifier(model: nn.Module, name: str | None) -> nn.Module:
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise RecipeError(f"classifier {name!r} is not a submodule of the model") from None
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise RecipeError("weighted_label_smoothing needs a classifier: set classifier = 'module.name'")
    return linears[-1]


def build_criterion(cfg: TrainConfig, model: nn.Module) -> Criterion:
    """The loss of ``cfg`` as ``criterion(logits, target)``."""
    if cfg.loss == "ce":
        return lambda logits, y: nn.functional.cross_entropy(logits, y)
    if cfg.loss == "label_smoothing":
        return lambda logits, y: label_smoothing_cross_entropy(logits, y, cfg.smoothing, cfg.smoothing_spread)
    if cfg.loss == "weighted_label_smoothing":
        return WeightedLabelSmoothingLoss(_classifier(model, cfg.classifier), cfg.smoothing)
    if cfg.loss == "soft_smoothing":
        return lambda logits, y: soft_smoothing_loss(logits, y, cfg.smoothing, cfg.smoothing_spread)
    raise RecipeError(f"unknown loss {cfg.loss!r}")


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _steps(sampler_len: int, limit: int | None) -> int:
    return sampler_len if limit is None else min(sampler_len, limit)


def _training_batch(
    ctx: RunContext,
    cfg: TrainConfig,
    augment: aug.Compose,
    indices: list[int],
    gen: torch.Generator,
    rng: random.Random,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Load, augment ([0, 1] images), normalise, Cutout and Mixup/CutMix one batch on the device.

    Returns ``(inputs, y_a, y_b, lam)``; without mixing ``y_b is y_a`` and ``lam == 1``.
    """
    device = ctx.env.device
    x, y = ctx.train_set.batch(indices)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if len(augment):
        x = augment(x, generator=gen)
    x = normalize(x)
    if "cutout" in cfg.augment:
        x = aug.cutout(x, cfg.cutout_size, 0.0, generator=gen)
    if cfg.mix != "none" and rng.random() < cfg.mix_prob:
        mixer = aug.mixup if cfg.mix == "mixup" else aug.cutmix
        return mixer(x, y, cfg.mix_alpha, rng=rng, generator=gen)
    return x, y, y, 1.0


def fit(
    ctx: RunContext,
    model: nn.Module,
    cfg: TrainConfig,
    label: str,
    forward_module: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> FitResult:
    """Train for ``cfg.epochs`` epochs.

    Args:
        ctx: the run context.
        model: the model whose parameters (those with ``requires_grad``) are optimised; masks stored on it
            (:func:`~reference_models.compression.pruning.masks_of`) are enforced through every step.
        cfg: hyper-parameters.
        label: shown on progress bars and in logs.
        forward_module: what maps a batch to logits, if not ``model`` (e.g. an exit-head view); it must
            share ``model``'s parameters.
        teacher: a frozen model for knowledge distillation (``cfg.distill_alpha > 0``).
    """
    env = ctx.env
    result = FitResult()
    if cfg.epochs <= 0:
        return result
    module = forward_module if forward_module is not None else model
    module.to(env.device)
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_bias, cfg.no_decay_norm)
    optimizer = build_optimizer(
        groups, cfg.optimizer, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, tuple(cfg.betas)
    )
    scheduler = build_scheduler(
        optimizer, cfg.scheduler, cfg.period or cfg.epochs, cfg.min_lr, cfg.restart, cfg.milestones, cfg.gamma
    )
    params = dict(model.named_parameters())
    masks = {k: v for k, v in masks_of(model).items() if k in params and params[k].requires_grad}
    enforcer = MaskEnforcer(model, masks, optimizer) if masks else None
    criterion = build_criterion(cfg, model)
    srip = SRIPRegularizer(model, cfg.srip, cfg.srip_iters, seed=ctx.seed) if cfg.srip > 0 else None
    augment = build_augment(cfg)
    if teacher is not None:
        teacher.to(env.device).eval()
    train_module: nn.Module = module
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        probe = normalize(ctx.train_set.batch([0])[0]).to(env.device)
        train_module = DistributedDataParallel(
            module, device_ids=ids, find_unused_parameters=_has_unused_parameters(module, probe)
        )
    global_batch = ctx.global_batch(cfg.batch_size)
    sampler = ShardedBatchSampler(
        len(ctx.train_set), global_batch, env.rank, env.world_size, shuffle=True, seed=ctx.seed, drop_last=True
    )
    steps = _steps(len(sampler), ctx.limit_batches)
    try:
        for epoch in range(cfg.epochs):
            sampler.set_epoch(epoch)
            gen = torch.Generator().manual_seed(_seed(ctx.seed, env.rank, label, epoch))
            rng = random.Random(_seed("mix", ctx.seed, env.rank, label, epoch))
            module.train()
            lr_now = optimizer.param_groups[0]["lr"]
            task = ctx.progress.start(f"{label} epoch {epoch + 1}/{cfg.epochs}", steps)
            totals = [0.0, 0.0, 0.0]  # loss * n, correct, n
            for step, indices in enumerate(sampler):
                if step >= steps:
                    break
                x, y_a, y_b, lam = _training_batch(ctx, cfg, augment, indices, gen, rng)
                logits = train_module(x)
                loss = mixed_loss(criterion, logits, y_a, y_b, lam)
                if teacher is not None and cfg.distill_alpha > 0:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * distillation_kl(
                        logits, t_logits, cfg.distill_temperature
                    )
                if srip is not None:
                    loss = loss + srip().to(loss.device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    pred = logits.argmax(dim=1)
                    correct = lam * (pred == y_a).sum().item() + (1 - lam) * (pred == y_b).sum().item()
                n = len(y_a)
                totals[0] += float(loss.detach()) * n
                totals[1] += correct
                totals[2] += n
                ctx.progress.update(task, totals[0] / totals[2], totals[1] / totals[2])
            scheduler.step()
            loss_sum, correct_sum, count = all_reduce_sum(env, totals)
            result = FitResult(
                loss=loss_sum / count if count else float("nan"),
                accuracy=correct_sum / count if count else float("nan"),
                steps=result.steps + steps,
            )
            ctx.log(
                f"{label} epoch {epoch + 1}/{cfg.epochs}: loss {result.loss:.4f}, train acc {result.accuracy:.2%}, "
                f"lr {lr_now:.5g}"
            )
    finally:
        if enforcer is not None:
            enforcer.enforce()
            enforcer.remove()
    broadcast_buffers(env, model)
    return result


def _has_unused_parameters(module: nn.Module, probe: Tensor) -> bool:
    """Whether some trainable parameter gets no gradient from a forward pass (eval mode, so nothing is
    updated); DDP must then look for unused parameters every step (e.g. OSI's exit head while the main
    network trains)."""
    params = [p for p in module.parameters() if p.requires_grad]
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            out = module(probe)
            outs = out if isinstance(out, (tuple, list)) else [out]
            total = sum(o.float().sum() for o in outs if isinstance(o, Tensor))
            grads = torch.autograd.grad(total, params, allow_unused=True)
    finally:
        module.train(was_training)
    return any(g is None for g in grads)


def predict_batches(ctx: RunContext, batch_size: int) -> list[list[int]]:
    """This process's evaluation batches (limited by ``ctx.limit_batches``)."""
    batches = eval_batches(len(ctx.test_set), batch_size, ctx.env.rank, ctx.env.world_size)
    return batches if ctx.limit_batches is None else batches[: ctx.limit_batches]


@torch.no_grad()
def evaluate(ctx: RunContext, model: nn.Module, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on the test split (summed over processes)."""
    env = ctx.env
    was_training = model.training
    model.to(env.device).eval()
    correct, total = 0.0, 0.0
    try:
        for indices in predict_batches(ctx, batch_size):
            x, y = ctx.test_set.batch(indices)
            logits = model(x.to(env.device))
            correct += float((logits.argmax(dim=1).cpu() == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    correct, total = all_reduce_sum(env, [correct, total])
    return correct / total if total else float("nan")
