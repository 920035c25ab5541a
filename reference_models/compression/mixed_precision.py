"""Mixed-precision search: per-layer weight and output widths under a MicroNet score budget (HAQ-style).

HAQ (Wang et al., "HAQ: Hardware-Aware Automated Quantization with Mixed Precision", CVPR 2019;
``seeds/compression-survey-2019.txt`` item 10) gives every layer its own weight and activation width, since
layers differ in redundancy and in what they cost, and searches the widths with the hardware's own feedback
instead of a proxy. Here the feedback is the MicroNet score itself and the search is a greedy allocation:

* **Cost** (exact): rows of :meth:`scorer.Scorer.sweep` under ``base``, the precision every layer not swept is
  scored at (the checkpoint's defaults, e.g. ``{"default": {"weight": 16, "act": 16, "acc": 32}}``), with
  ``{"weight": W_i, "act": A_i}`` per layer of ``Scorer.layer_names``. ``act`` is the width of the layer's own
  output, the scorer's meaning (official_rules.md §3.1: an op multiplies at the widest of its inputs, so the
  ops reading that output run at it). Each row's densities are those of the weights *quantised* at the row's
  widths (a weight rounding to zero is a credited zero that pays its mask bit, official_rules.md §2.2), so a
  row is the score of the checkpoint storing those quantised weights.
* **Sensitivity** (measured, :func:`measure_sensitivity`): per layer and candidate width, the relative output
  error on a few batches, ``sum ||f(x; Q_w(W)) - f(x; W)||^2 / sum ||f(x; W)||^2`` for the weight and
  ``sum ||Q_a(y) - y||^2 / sum ||y||^2`` (y = f(x; W), range max |y| per batch) for the output; 0 at the
  default width (no quantiser). A proxy for the accuracy HAQ's agent measures.
* **Allocation** (:func:`allocate`): start at the widest candidates; while the score is over the budget take
  the one-step narrowing (one layer's weight or output) with the least sensitivity added per score saved;
  then widen (most sensitivity removed per score added) while the budget allows. The score does not rise as a
  width narrows (fewer bits per value, and no fewer zeros), so the narrowest candidates everywhere give the
  minimum; a budget below it is an error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from reference_models.compression.quantize import fake_quantize, int_range

__all__ = ["Allocation", "BudgetError", "Sensitivity", "allocate", "measure_sensitivity", "quantised_density",
           "resolve_budget"]

#: Layer types the QAT swaps (reference_models.compression.quantize.quantize_model).
QUANTISABLE = (nn.Conv2d, nn.Linear)


class BudgetError(ValueError):
    """A budget the allocation cannot meet, or a malformed one."""


def resolve_budget(budget_score: float | None, budget_fraction: float | None, reference: float) -> float:
    """The budget as a score: ``budget_score``, or ``budget_fraction`` x ``reference`` (exactly one given)."""
    if (budget_score is None) == (budget_fraction is None):
        raise BudgetError("give exactly one of budget_score (a MicroNet score) and budget_fraction (of the score "
                          "of the model entering the stage)")
    if budget_score is not None:
        if not budget_score > 0:
            raise BudgetError(f"budget_score must be > 0, got {budget_score}")
        return float(budget_score)
    assert budget_fraction is not None
    if not 0 < budget_fraction <= 1:
        raise BudgetError(f"budget_fraction must be in (0, 1], got {budget_fraction}")
    return float(budget_fraction) * float(reference)


def _weight_q(weight: Tensor, bits: int) -> Tensor:
    """The weight as a QuantConv2d / QuantLinear of ``bits`` stores it (signed grid, range max |w|)."""
    return fake_quantize(weight, bits, weight.abs().max(), signed=True)


@torch.no_grad()
def quantised_density(weight: Tensor, bits: int) -> float:
    """Fraction of nonzeros of ``weight`` quantised at ``bits`` (what the scorer counts in the checkpoint)."""
    return float(torch.count_nonzero(_weight_q(weight.detach().float(), bits))) / weight.numel()


@dataclass
class Sensitivity:
    """Measured sensitivities and densities: rows follow ``layers``, columns the candidate widths."""

    layers: list[str]
    weight_candidates: list[int]
    act_candidates: list[int]
    weight: np.ndarray  # [n, len(weight_candidates)] relative output error of the quantised weight
    act: np.ndarray  # [n, len(act_candidates)] relative error of the quantised output
    density: np.ndarray  # [n, len(weight_candidates)] nonzero fraction of the quantised weight
    batches: int = 0


@torch.no_grad()
def measure_sensitivity(model: nn.Module, batches: Iterable[Tensor], layers: Sequence[str],
                        weight_candidates: Sequence[int], act_candidates: Sequence[int],
                        default_act: int | None = None) -> Sensitivity:
    """Relative output errors (module docstring) of each of ``layers`` (``nn.Conv2d`` / ``nn.Linear``
    modules of ``model``) at each candidate width, accumulated over ``batches`` with the model in eval mode
    (its own, unquantised, forward). A width equal to ``default_act`` means "no output quantiser": error 0."""
    modules = {name: model.get_submodule(name) for name in layers}
    bad = [n for n, m in modules.items() if type(m) not in QUANTISABLE]
    if bad:
        raise ValueError(f"layers {bad[:4]} are not nn.Conv2d / nn.Linear modules (the QAT quantises only those)")
    n, kw, ka = len(layers), len(weight_candidates), len(act_candidates)
    err_w, err_a, ref = np.zeros((n, kw)), np.zeros((n, ka)), np.zeros(n)

    def hook_for(i: int, module: nn.Module):
        def hook(_m: nn.Module, inputs: tuple, out: Tensor) -> None:
            x = inputs[0]
            ref[i] += float(out.double().pow(2).sum())
            for k, bits in enumerate(weight_candidates):
                qw = _weight_q(module.weight, bits)
                y = (module._conv_forward(x, qw, module.bias) if isinstance(module, nn.Conv2d)
                     else nn.functional.linear(x, qw, module.bias))
                err_w[i, k] += float((y - out).double().pow(2).sum())
            r = out.abs().max()
            for k, bits in enumerate(act_candidates):
                if bits != default_act:
                    err_a[i, k] += float((fake_quantize(out, bits, r, signed=True) - out).double().pow(2).sum())
        return hook

    handles = [m.register_forward_hook(hook_for(i, m)) for i, m in enumerate(modules.values())]
    was_training = model.training
    model.eval()
    done = 0
    try:
        for x in batches:
            model(x)
            done += 1
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if done == 0:
        raise ValueError("measure_sensitivity needs at least one batch")
    if np.any(ref == 0):
        silent = [layers[i] for i in np.flatnonzero(ref == 0)][:4]
        raise ValueError(f"layers {silent} produced only zeros (or never ran) on the sensitivity batches")
    density = np.array([[quantised_density(modules[name].weight, b) for b in weight_candidates] for name in layers])
    return Sensitivity(list(layers), list(weight_candidates), list(act_candidates), err_w / ref[:, None],
                       err_a / ref[:, None], density, done)


@dataclass
class Allocation:
    """Per-layer widths (every layer of the Scorer, in ``layer_names`` order) and what the sweep says of them."""

    weight_bits: dict[str, int]
    act_bits: dict[str, int]
    score: float
    sensitivity: float
    budget: float
    minimum: float
    steps: int
    searched: list[str] = field(default_factory=list)


def allocate(scorer, budget: float, sens: Sensitivity, base: Mapping, fixed_density: Mapping[str, float] | None = None,
             start: Mapping[str, tuple[int, int]] | None = None, widen: bool = True, weights_only: bool = False,
             rules: object = None) -> Allocation:
    """Greedy allocation (module docstring) of ``sens.layers`` (a subset of ``scorer.layer_names``; the others
    stay at the base widths: ``base["default"]`` weight and act, density ``fixed_density[name]``, default 1).

    ``start``: ``{layer: (weight_bits, act_bits)}`` to start from instead of the widest candidates (values
    must be candidates); ``widen=False`` only narrows; ``weights_only`` keeps the output widths. BudgetError when even the narrowest widths exceed it."""
    names = list(scorer.layer_names)
    unknown = [s for s in sens.layers if s not in names]
    if unknown:
        raise BudgetError(f"layers {unknown[:4]} are not among the scorer's layer_names")
    default = dict(base.get("default") or {})
    p_bits, a_bits = int(default.get("weight", 32)), int(default.get("act", 32))
    wc, ac = np.asarray(sens.weight_candidates), np.asarray(sens.act_candidates)
    if list(wc) != sorted(set(wc.tolist())) or list(ac) != sorted(set(ac.tolist())):
        raise BudgetError("candidate widths must be increasing and distinct")
    col = np.array([names.index(s) for s in sens.layers], dtype=np.int64)
    n, m = len(names), len(col)
    w0 = np.full(n, float(p_bits))
    a0 = np.full(n, float(a_bits))
    d0 = np.array([float((fixed_density or {}).get(name, 1.0)) for name in names])
    iw = np.full(m, len(wc) - 1)
    ia = np.full(m, len(ac) - 1)
    for j, name in enumerate(sens.layers):
        if start and name in start:
            wb, ab = start[name]
            if wb not in wc or ab not in ac:
                raise BudgetError(f"start widths {start[name]} of {name} are not candidates")
            iw[j], ia[j] = int(np.flatnonzero(wc == wb)[0]), int(np.flatnonzero(ac == ab)[0])
    rows = np.arange(m)

    def configs(iws: np.ndarray, ias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sweep arrays [K, n] for K allocations given as candidate indices [K, m]."""
        k = len(iws)
        w, a, d = np.tile(w0, (k, 1)), np.tile(a0, (k, 1)), np.tile(d0, (k, 1))
        w[:, col], a[:, col] = wc[iws], ac[ias]
        d[:, col] = sens.density[rows, iws]
        return w, a, d

    def scores(iws: np.ndarray, ias: np.ndarray) -> np.ndarray:
        return scorer.sweep(*configs(iws, ias), rules=rules, base=base)["score"].to_numpy()

    def total_sens(iw_: np.ndarray, ia_: np.ndarray) -> float:
        return float(sens.weight[rows, iw_].sum() + sens.act[rows, ia_].sum())

    minimum = float(scores(np.zeros((1, m), dtype=np.int64), np.zeros((1, m), dtype=np.int64))[0])
    if minimum > budget:
        raise BudgetError(f"budget {budget:.6g} is below the minimum achievable score {minimum:.6g} (every searched "
                          f"layer at weight {int(wc[0])} and output {int(ac[0])} bits); raise the budget or add "
                          "narrower candidates")
    current = float(scores(iw[None], ia[None])[0])
    steps = 0
    # narrow: least sensitivity added per score saved
    while current > budget:
        moves_w, moves_a = np.flatnonzero(iw > 0), np.flatnonzero((ia > 0) & (not weights_only))
        if len(moves_w) + len(moves_a) == 0:
            raise BudgetError(f"budget {budget:.6g}: every layer is at its narrowest weight width and the score "
                              f"is still {current:.6g}")
        cand_w = np.tile(iw, (len(moves_w) + len(moves_a), 1))
        cand_a = np.tile(ia, (len(moves_w) + len(moves_a), 1))
        cand_w[np.arange(len(moves_w)), moves_w] -= 1
        cand_a[len(moves_w) + np.arange(len(moves_a)), moves_a] -= 1
        new = scores(cand_w, cand_a)
        added = np.concatenate([sens.weight[moves_w, iw[moves_w] - 1] - sens.weight[moves_w, iw[moves_w]],
                                sens.act[moves_a, ia[moves_a] - 1] - sens.act[moves_a, ia[moves_a]]])
        saved = current - new
        if np.any(saved > 0):
            ratio = np.where(saved > 0, added / np.where(saved > 0, saved, 1.0), np.inf)
        else:  # no single step saves anything (widths tied by a max): take the cheapest step in sensitivity
            ratio = added
        best = int(np.argmin(ratio))
        iw, ia, current = cand_w[best], cand_a[best], float(new[best])
        steps += 1
    # widen: most sensitivity removed per score added, within the budget
    while widen:
        moves_w = np.flatnonzero(iw < len(wc) - 1)
        moves_a = np.flatnonzero((ia < len(ac) - 1) & (not weights_only))
        if len(moves_w) + len(moves_a) == 0:
            break
        cand_w = np.tile(iw, (len(moves_w) + len(moves_a), 1))
        cand_a = np.tile(ia, (len(moves_w) + len(moves_a), 1))
        cand_w[np.arange(len(moves_w)), moves_w] += 1
        cand_a[len(moves_w) + np.arange(len(moves_a)), moves_a] += 1
        new = scores(cand_w, cand_a)
        gained = np.concatenate([sens.weight[moves_w, iw[moves_w]] - sens.weight[moves_w, iw[moves_w] + 1],
                                 sens.act[moves_a, ia[moves_a]] - sens.act[moves_a, ia[moves_a] + 1]])
        ok = (new <= budget) & (gained > 0)
        if not np.any(ok):
            break
        added = new - current
        value = np.where(ok, np.where(added > 0, gained / np.where(added > 0, added, 1.0), np.inf), -np.inf)
        best = int(np.argmax(value))
        iw, ia, current = cand_w[best], cand_a[best], float(new[best])
        steps += 1
    w, a, _ = configs(iw[None], ia[None])
    return Allocation(
        weight_bits={name: int(w[0, i]) for i, name in enumerate(names)},
        act_bits={name: int(a[0, i]) for i, name in enumerate(names)},
        score=current, sensitivity=total_sens(iw, ia), budget=float(budget), minimum=minimum, steps=steps,
        searched=list(sens.layers),
    )


def check_candidates(weight_candidates: Sequence[int], act_candidates: Sequence[int], default_act: int,
                     default_weight: int) -> tuple[list[int], list[int]]:
    """Sorted candidate lists; the default activation width is always an output candidate (no quantiser).
    ValueError for widths the signed QAT grid cannot use (< 2) or wider than the defaults."""
    wc = sorted({int(b) for b in weight_candidates})
    ac = sorted({int(b) for b in act_candidates} | {int(default_act)})
    if not wc:
        raise ValueError("weight_candidates is empty")
    for what, values, top in (("weight_candidates", wc, default_weight), ("act_candidates", ac, default_act)):
        for b in values:
            int_range(b, True)  # a signed grid: >= 2 bits
            if b > top:
                raise ValueError(f"{what}: {b} bits is wider than the default width {top} it would replace")
    return wc, ac


def matches(name: str, globs: Iterable[str]) -> bool:
    """True when ``name`` matches one of ``globs`` (fnmatch, case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, g) for g in globs)
