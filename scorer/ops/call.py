"""One captured call, as every capture form presents it to an extractor, and the helpers extractors use.

A ``Call`` is a module call (``form="module"``, ``target`` the module), a function call (``"function"``:
``torch.*``, ``F.*``, ``operator.*``), a tensor-method call (``"method"``: ``target`` the method name, the
tensor is ``args[0]``) or an aten call (``"aten"``: ``target`` the overload, ``base`` its packet name).
Tensor arguments are ``Val`` objects: a meta tensor plus provenance (parameter name, producing op).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from rules.kinds import KINDS, is_unknown
from rules.records import Op, WeightRef
from scorer.ops.values import Val, mask_parametrized, masked_weight


def _flatten(obj: object, out: list[Val]) -> None:
    if type(obj) is tuple:
        for x in obj:
            if type(x) is Val:
                out.append(x)
            elif isinstance(x, (list, tuple, dict, Val)):
                _flatten(x, out)
        return
    if isinstance(obj, Val):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _flatten(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _flatten(x, out)


#: op kind -> the attrs its extractor must set (``rules.kinds``), as a set
_NEEDED_ATTRS: dict[str, frozenset[str]] = {}


def plain(v: object) -> object:
    """A Val's meta value; anything else unchanged."""
    return v.meta if isinstance(v, Val) else v


