"""Activation memory: the activation storage each op writes, what is live at each step, and the maximum
transient activation size (MTAS).

The scoring page names MTAS as a metric "future iterations" would add (official_rules.md §7) and gives no
formula; these definitions are ours [INF], in the same units as every count (per example, or per token on
wikitext103: ``rules.records.Op.out_numel`` divides by ``op.batch``):

- **Tensor size**: an op's output elements per example × its output width ``op.out_bits`` from the precision
  policy (``scorer.precision.annotate_bits``: the activation width, 32 by default, N with ``bits=N``, a
  quantiser's width after it, the input's width after a value-preserving op). The width is the policy's,
  not the tensor's dtype. A multi-output op counts its first output (``Op.out_shape``). On wikitext103 the
  divisor is the forward's token count: score one token (the track's default, online inference) for the
  memory of a step; a T-token forward divided by T understates a step's memory where tensors of one time step
  (an LSTM's gates) are the largest.
- **The model's input** counts: the tensors passed to ``score`` (numel / divisor each) at the input width
  (precision ``input``, else ``act``), live from step 0 to the last op that reads one of them (capture marks
  those ops: ``Op.reads_input``; every input is held that long, ops do not say which input they read).
- **Constants are not activations**: an op that reads no activation (a tensor made from sizes or data,
  ``zeros``, ``arange``, a constant index table, and what is computed from those alone) writes nothing
  counted here; an activation is a tensor computed from the model's input. Captures differ in whether they
  record such tensors as ops (export, dispatch) or fold them (fx), so this keeps the counts the same. An op
  reads the outputs of its ``inputs``, or of ``Op.memory_inputs`` where what it holds live differs from what
  its operands' widths come from (a recurrent term holds its state; ``zeros_like(x)`` holds none of x).
- **Aliases**: a ``free`` op (data movement) whose tensor inputs all share one storage and whose output has
  no more elements than its largest input nor than that storage is an alias of it (view, reshape, flatten,
  permute, transpose, slice, select, squeeze, dropout in eval, an item of a chunk): it writes nothing, and reading it
  keeps the storage live. A deployment lays such tensors out as strided reads of the source (PyTorch's
  ``contiguous`` copy included). Every other op writes a new tensor, the ``free`` ops that join or grow
  tensors too (cat, stack, pad, repeat, expand): a concatenation writes its own buffer, and its inputs stay
  live until it runs; a gather by a constant index larger than what it reads, and an ``expand`` or
  ``expand_as`` growing a tensor, write too. A call that reads only another tensor's size or type
  (``zeros_like(x)``, ``x.new_zeros(n)``, the ``y`` of ``x.view_as(y)`` or ``x.expand_as(y)``) does not read it.
- **In place**: an in-place call (``relu_``, ``acc.add_(y)``, ``out[:, t] = h``) counts as writing a new tensor
  (an upper bound), the whole tensor it changes when it writes into a view of it (``Op.memory_out_shape``); later
  reads of the changed tensor, by whatever name the forward reads it, read that one (a tensor made from sizes and
  then filled with activations is an activation).
- **Items**: picking one output of a call that has several (``y, w = attn(q, k, v)``, marked
  ``attrs["item"]`` by the capture) is an alias read by nothing itself: an unused item keeps nothing live.
- **Live**: a storage is live at step i (the i-th op in captured order) when it was written at or before i
  and is read (through any alias) at or after i; one that no op reads (a model output) is live only at the
  step that writes it.

Per op (one report row each):

- ``act_bits_out``: bits of new storage the op writes (0 for an alias);
- ``act_bits_op``: the op's own working set: its distinct input storages plus its output (once when it is an
  alias), what the op needs resident to run;
- ``act_bits_live``: every storage live at its step: its inputs and output and every tensor held across it
  (a residual skip, the branches waiting for a concatenation).

Over a capture: ``mtas_bits`` = max ``act_bits_live`` (the MTAS, the issue's definition: the largest sum of
live activations at any step) and ``peak_op_activation_bits`` = max ``act_bits_op`` (the largest single-op
working set, a lower bound any execution order needs; equal to MTAS on a chain). With weighted paths
(early exits, ``path_fractions``) each path is one capture, and both are the max over paths, not weighted.
"""

from __future__ import annotations

import math

from rules.records import Op

