"""Filter pruning via geometric median (FPGM, He et al., CVPR 2019) with model surgery.

For each prunable conv, the filters with the smallest sum of Euclidean distances to all other filters of
that layer (the ones closest to the geometric median, hence the most replaceable) are removed. The surgery
removes those output channels from the conv, from the following BatchNorm, and the matching input channels
from the consumer conv(s) / linear, giving a smaller dense model.

Chains are given explicitly as ``(conv_name, bn_name | None, next_name | [next_names])`` triples, or found
automatically inside ``nn.Sequential`` containers as ``conv -> [BN] -> [channel-wise modules] -> conv``.
Explicit triples are checked on a ``torch.fx`` trace: a conv whose output reaches a residual add (or any
op other than BN, channel-wise activations/pools and the listed consumers) is refused unless it is listed
in ``safe``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_models.compression.surgery import remove_channels

__all__ = [
    "FPGMError",
    "Triple",
    "find_sequential_chains",
    "fpgm_prune",
    "fpgm_select",
    "fpgm_soft_prune",
    "geometric_median_scores",
    "resolve_chains",
]

Triple = tuple[str, str | None, str | Sequence[str]]

# modules that act channel by channel (output channel c depends only on input channel c)
_CHANNELWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.GELU,
    nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Flatten, nn.Hardtanh,
)
_CHANNELWISE_FUNCS = {
    F.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.gelu, F.elu, F.hardtanh,
    F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    torch.relu, torch.sigmoid, torch.tanh, torch.flatten, torch.sign,
}
_CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh", "flatten", "sign", "clamp", "contiguous"}
_ADDS = {operator.add, operator.iadd, operator.sub, torch.add, torch.sub, "add", "add_", "sub", "__add__"}


class FPGMError(ValueError):
    """Raised when a requested filter pruning cannot be done safely."""


def _is_channelwise(module: nn.Module) -> bool:
    return isinstance(module, _CHANNELWISE) or isinstance(getattr(module, "bits", None), int)


def geometric_median_scores(weight: Tensor) -> Tensor:
    """Sum of Euclidean distances from each output filter to all other filters (float64, shape [out])."""
    flat = weight.detach().to(torch.float64).reshape(weight.shape[0], -1)
    return torch.cdist(flat, flat).sum(dim=1)


def fpgm_select(weight: Tensor, n_prune: int) -> list[int]:
    """Indices (ascending) of the ``n_prune`` filters nearest the geometric median; ties -> lower index."""
    if not 0 <= n_prune < weight.shape[0]:
        raise FPGMError(f"cannot prune {n_prune} of {weight.shape[0]} filters (at least one must remain)")
    order = torch.sort(geometric_median_scores(weight), stable=True).indices
    return sorted(int(i) for i in order[:n_prune])


def find_sequential_chains(model: nn.Module) -> list[tuple[str, str | None, list[str]]]:
    """Ungrouped ``conv -> [BN] -> [channel-wise modules] -> conv | linear`` chains inside ``nn.Sequential``s.

    A linear consumer is accepted when its ``in_features`` equals the conv's channels (GAP + flatten).
    """
    chains: list[tuple[str, str | None, list[str]]] = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq.named_children())
        prefix = f"{seq_name}." if seq_name else ""
        for i, (name, mod) in enumerate(items):
            if not isinstance(mod, nn.Conv2d):
                continue
            bn: str | None = None
            j = i + 1
            if j < len(items) and isinstance(items[j][1], nn.BatchNorm2d):
                bn = prefix + items[j][0]
                j += 1
            while j < len(items) and _is_channelwise(items[j][1]):
                j += 1
            if j < len(items):
                nxt = items[j][1]
                ok_conv = isinstance(nxt, nn.Conv2d) and nxt.groups == 1
                ok_linear = isinstance(nxt, nn.Linear) and nxt.in_features == mod.out_channels
                if mod.groups == 1 and (ok_conv or ok_linear):
                    chains.append((prefix + name, bn, [prefix + items[j][0]]))
    return chains


def _consumers(next_names: str | Sequence[str]) -> list[str]:
    return [next_names] if isinstance(next_names, str) else list(next_names)


def _trace(model: nn.Module, conv: str) -> torch.fx.Graph:
    try:
        return torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure means we cannot verify
        raise FPGMError(
            f"cannot trace the model to check where {conv!r} feeds ({exc.__class__.__name__}); "
            "list it in safe= if its output only reaches the consumers"
        ) from exc


def _check_graph(
    model: nn.Module, conv: str, bn: str | None, consumers: list[str], graph: torch.fx.Graph | None = None
) -> None:
    """Refuse unless the conv's output reaches only BN, channel-wise ops and the consumers."""
    graph = graph if graph is not None else _trace(model, conv)
    modules = dict(model.named_modules())
    starts = [n for n in graph.nodes if n.op == "call_module" and n.target == conv]
    if not starts:
        raise FPGMError(f"{conv!r} is not called in the traced graph")
    reached: set[str] = set()
    frontier = list(starts)
    seen = set()
    while frontier:
        node = frontier.pop()
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if user.op == "call_module" and user.target in consumers:
                reached.add(str(user.target))
                continue
            if user.op == "call_module" and (user.target == bn or _is_channelwise(modules[str(user.target)])):
                frontier.append(user)
                continue
            if user.op in ("call_function", "call_method") and user.target in _ADDS:
                raise FPGMError(f"{conv!r} feeds a residual add ({user.name}); list it in safe= to force")
            if user.op == "call_function" and user.target in _CHANNELWISE_FUNCS:
                frontier.append(user)
                continue
            if user.op == "call_method" and user.target in _CHANNELWISE_METHODS:
                frontier.append(user)
                continue
            if user.op == "output":
                raise FPGMError(f"{conv!r} output is a model output; its channels cannot be removed")
            raise FPGMError(
                f"{conv!r} output reaches unsupported op {user.op}:{user.target}; list it in safe= to force"
            )
    missing = set(consumers) - reached
    if missing:
        raise FPGMError(f"{conv!r} output does not reach consumer(s) {sorted(missing)}")


