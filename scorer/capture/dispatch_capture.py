"""Last-resort capture: run the model once and record every executed aten op.

The run uses fake tensors (shapes only): the input, parameters and buffers are stood in for, so nothing
of the input's size is allocated and no in-place update reaches the model. A forward that needs real
values (data-dependent Python such as ``if x.sum() > 0``) is run a second time on real zeros, against
clones of the parameters and buffers; that run refuses inputs over ``REAL_RUN_LIMIT`` bytes.

Module attribution comes from global forward hooks that only act for the capturing thread and are
removed again in a ``finally`` block, so nothing is left behind, also when the forward raises.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from scorer.capture.export_capture import fake_inputs
from scorer.capture.fx_capture import FxCapture
from scorer.capture.guard import substituted, versions_kept
from scorer.ops import targets, translate
from scorer.ops.call import make_call
from scorer.ops.values import Val, carries_param, meta_of

#: Largest example input (bytes of zeros) a real run may allocate.
REAL_RUN_LIMIT = 1 << 30
_LIFTS = (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift.default)
#: Functions recorded whole: torch decomposes them above the dispatcher (CompositeImplicitAutograd), so the
#: recorder would see only their parts (RMSNorm as pow, mean, add, rsqrt, mul), where fx and export see them whole.
WHOLE_FUNCTIONS = targets("function", "rmsnorm")


class _Recorder(TorchDispatchMode):
    def __init__(self, params: dict[int, tuple[str, torch.Tensor]], stack: list[str],
                 fake: FakeTensorMode | None):
        super().__init__()
        self.params = params
        self.stack = stack
        self.fake = fake
        self.ops = []
        self.vals: dict[int, Val] = {}
        self.keep: list[torch.Tensor] = []  # keeps outputs alive so ids stay unique
        self.count = 0
        self.read: set[str] = set()  # parameters and buffers the forward read
        self.muted = 0  # inside a function recorded whole: its aten parts are run, not recorded

    def _val(self, t: object) -> object:
        if not isinstance(t, torch.Tensor):
            return t
        known = self.vals.get(id(t))
        if known is not None:
            return known
        hit = self.params.get(id(t))
        if hit is not None:
            self.read.add(hit[0])
            return Val(meta=meta_of(t), param=hit[0], real=hit[1], ident=id(hit[1]))
        return Val(meta=meta_of(t))

    def _to_fake(self, t: object) -> object:
        # a real tensor the forward reaches outside the model's tables (a global, a plain attribute): a
        # fake copy, so that fake mode never runs an op with only real arguments on real data
        if isinstance(t, torch.Tensor) and not isinstance(t, FakeTensor):
            return self.fake.from_tensor(t, static_shapes=True)  # type: ignore[union-attr]
        return t

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with unset_fake_temporarily():
            vargs = tree_map(self._val, args)
            vkwargs = tree_map(self._val, kwargs)
        if self.fake is not None and func not in _LIFTS:
            args, kwargs = tree_map(self._to_fake, (args, kwargs))
        out = func(*args, **kwargs)
        if not self.muted:
            with unset_fake_temporarily():
                self._record(func, vargs, vkwargs, out)
        return out

    def _record(self, func, vargs, vkwargs, out, form: str = "aten") -> None:
        self.count += 1
        meta_out = tree_map(meta_of, out)
        path = self.stack[-1] if self.stack else ""
        base = func.overloadpacket.__name__ if form == "aten" else func.__name__
        call = make_call(form, func, f"{base}_{self.count}", path, vargs, vkwargs, meta_out)
        new = translate(call)
        carried = carries_param(new, call.vals)
        producer = new[-1].name if new else None
        for t in (t for t in tree_leaves(out) if isinstance(t, torch.Tensor)):
            self.keep.append(t)
            self.vals[id(t)] = carried if carried is not None else Val(meta=meta_of(t), producer=producer)
        if carried is None:
            self.ops.extend(new)


class _Whole(TorchFunctionMode):
    """Records a call of ``WHOLE_FUNCTIONS`` as one function call, its aten parts muted."""

    def __init__(self, rec: _Recorder):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in WHOLE_FUNCTIONS or self.rec.muted:
            return func(*args, **kwargs)
        with unset_fake_temporarily():
            vargs, vkwargs = tree_map(self.rec._val, args), tree_map(self.rec._val, kwargs)
        self.rec.muted += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.rec.muted -= 1
        with unset_fake_temporarily():
            self.rec._record(func, vargs, vkwargs, out, form="function")
        return out


def _zeros(example_inputs: tuple) -> tuple:
    """Meta inputs as real zeros on the CPU, refused over REAL_RUN_LIMIT bytes."""
    size = sum(math.prod(x.shape) * x.element_size() for x in example_inputs
               if isinstance(x, torch.Tensor) and x.device.type == "meta")
    if size > REAL_RUN_LIMIT:
        raise ValueError(f"running it for real would allocate {size / 2**30:.1f} GiB of input zeros "
                         f"(limit {REAL_RUN_LIMIT / 2**30:.0f} GiB); pass a smaller input shape")
    return tuple(torch.zeros(x.shape, dtype=x.dtype) if isinstance(x, torch.Tensor) and x.device.type == "meta"
                 else x for x in example_inputs)


def _record(model: nn.Module, example_inputs: tuple, fake: bool) -> FxCapture:
    """One run of ``model`` under the recorder: on fake tensors, or (``fake=False``) on the real inputs given
    (``_zeros``) against cloned weights."""
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
    if mode is not None:
        inputs = fake_inputs(example_inputs, mode)
        make = lambda t: mode.from_tensor(t, static_shapes=True)  # noqa: E731
    else:
        inputs = example_inputs
        make = lambda t: t.detach().clone()  # noqa: E731
    paths = {id(m): name for name, m in model.named_modules()}
    stack: list[str] = []
    owner = threading.get_ident()

    def pre(mod: nn.Module, _args: object) -> None:
        if threading.get_ident() == owner:
            stack.append(paths.get(id(mod), stack[-1] if stack else ""))

    def post(mod: nn.Module, _args: object, _out: object) -> None:
        if threading.get_ident() == owner and stack:
            stack.pop()

    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        with substituted(model, make) as real_of, torch.no_grad():
            # a TorchScript module keeps its own tensors: its recorder makes fake copies as ops use them
            params = {id(t): (name, t) for name, t in [*model.named_parameters(), *model.named_buffers()]}
            rec = _Recorder({**params, **real_of}, stack, mode)
            if mode is not None:
                with versions_kept(model), mode, rec, _Whole(rec):
                    model(*inputs)
            else:
                with rec, _Whole(rec):
                    model(*inputs)
    finally:
        h1.remove()
        h2.remove()
    used = {w.name for op in rec.ops for w in op.weights}
    # Ops recorded under the model's root get the path "" (the root's name in named_modules()).
    return FxCapture(rec.ops, "dispatch", used, rec.read)


def capture_dispatch(model: nn.Module, example_inputs: tuple) -> FxCapture:
    """Run ``model`` once under a dispatch recorder (fake tensors; real zeros if it needs values)."""
    try:
        return _record(model, example_inputs, fake=True)
    except Exception as exc:  # noqa: BLE001 - data-dependent Python, or an op without a fake kernel
        lines = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    try:
        inputs = _zeros(example_inputs)
    except ValueError as exc:
        raise ValueError(f"the forward fails on fake tensors ({why}) and {exc}") from None
    return _record(model, inputs, fake=False)
