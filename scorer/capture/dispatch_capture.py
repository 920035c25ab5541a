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
from dataclasses import replace

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves, tree_map

from scorer.capture.export_capture import fake_inputs, fake_of, has_meta
from scorer.capture.fx_capture import FxCapture, layer_arg
from scorer.capture.guard import attribute_tensors, module_walk, preserved, substituted, versions_kept
from scorer.ops import is_whole, targets, translate
from scorer.ops.attention import QUIET_MODULES, WHOLE_FUNCTIONS
from scorer.ops.call import Call, make_call, out_producers
from scorer.ops.values import Val, carries_param, meta_of

#: Largest example input (bytes of zeros) a real run may allocate.
REAL_RUN_LIMIT = 1 << 30
_LIFTS = (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift.default)


class _Recorder(TorchDispatchMode):
    def __init__(self, params: dict[int, tuple[str, torch.Tensor]], stack: list[str],
                 fake: FakeTensorMode | None, buffers: set[int]):
        super().__init__()
        self.params = params
        self.buffers = buffers  # identities of the model's buffers
        self.stack = stack
        self.fake = fake
        self.ops = []
        self.vals: dict[int, Val] = {}
        self.keep: list[torch.Tensor] = []  # keeps outputs alive so ids stay unique
        self.count = 0
        self.read: set[str] = set()  # parameters and buffers the forward read
        self.inside = 0  # > 0 while a function recorded whole runs: its aten ops are not recorded
        self.quiet = 0  # > 0 inside a QUIET_MODULES forward: only the function it calls is recorded
        self.muted = 0  # > 0 while a module recorded whole runs (its aten ops are not recorded)
        self.whole_args: tuple = ()
        self.inputs: set[int] = set()  # identities of the tensors passed to the model
        self.whole_ops: list = []

    def _val(self, t: object) -> object:
        if not isinstance(t, torch.Tensor):
            return t
        known = self.vals.get(id(t))
        if known is not None:
            return known
        hit = self.params.get(id(t))
        if hit is not None:
            self.read.add(hit[0])
            return Val(meta=meta_of(t), param=hit[0], real=hit[1], ident=id(hit[1]), buffer=id(hit[1]) in self.buffers)
        return Val(meta=meta_of(t), model_input=id(t) in self.inputs)

    def _to_fake(self, t: object) -> object:
        # a real tensor the forward reaches outside the model's tables (a global, a plain attribute): a
        # fake copy, so that fake mode never runs an op with only real arguments on real data
        if isinstance(t, torch.Tensor) and not isinstance(t, FakeTensor):
            return self.fake.from_tensor(t, static_shapes=True)  # type: ignore[union-attr]
        return t

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.muted:
            if self.fake is not None and func not in _LIFTS:
                args, kwargs = tree_map(self._to_fake, (args, kwargs))
            return func(*args, **kwargs)
        with unset_fake_temporarily():
            vargs = tree_map(self._val, args)
            vkwargs = tree_map(self._val, kwargs)
        if self.fake is not None and func not in _LIFTS:
            args, kwargs = tree_map(self._to_fake, (args, kwargs))
        out = func(*args, **kwargs)
        if self.quiet and not self.inside:
            with unset_fake_temporarily():
                self._pass_through(vargs, out)
        elif not self.inside:
            with unset_fake_temporarily():
                self._record("aten", func, vargs, vkwargs, out)
        return out

    def _pass_through(self, vargs: object, out: object) -> None:
        """An unrecorded op's outputs keep the producer of its first produced input (a transpose, a mask)."""
        vals = [v for v in tree_leaves(vargs) if isinstance(v, Val)]
        producer = next((v.producer for v in vals if v.producer), None)
        from_input = producer is None and any(v.model_input for v in vals)  # a view of the model's input
        for t in (t for t in tree_leaves(out) if isinstance(t, torch.Tensor)):
            self.keep.append(t)
            self.vals[id(t)] = Val(meta=meta_of(t), producer=producer, model_input=from_input)

    def record_whole(self, func, args: tuple, kwargs: dict, out: object) -> None:
        """Record a call of one of ``WHOLE_FUNCTIONS`` as one function call (its aten ops were not recorded);
        the dispatch modes (this recorder, fake mode) are off meanwhile, so the extractor's own tensor work
        is neither recorded nor faked."""
        with _disable_current_modes():
            vargs = tree_map(self._val, args)
            vkwargs = tree_map(self._val, kwargs)
            self._record("function", func, vargs, vkwargs, out)

    def _record(self, form: str, func, vargs, vkwargs, out) -> None:
        self.count += 1
        meta_out = tree_map(meta_of, out)
        path = self.stack[-1] if self.stack else ""
        base = func.overloadpacket.__name__ if form == "aten" else func.__name__
        call = make_call(form, func, f"{base}_{self.count}", path, vargs, vkwargs, meta_out)
        new = translate(call)
        carried = carries_param(new, call.vals)
        self._remember(call, out, carried, new)
        if carried is None:
            self.ops.extend(new)
            if new and call.in_place and isinstance(out, torch.Tensor) and out._base is not None:
                self._rebind_base(out._base, new[-1])

    def _rebind_base(self, base: torch.Tensor, op: object) -> None:
        """After an in-place write into a view of ``base`` (``out[:, t] = h``), later reads of ``base`` read the
        write's result, which leaves it changed as a whole (``Op.memory_out_shape``). Parameters and buffers keep
        their Vals."""
        if id(base) in self.params or (id(base) in self.vals and self.vals[id(base)].param is not None):
            return
        op.memory_out_shape = tuple(base.shape)
        self.keep.append(base)
        self.vals[id(base)] = Val(meta=meta_of(base), producer=op.name)

    def _remember(self, call: Call, out: object, carried: Val | None, new: list) -> None:
        """The Val of each output tensor: the parameter ``carried`` still (a view of it, ``pos[:T]``, with the
        view's shape: T rows, not all), else the output of the ``new`` op writing it (``out_producers``)."""
        tensors = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        producers = out_producers(call, new, len(tensors)) if carried is None else [None] * len(tensors)
        for t, producer in zip(tensors, producers, strict=True):
            self.keep.append(t)
            self.vals[id(t)] = (replace(carried, meta=meta_of(t)) if carried is not None
                                else Val(meta=meta_of(t), producer=producer))

    def enter_whole(self, mod: nn.Module, args: tuple) -> None:
        """A module recorded whole starts: remember its arguments, stop recording its aten ops."""
        self.muted = 1
        with unset_fake_temporarily():
            self.whole_args = tree_map(self._val, args)

    def exit_whole(self, mod: nn.Module, path: str, out: object) -> None:
        """A module recorded whole returned: its Ops (their weights are the stand-ins the run used until
        ``real_weights``)."""
        with unset_fake_temporarily():
            self.count += 1
            meta_out = tree_map(meta_of, out)
            call = make_call("module", mod, f"{path or 'model'}_{self.count}", path, self.whole_args, {}, meta_out)
            new = translate(call)
            # a quantiser applied to a parameter (``weight_fake_quant``) leaves it that parameter
            carried = carries_param(new, [v for v in call.vals if v.is_tensor][:1])
            self.read.update(f"{path}.{n}" if path else n for n, _ in mod.named_parameters())
            self._remember(call, out, carried, new)
            if carried is None:
                self.whole_ops.extend(new)
                self.ops.extend(new)
        self.muted = 0

    def real_weights(self, real_of: dict[int, tuple[str, torch.Tensor]]) -> None:
        """After the run: the weights of the modules recorded whole are the model's real tensors."""
        for w in (w for op in self.whole_ops for w in op.weights):
            hit = real_of.get(w.ident)  # type: ignore[arg-type]
            if hit is not None:
                w.tensor, w.ident = hit[1].detach(), id(hit[1])


