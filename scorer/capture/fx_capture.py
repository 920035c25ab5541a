"""Capture with torch.fx symbolic tracing, known layers kept whole, shapes propagated on the meta device.

Nothing is computed on real data: every value is a meta tensor, so the cost of capture does not grow with
the input resolution or the model's FLOPs. The forward's Python runs once, against meta stand-ins for the
parameters and buffers, so it cannot change them.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
import torch.ao.nn.quantized as nnq
import torch.fx as fx
import torch.fx._symbolic_trace as _st
import torch.fx.graph as _fx_graph
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from rules.records import Op
from scorer.capture.guard import attribute_tensors, meta_like, module_walk, substituted
from scorer.capture.shapes import (
    META,
    broadcast_shapes,
    cat_output,
    conv_output,
    mean_output,
    pool_output,
    upsample_output,
)
from scorer.ops import is_known_leaf, quant_bits, targets, translate
from scorer.ops.act import COMPARISONS
from scorer.ops.call import Call, make_call, named_in_place, out_producers
from scorer.ops.quant import QUANTISERS, hooked_quantisers
from scorer.ops.registry import memoised
from scorer.ops.values import Val, carries_param, meta_of

#: Argument types fx lowers to themselves (exact types; subclasses take fx's own path).
_PLAIN_ARGS = frozenset({int, float, bool, str, type(None), type(...), torch.dtype, torch.device})


#: id(function) -> (function, fx's wrapper of it): the wrapper depends on the function alone, so it is made
#: once rather than on every trace (fx wraps every ``math`` function per trace)
_WRAPPED: dict[int, tuple[Callable, Callable]] = {}


def _swap_in_wrappers(patcher: object, frame_dict: dict, function_ids: set[int], swapped: list) -> None:
    """``fx._symbolic_trace._autowrap_check`` in one dict update: the functions of ``frame_dict`` fx wraps
    automatically (``math.sqrt``, ...) are replaced, for the trace, by wrappers that record a call on a
    proxy, each wrapper made once per function; ``(frame_dict, originals)`` goes on ``swapped`` for the
    tracer to put back."""
    if not patcher.visit_once(frame_dict):  # type: ignore[attr-defined]
        return
    originals = {name: value for name, value in frame_dict.items()
                 if not name.startswith("_") and callable(value) and id(value) in function_ids}
    if originals:
        frame_dict.update({name: _wrapper(value) for name, value in originals.items()})
        swapped.append((frame_dict, originals))


def _wrapper(function: Callable) -> Callable:
    """fx's wrapper of ``function`` (records a call on a proxy among its arguments), made once."""
    hit = _WRAPPED.get(id(function))
    if hit is None or hit[0] is not function:
        hit = _WRAPPED[id(function)] = (function, _st._create_wrapped_func(function))
    return hit[1]


#: torch factories that take sizes as separate arguments (``torch.zeros(n, h)``, an LSTM's first state) and have a
#: rule: torch's argument parser refuses a proxy as the first of them (``x.size(0)``), so fx cannot trace them as
#: they are
_SIZED_FACTORIES = ("zeros", "ones", "empty")


def _swap_in_factories(swapped: list) -> None:
    """``torch.zeros`` and the other ``_SIZED_FACTORIES`` replaced, for the trace, by fx's wrappers, which record a
    call with a proxy among its sizes (as ``torch.zeros((n, h))`` is); ``(torch.__dict__, originals)`` goes on
    ``swapped`` for the tracer to put back. The forward's own names for them (``from torch import zeros``) are
    wrapped with its globals (``LeafTracer``'s autowrap functions). The swap is process-wide, as fx's own of
    ``math`` is: another thread calling them meanwhile goes through the wrapper (same result, a little slower),
    and code that binds ``torch.zeros`` during the trace keeps the wrapper."""
    table = torch.__dict__
    originals = {name: table[name] for name in _SIZED_FACTORIES}
    table.update({name: _wrapper(value) for name, value in originals.items()})
    swapped.append((table, originals))


_MISSING = object()


def _call_hook(classes: set[type], modules: dict) -> tuple[str, Callable]:
    """Where the trace catches every module call, and what runs a call it lets through: fx sets
    ``nn.Module.__call__``, a special method, and CPython then updates the slot of each of the ~400
    ``nn.Module`` subclasses (~0.25 ms, twice a trace, in a warm process); ``__call__`` calls
    ``self._call_impl``, an ordinary attribute, so setting ``nn.Module._call_impl`` catches the same calls
    (a module outside the tree too: fx refuses it as not a submodule) for a tenth of that. fx's way is kept
    when a class of the model has its own ``__call__`` or ``_call_impl`` or a module is compiled."""
    if any(c.__call__ is not _MODULE_CALL or c._call_impl is not _CALL_IMPL for c in classes) or any(
            m.__dict__.get("_compiled_call_impl") is not None for m in modules):
        return "__call__", _st._orig_module_call
    return "_call_impl", _CALL_IMPL


@contextlib.contextmanager
def _attribute_hook(classes: set[type], wrapper: Callable, patcher: object) -> Iterator[None]:
    """Route the attribute misses of the traced modules through fx's ``__getattr__`` wrapper, as fx does by
    setting ``nn.Module.__getattr__``, but on each of the model's ``classes`` instead: setting that slot on a
    class makes CPython update it on every subclass, ~400 for ``nn.Module`` (~0.35 ms, twice a trace). A
    module outside the tree reads its real attributes either way (fx proxies only the root's tensors). A
    class with its own ``__getattr__`` (which may reach ``nn.Module``'s through ``super()``) or its own
    metaclass gets fx's way. The classes are put back as they were on exit, each one even if another
    cannot be."""
    if any(type(c) is not type or c.__getattr__ is not _MODULE_GETATTR for c in classes):
        patcher.patch_method(nn.Module, "__getattr__", wrapper, deduplicate=False)  # type: ignore[attr-defined]
        yield
        return
    saved = [(c, c.__dict__.get("__getattr__", _MISSING)) for c in classes]
    try:
        for c in classes:
            c.__getattr__ = wrapper
        yield
    finally:
        failed = []
        for c, value in saved:
            try:
                if value is not _MISSING:
                    c.__getattr__ = value
                elif "__getattr__" in c.__dict__:
                    del c.__getattr__
            except Exception as exc:  # noqa: BLE001 - every other class is still put back
                failed.append(exc)
        if failed:
            raise failed[0]


_MODULE_GETATTR = nn.Module.__getattr__
_MODULE_CALL = nn.Module.__call__
_CALL_IMPL = nn.Module._call_impl


#: candidate -> (candidate, base, number) as ``fx.graph._Namespace.create_name`` first derives them (the
#: derivation depends on the candidate alone; the namespace only decides the suffix)
_NAME_PARTS: dict[str, tuple[str, str, str | None]] = {}


