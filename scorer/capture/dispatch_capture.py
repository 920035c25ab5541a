"""Last-resort capture: run the model once on the example input and record every executed aten op.

Module attribution comes from global forward hooks that are removed again in a ``finally`` block, so
nothing is left behind, also when the forward raises.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from scorer.capture.aten_ops import from_aten
from scorer.capture.export_capture import _real_inputs, carries_param
from scorer.capture.fx_capture import FxCapture
from scorer.capture.values import Val


class _Recorder(TorchDispatchMode):
    def __init__(self, params: dict[int, tuple[str, torch.Tensor]], stack: list[str], batch: int):
        super().__init__()
        self.params = params
        self.stack = stack
        self.batch = batch
        self.ops = []
        self.vals: dict[int, Val] = {}
        self.keep: list[torch.Tensor] = []  # keeps outputs alive so ids stay unique
        self.count = 0

    def _val(self, t: object) -> object:
        if not isinstance(t, torch.Tensor):
            return t
        known = self.vals.get(id(t))
        if known is not None:
            return known
        hit = self.params.get(id(t))
        if hit is not None:
            return Val(meta=torch.empty(t.shape, dtype=t.dtype, device="meta"), param=hit[0], real=hit[1], ident=id(hit[1]))
        return Val(meta=torch.empty(t.shape, dtype=t.dtype, device="meta"))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        vargs = torch.utils._pytree.tree_map(self._val, args)
        vkwargs = torch.utils._pytree.tree_map(self._val, kwargs)
        self.count += 1
        meta_out = torch.utils._pytree.tree_map(
            lambda t: torch.empty(t.shape, dtype=t.dtype, device="meta") if isinstance(t, torch.Tensor) else t, out
        )
        path = self.stack[-1] if self.stack else ""
        op = from_aten(f"{func.overloadpacket.__name__}_{self.count}", path, func, vargs, vkwargs, meta_out)
        flat_out = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        carried = carries_param(op.kind, list(torch.utils._pytree.tree_leaves((vargs, vkwargs)))) if op else None
        for t in flat_out:
            self.keep.append(t)
            if carried is not None:
                self.vals[id(t)] = carried
            else:
                self.vals[id(t)] = Val(meta=torch.empty(t.shape, dtype=t.dtype, device="meta"),
                                       producer=op.name if op else None)
        if op is not None and carried is None:
            op.batch = self.batch
            self.ops.append(op)
        return out


def capture_dispatch(model: nn.Module, example_inputs: tuple) -> FxCapture:
    """Run ``model`` once under a dispatch recorder and return the executed ops."""
    inputs = _real_inputs(example_inputs)
    params: dict[int, tuple[str, torch.Tensor]] = {}
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        params[id(p)] = (name, p)
    paths = {id(m): name for name, m in model.named_modules()}
    stack: list[str] = []

    def pre(mod: nn.Module, _args: object) -> None:
        stack.append(paths.get(id(mod), stack[-1] if stack else ""))

    def post(mod: nn.Module, _args: object, _out: object) -> None:
        if stack:
            stack.pop()

    batch = int(inputs[0].shape[0]) if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() else 1
    # the forward really runs: buffers it updates in place or reassigns (counters, observers) are put back
    saved = [(m, name, b, b.detach().clone()) for m in model.modules() for name, b in m._buffers.items()
             if b is not None]
    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        rec = _Recorder(params, stack, batch)
        with torch.no_grad(), rec:
            model(*inputs)
    finally:
        h1.remove()
        h2.remove()
        with torch.no_grad():
            for m, name, b, copy in saved:
                m._buffers[name] = b
                b.copy_(copy)
    used = {w.name for op in rec.ops for w in op.weights}
    # Ops recorded under the model's root get the path "" (the root's name in named_modules()).
    return FxCapture(rec.ops, "dispatch", batch, used)
