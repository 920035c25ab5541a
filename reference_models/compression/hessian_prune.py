"""Hessian-based channel pruning (K-FAC OBD, after EigenDamage) with WaveComp's annealing schedule.

Importance of output channel ``c`` of a chain ``conv -> [BN] -> channel-wise ops -> consumers`` (chains as
in :mod:`~reference_models.compression.fpgm`): the loss increase when the channel is removed, to second
order. Removing it is zeroing the consumers' input columns ``B_c`` (the ``kh*kw`` patch entries of ``c``), so
with the Kronecker-factored Fisher of a consumer's weight ``W`` (out x C*kh*kw), ``F ~ A (x) S`` (K-FAC /
KFC, Grosse & Martens 2016) with

* ``A = E_n[sum_t a_t a_t^T]``: the consumer's input patches ``a_t`` summed over output positions ``t``,
* ``S = E_n[mean_t g_t g_t^T]``: gradients of the per-example loss w.r.t. the consumer's outputs,

the Optimal-Brain-Damage estimate (gradient term zero at a minimum) is::

    dL_c = 1/2 vec(dW)^T (A (x) S) vec(dW) = 1/2 sum_{j,k in B_c} A_jk (W^T S W)_jk,   dW = -W[:, B_c]

summed over the chain's consumers. This is the C-OBD criterion of EigenDamage (Wang et al., ICML 2019,
"EigenDamage: Structured Pruning in the Kronecker-Factored Eigenbasis", arXiv:1905.05934 §3) in the original
basis. Approximations, stated: K-FAC (activations independent of gradients, spatially uncorrelated
gradients), OBD (no weight re-adjustment), a few batches, BN in eval mode (running statistics untouched).

WaveComp (seed ``wavecomp-micronet.txt`` step 2; ``mhariat/MicroNet``
``Pruning/prune/low_rank_pruning/methods/improved_eigen_damage.py``) prunes in the Kronecker-factored
*eigenbasis*, which replaces every conv by a rotation / core / rotation triple; that network is not the
registry's architecture, so here whole channels of the original convs are removed (surgery:
:func:`~reference_models.compression.surgery.remove_channels`) and the result is the same architecture,
narrower (a smaller dense model).

Selection (as WaveComp): one global ranking over every chain's channels, no per-layer normalisation, at most
``limit`` of a conv's current channels per round (their ``prune_ratio_limit`` 0.5), one channel always kept.
Fisher: ``"true"`` samples labels from the model's softmax (their ``fisher_type='true'``), ``"empirical"``
uses the data labels.

Annealing (step 2: "gradually with regular fine-tuning and annealing in between two pruning stages. The
annealing phase consists in slightly increasing the size of the network artificially"; their ``Pool`` and
``_bring_back``): after a pruning round has been fine-tuned, ``back_ratio`` (0.25 in their
``Pruning/config.json``) times the channels removed in that round are added back, shared between chains in
proportion to a running average (momentum 0.5) of each chain's share of the removed importance, and the
network is fine-tuned again. They draw the shares with ``np.random.choice``; here a largest-remainder split
keeps runs reproducible. New channels: :func:`~reference_models.compression.surgery.add_channels`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_models.compression.fpgm import resolve_chains
from reference_models.compression.schedule import parse_schedule_fractions
from reference_models.compression.surgery import Chain, add_channels, remove_channels

__all__ = [
    "AnnealingPool",
    "channel_importance",
    "chain_importance",
    "hessian_prune",
    "kfac_factors",
    "run_annealed_schedule",
    "select_channels",
]

Batch = tuple[Tensor, Tensor]
#: ``(removed channels per conv, importance per conv)`` of one pruning round
Selection = tuple[dict[str, list[int]], dict[str, Tensor]]


def _patches(module: nn.Module, x: Tensor) -> Tensor:
    """Consumer inputs as ``(N, D, T)``: unfolded conv patches (channel-major, as ``weight.reshape(out, -1)``)
    or linear inputs (``T = 1``)."""
    if isinstance(module, nn.Conv2d):
        return F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return x.reshape(x.shape[0], -1, 1)


@torch.no_grad()
def _outer_sum(x: Tensor, chunk: int = 16) -> Tensor:
    """``sum_n sum_t x[n, :, t] x[n, :, t]^T`` in float64, ``chunk`` examples at a time."""
    d = x.shape[1]
    out = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(torch.float64).transpose(0, 1).reshape(d, -1)
        out += part @ part.T
    return out


def kfac_factors(
    model: nn.Module,
    consumers: Sequence[str],
    batches: Iterable[Batch],
    fisher: str = "true",
    generator: torch.Generator | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """K-FAC factors ``{consumer: (A, S)}`` (float64, on the consumer's device) from ``batches`` of
    ``(inputs, labels)``; the model runs in eval mode and no parameter gradient is touched."""
    if fisher not in ("true", "empirical"):
        raise ValueError(f"fisher must be 'true' or 'empirical', not {fisher!r}")
    modules = dict(model.named_modules())
    for name in consumers:
        if not isinstance(modules.get(name), nn.Conv2d | nn.Linear):
            raise ValueError(f"consumer {name!r} is not an nn.Conv2d or nn.Linear")
    sums: dict[str, list[Tensor]] = {}
    examples = 0
    captured: dict[str, Tensor] = {}
    positions: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            patches = _patches(module, inputs[0].detach())
            a = _outer_sum(patches)
            sums.setdefault(name, [torch.zeros_like(a), None])[0] += a  # type: ignore[list-item]
            positions[name] = output[0].numel() // output.shape[1] if output.dim() > 2 else 1
            captured[name] = output

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in consumers]
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            captured.clear()
            with torch.enable_grad():
                logits = model(x)
                if fisher == "true":
                    probs = torch.softmax(logits.detach().double(), dim=1).cpu()
                    y = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
                loss = F.cross_entropy(logits, y.to(logits.device), reduction="sum")  # per-example gradients
                names = [n for n in consumers if n in captured]
                grads = torch.autograd.grad(loss, [captured[n] for n in names], allow_unused=True)
            for name, g in zip(names, grads, strict=True):
                if g is None:
                    continue
                s = _outer_sum(g.detach().reshape(g.shape[0], g.shape[1], -1)) / positions[name]
                entry = sums[name]
                entry[1] = s if entry[1] is None else entry[1] + s
            examples += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if examples == 0:
        raise ValueError("kfac_factors needs at least one batch")
    missing = [n for n in consumers if n not in sums or sums[n][1] is None]
    if missing:
        raise ValueError(f"consumer(s) {missing} never ran or got no gradient")
    return {n: (sums[n][0] / examples, sums[n][1] / examples) for n in consumers}


def channel_importance(weight: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """``1/2 sum_{j,k in B_c} A_jk (W^T S W)_jk`` for every input channel ``c`` of a consumer weight
    (``[out, C, kh, kw]`` or ``[out, C]``), float64 ``[C]``."""
    w = weight.detach().to(torch.float64).reshape(weight.shape[0], -1).to(a.device)
    k = w.shape[1] // weight.shape[1]
    h = a * (w.T @ s.to(a.device) @ w)
    c = weight.shape[1]
    return 0.5 * torch.einsum("ikil->i", h.reshape(c, k, c, k))


def chain_importance(
    model: nn.Module, chains: Sequence[Chain], factors: Mapping[str, tuple[Tensor, Tensor]]
) -> dict[str, Tensor]:
    """``{conv: importance per output channel}`` (CPU float64): the sum over the chain's consumers."""
    modules = dict(model.named_modules())
    out: dict[str, Tensor] = {}
    for conv, _, consumers in chains:
        total = torch.zeros(modules[conv].out_channels, dtype=torch.float64)
        for name in consumers:
            a, s = factors[name]
            total += channel_importance(modules[name].weight, a, s).cpu()
        out[conv] = total
    return out


def select_channels(importance: Mapping[str, Tensor], n_remove: int, limit: float = 0.5) -> dict[str, list[int]]:
    """The ``n_remove`` least important channels over all convs (ties: conv order, then lower index), at
    most ``floor(limit * width)`` per conv and never a conv's last channel; ``{conv: sorted indices}``
    (fewer than ``n_remove`` in all when the caps bind)."""
    if not 0 < limit <= 1:
        raise ValueError(f"limit {limit} must be in (0, 1]")
    ranked = sorted(
        (float(v), order, i, conv)
        for order, (conv, values) in enumerate(importance.items())
        for i, v in enumerate(values.tolist())
    )
    caps = {conv: min(math.floor(limit * len(v)), len(v) - 1) for conv, v in importance.items()}
    chosen: dict[str, list[int]] = {conv: [] for conv in importance}
    taken = 0
    for _, _, i, conv in ranked:
        if taken >= n_remove:
            break
        if len(chosen[conv]) < caps[conv]:
            chosen[conv].append(i)
            taken += 1
    return {conv: sorted(v) for conv, v in chosen.items()}


def hessian_prune(
    model: nn.Module,
    n_remove: int,
    batches: Iterable[Batch],
    triples: Iterable[Chain] | None = None,
    safe: Iterable[str] = (),
    limit: float = 0.5,
    fisher: str = "true",
    generator: torch.Generator | None = None,
) -> tuple[nn.Module, dict[str, list[int]], dict[str, Tensor]]:
    """Remove the ``n_remove`` least important channels; ``(smaller copy, removed per conv, importance)``.

    ``triples``: chains as for :func:`~reference_models.compression.fpgm.fpgm_prune` (``None``: the
    ``nn.Sequential`` chains). The input model is untouched.
    """
    chains = resolve_chains(model, triples, safe)
    consumers = sorted({n for _, _, cons in chains for n in cons})
    factors = kfac_factors(model, consumers, batches, fisher, generator)
    importance = chain_importance(model, chains, factors)
    removed = select_channels(importance, n_remove, limit)
    return remove_channels(model, chains, removed), removed, importance


class AnnealingPool:
    """WaveComp's pool: a running average (``momentum``) of each conv's share of the removed importance,
    and the split of the channels to bring back in proportion to it (largest remainder, ties by order)."""

    def __init__(self, momentum: float = 0.5) -> None:
        self.momentum = momentum
        self.scores: dict[str, float] = {}

    def record(self, importance: Mapping[str, Tensor], removed: Mapping[str, Sequence[int]]) -> None:
        """Add one pruning round: each conv's removed importance over the total importance of all convs."""
        total = sum(float(v.sum()) for v in importance.values()) or 1.0
        for conv, values in importance.items():
            share = float(values[list(removed.get(conv, []))].sum()) / total if removed.get(conv) else 0.0
            old = self.scores.get(conv)
            self.scores[conv] = share if old is None else self.momentum * old + (1 - self.momentum) * share

    def allocate(self, n: int) -> dict[str, int]:
        """``n`` channels split over the convs in proportion to their scores."""
        total = sum(self.scores.values())
        if n <= 0 or total <= 0:
            return {conv: 0 for conv in self.scores}
        exact = {conv: Fraction(s).limit_denominator(10**12) * n / Fraction(total).limit_denominator(10**12)
                 for conv, s in self.scores.items()}
        counts = {conv: math.floor(v) for conv, v in exact.items()}
        order = sorted(self.scores, key=lambda c: -(exact[c] - counts[c]))
        for conv in order[: n - sum(counts.values())]:
            counts[conv] += 1
        return counts


def _widths(model: nn.Module, chains: Sequence[Chain]) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {conv: modules[conv].out_channels for conv, _, _ in chains}


def run_annealed_schedule(
    model: nn.Module,
    chains: Sequence[Chain],
    schedule: str,
    batches: Callable[[nn.Module], Iterable[Batch]],
    train_round: Callable[[nn.Module, int, str], None] | None = None,
    back_ratio: float = 0.25,
    limit: float = 0.5,
    fisher: str = "true",
    momentum: float = 0.5,
    seed: int = 0,
    decide: Callable[[Callable[[], Selection]], Selection] | None = None,
) -> tuple[nn.Module, list[dict[str, object]]]:
    """Iterative Hessian channel pruning with annealing; returns ``(final model, per-round log)``.

    ``schedule`` (:func:`~reference_models.compression.schedule.parse_schedule` grammar) gives cumulative
    fractions of the chains' original channels removed after each round. A round: K-FAC importance on
    ``batches(model)``, remove channels down to the target, ``train_round(model, i, "prune")``; then, except
    after the last round and when ``back_ratio > 0``, grow ``floor(back_ratio * removed)`` channels back
    and ``train_round(model, i, "anneal")``. ``chains`` are checked once (:func:`resolve_chains`); their
    names stay valid as widths change. ``decide`` wraps the selection (e.g. run it on one process and
    broadcast the result, so that every process removes and grows the same channels).
    """
    chains = resolve_chains(model, chains)
    consumers = sorted({n for _, _, cons in chains for n in cons})
    original = sum(_widths(model, chains).values())
    targets = parse_schedule_fractions(schedule)
    pool = AnnealingPool(momentum)
    gen = torch.Generator().manual_seed(seed)  # Fisher label sampling (only where ``select`` runs)
    grow_gen = torch.Generator().manual_seed(seed + 1)  # new channels' noise (the same on every process)
    log: list[dict[str, object]] = []
    for i, target in enumerate(targets):
        current = sum(_widths(model, chains).values())
        goal = original - int(target * original + Fraction(1, 2))  # channels left after this round

        def select(model: nn.Module = model, current: int = current, goal: int = goal) -> Selection:
            factors = kfac_factors(model, consumers, batches(model), fisher, gen)
            importance = chain_importance(model, chains, factors)
            return select_channels(importance, max(current - goal, 0), limit), importance

        removed, importance = decide(select) if decide is not None else select()
        pool.record(importance, removed)
        model = remove_channels(model, chains, removed)
        n_removed = sum(len(v) for v in removed.values())
        entry: dict[str, object] = {"round": i + 1, "target": float(target), "removed": n_removed}
        if train_round is not None:
            train_round(model, i, "prune")
        if back_ratio > 0 and i < len(targets) - 1:
            grow = pool.allocate(math.floor(back_ratio * n_removed))
            model = add_channels(model, chains, grow, generator=grow_gen)
            entry["grown"] = sum(grow.values())
            if train_round is not None:
                train_round(model, i, "anneal")
        entry["channels"] = sum(_widths(model, chains).values())
        entry["channel_fraction_removed"] = 1 - entry["channels"] / original  # type: ignore[operator]
        log.append(entry)
    return model, log