def _create_name(ns: object, candidate: str) -> str:
    """``ns.create_name(candidate, None)`` (torch 2.13's ``_Namespace``), its regular-expression work done
    once per candidate string."""
    parts = _NAME_PARTS.get(candidate)
    if parts is None:
        orig = candidate
        match = _fx_graph._name_regex.match(candidate)
        if match is None:
            candidate = _fx_graph._illegal_char_regex.sub("_", candidate) or "_unnamed"
            if candidate[0].isdigit():
                candidate = f"_{candidate}"
            match = _fx_graph._name_regex.match(candidate)
            if match is None:
                return ns.create_name(orig, None)  # type: ignore[attr-defined]
        base, num = match.group(1, 2)
        parts = _NAME_PARTS[orig] = (candidate, base, num)
    candidate, base, num = parts
    used = ns._used_names  # type: ignore[attr-defined]
    if num is None or candidate in used:
        n = ns._base_count.get(base, 0)  # type: ignore[attr-defined]
        if _fx_graph._illegal_names.get(candidate, None) is not None:
            n += 1
            candidate = f"{base}_{n}"
    else:
        n = int(num)
    while candidate in used:
        n += 1
        candidate = f"{base}_{n}"
    used.add(candidate)
    ns._base_count[base] = n  # type: ignore[attr-defined]
    return candidate


#: fx's name for a string target (a module path, a method name): ``Graph._target_to_str`` depends on the
#: string alone
_STR_NAMES: dict[str, str] = {}


class _TensorAttrs(dict):
    """fx's ``tensor_attrs`` (tensor attribute value -> qualified name), filled on first use the way
    ``fx.Tracer.trace`` fills it up front."""

    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self._root: nn.Module | None = root

    def _fill(self) -> None:
        root, self._root = self._root, None
        if root is None:
            return

        def collect(m: nn.Module, prefix: list[str]) -> None:
            for k, v in m.__dict__.items():
                if isinstance(v, _st._constant_attribute_types):
                    dict.__setitem__(self, v, ".".join([*prefix, k]))
            for k, v in m.named_children():
                collect(v, [*prefix, k])

        collect(root, [])

    def get(self, key: object, default: object = None) -> object:
        self._fill()
        return super().get(key, default)

    def __getitem__(self, key: object) -> object:
        self._fill()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def __setitem__(self, key: object, value: object) -> None:
        self._fill()
        super().__setitem__(key, value)


class TracedCall:
    """One traced call, as ``fx.Node`` holds it (name, opcode, target, arguments, ``meta``), without what
    ``fx.Node`` does on creation for the graph (argument scan, user links: most of its ~3 µs); the nodes
    of a real ``fx.Graph`` walk the same way."""

    __slots__ = ("name", "op", "target", "args", "kwargs", "meta")

    def __init__(self, name: str, op: str, target: object, args: tuple, kwargs: dict) -> None:
        self.name, self.op, self.target, self.args, self.kwargs = name, op, target, args, kwargs
        self.meta: dict = {}

    def __repr__(self) -> str:
        return self.name


Node = TracedCall | fx.Node


