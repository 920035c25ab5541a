"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their Cell modules) as their cell equations.

Each layer and direction is decomposed into the terms of the equations in the PyTorch documentation
(``torch.nn.LSTM``, ``GRU``, ``RNN``, ``LSTMCell``, ``GRUCell``, ``RNNCell``), one Op per term covering every
time step (its ``out_shape`` keeps the time dimension, so its count is the per-step count × T):

- RNN:  h' = act(W_ih x + b_ih + W_hh h + b_hh)                        (act: tanh or relu)
- LSTM: i, f, g, o = σ, σ, tanh, σ(W_ih x + b_ih + W_hh h + b_hh)       (the four gates, stacked)
        c' = f * c + i * g,  h' = o * tanh(c'),  h' = W_hr h' (with ``proj_size``)
- GRU:  r, z = σ(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 − z) * n + z * h

The first step with h0 = c0 = 0 is counted like every other (the equations run at every step). For
activation memory (``scorer.memory``) the first step's W_hh h, f * c and z * h read the state arguments
(h0, c0; a cell's hx) when they are activations, and a constant (nothing) when absent or constant; later
steps read the previous step's h and c, terms of the same ops here, so over T > 1 steps W_hh h also reads
W_ih x (live until the gates anyway) and f * c, z * h read their gate. A bidirectional layer ends with a
``free`` op joining both directions' h (PyTorch writes them into one output tensor), which the next layer and
the call's outputs read. An LSTM cell's ``c`` output, and a one-layer one-direction LSTM's ``c_n``, are its
``c`` term (their last step, a slice of it); a deeper or bidirectional layer's ``h_n`` and ``c_n`` stack the final
h and c of every layer and direction: a ``free`` op each, after the last layer, reading those terms (which stay
live until then, as a concatenation's inputs do).

Each weight (``weight_ih_l0``, ``weight_hh_l0``, ``bias_*``, ``weight_hr_l0``, ``*_reverse``) is stored once, by
its linear, as ``weight``/``bias``. Matched as modules (fx leaves), as the ``torch.lstm``-style functions
(dispatch records them whole) and as aten ``lstm``/``gru``/``rnn_*`` and ``*_cell`` (export). Their
argument layout is aten's: ``lstm(input, hx, params, has_biases, num_layers, dropout, train,
bidirectional, batch_first)``, ``lstm_cell(input, hx, w_ih, w_hh, b_ih, b_hh)``. Packed sequences have
no rule (unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from rules.records import Op, WeightRef
from scorer.ops.call import Call
from scorer.ops.registry import register
from scorer.ops.values import Val

#: gate rows per hidden unit of the stacked weights.
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_MODE_OF_MODULE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
_STACKS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
_CELLS = ("lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")


@dataclass
class _Weights:
    """One layer and direction: its tensors (each ``[WeightRef]`` or ``[]``) and sizes."""

    w_ih: list[WeightRef]
    w_hh: list[WeightRef]
    b_ih: list[WeightRef]
    b_hh: list[WeightRef]
    w_hr: list[WeightRef]
    in_size: int
    hidden: int
    out_size: int  # proj_size when projecting, else hidden
    has_bias: bool
    tag: str  # "_l0", "_l1_reverse", "" for a cell


def _linear(call: Call, w: list[WeightRef], b: list[WeightRef], n: int, out: tuple[int, ...], in_lead: tuple,
            suffix: str, acts: list[Val], inputs: list[str]) -> Op:
    attrs = {"vector_len": n, "out_features": out[-1], "has_bias": bool(b)}
    op = call.op("linear", w + b, acts=acts, attrs=attrs, suffix=suffix, out_shape=out, inputs=inputs)
    op.in_shapes = [(*in_lead, n)]
    return op


def _elementwise(call: Call, kind: str, operands: list[Op], out: tuple[int, ...], suffix: str,
                 scalar: bool = False) -> Op:
    op = call.op(kind, acts=[], suffix=suffix, out_shape=out, inputs=[o.name for o in operands],
                 scalar_operand=scalar)
    op.in_shapes = [out] if scalar else [out, out]
    return op


def _unary(call: Call, kind: str, operand: Op, out: tuple[int, ...], suffix: str) -> Op:
    op = call.op(kind, acts=[], suffix=suffix, out_shape=out, inputs=[operand.name])
    op.in_shapes = [out]
    return op


def _reads(op: Op, ops: list[Op], state: list[Val]) -> Op:
    """Set what ``op`` holds live (``Op.memory_inputs``): ``ops`` of this call and the ``state`` arguments that
    are activations; reading neither makes it a constant (``Call.op`` would link an op built reading nothing to
    every argument). Its ``inputs``, which give its operands' widths, stay as built."""
    acts = [v for v in state if v.is_activation]
    op.memory_inputs = [o.name for o in ops] + [v.producer for v in acts if v.producer]
    op.reads_input = any(v.model_input for v in acts)
    return op


def _state(hx: object) -> tuple[list[Val], list[Val]]:
    """The h and c tensors of a state argument (``h``, ``(h, c)`` or ``None``), each ``[Val]`` or ``[]``."""
    h, c = (tuple(hx) + (None, None))[:2] if isinstance(hx, (list, tuple)) else (hx, None)
    return ([h] if isinstance(h, Val) and h.is_tensor else []), ([c] if isinstance(c, Val) and c.is_tensor else [])


def _steps(x: Val, batch_first: bool) -> int:
    """Time steps of a stack's input: (T, B, in), (B, T, in) with ``batch_first``, or unbatched (T, in)."""
    return x.shape[1] if batch_first and len(x.shape) == 3 else x.shape[0]


def _cell(call: Call, mode: str, w: _Weights, lead: tuple[int, ...], acts: list[Val], inputs: list[str],
          h0: list[Val], c0: list[Val], steps: int) -> list[Op]:
    """The equation terms of one layer and direction over ``lead`` (time and batch dims), from state ``h0``,
    ``c0`` (``[]``: zero) over ``steps`` time steps."""
    g, hid, t = _GATES[mode], w.hidden, w.tag
    gates = (*lead, g * hid)
    one = (*lead, hid)
    ih = _linear(call, w.w_ih, w.b_ih, w.in_size, gates, lead, f"{t}_ih", acts, inputs)
    # W_hh h: h0 at step 1, then the previous step's h (computed from W_ih x): ih stands for it
    hh = _reads(_linear(call, w.w_hh, w.b_hh, w.out_size, gates, lead, f"{t}_hh", [], []),
                [ih] if steps > 1 else [], h0)
    if mode in ("rnn_tanh", "rnn_relu"):
        pre = _elementwise(call, "add", [ih, hh], one, f"{t}_add")
        return [ih, hh, pre, _unary(call, "act:tanh" if mode == "rnn_tanh" else "act:relu", pre, one, f"{t}_h")]
    if mode == "lstm":
        pre = _elementwise(call, "add", [ih, hh], gates, f"{t}_gates")
        i = _unary(call, "act:sigmoid", pre, one, f"{t}_i")
        f = _unary(call, "act:sigmoid", pre, one, f"{t}_f")
        gg = _unary(call, "act:tanh", pre, one, f"{t}_g")
        o = _unary(call, "act:sigmoid", pre, one, f"{t}_o")
        fc = _reads(_elementwise(call, "mul", [f], one, f"{t}_fc"), [f], c0)  # f * c: c0, then c (after f)
        ig = _elementwise(call, "mul", [i, gg], one, f"{t}_ig")
        c = _elementwise(call, "add", [fc, ig], one, f"{t}_c")
        tc = _unary(call, "act:tanh", c, one, f"{t}_tanh_c")
        h = _elementwise(call, "mul", [o, tc], one, f"{t}_h")
        ops = [ih, hh, pre, i, f, gg, o, fc, ig, c, tc, h]
        if w.w_hr or w.out_size != hid:
            ops.append(_linear(call, w.w_hr, [], hid, (*lead, w.out_size), lead, f"{t}_hr", [], [h.name]))
        return ops
    rz = _elementwise(call, "add", [ih, hh], (*lead, 2 * hid), f"{t}_rz")
    r = _unary(call, "act:sigmoid", rz, one, f"{t}_r")
    z = _unary(call, "act:sigmoid", rz, one, f"{t}_z")
    rn = _elementwise(call, "mul", [r, hh], one, f"{t}_r_hn")  # r * (W_hn h + b_hn)
    npre = _elementwise(call, "add", [ih, rn], one, f"{t}_n_pre")
    n = _unary(call, "act:tanh", npre, one, f"{t}_n")
    omz = _elementwise(call, "sub", [z], one, f"{t}_1mz", scalar=True)  # 1 − z
    a = _elementwise(call, "mul", [omz, n], one, f"{t}_1mz_n")
    zh = _reads(_elementwise(call, "mul", [z], one, f"{t}_zh"), [z], h0)  # z * h: h0, then h (after z)
    h = _elementwise(call, "add", [a, zh], one, f"{t}_h")
    return [ih, hh, rz, r, z, rn, npre, n, omz, a, zh, h]


def _cell_outputs(call: Call, mode: str, ops: list[Op]) -> list[Op]:
    """A cell's ops; an LSTM cell returns ``(h, c)``: the ops writing each (``Call.producers``)."""
    if mode == "lstm":
        call.producers = [ops[-1].name, _c_term(call, ops, "").name]  # type: ignore[union-attr]
    return ops


def _c_term(call: Call, cell: list[Op], tag: str) -> Op | None:
    """The cell state term ``c`` among one layer and direction's ops (``tag``), None for a GRU or RNN."""
    return next((o for o in cell if o.name == f"{call.name}{tag}_c"), None)


def _sizes(mode: str, w_ih: tuple, w_hh: tuple) -> tuple[int, int, int]:
    """(input size, hidden size, output size) from the shapes of W_ih [G·H, in] and W_hh [G·H, out]."""
    return w_ih[1], w_ih[0] // _GATES[mode], w_hh[1]


def _stack(call: Call, mode: str, x: Val, layers: list[list[_Weights]], hx: object, batch_first: bool) -> list[Op]:
    """Every layer and direction over the input's time (and batch) dims, from state ``hx`` (each reads its
    slice of h0, c0); layer l > 0 reads layer l − 1; a bidirectional layer's output joins both directions.
    The call's outputs (``Call.producers``): ``output`` is the last layer's h (or join); a one-layer
    one-direction ``h_n``, ``c_n`` are its h and c terms (their last step: a slice), a deeper or bidirectional
    layer's are ``free`` ops stacking the final h (c) of every layer and direction, after them."""
    lead, steps, (h0, c0) = x.shape[:-1], _steps(x, batch_first), _state(hx)
    ops: list[Op] = []
    finals: list[tuple[Op, Op | None]] = []  # each layer and direction's h and c terms, in h_n's order
    acts, inputs = [x], [x.producer] if x.producer else []
    for li, dirs in enumerate(layers):
        outs = []
        for w in dirs:
            cell = _cell(call, mode, w, lead, acts, inputs, h0, c0, steps)
            ops.extend(cell)
            outs.append(cell[-1])
            finals.append((cell[-1], _c_term(call, cell, w.tag)))
        if len(outs) == 2:  # data movement: both directions' h into one tensor, no arithmetic
            outs = [_join(call, outs, f"_l{li}_out", (*lead, 2 * dirs[0].out_size))]
            ops.append(outs[0])
        acts, inputs = [], [o.name for o in outs]
    output = ops[-1].name
    if len(finals) == 1:
        h, c = finals[0]
        call.producers = [output, h.name, *([c.name] if c is not None else [])]
        return ops
    # h_n, c_n: (layers · directions, batch, size), or without the batch dim for an unbatched input
    batch = () if len(lead) < 2 else (lead[0] if batch_first else lead[1],)
    h_n = _join(call, [h for h, _ in finals], "_h_n", (len(finals), *batch, layers[-1][0].out_size))
    ops.append(h_n)
    call.producers = [output, h_n.name]
    if mode == "lstm":
        c_n = _join(call, [c for _, c in finals if c is not None], "_c_n", (len(finals), *batch, layers[-1][0].hidden))
        ops.append(c_n)
        call.producers.append(c_n.name)
    return ops


def _join(call: Call, parts: list[Op], suffix: str, out: tuple[int, ...]) -> Op:
    """A ``free`` op writing ``parts`` into one tensor of shape ``out`` (data movement, no arithmetic)."""
    op = call.op("free", [], acts=[], suffix=suffix, out_shape=out, inputs=[o.name for o in parts])
    op.in_shapes = [o.out_shape for o in parts]
    return op


def _from_module(call: Call) -> list[Op] | Op:
    mod = call.module
    x = call.arg(0, "input")
    if not isinstance(x, Val) or not x.is_tensor:
        return call.unknown("(packed sequence)")
    if isinstance(mod, nn.RNNCellBase):
        if isinstance(mod, nn.LSTMCell):
            mode = "lstm"
        elif isinstance(mod, nn.GRUCell):
            mode = "gru"
        else:
            mode = "rnn_tanh" if mod.nonlinearity == "tanh" else "rnn_relu"
        pairs = [("weight_ih", "weight"), ("weight_hh", "weight"), ("bias_ih", "bias"), ("bias_hh", "bias")]
        refs = call.module_weights(*pairs)
        by = {r.name.rsplit(".", 1)[-1]: [r] for r in refs}
        w = _Weights(by.get("weight_ih", []), by.get("weight_hh", []), by.get("bias_ih", []), by.get("bias_hh", []),
                     [], mod.input_size, mod.hidden_size, mod.hidden_size, mod.bias, "")
        return _cell_outputs(call, mode, _cell(call, mode, w, x.shape[:-1], [x], [x.producer] if x.producer else [],
                                               *_state(call.arg(1, "hx")), 1))
    mode = _MODE_OF_MODULE[mod.mode]
    layers = []
    for layer in range(mod.num_layers):
        dirs = []
        for sfx in ("", "_reverse")[: 2 if mod.bidirectional else 1]:
            names = [f"{p}_l{layer}{sfx}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
            roles = ("weight", "weight", "bias", "bias", "weight")
            refs = call.module_weights(*zip(names, roles, strict=True))
            by = {r.name.rsplit(".", 1)[-1]: [r] for r in refs}
            shapes = [tuple(getattr(mod, n).shape) for n in names[:2]]
            in_size, hid, out = _sizes(mode, shapes[0], shapes[1])
            dirs.append(_Weights(*(by.get(n, []) for n in names), in_size, hid, out, mod.bias, f"_l{layer}{sfx}"))
        layers.append(dirs)
    return _stack(call, mode, x, layers, call.arg(1, "hx"), mod.batch_first)


def _weights_of(call: Call, mode: str, vals: list[Val], has_bias: bool, tag: str) -> _Weights:
    """A layer's weights from aten's flat list [w_ih, w_hh, (b_ih, b_hh), (w_hr)]."""
    w_ih, w_hh = vals[0], vals[1]
    rest = vals[2:]
    b_ih, b_hh = (rest[0], rest[1]) if has_bias else (None, None)
    w_hr = rest[2 if has_bias else 0] if len(rest) > (2 if has_bias else 0) else None
    in_size, hid, out = _sizes(mode, w_ih.shape, w_hh.shape)
    return _Weights(call.stored(w_ih, "weight"), call.stored(w_hh, "weight"), call.stored(b_ih, "bias"),
                    call.stored(b_hh, "bias"), call.stored(w_hr, "weight") if w_hr is not None else [],
                    in_size, hid, out, has_bias, tag)


def _from_call(call: Call) -> list[Op] | Op:
    """Function form (``torch.lstm`` …) or aten form, both with aten's argument layout."""
    base = call.base or getattr(call.target, "__name__", "")
    x = call.args[0]
    if base in _CELLS:
        mode = base.removesuffix("_cell")
        w_ih, w_hh = call.args[2], call.args[3]
        b_ih, b_hh = call.arg(4, "b_ih"), call.arg(5, "b_hh")
        has_bias = isinstance(b_ih, Val) and b_ih.is_tensor
        vals = [w_ih, w_hh, *((b_ih, b_hh) if has_bias else ())]
        return _cell_outputs(call, mode, _cell(call, mode, _weights_of(call, mode, vals, has_bias, ""), x.shape[:-1],
                                               [x], [x.producer] if x.producer else [], *_state(call.args[1]), 1))
    if isinstance(call.value(3, "has_biases"), (list, tuple)):  # .data: (data, batch_sizes, hx, params, ...)
        return call.unknown("(packed sequence)")
    params = call.args[2]
    has_bias, num_layers = bool(call.value(3, "has_biases")), int(call.value(4, "num_layers"))  # type: ignore[arg-type]
    bidirectional = bool(call.value(7, "bidirectional"))
    dirs = 2 if bidirectional else 1
    per = len(params) // (num_layers * dirs)
    layers = []
    for layer in range(num_layers):
        row = []
        for d in range(dirs):
            k = (layer * dirs + d) * per
            tag = f"_l{layer}{'_reverse' if d else ''}"
            row.append(_weights_of(call, base, list(params[k:k + per]), has_bias, tag))
        layers.append(row)
    return _stack(call, base, x, layers, call.args[1], bool(call.value(8, "batch_first")))


@register("rnn", modules=(nn.RNNBase, nn.RNNCellBase),
          functions=tuple(getattr(torch, n) for n in (*_STACKS, *_CELLS)),
          aten=(*_STACKS, *_CELLS), weighted=True)
def rnn(call: Call) -> list[Op] | Op:
    """A recurrent layer or cell as its documented cell equations (see the module docstring)."""
    if call.form == "module":
        return _from_module(call)
    return _from_call(call)
