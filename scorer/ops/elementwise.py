"""Binary elementwise arithmetic: ``add``, ``sub``, ``mul``, ``div`` (tensor ⊙ tensor or tensor ⊙ scalar)."""

from __future__ import annotations

import operator

import torch

from rules.records import Op
from scorer.ops.call import Call
from scorer.ops.registry import register
from scorer.ops.values import Val

_KINDS: dict[object, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub", torch.rsub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div", torch.true_divide: "div",
    "add": "add", "add_": "add", "__add__": "add", "__radd__": "add", "__iadd__": "add",
    "sub": "sub", "sub_": "sub", "__sub__": "sub", "__rsub__": "sub", "__isub__": "sub",
    "mul": "mul", "mul_": "mul", "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul",
    "div": "div", "div_": "div", "__truediv__": "div", "__itruediv__": "div",
}
_ATEN = {"add": "add", "sub": "sub", "rsub": "sub", "mul": "mul", "div": "div"}


@register("elementwise", functions=[t for t in _KINDS if not isinstance(t, str)],
          methods=[t for t in _KINDS if isinstance(t, str)], aten=tuple(_ATEN))
def elementwise(call: Call) -> Op:
    """One operation per output element; a parameter operand (a learned scale or bias) is stored here;
    ``alpha`` ≠ 1 (``x + alpha·y``) is recorded for its extra multiplication."""
    kind = _ATEN[call.base] if call.form == "aten" else _KINDS[call.target]
    a, b = call.args[0], call.arg(1, "other")
    operands = [x for x in (a, b) if isinstance(x, Val) and x.is_tensor]
    weights = [w for x in operands for w in call.stored(x, "operand")]
    scalar = len(operands) < 2 or any(x.meta.dim() == 0 for x in operands)
    attrs = {}
    alpha = call.value(2, "alpha") if call.form == "aten" else call.kwargs.get("alpha")
    if kind in ("add", "sub") and alpha is not None and alpha != 1:
        attrs["alpha"] = alpha
    return call.op(kind, weights, acts=[x for x in operands if x.is_activation], attrs=attrs, scalar_operand=scalar)