#: The storage index of the model's input tensors (ops are 0, 1, ...), and of every constant (size 0).
INPUT = -1
CONST = -2


def activation_memory(ops: list[Op], input_bits: float, input_numel: int) -> list[dict[str, float]]:
    """``{"act_bits_out", "act_bits_op", "act_bits_live"}`` per op of ``ops`` (one capture, in order), given the
    size in bits of the model's input tensors (per example) and their elements (all of them, batch included:
    ``input_numel``); see the module docstring."""
    index = {op.name: i for i, op in enumerate(ops)}
    storage: list[int] = []  # op index -> index of the storage its output is (itself, or an alias's source)
    reads: list[list[int]] = []  # op index -> distinct storages it reads
    size: dict[int, float] = {INPUT: float(input_bits)}
    numel: dict[int, int] = {INPUT: input_numel}  # storage -> its elements (batch included)
    last: dict[int, int] = {INPUT: 0}  # storage -> last step reading it
    for i, op in enumerate(ops):
        srcs: list[int] = []  # distinct, in the order read; the model's input last
        read: list[int] = []  # the ops whose values it reads
        for p in op.inputs if op.memory_inputs is None else op.memory_inputs:
            j = index.get(p, i)
            if j < i and (s := storage[j]) != CONST:
                read.append(j)
                if s not in srcs:
                    srcs.append(s)
        if op.reads_input and INPUT not in srcs:
            srcs.append(INPUT)
        out_shape = op.out_shape if op.memory_out_shape is None else op.memory_out_shape
        if not srcs or op.attrs.get("item"):
            storage.append(srcs[0] if srcs else CONST)  # an item: nothing written (its readers read its sources)
        elif op.kind == "free" and len(srcs) == 1 and math.prod(out_shape) <= min(
                numel[srcs[0]], _largest_read(op, [ops[j] for j in read])):
            storage.append(srcs[0])  # an alias: no larger than its storage (not a gather by a bigger constant
            # index) nor than the largest value it reads (not a concatenation of two views of the storage, not
            # an expand_as(y) growing it to the size of y, which it does not read)
        else:
            storage.append(i)
            numel[i] = math.prod(out_shape)
            size[i] = numel[i] / op.batch * op.out_bits
        reads.append(srcs)
        if not op.attrs.get("item"):  # an item picked from a call's outputs: its readers keep it live
            for s in srcs:
                last[s] = i
    # live[i] = sum of the storages written at or before i and read at or after i (a difference array)
    delta = [0.0] * (len(ops) + 1)
    for s, bits in size.items():
        start = max(s, 0)
        end = max(last.get(s, start), start)
        delta[start] += bits
        delta[end + 1] -= bits
    rows, live = [], 0.0
    for i, (srcs, own) in enumerate(zip(reads, storage, strict=True)):
        live += delta[i]
        # what the op reads and writes: its distinct storages (srcs holds no constant and no repeat). One or two
        # values sum exactly the same in any order, so the usual op skips building the set.
        if len(srcs) == 1:
            working = size[own] if own == srcs[0] else size[srcs[0]] + size[own]
        else:
            working = sum(size[s] for s in (set(srcs) | {own}) - {CONST})
        rows.append({"act_bits_out": size.get(i, 0.0), "act_bits_op": working, "act_bits_live": live})
    return rows


def _largest_read(op: Op, read: list[Op]) -> int:
    """Elements of the largest value ``op`` reads: the outputs of the ``read`` ops (a view's own, not its
    storage's) and, when it reads the model's input, its input shapes (which of the input tensors it reads is not
    recorded)."""
    largest = max((math.prod(r.out_shape) for r in read), default=0)
    if op.reads_input:
        largest = max(largest, max((math.prod(s) for s in op.in_shapes), default=0))
    return largest


def input_bits(inputs: tuple, divisor: int, bits: int) -> float:
    """Size in bits of the model's tensor inputs per example (or token): numel / ``divisor`` × ``bits`` each."""
    return sum(x.numel() / divisor * bits for x in inputs if hasattr(x, "numel") and hasattr(x, "shape"))


def input_numel(inputs: tuple) -> int:
    """Elements of the model's tensor inputs, all of them."""
    return sum(x.numel() for x in inputs if hasattr(x, "numel") and hasattr(x, "shape"))
