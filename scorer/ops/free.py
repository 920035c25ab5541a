"""Ops without arithmetic: data movement and reads by index (``free``), table lookups (``embedding``, and
``EmbeddingBag`` with its bag reduction); quantisers are in ``scorer.ops.quant``."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from rules.records import Op
from scorer.ops.call import Call, plain
from scorer.ops.registry import register
from scorer.ops.values import Val

_FREE_MODULES = (
    nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd, nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd, nn.modules.padding.CircularPad2d,
    nn.PixelShuffle, nn.PixelUnshuffle,
)
_FREE_FUNCTIONS = (
    torch.flatten, torch.reshape, torch.cat, torch.concat, torch.stack, torch.chunk, torch.split, torch.transpose,
    torch.permute, torch.squeeze, torch.unsqueeze, torch.narrow, torch.t, torch.clone, torch.roll,
    torch.tensor_split, torch.unbind, torch.movedim, getattr, F.pad, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout, F.pixel_shuffle, F.pixel_unshuffle,
    # reads by index: a lookup, no arithmetic (a parameter read is stored here, whole)
    torch.gather, torch.take, torch.take_along_dim, torch.repeat_interleave,
    # tensors made from sizes or data: no arithmetic on activations
    torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.tensor, torch.as_tensor,
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
)
_FREE_METHODS = (
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t", "contiguous",
    "size", "dim", "squeeze", "unsqueeze", "chunk", "split", "expand", "expand_as", "repeat", "narrow", "detach",
    "clone", "float", "half", "double", "long", "int", "bool", "to", "type", "type_as", "unbind",
    "numel", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "gather", "take", "take_along_dim",
    "copy_", "fill_", "zero_", "repeat_interleave",
)
_FREE_ATEN = (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "numpy_T", "mT", "transpose", "permute", "expand",
    "expand_as", "clone", "cat", "concat", "stack", "slice", "select", "squeeze", "unsqueeze", "flatten",
    "unflatten", "detach", "constant_pad_nd", "pad", "dropout", "native_dropout", "alias", "_to_copy", "to",
    "contiguous", "lift_fresh_copy", "lift_fresh", "lift", "split", "split_with_sizes", "chunk", "unbind", "copy",
    "empty_like", "zeros_like", "ones_like", "full_like", "as_strided", "view_as", "reshape_as", "repeat", "roll",
    "narrow", "sym_size", "scalar_tensor", "empty", "zeros", "ones", "full", "arange",
    "_assert_tensor_metadata", "feature_dropout", "alpha_dropout", "pixel_shuffle", "pixel_unshuffle", "type_as",
    "clone_", "getitem", "new_zeros", "new_ones", "new_empty", "new_full",
    "empty_strided", "fill", "gather", "take", "take_along_dim", "repeat_interleave",
    # F.pad's reflect and replicate modes, as the dispatch recorder sees them
    "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d",
)


#: Calls that only change the shape (the elements keep their row-major order), pass-through copies included.
_RESHAPES = frozenset({
    "view", "_unsafe_view", "reshape", "_reshape_alias", "flatten", "unflatten", "view_as", "reshape_as",
    "squeeze", "unsqueeze", "contiguous", "clone", "detach", "alias", "Flatten", "Unflatten", "Identity",
})
#: Calls that permute the dimensions.
_PERMUTES = frozenset({"transpose", "permute", "t", "movedim", "moveaxis", "swapaxes", "swapdims", "numpy_T", "mT"})
_CATS = frozenset({"cat", "concat", "concatenate"})


def call_name(call: Call) -> str:
    """The called function's bare name in any form (``view`` for Tensor.view, torch.view and aten.view)."""
    if call.form == "aten":
        return call.base
    if call.form == "method":
        return str(call.target)
    if call.form == "module":
        return type(call.module).__name__
    return getattr(call.target, "__name__", "")


def permutation_of(call: Call) -> tuple[int, ...] | None:
    """The dimension permutation a transpose/permute/movedim call applies (``out.dim(i)`` is input dim
    ``perm[i]``), found by making the same call on a meta tensor whose dimensions all differ in size."""
    x = call.args[0] if call.args else None
    if not isinstance(x, Val) or not x.is_tensor:
        return None
    probe = torch.empty([i + 2 for i in range(len(x.shape))], device="meta")
    rest = tuple(plain(a) for a in call.args[1:])
    kwargs = {k: plain(v) for k, v in call.kwargs.items()}
    try:
        fn = getattr(probe, str(call.target)) if call.form == "method" else partial(call.target, probe)
        out = fn(*rest, **kwargs)
    except Exception:  # noqa: BLE001 - a form this probe does not cover: no permutation recorded
        return None
    return tuple(d - 2 for d in out.shape) if isinstance(out, torch.Tensor) else None


