"""Fallback capture with torch.export (non-strict): an aten-level graph with shapes and module paths."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import torch
import torch.nn as nn

from scorer.capture.aten_ops import from_aten
from scorer.capture.fx_capture import FxCapture
from scorer.capture.values import Val


def _real_inputs(example_inputs: tuple) -> tuple:
    return tuple(
        torch.zeros(x.shape, dtype=x.dtype) if isinstance(x, torch.Tensor) and x.device.type == "meta" else x
        for x in example_inputs
    )


def _meta_of(v: object) -> object:
    if isinstance(v, torch.Tensor):
        return torch.empty(v.shape, dtype=v.dtype, device="meta")
    return v


def _layer(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = next(reversed(stack.values()))[0]
    return path.removeprefix("L['self'].").removeprefix("L__self__.")


def carries_param(op_kind: str, vals: list[Val]) -> Val | None:
    """For a free op applied to exactly one parameter (a transpose of a weight), the parameter's Val."""
    if op_kind != "free":
        return None
    tensors = [v for v in vals if isinstance(v, Val) and v.is_tensor]
    if len(tensors) == 1 and tensors[0].param is not None:
        return tensors[0]
    return None


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Silence torch's own loggers (export prints whole graphs when it fails); restore them after."""
    previous = logging.root.manager.disable
    try:
        logging.disable(logging.CRITICAL)
        yield
    finally:
        logging.disable(previous)


def capture_export(model: nn.Module, example_inputs: tuple) -> FxCapture:
    """Export ``model`` (non-strict) and turn the aten graph into Ops."""
    with quiet_torch_logs(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, _real_inputs(example_inputs), strict=False)
    sig = ep.graph_signature
    param_of = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    env: dict[torch.fx.Node, object] = {}
    ops = []
    used: set[str] = set()
    batch = 1
    got_batch = False
    for node in ep.graph_module.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder":
            if node.name in param_of:
                fqn = param_of[node.name]
                real = state.get(fqn)
                env[node] = Val(meta=_meta_of(val), param=fqn, real=real, ident=id(real) if real is not None else None)
            else:
                user_input = node.name in sig.user_inputs  # not a lifted tensor constant
                if user_input and not got_batch and isinstance(val, torch.Tensor) and val.dim() > 0:
                    batch, got_batch = int(val.shape[0]), True
                env[node] = Val(meta=_meta_of(val))
        elif node.op == "call_function":
            args = torch.fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
            out = val if not isinstance(val, (list, tuple)) else type(val)(_meta_of(v) for v in val)
            out = _meta_of(out) if isinstance(out, torch.Tensor) else out
            op = from_aten(node.name, _layer(node), node.target, args, kwargs, out)
            carried = carries_param(op.kind, [*args, *kwargs.values()]) if op is not None else None
            if carried is not None:
                env[node] = Val(meta=_meta_of(out), param=carried.param, real=carried.real, ident=carried.ident)
                continue
            if op is not None:
                op.batch = batch
                ops.append(op)
                used.update(w.name for w in op.weights)
                name = op.name
            else:
                name = None
            if isinstance(out, (list, tuple)):
                env[node] = type(out)(Val(meta=_meta_of(o), producer=name) for o in out)
            else:
                env[node] = Val(meta=_meta_of(out), producer=name)
    return FxCapture(ops, "export", batch, used)
