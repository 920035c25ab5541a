"""Fallback capture with torch.export (non-strict): an aten-level graph with shapes and module paths.

The model is exported on fake inputs (nothing of the input's size is allocated) through a thin wrapper
module; torch.export swaps the parameters for fake tensors itself, so the forward never touches them.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import operator
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.overrides import TorchFunctionMode

from scorer.capture.fx_capture import FxCapture, item_of
from scorer.capture.guard import attribute_tensors, module_at, module_walk, substituted
from scorer.ops import is_whole, translate
from scorer.ops.attention import QUIET_MODULES, WHOLE_ATEN
from scorer.ops.call import make_call, out_producers
from scorer.ops.quant import packed_int8, quant_bits
from scorer.ops.values import Val, carries_param, meta_of

_WRAPPED = "model"


def fake_inputs(example_inputs: tuple, mode: FakeTensorMode) -> tuple:
    """``example_inputs`` as fake tensors of ``mode`` (meta ones on the CPU); other values unchanged."""
    out = []
    for x in example_inputs:
        if isinstance(x, torch.Tensor):
            x = fake_of(x, mode)
        out.append(x)
    return tuple(out)


def fake_of(t: torch.Tensor, mode: FakeTensorMode) -> torch.Tensor:
    """A fake tensor of ``mode`` for ``t``; a meta tensor's stands on the CPU (same shape, strides and dtype),
    so a model built under ``torch.device("meta")`` runs like a CPU model and nothing of its size is made."""
    if t.device.type == "meta":
        with mode:
            return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
    return mode.from_tensor(t, static_shapes=True)


def has_meta(model: nn.Module) -> bool:
    """True when a parameter or buffer of ``model`` is on the meta device (it has no values)."""
    return any(t.device.type == "meta" for t in (*model.parameters(), *model.buffers()))


_MHA_SCHEMA = (
    "(Tensor query, Tensor key, Tensor value, int embed_dim_to_check, int num_heads, Tensor? in_proj_weight, "
    "Tensor? in_proj_bias, Tensor? bias_k, Tensor? bias_v, bool add_zero_attn, float dropout_p, "
    "Tensor out_proj_weight, Tensor? out_proj_bias, bool training, Tensor? key_padding_mask, bool need_weights, "
    "Tensor? attn_mask, bool use_separate_proj_weight, Tensor? q_proj_weight, Tensor? k_proj_weight, "
    "Tensor? v_proj_weight, Tensor? static_k, Tensor? static_v, bool average_attn_weights, bool is_causal) "
    "-> (Tensor, Tensor)"
)


@torch.library.custom_op("micronet_score::multi_head_attention_forward", mutates_args=(), schema=_MHA_SCHEMA)
def _mha_op(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.multi_head_attention_forward`` as one graph node (attention weights empty when not asked for)."""
    out, weights = F.multi_head_attention_forward(*args, **kwargs)  # type: ignore[arg-type]
    return out.clone(), weights.clone() if weights is not None else out.new_empty(0)


_mha_op.register_fake(_mha_op._init_fn)
_MHA_PARAMS = inspect.signature(F.multi_head_attention_forward)


class _WholeAttention(TorchFunctionMode):
    """Exports ``F.multi_head_attention_forward`` (the slow path of ``nn.MultiheadAttention`` and of the
    transformer layers, whose fused fast paths an active mode keeps off) as one node, so it is counted by
    the same extractor as on the other capture paths rather than as the aten ops its Python runs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.multi_head_attention_forward:
            return func(*args, **kwargs)
        bound = _MHA_PARAMS.bind(*args, **kwargs)
        bound.apply_defaults()
        out, weights = torch.ops.micronet_score.multi_head_attention_forward(**bound.arguments)
        return out, weights if bound.arguments["need_weights"] else None


class ForwardFailed(Exception):
    """Carries a RuntimeError from the model's forward out of torch.export, whose tracer would otherwise
    print a partial graph to stderr for it; ``capture_export`` re-raises the original."""


class _Wrapper(nn.Module):
    """Calls the user's model (registered as a child: the model itself is not changed)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        setattr(self, _WRAPPED, model)

    def forward(self, *args: object) -> object:
        try:
            with _WholeAttention():
                return getattr(self, _WRAPPED)(*args)
        except RuntimeError as exc:
            raise ForwardFailed(str(exc)) from exc


def _unwrap_name(name: str) -> str:
    return "" if name == _WRAPPED else name.removeprefix(_WRAPPED + ".")