@dataclass(slots=True)
class Call:
    """One call to translate into Ops (see the module docstring for the forms)."""

    form: str
    target: object
    name: str  # unique name of the call's node; an extractor emitting several ops suffixes it
    path: str  # dotted path of the module the call ran in ("" for the root)
    args: tuple
    kwargs: dict
    out: object  # meta tensor, or a tuple/list holding some
    tname: str  # readable target for messages: "nn.Conv2d", "F.relu", "Tensor.add_", "aten.add"
    base: str = ""  # aten packet name without in-place underscore (aten form only)
    #: set by an extractor whose outputs are not all written by its last op: the op name writing each output
    #: tensor (the tensor leaves of ``out`` in order); read through ``out_producers``
    producers: list[str] | None = None
    _vals: list[Val] | None = field(default=None, repr=False)
    _acts: list[Val] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ arguments
    def arg(self, i: int, key: str, default: object = None) -> object:
        """Positional argument ``i`` or keyword ``key`` (a Val stays a Val)."""
        return self.args[i] if len(self.args) > i else self.kwargs.get(key, default)

    def value(self, i: int, key: str, default: object = None) -> object:
        """``arg`` with a Val replaced by its meta value (ints, floats, shapes)."""
        return plain(self.arg(i, key, default))

    @property
    def module(self) -> nn.Module:
        """The called module (module form only: ``target``)."""
        return self.target  # type: ignore[return-value]

    @property
    def in_place(self) -> bool:
        """Whether the call changes its first argument in place and returns it: an aten operator whose schema
        writes its first argument (``copy_``, ``add_``, ``index_put_``), a method or function named ``name_``
        (``acc.add_(y)``, ``torch.relu_``), ``inplace=True`` (``F.relu``), a layer with ``inplace=True``."""
        form = self.form
        if form == "module":
            return module_attr(self.target, "inplace") is True  # type: ignore[arg-type]
        if form == "aten":
            schema = getattr(self.target, "_schema", None)
            alias = schema.arguments[0].alias_info if schema is not None and schema.arguments else None
            return alias is not None and alias.is_write
        name = self.target if form == "method" else getattr(self.target, "__name__", "")
        return named_in_place(name) or (bool(self.kwargs) and self.kwargs.get("inplace") is True)

    @property
    def vals(self) -> list[Val]:
        """Every Val among the arguments, in order."""
        if self._vals is None:
            self._vals = []
            _flatten(self.args, self._vals)
            if self.kwargs:
                _flatten(self.kwargs, self._vals)
        return self._vals

    @property
    def acts(self) -> list[Val]:
        """The activation tensors among the arguments (not parameters or buffers); a new list each time."""
        if self._acts is None:
            self._acts = [v for v in self.vals if v.is_activation]
        return list(self._acts)

    @property
    def first_out(self) -> torch.Tensor:
        """The (first) output tensor."""
        out = self.out
        if isinstance(out, (tuple, list)):
            out = next(o for o in out if isinstance(o, torch.Tensor))
        return out  # type: ignore[return-value]

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the (first) output tensor."""
        return tuple(self.first_out.shape)

    # ------------------------------------------------------------------ stored tensors
    def stored(self, v: object, role: str) -> list[WeightRef]:
        """``[WeightRef]`` for a parameter Val with data (a buffer or an activation: ``[]``)."""
        if isinstance(v, Val) and v.param is not None and v.real is not None and not v.buffer:
            t = v.real
            return [WeightRef(role=role, name=v.param, tensor=t, shape=tuple(t.shape), ident=v.ident, mask=v.mask)]
        return []

    def params(self, role: str = "operand") -> list[WeightRef]:
        """Every parameter among the arguments, stored under ``role`` (ops that move or scale them)."""
        return [w for v in self.vals if v.is_tensor for w in self.stored(v, role)]

    def module_weights(self, *pairs: tuple[str, str]) -> list[WeightRef]:
        """The module's parameters ``(attr, role)`` that exist; a masked weight (a ``torch.nn.utils.prune`` pair
        ``attr_orig`` × ``attr_mask``, or torch.ao.pruning's mask parametrization) gives the effective weight with
        its mask."""
        mod, prefix = self.module, f"{self.path}." if self.path else ""
        params, buffers = mod._parameters, mod._buffers
        out = []
        for attr, role in pairs:
            orig = params.get(attr + "_orig")
            mask = buffers.get(attr + "_mask") if orig is not None else None
            if orig is None and mod._modules:
                orig, mask = mask_parametrized(mod, attr)
            if orig is not None and mask is not None:
                eff = masked_weight(orig, mask)
                out.append(WeightRef(role=role, name=prefix + attr, tensor=eff, shape=tuple(eff.shape),
                                     mask=mask.detach(), ident=id(orig)))
                continue
            p = params.get(attr)
            if isinstance(p, torch.Tensor):
                out.append(WeightRef(role=role, name=prefix + attr, tensor=p, shape=tuple(p.shape),
                                     ident=id(p)))
        return out

    # ------------------------------------------------------------------ results
    def op(
        self,
        kind: str,
        weights: list[WeightRef] | None = None,
        acts: list[Val] | None = None,
        attrs: dict | None = None,
        suffix: str = "",
        out_shape: tuple[int, ...] | None = None,
        inputs: list[str] | None = None,
        scalar_operand: bool = False,
    ) -> Op:
        """An Op of this call. ``acts`` default to every activation argument; ``inputs`` (producer names)
        default to theirs; ``suffix`` names one op of several; the kind's declared attrs must be given."""
        used = self.acts if acts is None else acts
        attrs = attrs or {}
        # an op of a decomposed call that reads nothing named (acts=[], no producers) reads what the call reads
        reads_input = False
        for v in (self.acts if acts == [] and not inputs else used):
            if v.model_input:
                reads_input = True
                break
        needed = _NEEDED_ATTRS.get(kind)
        if needed is None:
            spec = KINDS.get(kind)
            if spec is None and not is_unknown(kind):
                raise KeyError(f"extractor for {self.tname} emitted undeclared op kind {kind!r} (rules/kinds.py)")
            needed = frozenset(spec.attrs) if spec is not None else frozenset()
            if spec is not None:
                _NEEDED_ATTRS[kind] = needed
        if needed and not attrs.keys() >= needed:
            missing = [a for a in KINDS[kind].attrs if a not in attrs]
            raise KeyError(f"extractor for {self.tname} left {kind} attrs {missing} unset")
        in_shapes = [tuple(v.meta.shape) for v in used]
        if out_shape is None:
            # a shape-preserving layer's output is its input's meta tensor (fx capture): its shape is read once
            out_shape = in_shapes[0] if len(used) == 1 and self.out is used[0].meta else self.out_shape
        return Op(
            name=self.name + suffix,
            module=self.path,
            kind=kind,
            target=self.tname,
            in_shapes=in_shapes,
            out_shape=out_shape,
            attrs=attrs,
            weights=weights or [],
            inputs=[v.producer for v in used if v.producer] if inputs is None else inputs,
            scalar_operand=scalar_operand,
            reads_input=reads_input,
        )

    def unknown(self, why: str = "") -> Op:
        """An ``unknown:<target>`` op: the rules engine reports it as an error naming the target and layer.
        Its parameters are still stored (an op without a rule never drops storage)."""
        if self.form == "module":
            prefix = f"{self.path}." if self.path else ""
            weights = [WeightRef(role="operand", name=prefix + n, tensor=p, shape=tuple(p.shape),
                                 ident=id(p)) for n, p in self.module.named_parameters()]
        else:
            weights = self.params("operand")
        return self.op(f"unknown:{self.tname}{why}", weights)