class LeafTracer(fx.Tracer):
    """fx Tracer that keeps known layers (conv, linear, norms, activations, pools, quantisers) as leaves.

    Buffers are proxied like parameters, so the forward's Python never touches them. Every module call goes
    through fx's call wrapper process-wide while it traces (``_call_hook``), and the model's classes route
    their attribute reads through fx's wrapper (``_attribute_hook``); modules run by other threads meanwhile
    are passed through untouched, as are their calls of the factories swapped for the trace
    (``_swap_in_factories``).
    """

    proxy_buffer_attributes = True

    def __init__(self) -> None:
        super().__init__(autowrap_functions=tuple(getattr(torch, name) for name in _SIZED_FACTORIES))
        #: untraced tensors a traced call wrote in place, and what the forward computed from them untraced
        self.written = _Derived()

    def trace(self, root: nn.Module, concrete_args: dict | None = None) -> list[TracedCall]:
        """``fx.Tracer.trace`` for a module root, leaner: returns the nodes in run order and defers the
        walk over every module's attributes that finds tensor constants (``tensor_attrs``) to the first
        constant met (most forwards meet none); remembers the tracing thread."""
        self._owner = threading.get_ident()
        self.nodes: list[TracedCall] = []
        self._names: dict = {}  # target -> fx's name for it
        if len(_STR_NAMES) > 1 << 16 or len(_NAME_PARTS) > 1 << 16:  # bounded over a long process
            _STR_NAMES.clear()
            _NAME_PARTS.clear()
        old_flag = _st._is_fx_tracing_flag
        _st._is_fx_tracing_flag = True
        try:
            from torch.fx._lazy_graph_module import _LazyGraphModule

            _LazyGraphModule.force_recompile(root)
            self.root = root
            fn = type(root).forward
            self.root_module_name = root._get_name()
            walked = self.__dict__.get("walked")  # list(root.named_modules()) when the caller has it
            self.submodule_paths = {mod: name for name, mod in (walked or root.named_modules())}
            self.graph = fx.Graph(tracer_cls=type(self))
            self.tensor_attrs = _TensorAttrs(root)
            fn_globals = fn.__globals__  # read before it is patched
            fn, args = self.create_args_for_root(fn, True, concrete_args)
            proxy_cache: dict = {}

            @functools.wraps(_st._orig_module_getattr)
            def module_getattr_wrapper(mod: nn.Module, attr: str) -> object:
                return self.getattr(attr, _st._orig_module_getattr(mod, attr), proxy_cache)

            classes = {type(m) for m in self.submodule_paths}
            call_slot, orig_call = _call_hook(classes, self.submodule_paths)

            self._orig_call = orig_call

            @functools.wraps(orig_call)
            def module_call_wrapper(mod: nn.Module, *args: object, **kwargs: object) -> object:
                # (fx checks the forward's globals for functions to wrap here; call_module does, for a
                # forward it traces into: a leaf's forward never runs, so its ``forward`` is made on demand)
                return self.call_module(mod, None, args, kwargs)

            with _st._new_patcher() as patcher, _attribute_hook(classes, module_getattr_wrapper, patcher):
                self._patcher = patcher
                patcher.patch_method(nn.Module, call_slot, module_call_wrapper, deduplicate=False)
                _st._patch_wrapped_functions(patcher)
                self._swapped: list[tuple[dict, dict]] = []
                try:
                    _swap_in_factories(self._swapped)
                    _swap_in_wrappers(patcher, fn_globals, self._autowrap_function_ids, self._swapped)
                    for module in self._autowrap_search:
                        _swap_in_wrappers(patcher, module.__dict__, self._autowrap_function_ids, self._swapped)
                    result = fn(*args)
                    if self.written.tensors and self.written.read_by((result,), {}):
                        raise _read_after_untraced_write()
                    self.create_node("output", "output", (self.create_arg(result),), {})
                finally:
                    for frame_dict, originals in reversed(self._swapped):
                        frame_dict.update(originals)
            self.submodule_paths = None
        finally:
            _st._is_fx_tracing_flag = old_flag
        return self.nodes

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Known layer types (and their subclasses) are leaves; other torch.nn modules keep fx's default."""
        return is_known_leaf(m) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward, args: tuple, kwargs: dict) -> object:
        """Record a module call; another thread's call runs normally. A leaf's torch.ao observer hooks
        (eager-mode QAT) are recorded as calls of its ``activation_post_process`` around it, as they run.

        fx's own ``call_module``, leaner: the module stack (``nn_module_stack``: what ``node.meta["layer"]``
        reads) is kept as fx keeps it, fx's ``scope`` (read only by the graph bookkeeping ``create_node``
        skips) is not, and a known leaf, whose own stack entry nothing reads, skips it."""
        if threading.get_ident() != self._owner:
            return self._forward(m, forward)(*args, **kwargs)
        path = self.submodule_paths.get(m)  # fx's path_of_module, which raises when it is missing
        if path is None:
            path = self.path_of_module(m)
        if is_known_leaf(m):
            before, after = hooked_quantisers(m)
            if before is not None and args:
                args = (before(args[0]), *args[1:])
            out = self.create_proxy("call_module", path, args, kwargs)
            # the walk's module, without resolving the path again, and known to have an extractor
            meta = out.node.meta
            meta["module"], meta["known_leaf"] = m, True
            return after(out) if after is not None else out
        calls = self.num_calls.get(path, 0)
        key = f"{path}@{calls}" if calls > 0 else path
        self.module_stack[key] = (path, type(m))
        self.num_calls[path] = calls + 1
        if super().is_leaf_module(m, path):
            out = self.create_proxy("call_module", path, args, kwargs)
            out.node.meta["module"] = m
        else:
            _swap_in_wrappers(self._patcher, getattr(getattr(m, "forward", m), "__globals__", {}),
                              self._autowrap_function_ids, self._swapped)
            out = self._forward(m, forward)(*args, **kwargs)
        self.module_stack.popitem(last=True)
        return out

    def _forward(self, m: nn.Module, forward: Callable | None) -> Callable:
        """``forward``, or for None (the trace's module-call wrapper passes none: a leaf never needs it) the
        module's own call as the trace found it."""
        return forward if forward is not None else functools.partial(self._orig_call, m)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        """fx's ``create_proxy`` without its type assertions (the arguments are a tuple and a dict here)."""
        written = self.written
        if written.tensors and written.read_by(args, kwargs):
            raise _read_after_untraced_write()
        if kind != "call_module" and (kwargs or args and type(args[0]) is not fx.Proxy):
            written.add(_untraced_writes(kind, target, args, kwargs))
        node = self.create_node(kind, target, self.create_arg(args), self.create_arg(kwargs) if kwargs else {},
                                name, type_expr)
        return proxy_factory_fn(node) if proxy_factory_fn is not None else fx.Proxy(node, self)

    def create_arg(self, a: object) -> object:
        """fx's lowering, with a fast path for the common exact types (a proxy, plain scalars, a tuple or
        list of them): fx's own checks (parameters, buffers, modules, named tuples, tensor constants) can
        match none of them, and its fallback gives these same results."""
        kind = type(a)
        if kind is fx.Proxy:
            return a.node
        if kind in _PLAIN_ARGS:
            return a
        if kind is tuple:
            return tuple([self.create_arg(x) for x in a])
        if kind is list:
            return [self.create_arg(x) for x in a]
        if kind is dict and all(type(k) is str for k in a):
            return {k: self.create_arg(v) for k, v in a.items()}
        return super().create_arg(a)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> TracedCall:
        """A ``TracedCall`` named as ``fx.Graph.create_node`` names its node, kept in ``self.nodes`` (run
        order) instead of the graph: the graph's own bookkeeping (argument scan for symbolic ints, node
        lookup tables, linked list, scope table, user links) is most of a node's cost and nothing here reads
        it. ``node.meta["layer"]`` is the path of the innermost module the call ran in."""
        graph = self.graph
        if name is None:
            names = _STR_NAMES if type(target) is str else self._names
            try:
                name = names.get(target)
            except TypeError:  # an unhashable target
                name = graph._target_to_str(target)
            else:
                if name is None:
                    name = names[target] = graph._target_to_str(target)
        name = _create_name(graph._graph_namespace, name)
        node = TracedCall(name, kind, target, args, kwargs)
        if kind == "call_function" or kind == "call_method":
            stack = self.module_stack
            node.meta["layer"] = _stack_path(stack) if stack else ""
        self.nodes.append(node)
        return node

    def attribute_proxy(self, t: torch.Tensor) -> object:
        """The get_attr proxy of ``t`` when a module of the root keeps it in a plain attribute (its first
        name, ``guard.attribute_tensors``), else None; the table is built on first use, during the trace."""
        if threading.get_ident() != self._owner:
            return None
        table = self.__dict__.get("_attributes")
        if table is None:
            table = self._attributes = attribute_tensors(self.__dict__.get("walked") or module_walk(self.root))
            self._attribute_proxies: dict[str, object] = {}
        hit = table.get(id(t))
        if hit is None:
            return None
        proxy = self._attribute_proxies.get(hit.path)
        if proxy is None:
            proxy = self._attribute_proxies[hit.path] = self.create_proxy("get_attr", hit.path, (), {})
            proxy.node.meta["value"] = t  # the forward may rebind the attribute (a cache: self.k = cat(...))
        return proxy

    def getattr(self, attr: str, attr_val: object, parameter_proxy_cache: dict) -> object:
        """Proxy a parameter or buffer read (fx's ``getattr``: a parameter of the root under its first name,
        else a buffer), found by identity in a table built on first use instead of a scan of the root's
        parameters per read; another thread reads the real attribute."""
        if threading.get_ident() != self._owner or not isinstance(attr_val, torch.Tensor):
            return attr_val
        tables = self.__dict__.get("_tensor_names")
        if tables is None:
            tables = self._tensor_names = ({}, {})
            for n, p in self.root.named_parameters():
                tables[0].setdefault(id(p), n)
            for n, b in self.root.named_buffers():
                tables[1].setdefault(id(b), n)
        name = tables[0 if isinstance(attr_val, nn.Parameter) else 1].get(id(attr_val))
        if name is None:  # not a parameter (buffer) of the root when the table was built: fx's own scans
            return super().getattr(attr, attr_val, parameter_proxy_cache)
        proxy = parameter_proxy_cache.get(name)
        if proxy is None:
            proxy = parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
        return proxy


#: Functions that create a tensor from sizes or data alone (no tensor input to take a device from).
_FACTORIES = frozenset({
    torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.range, torch.linspace,
    torch.logspace, torch.eye, torch.rand, torch.randn, torch.randint, torch.randperm, torch.tensor,
    torch.as_tensor, torch.empty_strided, torch.tril_indices, torch.triu_indices,
})


class _Derived:
    """Tensors computed from some first ones: a call reading one of them adds its tensor outputs (kept alive,
    so that their ids stay theirs). ``id(t) in derived`` asks for one."""

    def __init__(self, first: object = ()) -> None:
        self.tensors: dict[int, torch.Tensor] = {id(t): t for t in tree_leaves(first) if isinstance(t, torch.Tensor)}

    def __contains__(self, ident: object) -> bool:
        return ident in self.tensors

    def __bool__(self) -> bool:
        return bool(self.tensors)

    def read_by(self, args: tuple, kwargs: dict) -> bool:
        """True when a tensor argument (``_tensor_args``) is one of them."""
        return any(id(t) in self.tensors for t in _tensor_args(args, kwargs))

    def add(self, out: object) -> list[torch.Tensor]:
        """Add the tensors of a call's output; returns them."""
        made = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.tensors.update(zip(map(id, made), made, strict=True))
        return made