def _module_path(path: str) -> str:
    return _unwrap_name(path.removeprefix("L['self'].").removeprefix("L__self__."))


def _layer(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    return _module_path(next(reversed(stack.values()))[0])


def _whole_call(node: torch.fx.Node, modules: dict[str, nn.Module]) -> tuple[str, str] | None:
    """(stack key, path) of the outermost module captured whole that ``node`` runs in, or None. The nodes of
    its torch.ao output observer (``activation_post_process``, run by a hook after it) are not part of it."""
    for key, (path, _) in (node.meta.get("nn_module_stack") or {}).items():
        path = _module_path(path)
        mod = _module_named(modules, path)
        if mod is not None and is_whole(mod):
            observer = f"{path}.activation_post_process" if path else "activation_post_process"
            if _layer(node) == observer or _layer(node).startswith(observer + "."):
                return None
            return key, path
    return None


def _module_named(modules: dict[str, nn.Module], path: str) -> nn.Module | None:
    """The module at ``path`` (``modules``: ``dict(model.named_modules())``), also by a second name of a module
    held twice, which torch.export's module stack gives where it was called by that name."""
    mod = modules.get(path)
    return mod if mod is not None else module_at(modules.get(""), path)


def _is_torch(name: str) -> bool:
    return name == "torch" or name.startswith("torch.")


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Drop the records torch's loggers make in this thread (export logs whole graphs when it fails).

    A filter goes on every handler those records can reach and comes off afterwards; logger levels,
    ``logging.disable`` and other threads' records are left alone.
    """
    me = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        return not (_is_torch(record.name) and record.thread in (me, None))

    handlers: set[logging.Handler] = set(logging.root.handlers)
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        node = logger if isinstance(logger, logging.Logger) and _is_torch(name) else None
        while node is not None:
            handlers.update(node.handlers)
            node = node.parent if node.propagate else None
    for h in handlers:
        h.addFilter(keep)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(keep)


def _in_quiet(model: nn.Module, path: str) -> bool:
    """True when the layer at ``path`` is one of QUIET_MODULES (its ops other than the whole call are not
    recorded: fx keeps it whole and sees none of them)."""
    try:
        return isinstance(model.get_submodule(path), QUIET_MODULES) if path else isinstance(model, QUIET_MODULES)
    except AttributeError:
        return False


def _pass_through(out: object, producer: str | None, model_input: bool = False) -> object:
    if isinstance(out, (list, tuple)):
        return type(out)(Val(meta=meta_of(o), producer=producer, model_input=model_input) for o in out)
    return Val(meta=meta_of(out), producer=producer, model_input=model_input)


def capture_export(model: nn.Module, example_inputs: tuple) -> FxCapture:
    """Export ``model`` (non-strict) on fake inputs and turn the aten graph into Ops."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError("torch.export cannot export a TorchScript module")
    packed = [name for name, m in model.named_modules() if packed_int8(m)]
    if packed:
        raise ValueError(f"torch.export cannot follow the packed int8 weights of converted torch.ao layers "
                         f"({', '.join(packed[:3])}); the fx and dispatch captures score them")
    mode = FakeTensorMode(shape_env=ShapeEnv())
    # meta parameters and buffers stand as fake CPU tensors of the same mode (export keeps those as they are)
    stand_ins = (substituted(model, lambda t: fake_of(t, mode) if t.device.type == "meta" else t)
                 if has_meta(model) else contextlib.nullcontext())
    # the activation quantisers the forward calls (found before export: a fake-quantiser's switch is a tensor)
    widths = {id(m) for m in model.modules() if is_whole(m) and quant_bits(m) is not None}
    quantisers: set[int] = set()
    me = threading.get_ident()

    ran_model = []  # the model's own forward ran (else torch.export ran a copy of it, unseen by identity)

    def note_quantiser(mod: nn.Module, _args: object) -> None:
        if widths and threading.get_ident() == me:
            if id(mod) in widths:
                quantisers.add(id(mod))
            elif mod is model:
                ran_model.append(mod)

    hook = nn.modules.module.register_module_forward_pre_hook(note_quantiser)
    try:
        with quiet_torch_logs(), torch.no_grad(), stand_ins:
            ep = torch.export.export(_Wrapper(model), fake_inputs(example_inputs, mode), strict=False)
    except ForwardFailed as exc:
        raise exc.__cause__ from None
    finally:
        hook.remove()
    sig = ep.graph_signature
    user_inputs = set(sig.user_inputs)
    param_of = {k: _unwrap_name(v) for k, v in {**sig.inputs_to_parameters, **sig.inputs_to_buffers}.items()}
    # export lifts a tied tensor once, under any one of its names: every name is looked up, and the tensor
    # goes by its first name (as named_parameters() gives it) on every path
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    state = dict(named)
    first: dict[int, str] = {}
    for name, t in named:
        first.setdefault(id(t), name)
    env: dict[torch.fx.Node, object] = {}
    ops = []
    used: set[str] = set()
    read: set[str] = set()
    modules = dict(model.named_modules())
    mutated = set(getattr(sig, "buffers_to_mutate", {}) or {})
    constants_of = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    attributes = attribute_tensors(module_walk(model)) if constants_of else {}
    region: list[torch.fx.Node] = []  # the nodes of the module call being captured whole
    region_key: tuple[str, str] | None = None

    def flush() -> None:
        if region_key is not None:
            path = region_key[1]
            new = _whole_ops(region, _module_named(modules, path), path, env, mutated)
            ops.extend(new)
            used.update(w.name for o in new for w in o.weights)
        region.clear()

    for node in ep.graph_module.graph.nodes:
        whole = _whole_call(node, modules) if node.op == "call_function" else None
        if whole != region_key or whole is None:
            flush()
            region_key = whole
        if whole is not None:
            region.append(node)
            continue
        val = node.meta.get("val")
        _check_static(node, val)
        if node.op == "placeholder":
            if node.name in param_of:
                real = state.get(param_of[node.name])
                fqn = first[id(real)] if real is not None else param_of[node.name]
                if node.users:  # export lifts every parameter; only those the graph uses are read
                    read.add(fqn)
                env[node] = Val(meta=meta_of(val), param=fqn, real=real, ident=id(real) if real is not None else None,
                                buffer=node.name in sig.inputs_to_buffers)
            elif node.name in constants_of:  # a plain tensor attribute the forward reads: stored as fx stores it
                constant = ep.constants.get(constants_of[node.name])  # export keeps the object
                if isinstance(constant, FakeTensor):  # read off a parameter untraced (``w.data``): values unknown
                    raise ValueError(f"torch.export lifted {constants_of[node.name]} as a constant without values: the "
                                     "forward reads a parameter untraced (w.data?), which export loses")
                hit = attributes.get(id(constant))
                if hit is None:  # a tensor the forward made (or a global): data of its code
                    env[node] = Val(meta=meta_of(val))
                else:
                    read.add(hit.stored_as)
                    env[node] = Val(meta=meta_of(val), param=hit.stored_as, real=hit.stored, ident=id(hit.stored),
                                    buffer=hit.buffer)
            else:
                env[node] = Val(meta=meta_of(val), model_input=node.name in user_inputs)
        elif node.op == "call_function":
            args = torch.fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
            out = val if not isinstance(val, (list, tuple)) else type(val)(meta_of(v) for v in val)
            out = meta_of(out) if isinstance(out, torch.Tensor) else out
            call = make_call("aten", node.target, node.name, _layer(node), args, kwargs, out)
            if call.base not in WHOLE_ATEN and _in_quiet(model, call.path):
                vals = call.vals
                if call.base == "getitem" and isinstance(call.args[0], (list, tuple)):  # one item of a tuple
                    vals = [v for v in call.args[0][call.args[1]:][:1] if isinstance(v, Val)]
                producer = next((v.producer for v in vals if v.producer), None)
                from_input = producer is None and any(v.model_input for v in vals)
                env[node] = _pass_through(out, producer, from_input)
                continue
            new = translate(call)
            carried = carries_param(new, call.vals)
            if carried is not None:
                env[node] = replace(carried, meta=meta_of(out))
                continue
            picked = item_of(call, new)
            ops.extend(new)
            used.update(w.name for o in new for w in o.weights)
            if picked is not None:  # an item of a call's outputs: its Vals as they are (their own producers)
                env[node] = picked
            elif isinstance(out, (list, tuple)):
                names = iter(out_producers(call, new, sum(isinstance(o, torch.Tensor) for o in out)))
                env[node] = type(out)(Val(meta=meta_of(o), producer=next(names) if isinstance(o, torch.Tensor)
                                          else None) for o in out)
            else:
                env[node] = Val(meta=meta_of(out), producer=out_producers(call, new, 1)[0])
            if new and call.in_place:
                _rebind_base(node, env, new[-1])
    if widths and not ran_model:
        # torch.export ran a copy (of a GraphModule, of a model holding a module under two names): every quantiser
        # counts as called, so one that left no node is refused (an unused one too)
        quantisers = widths
    _check_quantisers_seen(quantisers, modules, ep.graph_module.graph.nodes)
    return FxCapture(ops, "export", used, read)


def _check_quantisers_seen(called: set[int], modules: dict[str, nn.Module], nodes: Iterable[torch.fx.Node]) -> None:
    """ValueError for an activation quantiser the forward called that left no node in export's graph (a module with
    a ``bits`` attribute whose forward returns its input): its width would be lost (fx and dispatch see the call)."""
    if not called:
        return
    seen = {_module_path(path) for node in nodes for path, _ in (node.meta.get("nn_module_stack") or {}).values()}
    # by identity: a module held under two names runs under the name it was called by
    ran = {id(m) for m in (_module_named(modules, path) for path in seen) if m is not None}
    lost = [path for path, m in modules.items() if id(m) in called and id(m) not in ran]
    if lost:
        mod = modules[lost[0]]
        raise ValueError(f"the activation quantiser {lost[0]} ({type(mod).__name__}, {quant_bits(mod)} bits) computes "
                         "nothing torch.export records, so its width would be lost; the fx and dispatch captures see "
                         "the call")


def _rebind_base(node: torch.fx.Node, env: dict, op: object) -> None:
    """After an in-place write into a view (``out[:, t] = h``: ``copy_`` of a ``select``), later reads of the
    tensor viewed read the write's result, which leaves that tensor changed as a whole (``Op.memory_out_shape``);
    export already links later reads of the view itself. The viewed tensor is found through the operators whose
    schema returns an alias of their first argument. Parameters and buffers keep their Vals."""
    view = node.args[0] if node.args else None
    base = view
    while isinstance(base, torch.fx.Node) and (_views_first(base) or _item_of_views(base)):
        base = base.args[0]
    if base is view or not isinstance(base, torch.fx.Node) or type(env.get(base)) is not Val:
        return
    if env[base].param is None and isinstance(env[base].meta, torch.Tensor):
        op.memory_out_shape = tuple(env[base].meta.shape)
        env[base] = Val(meta=env[base].meta, producer=op.name)


def _views_first(node: torch.fx.Node) -> bool:
    """Whether ``node`` is an aten view of its first argument (``select``, ``slice``, ``view``, ``transpose``)."""
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or not schema.returns or not node.args:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


def _item_of_views(node: torch.fx.Node) -> bool:
    """Whether ``node`` picks one output of an aten call returning views of its first argument (an item of
    ``split``, ``chunk`` or ``unbind``)."""
    return (node.op == "call_function" and node.target is operator.getitem and bool(node.args)
            and isinstance(node.args[0], torch.fx.Node) and _views_first(node.args[0]))


def _whole_ops(nodes: list[torch.fx.Node], mod: nn.Module, path: str, env: dict, mutated: set[str]) -> list:
    """One module call for the nodes of a module captured whole: its arguments are the tensors flowing in
    from outside, its output the one node used outside (buffer updates aside). A quantiser applied to a
    parameter (``weight_fake_quant``) leaves it that parameter."""
    inside = set(nodes)
    args: list[Val] = []
    for n in nodes:
        for a in n.all_input_nodes:
            v = env.get(a)
            if a not in inside and isinstance(v, Val) and v.is_tensor and all(v is not x for x in args):
                args.append(v)
    outs = [n for n in nodes
            if any(u not in inside and not (u.op == "output" and n.name in mutated) for u in n.users)]
    if len(outs) != 1:
        raise ValueError(f"{type(mod).__name__} {path!r} is captured whole but has {len(outs)} outputs in the graph")
    out = meta_of(outs[0].meta.get("val"))
    call = make_call("module", mod, outs[0].name, path, tuple(args), {}, out)
    new = translate(call)
    carried = carries_param(new, args[:1])
    if carried is not None:
        env[outs[0]] = replace(carried, meta=out)
        return []
    env[outs[0]] = Val(meta=out, producer=out_producers(call, new, 1)[0])
    return new


def _check_static(node: torch.fx.Node, val: object) -> None:
    """ValueError for an output whose shape export could only give symbolically (sizes the forward reads
    off tensor values, ``x.split(t.tolist())``): counts need numbers; the dispatch recorder runs it for real."""
    for t in val if isinstance(val, (list, tuple)) else (val,):
        if isinstance(t, torch.Tensor) and not all(type(d) is int for d in t.shape):
            raise ValueError(f"torch.export gives {node.name} a data-dependent shape {tuple(t.shape)}")