#: Functions recorded whole, as one call: attention (its aten decomposition depends on the kernel chosen) and
#: the recurrent layers (``torch.lstm`` decomposes into addmm, sigmoid, ... before a dispatch mode sees it),
#: RMSNorm (CompositeImplicitAutograd: the recorder would see pow, mean, add, rsqrt, mul), instance norm (a
#: batch norm over a (1, batch x channels) view, its affine repeated per example) and F.linear (on a
#: non-contiguous 3-d input it runs as matmul + add: the same counts in two rows instead of one).
_WHOLE = (frozenset(WHOLE_FUNCTIONS) | targets("function", "rnn") | targets("function", "rmsnorm")
          | targets("function", "instance_norm") | targets("function", "linear"))


class _WholeCalls(TorchFunctionMode):
    """Records the calls of ``_WHOLE`` (attention, recurrent layers) as one call each, as fx sees them: their aten
    decomposition depends on the backend chosen (fake tensors take the math path, real ones a fused kernel).
    An active mode also keeps torch's fused fast paths (``_native_multi_head_attention``,
    ``_transformer_encoder_layer_fwd``) off, so layers run their documented slow path."""

    def __init__(self, rec: _Recorder):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            whole = func in _WHOLE and not self.rec.inside and not self.rec.muted
        except TypeError:  # an unhashable callable
            whole = False
        if not whole:
            return func(*args, **kwargs)
        self.rec.inside += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.rec.inside -= 1
        self.rec.record_whole(func, args, kwargs, out)
        return out


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