class MetaFactories(TorchFunctionMode):
    """Tensors the forward creates are made on the meta device, whatever device it names, so the capture never
    allocates them (``torch.zeros(1 << 31)`` costs nothing). Tensors computed from them alone are remembered in
    ``made``: they are data of the forward's code, not parameters of the model."""

    def __init__(self) -> None:
        super().__init__()
        self.made = _Derived()
        #: set by the tracer: a tensor kept in a plain module attribute -> its get_attr proxy (else None)
        self.attribute_proxy: Callable[[torch.Tensor], object] | None = None
        self.made_proxies = 0  # plain tensor attributes replaced by their proxies in a call's arguments
        #: set by the tracer (``LeafTracer.written``): what is computed from those tensors untraced joins them
        self.written: _Derived | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.attribute_proxy is not None and _real_tensor_in(args, kwargs):
            # a plain tensor attribute is read from the module's __dict__ (fx's attribute hook never sees it):
            # its first op is traced on its proxy, as a buffer's is, not folded into a constant
            made = self.made_proxies
            proxied = self._proxied(args), {k: self._proxied(v) for k, v in kwargs.items()}
            if self.made_proxies != made:
                return _on_proxies(func, *proxied)
        factory = func in _FACTORIES
        if factory:
            kwargs = {**kwargs, "device": "meta"}
        out = func(*args, **kwargs)
        if factory or (self.made and self.made.read_by(args, kwargs)):
            self.made.add(out)
        if self.written is not None and self.written.tensors and self.written.read_by(args, kwargs):
            self.written.add(out)
        return out

    def _proxied(self, a: object) -> object:
        if isinstance(a, (list, tuple)):
            return type(a)(self._proxied(x) for x in a)
        if isinstance(a, torch.Tensor) and not a.is_meta:
            proxy = self.attribute_proxy(a)  # type: ignore[misc]
            if proxy is None:
                return a
            self.made_proxies += 1
            return proxy
        return a


def _on_proxies(func: Callable, args: tuple, kwargs: dict) -> object:
    """``func(*args, **kwargs)`` with proxies among the arguments, traced as the same code on a buffer's proxy
    is: a tensor method or property is looked up on its first argument (a descriptor of ``torch.Tensor``
    accepts no proxy), anything else takes the proxies' ``__torch_function__``."""
    if not torch.overrides.is_tensor_method_or_property(func):
        return func(*args, **kwargs)
    owner, *rest = args
    if func.__name__ == "__get__":  # a property: x.shape, x.T
        return getattr(owner, func.__self__.__name__)
    return getattr(owner, func.__name__)(*rest, **kwargs)


