"""Passes over captured ops that need more than one call to see what was computed.

``mark_shuffles``: the ShuffleNet channel shuffle ``reshape(b, g, c/g, h, w) -> transpose(1, 2) ->
reshape(b, c, h, w)`` is three data movements one by one, but together a permutation of the c channels, which
the FAQ counts as a dense × sparse permutation-matrix product (rules ``cost_shuffle``). Capture records the
shape change of every reshape and the dimension order of every transpose/permute (``scorer.ops.free``), so the
pattern is found on every capture path from the ops alone.
"""

from __future__ import annotations

import math
from collections import defaultdict

from rules.records import Op
from scorer.ops.shuffle import permutation_ref


def run_passes(ops: list[Op]) -> None:
    """Every pass, in place, between capture and annotation."""
    mark_shuffles(ops)


def _reshape(op: Op | None) -> bool:
    return op is not None and op.kind == "free" and bool(op.attrs.get("reshape")) and len(op.in_shapes) == 1


def _split(before: tuple[int, ...], after: tuple[int, ...]) -> tuple[int, int] | None:
    """``(d, k)`` when ``after`` is ``before`` with dimension d split into k >= 2 factors, else None."""
    p = 0
    while p < min(len(before), len(after)) and before[p] == after[p]:
        p += 1
    q = 0
    while q < min(len(before), len(after)) - p and before[-1 - q] == after[-1 - q]:
        q += 1
    k = len(after) - p - q
    if len(before) - p - q != 1 or k < 2 or math.prod(after[p:p + k]) != before[p]:
        return None
    return p, k


def _shuffled_dim(op: Op, split_in: tuple[int, ...]) -> int | None:
    """The dimension of ``split_in`` whose positions ``op`` (a permute of the split shape) reorders, or None
    when it moves any other dimension or keeps the order of the split factors (the identity)."""
    found = _split(split_in, op.in_shapes[0])
    if found is None:
        return None
    d, k = found
    perm = op.attrs["perm"]
    factors = range(d, d + k)
    if any(perm[i] != i for i in range(len(perm)) if i not in factors):
        return None
    order = [perm[i] for i in factors if op.in_shapes[0][perm[i]] != 1]
    return d if order != sorted(order) else None


def mark_shuffles(ops: list[Op]) -> list[Op]:
    """Turn the permute of every split–permute–merge pattern into a ``shuffle`` op; return those ops.

    The pattern, with any same-shape copies (``contiguous``, ``clone``) between its steps: a reshape splits
    dimension d of shape S into factors, a permute reorders only those factors, and a reshape (the permute's
    only consumer chain) merges them back into S. The result is S with the positions along d permuted.
    A transpose that is not such a permutation (attention heads ``(B, N, h, d) -> (B, h, N, d)``, NCHW ->
    NHWC, a window partition) stays free.
    """
    permutes = [op for op in ops if op.kind == "free" and "perm" in op.attrs and len(op.in_shapes) == 1]
    if not permutes:
        return []
    by_name = {o.name: o for o in ops}
    consumers: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        for p in o.inputs:
            consumers[p].append(o)

    def producer(o: Op) -> Op | None:
        return by_name.get(o.inputs[0]) if len(o.inputs) == 1 else None

    def only_consumer(o: Op) -> Op | None:
        cs = consumers.get(o.name, [])
        return cs[0] if len(cs) == 1 else None

    marked = []
    for op in permutes:
        split = producer(op)
        while _reshape(split) and split.in_shapes[0] == split.out_shape:  # type: ignore[union-attr]
            split = producer(split)  # type: ignore[arg-type]
        if not _reshape(split):
            continue
        shape = split.in_shapes[0]  # type: ignore[union-attr]
        merge = only_consumer(op)
        while _reshape(merge) and merge.in_shapes[0] == merge.out_shape:  # type: ignore[union-attr]
            merge = only_consumer(merge)  # type: ignore[arg-type]
        if not _reshape(merge) or merge.out_shape != shape:  # type: ignore[union-attr]
            continue
        d = _shuffled_dim(op, shape)
        if d is None:
            continue
        n = shape[d]
        op.kind = "shuffle"
        op.attrs = {"n": n, "dim": d, "perm": op.attrs["perm"]}
        op.weights = [*op.weights, permutation_ref(op.module, op.name, n)]
        marked.append(op)
    return marked
