"""Module surgery shared by the compression passes: find a submodule's parent and swap a child; remove or
add output channels of a conv along ``(conv, bn | None, [consumers])`` chains (FPGM, Hessian pruning)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Chain", "add_channels", "parent_of", "remove_channels", "set_child"]

#: ``(conv name, BatchNorm name or None, consumer names)``: the conv's output channels feed only the BN,
#: channel-wise ops and the consumers' input channels (checked by ``fpgm.resolve_chains``).
Chain = tuple[str, str | None, Sequence[str]]


def parent_of(root: nn.Module, name: str) -> nn.Module:
    """The module holding submodule ``name`` (``root`` itself for a top-level child)."""
    parent_name = name.rpartition(".")[0]
    return root.get_submodule(parent_name) if parent_name else root


def set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace submodule ``name`` of ``root`` by ``new``."""
    setattr(parent_of(root, name), name.rpartition(".")[2], new)


def _set_tensor(module: nn.Module, attr: str, new: Tensor) -> None:
    old = getattr(module, attr)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(module, attr, new)


def _slice(module: nn.Module, attr: str, keep: Tensor, dim: int) -> None:
    old = getattr(module, attr)
    if old is not None:
        _set_tensor(module, attr, old.detach().index_select(dim, keep.to(old.device)).clone())


def _set_widths(small: dict[str, nn.Module], conv: str, bn: str | None, consumers: Sequence[str], n: int) -> None:
    small[conv].out_channels = n
    if bn is not None:
        small[bn].num_features = n
    for name in consumers:
        cons = small[name]
        if isinstance(cons, nn.Conv2d):
            cons.in_channels = n
        else:
            cons.in_features = n


def _fresh_copy(model: nn.Module) -> tuple[nn.Module, dict[str, nn.Module]]:
    out = copy.deepcopy(model)
    if hasattr(out, "_compression_masks"):
        object.__delattr__(out, "_compression_masks")  # masks no longer match the new shapes
    return out, dict(out.named_modules())


def remove_channels(model: nn.Module, chains: Sequence[Chain], removed: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` without output channels ``removed[conv]`` of each chain's conv: sliced out of the
    conv (weight, bias), its BN (affine and running statistics) and the consumers' input channels (conv
    weight dim 1, linear ``in_features``). The input model is untouched; pruning masks are dropped."""
    small, mods = _fresh_copy(model)
    for conv, bn, consumers in chains:
        c = mods[conv]
        drop = set(int(i) for i in removed.get(conv, ()))
        keep = torch.tensor([i for i in range(c.out_channels) if i not in drop], dtype=torch.long)
        if len(keep) == 0:
            raise ValueError(f"{conv!r}: cannot remove all {c.out_channels} channels")
        _slice(c, "weight", keep, 0)
        _slice(c, "bias", keep, 0)
        if bn is not None:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _slice(mods[bn], attr, keep, 0)
        for name in consumers:
            _slice(mods[name], "weight", keep, 1)
        _set_widths(mods, conv, bn, consumers, len(keep))
    return small


def _append(module: nn.Module, attr: str, dim: int, new: Tensor) -> None:
    old = getattr(module, attr)
    if old is not None:
        _set_tensor(module, attr, torch.cat([old.detach(), new.to(old.device, old.dtype)], dim).clone())


def add_channels(
    model: nn.Module,
    chains: Sequence[Chain],
    counts: Mapping[str, int],
    noise: float = 1e-2,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A copy of ``model`` with ``counts[conv]`` output channels appended to each chain's conv.

    A new channel copies the conv's last filter (and its bias and BN entries) times ``1 + noise * U(0, 1)``
    elementwise, as WaveComp's annealing does (``mhariat/MicroNet`` ``Pruning/utils/prune_utils.py``
    ``add_conv_rows``); the consumers' new input channels start at zero, so the grown model computes the
    same function until it is trained (WaveComp copies the last column with noise there as well).
    """
    grown, mods = _fresh_copy(model)
    for conv, bn, consumers in chains:
        n = int(counts.get(conv, 0))
        if n <= 0:
            continue
        c = mods[conv]
        last = c.weight.detach()[-1:]
        jitter = 1 + noise * torch.rand((n, *last.shape[1:]), generator=generator).to(last.device, last.dtype)
        _append(c, "weight", 0, last.expand(n, *last.shape[1:]) * jitter)
        if c.bias is not None:
            _append(c, "bias", 0, c.bias.detach()[-1:].expand(n))
        if bn is not None:
            b = mods[bn]
            for attr in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(b, attr)
                if t is not None:
                    _append(b, attr, 0, t.detach()[-1:].expand(n))
        for name in consumers:
            w = mods[name].weight.detach()
            _append(mods[name], "weight", 1, w.new_zeros((w.shape[0], n, *w.shape[2:])))
        _set_widths(mods, conv, bn, consumers, c.weight.shape[0])
    return grown
