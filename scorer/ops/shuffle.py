"""Permutations: ``index_select`` by a permutation of a dimension's positions is a ``shuffle``; the
reshape–transpose–reshape channel shuffle is found over the captured ops by ``scorer.passes``.

Both carry the permutation matrix they multiply by as a ``WeightRef`` of role ``permutation`` (the FAQ: its
storage counts towards the parameters; the rule set decides how, ``RuleSet.permutation_storage``).
"""

from __future__ import annotations

import operator

import torch

from rules.records import Op, WeightRef
from scorer.ops.call import Call
from scorer.ops.free import movement_attrs
from scorer.ops.registry import register
from scorer.ops.values import Val


def permutation_ref(layer: str, op_name: str, n: int) -> WeightRef:
    """The n × n permutation matrix that op ``op_name`` of ``layer`` multiplies by (no tensor: its storage
    follows from the shape; annotation gives it the layer's parameter width)."""
    return WeightRef(role="permutation", name=f"{layer}:{op_name}:permutation", tensor=None, shape=(n, n))


def _is_permutation(values: torch.Tensor, n: int) -> bool:
    flat = values.detach().reshape(-1).to(torch.long)
    return flat.numel() == n and bool(torch.equal(flat.sort().values, torch.arange(n)))


def _select(call: Call, x: object, dim: object, idx: object) -> Op:
    """``x`` indexed along ``dim`` by the integer vector ``idx``: a ``shuffle`` of the positions along ``dim``
    when ``idx`` reorders all of them (values read from a buffer, parameter or constant; unknown values of the
    full length are taken for a permutation, ``known=False``), else a free gather (a selection, like slicing)."""
    if (isinstance(x, Val) and x.is_activation and isinstance(idx, Val) and idx.is_tensor and isinstance(dim, int)
            and not idx.meta.dtype.is_floating_point and idx.meta.dtype != torch.bool):  # type: ignore[union-attr]
        d = dim % len(x.shape)
        n = x.shape[d]
        real = idx.real
        known = real is not None and real.device.type != "meta"
        full = len(idx.shape) == 1 and idx.shape[0] == n and n > 1
        identity = known and torch.equal(real.reshape(-1).to(torch.long), torch.arange(n))  # type: ignore[union-attr]
        if full and not identity and (not known or _is_permutation(real, n)):  # type: ignore[arg-type]
            return call.op("shuffle", [permutation_ref(call.path, call.name, n)], acts=[x],
                           attrs={"n": n, "dim": d, "known": known})
    return call.op("free", call.params(), attrs=movement_attrs(call))


@register("index_select", functions=(torch.index_select,), methods=("index_select",), aten=("index_select",))
def index_select(call: Call) -> Op:
    """``x.index_select(dim, index)``."""
    return _select(call, call.arg(0, "input"), call.value(1, "dim"), call.arg(2, "index"))


def _indexed_dim(x: Val, index: object) -> tuple[int, object] | None:
    """For ``x[index]`` with one tensor among full slices (``x[:, perm]``, ``x[..., perm]``): (dim, tensor)."""
    items = list(index) if isinstance(index, tuple) else [index]
    if items.count(Ellipsis) > 1 or any(i is None for i in items):
        return None
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(x.shape) - len(items) + 1)
    tensors = [i for i, item in enumerate(items) if isinstance(item, Val) and item.is_tensor]
    if len(tensors) != 1 or any(item != slice(None) for i, item in enumerate(items) if i != tensors[0]):
        return None
    return tensors[0], items[tensors[0]]


@register("index", functions=(operator.getitem,), methods=("__getitem__",), aten=("index",))
def index(call: Call) -> Op:
    """Indexing: ``x[:, perm]`` (``aten.index`` with one index tensor) as ``index_select``; any other index
    (slices, integers, masks, several tensors, an item of a tuple) is data movement."""
    x = call.args[0] if call.args else None
    if isinstance(x, Val) and x.is_activation:
        if call.form == "aten":
            indices = list(call.arg(1, "indices") or [])
            given = [i for i, v in enumerate(indices) if v is not None]
            if len(given) == 1:
                return _select(call, x, given[0], indices[given[0]])
        else:
            found = _indexed_dim(x, call.args[1] if len(call.args) > 1 else None)
            if found is not None:
                return _select(call, x, *found)
    return call.op("free", call.params(), attrs=movement_attrs(call))