def _record(model: nn.Module, example_inputs: tuple, fake: bool, kwargs: dict | None = None,
            outs: list | None = None) -> FxCapture:
    """One run of ``model`` under the recorder: on fake tensors, or (``fake=False``) on the real inputs given
    (``_zeros``) against cloned weights. With ``outs`` (one layer of a larger capture, whose inputs the caller
    links) the inputs are not the model's: each is named ``layer_arg(position or keyword)`` as its producer,
    and ``outs`` gets the producer of each output tensor."""
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
    kwargs = kwargs or {}
    if mode is not None:
        inputs = fake_inputs(example_inputs, mode)
        kwargs = dict(zip(kwargs, fake_inputs(tuple(kwargs.values()), mode), strict=True))
        make = lambda t: fake_of(t, mode)  # noqa: E731
    else:
        inputs = example_inputs
        make = lambda t: t.detach().clone()  # noqa: E731
    paths = {id(m): name for name, m in model.named_modules()}
    stack: list[str] = []
    owner = threading.get_ident()
    rec: _Recorder | None = None
    real_of: dict = {}
    whole: list[nn.Module] = []  # the module recorded whole that is running

    def pre(mod: nn.Module, args: object) -> None:
        if threading.get_ident() == owner:
            stack.append(paths.get(id(mod), stack[-1] if stack else ""))
            if rec is not None and isinstance(mod, QUIET_MODULES):
                rec.quiet += 1
            if rec is not None and not whole and is_whole(mod):
                whole.append(mod)
                rec.enter_whole(mod, args)  # type: ignore[arg-type]

    def post(mod: nn.Module, _args: object, out: object) -> None:
        if threading.get_ident() == owner and stack:
            path = stack.pop()
            if rec is not None and isinstance(mod, QUIET_MODULES):
                rec.quiet -= 1
            if rec is not None and whole and whole[-1] is mod:
                whole.pop()
                rec.exit_whole(mod, path, out)

    buffers = {id(t) for t in model.buffers()}  # the real ones, before stand-ins take their place
    # tensors kept in plain attributes reach the ops as themselves: stored like parameters (as fx does)
    attributes = {key: (a.stored_as, a.stored) for key, a in attribute_tensors(module_walk(model)).items()}
    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        with substituted(model, make) as stand_ins, torch.no_grad():
            # a TorchScript module keeps its own tensors: its recorder makes fake copies as ops use them
            params = {id(t): (name, t) for name, t in [*model.named_parameters(), *model.named_buffers()]}
            real_of.update(stand_ins)
            rec = _Recorder({**attributes, **params, **real_of}, stack, mode, buffers)
            if outs is None:
                rec.inputs = {id(t) for t in (*inputs, *kwargs.values()) if isinstance(t, torch.Tensor)}
            else:
                for key, t in [*enumerate(inputs), *kwargs.items()]:
                    if isinstance(t, torch.Tensor):
                        rec.keep.append(t)
                        rec.vals[id(t)] = Val(meta=meta_of(t), producer=layer_arg(key))
            if mode is not None:
                with versions_kept(model), mode, rec, _WholeCalls(rec):
                    result = model(*inputs, **kwargs)
            else:
                with rec, _WholeCalls(rec):
                    result = model(*inputs, **kwargs)
    finally:
        h1.remove()
        h2.remove()
    assert rec is not None
    if outs is not None:
        outs.extend(getattr(rec.vals.get(id(t)), "producer", None) for t in tree_leaves(result)
                    if isinstance(t, torch.Tensor))
    rec.real_weights(real_of)
    used = {w.name for op in rec.ops for w in op.weights}
    # Ops recorded under the model's root get the path "" (the root's name in named_modules()).
    return FxCapture(rec.ops, "dispatch", used, rec.read)


def capture_dispatch(model: nn.Module, example_inputs: tuple) -> FxCapture:
    """Run ``model`` once under a dispatch recorder (fake tensors; real zeros if it needs values)."""
    try:
        with preserved(model):  # the real run sees the model as it was, whatever the fake one set
            return _record(model, example_inputs, fake=True)
    except Exception as exc:  # noqa: BLE001 - data-dependent Python, or an op without a fake kernel
        lines = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if has_meta(model):
        raise ValueError(f"the forward fails on fake tensors ({why}) and the model's weights are on the meta "
                         "device (no values), so it cannot be run for real")
    try:
        inputs = _zeros(example_inputs)
    except ValueError as exc:
        raise ValueError(f"the forward fails on fake tensors ({why}) and {exc}") from None
    return _record(model, inputs, fake=False)


def module_call_ops(mod: nn.Module, path: str, name: str, args: tuple, kwargs: dict) -> tuple[list, list]:
    """The ops of one call of ``mod`` (at ``path``, in a graph node ``name``) on meta arguments, recorded on
    fake tensors, and the producer of each output tensor: how fx counts a torch.nn layer it keeps whole but
    has no extractor for (a transformer layer, whose forward fx cannot trace). Names, paths and parameter
    names are made those of the enclosing model; an argument read stays ``layer_arg(...)`` for fx to link."""
    outs: list[str | None] = []
    ops = _record(mod, args, fake=True, kwargs=kwargs, outs=outs).ops
    prefix = f"{path}." if path else ""
    inner = {op.name for op in ops}
    for op in ops:
        op.name = f"{name}.{op.name}"
        op.inputs = [f"{name}.{i}" if i in inner else i for i in op.inputs]
        if op.memory_inputs is not None:
            op.memory_inputs = [f"{name}.{i}" if i in inner else i for i in op.memory_inputs]
        op.module = f"{prefix}{op.module}" if op.module else path
        for w in op.weights:
            w.name = prefix + w.name
    return ops, [f"{name}.{p}" if p in inner else p for p in outs]