def out_producers(call: Call, ops: list[Op], n: int) -> list[str | None]:
    """The name of the op of ``ops`` (the call's) writing each of its ``n`` output tensors: those the extractor
    named in ``call.producers``, else the last op (None without ops). Every capture maps outputs by this."""
    if call.producers is None:
        return [ops[-1].name if ops else None] * n
    if len(call.producers) != n:
        raise ValueError(f"the extractor for {call.tname} names the producers of {len(call.producers)} outputs, "
                         f"the call has {n}")
    return list(call.producers)


_NONE = object()
_MODULE_GETATTR = nn.Module.__getattr__
_OBJECT_GETATTRIBUTE = object.__getattribute__


def keeps_module_lookup(cls: type) -> bool:
    """True when ``cls`` looks attributes up as ``nn.Module`` does (no ``__getattr__`` or ``__getattribute__``
    of its own): a name neither its instance nor its class holds then falls to ``nn.Module.__getattr__``,
    which finds only parameters, buffers and submodules."""
    return cls.__getattr__ is _MODULE_GETATTR and cls.__getattribute__ is _OBJECT_GETATTRIBUTE


def module_attr(mod: nn.Module, name: str) -> object:
    """``getattr(mod, name, None)`` without ``nn.Module.__getattr__``'s raise-and-catch when ``mod`` has no such
    attribute (the usual case; this runs for every layer of every capture). Exact: the lookup falls to
    ``__getattr__`` only when neither the instance nor its class has ``name``, and ``nn.Module.__getattr__``
    then only finds parameters, buffers and submodules; a class with its own lookup gets plain ``getattr``."""
    cls = type(mod)
    if getattr(cls, name, _NONE) is not _NONE or not keeps_module_lookup(cls):
        return getattr(mod, name, None)
    d = mod.__dict__
    if name in d:
        return d[name]
    if name in d.get("_parameters", ()) or name in d.get("_buffers", ()) or name in d.get("_modules", ()):
        return getattr(mod, name, None)
    return None


def numel(shape: tuple[int, ...]) -> int:
    """Number of elements of ``shape``."""
    return math.prod(shape)


def target_name(target: object) -> str:
    """A readable name for a called function, method or module class."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    if isinstance(target, type):
        return f"{target.__module__.replace('torch.nn.modules', 'nn').split('.')[0]}.{target.__name__}"
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or repr(target)
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch"):
        return f"torch.{name}"
    return f"{mod}.{name}" if mod else name


def packet_name(func: object) -> str:
    """An aten operator's base name without an in-place underscore (``add_`` -> ``add``)."""
    name = getattr(getattr(func, "overloadpacket", func), "__name__", str(func))
    name = name.split(".")[-1]
    if name.endswith("_") and not name.startswith("_"):
        name = name[:-1]
    return name


#: module class -> its readable name (fixed by the class)
_MODULE_TNAMES: dict[type, str] = {}


def named_in_place(name: object) -> bool:
    """Whether a method or function named ``name`` writes its first argument in place, by torch's naming
    (``add_``, ``torch.relu_``; not a special method)."""
    return type(name) is str and name[-1:] == "_" and name[:1] != "_"


def make_call(form: str, target: object, name: str, path: str, args: tuple, kwargs: dict, out: object) -> Call:
    """A Call with its readable target name (and aten packet name) filled in."""
    base = ""
    if form == "module":
        cls = type(target)
        tname = _MODULE_TNAMES.get(cls)
        if tname is None:
            tname = _MODULE_TNAMES[cls] = (f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn")
                                           else cls.__qualname__)
    elif form == "aten":
        base = packet_name(target)
        tname = f"aten.{base}"
    else:
        tname = target_name(target)
    return Call(form, target, name, path, args, kwargs, out, tname, base)