def _n_prune(conv: nn.Conv2d, name: str, ratio: float | Mapping[str, float | int]) -> int:
    value = ratio.get(name, 0) if isinstance(ratio, Mapping) else ratio
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not 0 <= value < 1:
        raise FPGMError(f"pruning ratio {value} for {name!r} must be in [0, 1)")
    return min(int(value * conv.out_channels + 0.5), conv.out_channels - 1)


def resolve_chains(
    model: nn.Module, triples: Iterable[Triple] | None = None, safe: Iterable[str] = ()
) -> list[tuple[str, str | None, list[str]]]:
    """Checked ``(conv, bn, [consumers])`` chains: ``triples`` (each verified on one ``torch.fx`` trace
    unless its conv is in ``safe``) or, for ``None``, :func:`find_sequential_chains`; FPGMError otherwise."""
    modules = dict(model.named_modules())
    if triples is None:
        chains = find_sequential_chains(model)
    else:
        chains = [(c, b, _consumers(n)) for c, b, n in triples]
        safe = set(safe)
        graph = None
        for conv, bn, nxt in chains:
            if conv not in safe:
                graph = graph if graph is not None else _trace(model, conv)
                _check_graph(model, conv, bn, nxt, graph)
    for conv, bn, nxt in chains:
        mod = modules.get(conv)
        if not isinstance(mod, nn.Conv2d):
            raise FPGMError(f"{conv!r} is not an nn.Conv2d")
        if mod.groups != 1:
            raise FPGMError(f"{conv!r}: grouped/depthwise convs are not supported")
        if bn is not None and not isinstance(modules.get(bn), nn.BatchNorm2d):
            raise FPGMError(f"{bn!r} is not an nn.BatchNorm2d")
        for n in nxt:
            cons = modules.get(n)
            if isinstance(cons, nn.Conv2d):
                if cons.groups != 1 or cons.in_channels != mod.out_channels:
                    raise FPGMError(f"consumer {n!r} must be an ungrouped conv with {mod.out_channels} inputs")
            elif isinstance(cons, nn.Linear):
                if cons.in_features != mod.out_channels:
                    raise FPGMError(f"linear consumer {n!r} needs in_features == {mod.out_channels} (after GAP)")
            else:
                raise FPGMError(f"consumer {n!r} is not an nn.Conv2d or nn.Linear")
    return chains


def fpgm_prune(
    model: nn.Module,
    ratio: float | Mapping[str, float | int],
    triples: Iterable[Triple] | None = None,
    safe: Iterable[str] = (),
) -> tuple[nn.Module, dict[str, list[int]]]:
    """Remove FPGM-selected filters and return ``(smaller_copy, removed_indices_per_conv)``.

    ``ratio`` is a fraction of filters per conv, or a mapping conv name -> fraction or integer count.
    ``triples=None`` prunes every chain found by :func:`find_sequential_chains`. The input model is untouched.
    """
    chains = resolve_chains(model, triples, safe)
    modules = dict(model.named_modules())
    removed: dict[str, list[int]] = {}
    for conv, _, _ in chains:
        n = _n_prune(modules[conv], conv, ratio)
        removed[conv] = fpgm_select(modules[conv].weight, n)
    small = remove_channels(model, chains, removed)
    return small, removed


def fpgm_soft_prune(
    model: nn.Module,
    ratio: float | Mapping[str, float | int],
    triples: Iterable[Triple] | None = None,
    safe: Iterable[str] = (),
) -> dict[str, list[int]]:
    """Soft FPGM step (as in the paper's training loop): zero the selected filters (and bias) in place."""
    chains = resolve_chains(model, triples, safe)
    modules = dict(model.named_modules())
    removed: dict[str, list[int]] = {}
    with torch.no_grad():
        for conv, _, _ in chains:
            c = modules[conv]
            removed[conv] = fpgm_select(c.weight, _n_prune(c, conv, ratio))
            c.weight[removed[conv]] = 0.0
            if c.bias is not None:
                c.bias[removed[conv]] = 0.0
    return removed