def movement_attrs(call: Call) -> dict:
    """What a shuffle or a fold needs to know of a data movement: ``reshape`` (order-preserving shape
    change), ``perm`` (a dimension permutation) or ``cat_dim`` (the dimension a concatenation joins)."""
    name = call_name(call)
    if name in _RESHAPES:
        return {"reshape": True}
    if name in _PERMUTES:
        perm = permutation_of(call)
        return {"perm": perm} if perm is not None else {}
    if name in _CATS:
        dim = call.value(1, "dim", 0)
        rank = len(call.out_shape)
        return {"cat_dim": dim % rank} if isinstance(dim, int) and rank else {}
    return {}


#: Calls that read only the size, type or device of their tensor arguments (``zeros_like(x)``,
#: ``x.new_zeros(n)``): the tensor they make is a constant (scorer.memory).
_SIZE_ONLY = frozenset({"zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones",
                        "new_empty", "new_full", "new_tensor"})
#: Calls that read their first tensor's values and the other's size or type only (``x.view_as(y)``).
_SHAPE_FROM_OTHER = frozenset({"view_as", "reshape_as", "expand_as", "type_as"})


@register("free", modules=_FREE_MODULES, functions=_FREE_FUNCTIONS, methods=_FREE_METHODS, aten=_FREE_ATEN)
def free(call: Call) -> Op:
    """Data movement, no arithmetic (official_rules.md §2.3); a parameter it moves (a learned class token
    concatenated to the activations) is stored here. What it reads (for activation memory) leaves out the
    tensors whose size or type alone it reads."""
    name = call_name(call)
    source = call.args[0] if name in _SHAPE_FROM_OTHER and call.args else None
    if isinstance(source, Val) and source.is_activation:  # x.view_as(y): x's values, width and memory, as aten's
        return call.op("free", call.params(), acts=[source], attrs=movement_attrs(call))
    op = call.op("free", call.params(), attrs=movement_attrs(call))
    if name in _SIZE_ONLY or name in _SHAPE_FROM_OTHER:
        # reads no activation's values: holds nothing live; its width still follows its inputs, as a constant
        # operand's does on aten
        op.memory_inputs = []
        op.reads_input = False
    if name in _SHAPE_FROM_OTHER:
        op.attrs["values_of_first"] = True  # self.p.expand_as(y) is still p (``values.carries_param``)
    return op


@register("embedding", modules=(nn.Embedding,), functions=(F.embedding,), aten=("embedding",), weighted=True)
def embedding(call: Call) -> Op:
    """Table lookup: the table is stored, the lookup costs nothing."""
    if call.form == "module":
        return call.op("embedding", call.module_weights(("weight", "weight")), acts=call.acts[:1])
    table, idx = (call.args[0], call.args[1]) if call.form == "aten" else (call.args[1], call.args[0])
    return call.op("embedding", call.stored(table, "weight"), acts=[idx])


_BAG_MODES = {0: "sum", 1: "mean", 2: "max"}


@register("embedding_bag", modules=(nn.EmbeddingBag,), functions=(F.embedding_bag,),
          aten=("embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"), weighted=True)
def embedding_bag(call: Call) -> list[Op]:
    """Bags of table rows reduced to one row each: the lookup (``embedding``: table stored, free), the
    ``per_sample_weights`` scaling (one mult per looked-up element, ``mul``), then the bag reduction over
    the mean bag size N/bags: ``sum``, ``mean`` (official_rules.md §2.2 GlobalAvg) or ``maxpool`` (n−1
    comparisons). Exact when no bag is empty; ``padding_idx`` entries are counted like any other [INF]."""
    if call.form == "module":
        mod = call.module
        idx, psw, mode = call.arg(0, "input"), call.arg(2, "per_sample_weights"), mod.mode
        table = call.module_weights(("weight", "weight"))
    elif call.form == "aten":
        idx, psw = call.args[1], call.arg(6, "per_sample_weights")
        mode = _BAG_MODES[int(call.value(4, "mode", 0))]  # type: ignore[arg-type]
        table = call.stored(call.args[0], "weight")
    else:
        idx, psw, mode = call.arg(0, "input"), call.arg(8, "per_sample_weights"), call.value(6, "mode", "mean")
        table = call.stored(call.arg(1, "weight"), "weight")
    n_bags, dim = call.out_shape[0], call.out_shape[-1]
    rows = math.prod(idx.shape)
    ops = [call.op("embedding", table, acts=[idx], suffix="_lookup", out_shape=(rows, dim))]
    if isinstance(psw, Val) and psw.is_tensor:
        ops.append(call.op("mul", call.stored(psw, "operand"), acts=[psw] if psw.is_activation else [],
                           suffix="_weights", out_shape=(rows, dim),
                           inputs=[ops[-1].name] + ([psw.producer] if psw.producer else [])))
    bag = rows / n_bags if n_bags else 0
    kind, attrs = ("maxpool", {"window": bag}) if mode == "max" else (mode, {"reduce": bag})
    ops.append(call.op(kind, acts=[], attrs=attrs, inputs=[ops[-1].name]))
    return ops