def _tensor_args(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    """The tensors among a call's arguments and the items of its list or tuple arguments."""
    for a in (*args, *kwargs.values()) if kwargs else args:
        for t in a if isinstance(a, (list, tuple)) else (a,):
            if isinstance(t, torch.Tensor):
                yield t


def _real_tensor_in(args: tuple, kwargs: dict) -> bool:
    """True when a tensor argument has data: what the trace meets only where the forward reads a tensor held
    outside the parameter and buffer tables."""
    return any(not t.is_meta for t in _tensor_args(args, kwargs))


def _on_meta(target: object, kwargs: dict) -> dict:
    """A factory call of the graph made on the meta device, whatever device it names."""
    try:
        return {**kwargs, "device": "meta"} if target in _FACTORIES else kwargs
    except TypeError:  # an unhashable target
        return kwargs


def _load(a: tuple | dict, env: dict) -> tuple | dict:
    """``fx.node.map_arg(a, env.__getitem__)`` for traced calls and fx nodes alike, with a fast path for a
    tuple of calls and plain values."""
    if type(a) is tuple:
        out = []
        for x in a:
            kind = type(x)
            if kind is TracedCall:
                out.append(env[x])
            elif kind in _PLAIN_ARGS:
                out.append(x)
            else:
                return fx.node.map_aggregate(a, functools.partial(_value_of, env))
        return tuple(out)
    return fx.node.map_aggregate(a, functools.partial(_value_of, env))


def _value_of(env: dict, x: object) -> object:
    return env[x] if type(x) is TracedCall or isinstance(x, fx.Node) else x


def _unwrap(a: object) -> object:
    if type(a) is tuple:
        return tuple([x.meta if type(x) is Val else _unwrap(x) for x in a])
    if isinstance(a, Val):
        return a.meta
    if isinstance(a, tuple):
        return tuple(_unwrap(x) for x in a)
    if isinstance(a, list):
        return [_unwrap(x) for x in a]
    if isinstance(a, dict):
        return {k: _unwrap(v) for k, v in a.items()}
    if isinstance(a, slice):  # x[:T] with T read off a traced shape
        return slice(_unwrap(a.start), _unwrap(a.stop), _unwrap(a.step))
    return a


def _stack_path(stack: OrderedDict) -> str:
    """The path of the innermost module of fx's module stack."""
    last = next(reversed(stack.values()))
    return last[0] if isinstance(last, tuple) else str(last)


def _check_channels(mod: nn.Module, x: torch.Tensor) -> None:
    """The checks the layer's own forward would make on its input's shape."""
    if isinstance(mod, nn.modules.batchnorm._NormBase) and (x.dim() < 2 or x.shape[1] != mod.num_features):
        raise ValueError(f"{type(mod).__name__} expects {mod.num_features} channels, got shape {tuple(x.shape)}")
    if isinstance(mod, nn.GroupNorm) and (x.dim() < 2 or x.shape[1] != mod.num_channels):
        raise ValueError(f"GroupNorm expects {mod.num_channels} channels, got shape {tuple(x.shape)}")
    if isinstance(mod, nn.LayerNorm) and tuple(x.shape[-len(mod.normalized_shape):]) != tuple(mod.normalized_shape):
        raise ValueError(f"LayerNorm over {tuple(mod.normalized_shape)} got shape {tuple(x.shape)}")
    if isinstance(mod, nn.PReLU) and mod.num_parameters > 1 and (x.dim() < 2 or x.shape[1] != mod.num_parameters):
        raise ValueError(f"PReLU expects {mod.num_parameters} channels, got shape {tuple(x.shape)}")


def _module_meta_forward(mod: nn.Module, args: tuple, kwargs: dict) -> object:
    """Output of leaf ``mod`` on meta inputs, computed without running its forward or hooks on real data.

    A user's subclass of a torch layer with a forward of its own is scored as that layer (docs/contracts.md)
    only when ``_check_own_forward`` finds that forward to be the layer's computation."""
    out = _layer_meta_forward(mod, args, kwargs)
    if _own_forward(type(mod)) and isinstance(out, torch.Tensor):
        _check_own_forward(mod, args, kwargs, out)
    return out


def _check_own_forward(mod: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
    """ValueError unless the own forward of a user's subclass of a torch layer is, as far as meta tensors can
    tell, the layer's computation on its own tensors: no submodules but quantisers (a LoRA branch, a
    ``BatchNormAct2d``'s activation), no tensor it holds outside its tables (a plain ``self.gain``), the
    layer's output shape (a timm ``Conv2dSame``) and, last on its input, the calls the layer's own forward
    makes (not ``super().forward(x) * 0.5``); a forward that cannot run on meta tensors is not checked, so
    it is refused too. fx then gives way to torch.export, which counts what the forward does."""
    cls = type(mod)
    base = _torch_base(cls)
    what = f"{cls.__name__} (a {base.__name__} subclass with its own forward)"
    extra = [n for n, m in mod.named_children() if m is not None and quant_bits(m) is None]
    if extra:
        raise ValueError(f"{what} calls layers of its own ({', '.join(extra[:3])}): it is not scored as a "
                         f"{base.__name__}")
    seen, layer = _RealTensors(args, kwargs), _RealTensors(args, kwargs)
    with substituted(mod, meta_like):
        try:
            with seen:
                own = mod.forward(*args, **kwargs)
        except Exception as exc:
            raise ValueError(f"{what} cannot be checked on meta tensors ({type(exc).__name__}: {exc})"[:300]) from None
        if seen.found:
            raise ValueError(f"{what} reads a tensor it keeps outside its parameters and buffers: it is not "
                             f"scored as a {base.__name__}")
        if isinstance(own, torch.Tensor) and own.shape != out.shape:
            raise ValueError(f"{what} returns shape {tuple(own.shape)} where a {base.__name__} returns "
                             f"{tuple(out.shape)}")
        if next(mod.children(), None) is not None:  # a quantiser child makes calls the layer lacks
            return
        try:
            with layer:
                base.forward(mod, *args, **kwargs)
        except Exception:  # noqa: BLE001 - the layer's own forward cannot run on meta tensors: nothing to compare
            return
    # the layer's calls must come last: what precedes them prepares the input (quantises it, as a QAT layer
    # written by hand does: free by the rules) and is not compared
    if seen.on_input[len(seen.on_input) - len(layer.on_input):] != layer.on_input:
        raise ValueError(f"{what} computes {', '.join(seen.on_input)} on its input where a {base.__name__} "
                         f"computes {', '.join(layer.on_input)}")


class _RealTensors(TorchFunctionMode):
    """While a layer's forward runs on meta stand-ins: whether a call reads a tensor with data (a tensor it
    keeps in a plain attribute, or a global: ``found``), and the calls that compute a tensor from its input
    or from what was computed from it (``on_input``, by name; what it does to its weight alone is not there)."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.found = False
        self.on_input: list[str] = []
        self._from_input = _Derived((args, kwargs))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.found and _real_tensor_in(args, kwargs):
            self.found = True
        out = func(*args, **kwargs)
        if self._from_input.read_by(args, kwargs) and self._from_input.add(out):
            self.on_input.append(getattr(func, "__name__", str(func)))
        return out


#: class -> whether it is a user's subclass of a torch layer that overrides the layer's ``forward``
_OWN_FORWARD: dict[type, bool] = {}


def _own_forward(cls: type) -> bool:
    own = _OWN_FORWARD.get(cls)
    if own is None:
        base = _torch_base(cls)
        own = _OWN_FORWARD[cls] = base is not cls and base is not nn.Module and cls.forward is not base.forward
    return own


def _torch_base(cls: type) -> type:
    """The first class of ``cls``'s MRO that torch defines (``cls`` itself for a torch layer)."""
    return next((c for c in cls.__mro__ if c.__module__.startswith("torch.")), nn.Module)


def _layer_meta_forward(mod: nn.Module, args: tuple, kwargs: dict) -> object:
    """``_module_meta_forward`` by the layer's own rules (formula, or its forward when it has no weights)."""
    x = args[0] if args else next(iter(kwargs.values()))
    family = _family(type(mod))
    if family == "conv" and not getattr(mod, "transposed", False):
        shaped = conv_output(mod, x)
        if shaped is not None:
            return shaped
        n = len(mod.kernel_size)
        w = torch.empty(mod.out_channels, mod.in_channels // mod.groups, *mod.kernel_size, device="meta")
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
        return fn(x.to("meta"), w, None, mod.stride, mod.padding, mod.dilation, mod.groups)
    if family == "linear":
        if x.dim() < 1 or x.shape[-1] != mod.in_features:
            raise ValueError(f"Linear expects {mod.in_features} input features, got shape {tuple(x.shape)}")
        return torch.empty((*x.shape[:-1], mod.out_features), dtype=x.dtype, device=META)
    if family == "embedding":
        return torch.empty((*x.shape, mod.embedding_dim), device=META)
    _check_channels(mod, x)
    if family == "same":
        return x  # shape-preserving: the input's meta tensor stands for the output (meta holds no data)
    shaped = pool_output(mod, x)
    if shaped is None:
        shaped = upsample_output(mod, x)
    if shaped is not None:
        return shaped
    if quant_bits(mod) is not None:
        return x
    # Parameter-free layers (activations, pools, upsample, dropout, flatten, ...): their forward only
    # reads configuration, so running it on meta tensors is exact and cheap. forward() is called
    # directly so the user's hooks never see meta tensors; buffers a subclass keeps are stood in for.
    if not (mod._parameters or mod._buffers) and (not mod._modules or not any(
            m._parameters or m._buffers for m in mod.modules())):
        return mod.forward(*args, **kwargs)
    with substituted(mod, meta_like):
        return mod.forward(*args, **kwargs)


#: module class -> what decides its output shape: "conv", "linear", "embedding", "same" (the input's shape:
#: ``_SAME_SHAPE_MODULES`` and quantisers) or "other"
_FAMILIES: dict[type, str] = {}


def _family(cls: type) -> str:
    family = _FAMILIES.get(cls)
    if family is None:
        if issubclass(cls, (nn.modules.conv._ConvNd, nnq.modules.conv._ConvNd)):
            family = "conv"
        elif issubclass(cls, (nn.Linear, nnq.Linear)):
            family = "linear"
        elif issubclass(cls, nn.Embedding):
            family = "embedding"
        elif issubclass(cls, (*_SAME_SHAPE_MODULES, *QUANTISERS)):
            family = "same"
        else:
            family = "other"
        _FAMILIES[cls] = family
    return family


#: Modules whose output has their input's shape (and dtype).
_SAME_SHAPE_MODULES: tuple[type, ...] = (
    *targets("module", "unary", "hardtanh", "softmax", "bn", "instance_norm", "layernorm", "groupnorm", "prelu",
              "rmsnorm"),
    nn.Identity,
    nn.modules.dropout._DropoutNd,
)
_NO_FAST = object()
_UNARY_SAME = (
    (targets("function", "unary", "clamp", "hardtanh", "softmax") | targets("method", "unary", "clamp", "softmax"))
    - COMPARISONS
) | {F.dropout, F.dropout2d, "contiguous", "detach", "clone", "float"} | (
    # quantisers: the meta stand-in of a quantised tensor is a float one of its shape (meta has no quint8)
    targets("function", "fake_quant_aten") | targets("method", "fake_quant_aten")
)
_BINARY = targets("function", "elementwise") | targets("method", "elementwise")


_MEANS = ("mean", torch.mean)
_CATS = (torch.cat, torch.concat, torch.concatenate)


def _fast_output(target: object, margs: tuple, mkwargs: dict) -> object:
    """Output meta for common shape-preserving or broadcasting calls, by shape arithmetic alone.

    Running such ops on meta tensors costs hundreds of microseconds each (Python decompositions);
    the shapes are known without them. Anything else returns ``_NO_FAST``.
    """
    if target in _MEANS and margs:
        shaped = mean_output(margs[0], tuple(margs[1:]), mkwargs)
        return _NO_FAST if shaped is None else shaped
    if target in _CATS:
        shaped = cat_output(tuple(margs), mkwargs)
        return _NO_FAST if shaped is None else shaped
    try:
        hashable = target in _UNARY_SAME or target in _BINARY
    except TypeError:
        return _NO_FAST
    if not hashable or not margs or not isinstance(margs[0], torch.Tensor):
        return _NO_FAST
    if target in _UNARY_SAME:
        if not margs[0].dtype.is_floating_point or target in ("float",) or (target in (F.softmax, torch.softmax, "softmax") and "dtype" in mkwargs):
            return _NO_FAST
        if not margs[0].is_contiguous():  # x.transpose(1, 2).contiguous() must be contiguous for a later view
            return _NO_FAST
        return margs[0]
    other = margs[1] if len(margs) > 1 else mkwargs.get("other")
    a = margs[0]
    if not isinstance(other, torch.Tensor):
        return a if isinstance(other, (int, float)) and a.dtype.is_floating_point else _NO_FAST
    if other.dtype != a.dtype:
        return _NO_FAST
    shape = broadcast_shapes(tuple(a.shape), tuple(other.shape))
    if shape == a.shape:
        return a
    if shape == other.shape:
        return other
    return torch.empty(shape, dtype=a.dtype, device=META)


class FxCapture:
    """Result of a capture: the ops (each op's ``batch`` is set by ``capture_model``), the method, the
    parameters the ops store and those the forward read."""

    def __init__(self, ops: list[Op], method: str, used_params: set[str], read_params: set[str] | None = None,
                 read_modules: list[tuple[str, nn.Module]] | None = None):
        self.ops = ops
        self.method = method
        self.used_params = used_params  # stored by an op (names of their WeightRefs)
        self._read = read_params or set()
        self._read_modules = read_modules or []  # (path, module) of each layer called whole

    @property
    def read_params(self) -> set[str]:
        """Names of the parameters and buffers the forward read; a layer called whole reads all of its
        parameters (named on first use: the check that needs them runs only when some parameter is
        stored by no op)."""
        if self._read_modules:
            for path, mod in self._read_modules:
                self._read.update(f"{path}.{n}" if path else n for n in _param_names(mod))
            self._read_modules = []
        return self._read


#: Records the ops of one call of a layer: ``(module, path, node name, meta args, meta kwargs) -> (ops, the
#: producer of each output tensor)``; an op reading an argument names it ``layer_arg(position or keyword)``.
LayerRecorder = Callable[[nn.Module, str, str, tuple, dict], tuple[list[Op], list[str | None]]]


def _delegated(mod: nn.Module, record_layer: LayerRecorder | None) -> bool:
    """A torch.nn layer without an extractor that fx keeps whole (its forward is often not traceable, e.g. a
    transformer layer's fast-path checks): with a ``record_layer``, its ops are recorded by that instead."""
    return (record_layer is not None and type(mod).__module__.startswith("torch.nn.")
            and not isinstance(mod, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) and not is_known_leaf(mod))


def layer_arg(key: int | str) -> str:
    """The producer name a layer's recorder (``dispatch_capture.module_call_ops``) gives its positional
    argument ``key`` (an index) or keyword argument ``key``; ``_delegate`` replaces it by the caller's."""
    return f"<arg {key}>"


def _delegate(record_layer: LayerRecorder, mod: nn.Module, call: Call, margs: tuple,
              mkwargs: dict) -> tuple[list[Op], list[bool]]:
    """The layer's ops from ``record_layer``, each linked to the producers of the layer arguments it reads
    (and its outputs to the ops writing them: ``call.producers``), and for each output tensor whether it is
    the model's input (a layer may return an argument as it is); an unknown op if recording fails."""
    try:
        ops, outs = record_layer(mod, call.path, call.name, margs, mkwargs)
    except Exception:  # noqa: BLE001 - the layer stays one unknown op, as without delegation
        return [call.unknown()], []
    given = {layer_arg(i): v for i, v in enumerate(call.args) if isinstance(v, Val)}
    given.update((layer_arg(k), v) for k, v in call.kwargs.items() if isinstance(v, Val))
    def linked(names: list[str]) -> list[str]:  # an argument read by its producer (the model input: none)
        return [q for p in names for q in ((given[p].producer,) if p in given else (p,)) if q]

    for op in ops:
        for names in (op.inputs, op.memory_inputs or ()):
            read = [given[p] for p in names if p in given]
            op.reads_input = op.reads_input or any(v.model_input for v in read)
        if any(p in given for p in op.inputs):
            op.inputs = linked(op.inputs)
        if op.memory_inputs is not None:
            op.memory_inputs = linked(op.memory_inputs)
    call.producers = [given[p].producer if p in given else p for p in outs]  # type: ignore[misc]
    return ops, [p in given and given[p].model_input for p in outs]


def _mark_model_inputs(wrapped: object, flags: list[bool]) -> object:
    """``wrapped`` (``_wrap_out``'s Vals) with each output tensor's ``model_input`` set from ``flags``, in order."""
    if any(flags):
        tensors = [v for v in tree_leaves(wrapped) if isinstance(v, Val) and v.is_tensor]
        for v, flag in zip(tensors, flags, strict=True):
            v.model_input = flag
    return wrapped


def item_of(call: Call, ops: list[Op]) -> object:
    """For ``seq[i]`` picking from a call's outputs written by different ops (``Call.producers``: attention's
    output and weights, an LSTM's ``(output, (h, c))``): the picked value (a Val, or a tuple of them) as it is,
    for the capture to pass on with its own producers, after making its op read that item alone and marking it
    ``attrs["item"]`` (it writes nothing and keeps nothing live by itself: scorer.memory; dispatch records no
    such op). None for any other call."""
    if call.target is not operator.getitem and call.base != "getitem":  # (checked first: every call comes here)
        return None
    seq, i = (call.args + (None, None))[:2]
    if len(ops) != 1 or not isinstance(seq, (list, tuple)) or type(i) is not int:
        return None
    if len({v.producer for v in call.vals if v.is_tensor}) < 2:
        return None
    item = seq[i]
    picked = [v for v in (item if isinstance(item, (list, tuple)) else (item,)) if isinstance(v, Val) and v.is_tensor]
    ops[0].inputs = [v.producer for v in picked if v.producer]
    ops[0].in_shapes = [v.shape for v in picked]
    ops[0].reads_input = any(v.model_input for v in picked)
    ops[0].attrs["item"] = True
    return item


def trace(model: nn.Module, walked: list[tuple[str, nn.Module]] | None = None,
          factories: MetaFactories | None = None, attribute_proxies: bool = True) -> list[TracedCall]:
    """Symbolically trace ``model`` with the leaf-keeping tracer: its nodes in run order (no GraphModule is
    built, which would compile code and re-register every submodule); ``walked``: ``list(model.named_modules())``
    when the caller has it; ``factories``: the active ``MetaFactories``, which follows what the forward computes
    untraced from a tensor a traced call wrote in place (``LeafTracer.written``) and, with ``attribute_proxies``,
    traces the reads of plain tensor attributes on their proxies."""
    tracer = LeafTracer()
    tracer.walked = walked
    if factories is None:
        return tracer.trace(model)
    factories.written = tracer.written
    if attribute_proxies:
        factories.attribute_proxy = tracer.attribute_proxy
    try:
        return tracer.trace(model)
    finally:
        factories.attribute_proxy, factories.written = None, None


def capture_fx(model: nn.Module, example_inputs: tuple, record_layer: LayerRecorder | None = None,
               walked: list[tuple[str, nn.Module]] | None = None) -> FxCapture:
    """Trace ``model`` and propagate meta shapes; raises on untraceable Python or shape errors.
    ``record_layer`` records the torch.nn layers fx keeps whole without an extractor (else they are unknown);
    ``walked``: ``guard.module_walk(model)`` when the caller has it."""
    with memoised():
        return _capture_fx(model, example_inputs, record_layer, walked)


def _capture_fx(model: nn.Module, example_inputs: tuple, record_layer: LayerRecorder | None,
                walked: list[tuple[str, nn.Module]] | None) -> FxCapture:
    if is_known_leaf(model) or _delegated(model, record_layer):  # a bare layer: one call, not a trace through its forward
        graph = fx.Graph()
        args = [graph.placeholder(f"input_{i}") for i in range(len(example_inputs))]
        graph.output(graph.call_module("", tuple(args)))
        return ops_from_graph(model, list(graph.nodes), example_inputs, method="fx", record_layer=record_layer)
    factories = MetaFactories()
    try:
        return _trace_and_translate(model, example_inputs, record_layer, walked, factories, attribute_proxies=True)
    except Exception:  # noqa: BLE001 - retried as fx traced before plain attributes were proxied
        if not factories.made_proxies:
            raise
    # The forward reads a plain tensor attribute for a Python value (``if self.flag:``, ``self.t.item()``,
    # ``.tolist()``, ``len(...)``), which a proxy cannot give: traced again with those tensors as themselves
    # (what the forward computes from them alone is folded into constants, as fx does).
    return _trace_and_translate(model, example_inputs, record_layer, walked, MetaFactories(),
                                attribute_proxies=False)


def _trace_and_translate(model: nn.Module, example_inputs: tuple, record_layer: LayerRecorder | None,
                         walked: list[tuple[str, nn.Module]] | None, factories: MetaFactories,
                         attribute_proxies: bool) -> FxCapture:
    """Trace ``model`` under ``factories`` (plain tensor attributes on proxies or not) and translate its
    calls; ``factories.made_proxies`` tells afterwards whether a plain attribute was proxied."""
    before = set(model.__dict__)
    try:
        with substituted(model, meta_like, walked), factories:
            nodes = trace(model, walked, factories, attribute_proxies)
        # fx stores tensors the forward creates or closes over as ``_tensor_constant<N>`` attributes of
        # the root; they are kept here and must not stay on the user's model
        constants = {key: model.__dict__[key] for key in set(model.__dict__) - before}
    finally:
        for key in set(model.__dict__) - before:
            del model.__dict__[key]
    aten = next((n.target for n in nodes if isinstance(n.target, torch._ops.OpOverload)), None)
    if aten is not None:  # a torch.export program's module: its aten calls are torch.export's to translate
        raise ValueError(f"the forward calls aten operators ({aten}): an aten-level graph")
    created = {key for key, value in constants.items() if id(value) in factories.made}
    return ops_from_graph(model, nodes, example_inputs, method="fx", constants=constants, created=created,
                          record_layer=record_layer)


def ops_from_graph(
    model: nn.Module, nodes: list[Node], example_inputs: tuple, method: str, constants: dict | None = None,
    created: set[str] | frozenset[str] = frozenset(), record_layer: LayerRecorder | None = None,
) -> FxCapture:
    """Walk the fx nodes of ``model`` in run order, computing meta values and one Op per call node.

    ``get_attr`` targets are read from ``constants`` (fx's tensor constants) first, then from ``model``;
    those named in ``created`` were made by the forward itself and are plain values, not parameters.
    """
    env: dict[Node, object] = {}
    ops: list[Op] = []
    used: set[str] = set()
    read: set[str] = set()
    read_modules: list[tuple[str, nn.Module]] = []
    placeholders = iter(example_inputs)
    attributes: dict | None = None  # guard.attribute_tensors(model), made when a plain attribute is met

    for node in nodes:
        if node.op == "placeholder":
            try:
                inp = next(placeholders)
            except StopIteration:
                default = node.args[0] if node.args else None
                env[node] = Val(meta=meta_of(default))
                continue
            env[node] = Val(meta=meta_of(inp), producer=None, model_input=True)
        elif node.op == "get_attr":
            target = str(node.target)
            real = node.meta.get("value", _MISSING)
            if real is _MISSING:
                real = constants[target] if constants and target in constants else _attribute_at(model, target)
            if isinstance(real, fx.Proxy):
                raise ValueError(f"the forward sets {target} to a value it computes, and reads it before that: "
                                 "its value on entry is not known here")
            if target in created:
                env[node] = Val(meta=meta_of(real))
                continue
            if isinstance(real, torch.Tensor) and real.device.type == "meta" and constants and target in constants:
                raise ValueError(f"tensor constant {target} was computed from the stood-in parameters while "
                                 "tracing, so its values are unknown")
            if isinstance(real, torch.Tensor):
                name, data, buffer = target, real, _is_buffer(model, target)
                if not buffer and not isinstance(real, nn.Parameter):
                    if attributes is None:  # a plain tensor attribute: stored as what shares its memory
                        attributes = attribute_tensors(module_walk(model))
                    hit = attributes.get(id(real))
                    if hit is not None:
                        name, data, buffer = hit.stored_as, hit.stored, hit.buffer
                read.add(name)
                env[node] = Val(meta=meta_of(real), param=name, real=data, ident=id(data), buffer=buffer)
            else:
                env[node] = Val(meta=real)
        elif node.op in ("call_module", "call_function", "call_method"):
            kind, target = node.op, node.target
            args = _load(node.args, env)
            margs = _unwrap(args)
            if node.kwargs:
                kwargs = _load(node.kwargs, env)
                mkwargs = _unwrap(kwargs)
            else:
                kwargs, mkwargs = {}, {}
            if kind == "call_module":
                path = str(target)
                mod = node.meta.get("module")
                if mod is None:
                    mod = _submodule(model, path)
                if mod._parameters or mod._modules:
                    read_modules.append((path, mod))
                out = _module_meta_forward(mod, margs, mkwargs)
                call = make_call("module", mod, node.name, path, args, kwargs, out)
                if record_layer is not None and not node.meta.get("known_leaf") and _delegated(mod, record_layer):
                    new, inputs = _delegate(record_layer, mod, call, margs, mkwargs)
                    ops.extend(new)
                    used.update(w.name for o in new for w in o.weights)
                    env[node] = _mark_model_inputs(_wrap_out(out, _producers(call, new, out)), inputs)
                    continue
            elif kind == "call_function":
                out = _fast_output(target, margs, mkwargs)
                if out is _NO_FAST:
                    out = target(*margs, **_on_meta(target, mkwargs))
                call = make_call("function", target, node.name, node.meta.get("layer", ""), args, kwargs, out)
            else:
                target = str(target)
                out = _fast_output(target, margs, mkwargs)
                if out is _NO_FAST:
                    self_obj, *rest = margs
                    out = getattr(self_obj, target)(*rest, **mkwargs)
                call = make_call("method", target, node.name, node.meta.get("layer", ""), args, kwargs, out)
            new = translate(call)
            carried = carries_param(new, call.vals)
            if carried is not None:  # w.t(), w.T, w.view(...): still the parameter, stored where it is used
                env[node] = replace(carried, meta=out)
                continue
            if new:
                picked = item_of(call, new)
                ops.extend(new)
                for o in new:
                    if o.weights:
                        used.update(w.name for w in o.weights)
                env[node] = picked if picked is not None else _wrap_out(out, _producers(call, new, out))
                if call.in_place:
                    _rebind_changed(node, env, new[-1])
            else:
                # no op (a call whose output no rule records): a tensor still carries the model's input onwards
                env[node] = _wrap_out(out, None, any(v.model_input for v in call.acts))
    return FxCapture(ops, method, used, read, read_modules)


def _untraced_writes(kind: str, target: object, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors fx does not trace that a traced call writes in place: one the forward made from fixed sizes
    or holds in a global (``z = torch.zeros(1, T, D)``, then ``z[:, t] = h``, ``z.add_(y)``, ``out=z``). The
    call's result is traced; a later read of such a tensor (``LeafTracer.written``) is refused."""
    out = kwargs.get("out") if kwargs else None
    if out is not None:
        return [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)]
    if args and isinstance(args[0], torch.Tensor):
        name = target if kind == "call_method" else getattr(target, "__name__", "")
        if name in ("__setitem__", "setitem") or named_in_place(name):
            return [args[0]]
    return []


def _read_after_untraced_write() -> ValueError:
    return ValueError("the forward reads a tensor fx does not trace (one it made from fixed sizes, or a global) after "
                      "writing traced values into it in place: fx would read what it was before the write (export "
                      "and dispatch follow it; auto falls back to them)")


def _rebind_changed(node: Node, env: dict, op: Op) -> None:
    """After an in-place call (``op`` its last op): later reads of the tensor it changed, its first argument, read
    its result (the forward may read it again by its old name, as the dispatch recorder sees by identity), and
    so do later reads of the tensor that argument is a view of (``out[:, t].copy_(h)``), which the write leaves
    changed as a whole (``Op.memory_out_shape``). Parameters and buffers keep their Vals."""
    first = node.args[0] if node.args else None
    changed = env.get(first) if isinstance(first, (TracedCall, fx.Node)) else None
    result = env[node]
    if type(changed) is not Val or changed.param is not None or type(result) is not Val:
        return
    env[first] = result
    if first.op == "call_function" and first.target is operator.getitem:  # an item of a split, chunk or unbind:
        _rebind_item(env, first.args, changed, result)  # reads of the whole result read the write there too
    base = changed.meta._base if isinstance(changed.meta, torch.Tensor) else None
    if base is not None:
        holder = next((n for n in reversed(env) if n is not first and n is not node and type(env[n]) is Val
                       and env[n].meta is base), None)
        if holder is not None and env[holder].param is None:
            op.memory_out_shape = tuple(base.shape)
            env[holder] = Val(meta=base, producer=result.producer)


def _rebind_item(env: dict, args: tuple, changed: Val, result: Val) -> None:
    """Put ``result`` where ``changed`` is among the Vals of a call's outputs (``args``: the getitem's source and
    index), so ``torch.stack(rows)`` after ``rows[0].mul_(2)`` reads the write, as the dispatch recorder sees it."""
    source, index = args[0] if args else None, args[1] if len(args) > 1 else None
    items = env.get(source) if isinstance(source, (TracedCall, fx.Node)) else None
    if type(items) in (tuple, list) and type(index) is int and -len(items) <= index < len(items) \
            and type(items[index]) is Val and items[index].meta is changed.meta:
        rebuilt = list(items)
        rebuilt[index] = result
        env[source] = type(items)(rebuilt)


def _param_names(mod: nn.Module) -> list[str]:
    """The names ``mod.named_parameters()`` yields (each tensor once), without its module walk for a layer
    without submodules."""
    params = mod.__dict__.get("_parameters")
    if mod._modules or type(params) is not dict:
        return [n for n, _ in mod.named_parameters()]
    seen: set[int] = set()
    names = []
    for n, p in params.items():
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            names.append(n)
    return names


def _producers(call: Call, ops: list[Op], out: object) -> str | None | Iterator[str | None]:
    """What ``_wrap_out`` takes for the outputs of ``call`` (its ``ops``): one producer, or one per tensor."""
    if call.producers is None:
        return ops[-1].name if ops else None
    return iter(out_producers(call, ops, sum(isinstance(t, torch.Tensor) for t in tree_leaves(out))))


def _wrap_out(out: object, producer: str | None | Iterator[str | None], model_input: bool = False) -> object:
    """``out`` as Vals of ``producer``: one op's name (or None), or an iterator giving each output tensor's in
    turn."""
    single = producer is None or type(producer) is str
    if isinstance(out, torch.Size):  # x.shape, x.shape[:2]: ints only, one value (torch.Size holds no Val)
        return Val(meta=out, producer=producer if single else None)
    if isinstance(out, torch.Tensor):
        return Val(meta=out, producer=producer if single else next(producer), model_input=model_input)
    if isinstance(out, (tuple, list)):
        return type(out)(_wrap_out(o, producer, model_input) for o in out)
    return Val(meta=out, producer=producer) if single and producer else Val(meta=out)


def _submodule(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` ("" for ``model``), as ``model.get_submodule`` finds it."""
    mod = model
    if path:
        for part in path.split("."):
            mod = mod._modules[part]
    return mod


def _is_buffer(model: nn.Module, target: str) -> bool:
    """True when ``target`` names a buffer (a name ``model.named_buffers(remove_duplicate=False)`` gives)."""
    owner, _, name = target.rpartition(".")
    try:
        mod = _submodule(model, owner)
    except (KeyError, AttributeError, TypeError):
        return False
    bufs = mod.__dict__.get("_buffers")
    return isinstance(bufs, dict) and bufs.get(name) is not None


def _attribute_at(model: nn.Module, target: str) -> object:
    """The object at dotted ``target`` of ``model`` (a get_attr node's target); AttributeError when a step is
    missing."""
    obj: object = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
