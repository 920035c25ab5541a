"""Keep the user's model and the process as they were around a capture.

* ``CAPTURE_LOCK``: one capture at a time in the process. torch.fx patches ``nn.Module.__call__``
  process-wide while it traces, torch.export swaps a module's parameters for fake ones, and the dispatch
  recorder installs global module hooks, so two captures must never overlap.
* ``preserved(model)``: every module's attributes (training flags, counters held in plain attributes)
  and its tables (parameters, buffers, submodules, hooks) are put back exactly on exit, also on error, as
  are each tensor's ``requires_grad`` and small tensor attributes' values; a tensor changed in place that
  cannot be put back is an error.
* ``substituted(model, make)``: the forward runs against stand-ins (meta, fake or cloned tensors) for the
  parameters and buffers, so in-place updates (counters, weight clipping, embedding renorm) never reach them.
"""

from __future__ import annotations

import contextlib
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.utils._pytree as _pytree

from scorer.capture.shapes import META
from scorer.errors import CaptureError

CAPTURE_LOCK = threading.RLock()
_TABLES = frozenset((dict, OrderedDict, set))
#: Types of most of a module's attribute values, none of them a tensor (no ``isinstance`` call for them).
_NOT_TENSORS = frozenset((bool, int, float, str, tuple, type(None), dict, OrderedDict, set))
_TENSOR_OR_NONE = frozenset((torch.Tensor, nn.Parameter, type(None)))
#: The attributes every ``nn.Module`` sets on itself (its tables of parameters, buffers, submodules, hooks, ...).
_MODULE_KEYS = frozenset(nn.Module().__dict__)
#: The containers whose tensors ``preserved`` keeps (``held_tensors``).
_CONTAINERS = frozenset((list, tuple, dict, OrderedDict))
#: Types that hold no tensor (containers of them are passed over: ``held_tensors``).
_SCALARS = frozenset((bool, int, float, str, type(None)))
_MISSING = object()
_NO_TORCH_FUNCTION = torch._C.DisableTorchFunction
_INFERENCE_MODE = torch._C._InferenceMode


def module_walk(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``list(model.named_modules())``: ``(path, module)`` in its pre-order, each module once (the first
    path), ``None`` children skipped, without its nested generators (a third of the time); what
    ``preserved``, ``substituted`` and the fx tracer each walk, so a caller may walk once and hand it to all
    three. A module class with its own ``named_modules`` is walked by ``named_modules`` itself."""
    if type(model).named_modules is not _NAMED_MODULES:
        return list(model.named_modules())
    out = [("", model)]
    seen = {id(model)}
    stack = [("", iter(model._modules.items()))]
    while stack:
        path, children = stack[-1]
        for key, child in children:
            if child is not None and id(child) not in seen:
                if type(child).named_modules is not _NAMED_MODULES:
                    return list(model.named_modules())
                seen.add(id(child))
                name = f"{path}.{key}" if path else key
                out.append((name, child))
                if child._modules:
                    stack.append((name, iter(child._modules.items())))
                    break
        else:
            stack.pop()
    return out


_NAMED_MODULES = nn.Module.named_modules


def module_at(model: nn.Module | None, path: str) -> nn.Module | None:
    """The module at dotted ``path`` of ``model``, by any of its names (``named_modules()`` gives a module held
    twice under its first only), or None."""
    mod: object = model
    for part in path.split(".") if path else ():
        mod = mod._modules.get(part) if isinstance(mod, nn.Module) else None
    return mod if isinstance(mod, nn.Module) else None


def modules_of(model: nn.Module) -> list[nn.Module]:
    """``list(model.modules())``, as ``nn.Module`` walks them (a third of the time)."""
    return [m for _, m in module_walk(model)]


class AttributeTensor(NamedTuple):
    """A tensor a module keeps in a plain attribute, and what it is stored as: itself (``stored_as`` its own
    path), or, when it shares memory with a parameter, a buffer or an earlier such tensor (``w.detach()``,
    ``w.t()``, ``mask.view(...)``), that tensor, so the same data is never stored twice."""

    path: str  # its own dotted path, as fx names it (``inner.proj``)
    stored_as: str  # the name it is stored under
    stored: torch.Tensor  # the tensor stored for it
    buffer: bool  # the data is a buffer's: never stored


def attribute_tensors(walked: list[tuple[str, nn.Module]]) -> dict[int, AttributeTensor]:
    """The tensors the modules of ``walked`` (``module_walk(model)``) keep in plain attributes, neither a
    parameter nor a buffer of any of them, by identity (each under its first path). The forward may read
    them as data it needs (a fixed projection, a scale): stored like a parameter on every capture path
    (official_rules.md §3.1: anything needed for inference counts), unless a parameter or buffer holds the
    same memory."""
    tabled: dict[int, tuple[str, torch.Tensor, bool]] = {}  # parameters, then buffers, by identity
    for is_buffer in (False, True):
        for path, m in walked:
            table = m._buffers if is_buffer else m._parameters
            for k, t in table.items() if table else ():
                if t is not None and id(t) not in tabled:
                    tabled[id(t)] = (f"{path}.{k}" if path else k, t, is_buffer)
    found: dict[int, AttributeTensor] = {}
    for path, m in walked:
        for k, v in m.__dict__.items():
            # a tensor, or the tensors of a list, tuple or dict (``self.cs = (cos, sin)``: ``cs.0``, ``cs.1``;
            # ``self.cfg = {"mask": m}``: ``cfg.mask``), nested too; not nn.Module's own tables (hooks, ...)
            if type(v) in _SCALARS or k in _MODULE_KEYS:
                continue
            for key, t in held_tensors(k, v):
                if id(t) not in tabled and id(t) not in found:
                    name = f"{path}.{key}" if path else key
                    found[id(t)] = AttributeTensor(name, name, t, False)
    if not found:
        return found
    held: dict[int, list[tuple[int, int, tuple[str, torch.Tensor, bool]]]] = {}  # storage -> byte ranges held
    for name, t, is_buffer in tabled.values():
        storage, lo, hi = _memory(t)
        held.setdefault(storage, []).append((lo, hi, (name, t, is_buffer)))
    for key, a in found.items():
        storage, lo, hi = _memory(a.stored)
        ranges = held.setdefault(storage, [])
        owner = next((o for start, stop, o in ranges if start <= lo and hi <= stop and lo < hi), None)
        if owner is None:
            ranges.append((lo, hi, (a.path, a.stored, False)))
        else:
            found[key] = AttributeTensor(a.path, *owner)
    return found


def held_tensors(name: str, v: object, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, v)`` for a tensor ``v``, or the same for each tensor a list, tuple or dict ``v`` holds, named
    ``name.i`` / ``name.key``, three levels deep at most (a deeper one is not found); containers of plain numbers
    and strings are passed over at once."""
    if isinstance(v, torch.Tensor):
        yield name, v
    elif depth < 3 and isinstance(v, (list, tuple)):
        if not _SCALARS.issuperset(map(type, v)):
            for i, x in enumerate(v):
                yield from held_tensors(f"{name}.{i}", x, depth + 1)
    elif depth < 3 and isinstance(v, dict):
        if not _SCALARS.issuperset(map(type, v.values())):
            for key, x in v.items():
                yield from held_tensors(f"{name}.{key}", x, depth + 1)


def _memory(t: torch.Tensor) -> tuple[int, int, int]:
    """Where ``t``'s elements are: its storage's identity and the byte range its elements span (a view,
    ``w.t()`` or ``mask.view(...)``, spans its base's range; ``x.unbind(0)``'s pieces do not); an empty
    range, or the tensor's own identity when it has no storage, shares with nothing."""
    try:
        storage = t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return id(t), 0, 0
    size = t.element_size()
    lo = t.storage_offset() * size
    span = 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride(), strict=True)) if t.numel() else 0
    return storage, lo, lo + span * size


def _restore(live: dict | set, saved: dict | set) -> None:
    """Make ``live`` hold exactly ``saved``'s entries, in ``saved``'s order. A dict is refilled whether or
    not it changed: cheaper than comparing its values by identity, and the same in the end."""
    if type(saved) is set:
        if live != saved:
            live.clear()
            live.update(saved)
    else:
        live.clear()
        live.update(saved)  # type: ignore[arg-type]


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter
        return None


def _states(tensors: list[torch.Tensor]) -> list[tuple[bool, int | None]]:
    """Each tensor's ``(requires_grad, version)``, read in one pass."""
    try:
        return list(map(_STATE, tensors))
    except RuntimeError:  # an inference tensor among them
        return [(t.requires_grad, _version(t)) for t in tensors]


_STATE = operator.attrgetter("requires_grad", "_version")


@contextlib.contextmanager
def preserved(model: nn.Module, walked: list[tuple[str, nn.Module]] | None = None) -> Iterator[list[nn.Module]]:
    """Restore every module's ``__dict__`` and tables and every tensor's ``requires_grad`` on exit; yields the
    modules (``model.modules()``, as walked on entry).

    Tensor attributes that are neither parameters nor buffers, also those a user's module (not torch's own
    layers) holds in a list, tuple or dict attribute (fx and torch.export may run in-place ops on them for real),
    are copied first, up to ``PLAIN_COPY_LIMIT`` bytes, and put back if changed. A tensor
    changed in place without a copy raises CaptureError: it cannot be undone, so it is not passed over.
    ``walked``: ``module_walk(model)`` when the caller has it.
    """
    if walked is None:
        walked = module_walk(model)
    saved = []  # (each module's __dict__, its copy)
    full = []  # (each non-empty table a module holds, its copy)
    empty: list[dict | set] = []  # tables that were empty (most hook tables): emptied again on exit
    found: list = []  # each module's parameters and buffers (None included), then its tensor attributes
    at_attr: list[int] = []  # where tensor attributes are in ``found``
    keep, keep_full, keep_empty = saved.append, full.append, empty.append
    users: dict[type, bool] = {}  # class -> whether its forward is the user's (torch's never changes a container)
    for _, m in walked:
        live = m.__dict__
        attrs = live.copy()
        attr_tensors = None
        cls = type(m)
        user = users.get(cls)
        if user is None:
            user = users[cls] = not cls.__module__.startswith("torch.")
        for v in attrs.values():
            tp = type(v)
            if tp in _TABLES:
                if v:
                    keep_full((v, v.copy()))
                else:
                    keep_empty(v)
            elif tp not in _NOT_TENSORS and isinstance(v, torch.Tensor):
                attr_tensors = [*(attr_tensors or ()), v]
        if user:  # the tensors a user's module holds in its own lists, tuples and dicts
            held = [t for k, v in attrs.items() if type(v) in _CONTAINERS and v and k not in _MODULE_KEYS
                    for _, t in held_tensors(k, v)]
            if held:
                attr_tensors = [*(attr_tensors or ()), *held]
        keep((live, attrs))
        for items in (m._parameters, m._buffers):
            if items:
                found += items.values()
        if attr_tensors:
            at_attr += range(len(found), len(found) + len(attr_tensors))
            found += attr_tensors
    if not _TENSOR_OR_NONE.issuperset(map(type, found)):  # a table holding something else: set aside as None
        found = [t if isinstance(t, torch.Tensor) else None for t in found]
    distinct = dict(zip(map(id, found), found, strict=True))  # each tensor once, where it first occurs
    distinct.pop(id(None), None)
    tensors = list(distinct.values())
    first = dict(zip(map(id, reversed(found)), range(len(found) - 1, -1, -1), strict=True)) if at_attr else {}
    copies = _copies([found[i] for i in at_attr if first[id(found[i])] == i])  # not a parameter or buffer first
    states = _states(tensors)

    def undo() -> list[str]:
        for live, attrs in saved:
            live.clear()  # _restore, inlined
            live.update(attrs)
        for table, copy in full:  # each non-empty table, as it was
            _restore(table, copy)
        if any(empty):
            for table in empty:
                if table:
                    table.clear()
        now = _states(tensors)
        if now == states:
            return []
        for t, (grad, _), (now_grad, _) in zip(tensors, states, now, strict=True):
            if now_grad != grad:
                t.requires_grad_(grad)
        changed = {id(t) for t, (_, version), (_, v) in zip(tensors, states, now, strict=True)
                   if v != version and not _put_back(t, copies.get(id(t)), version)}
        return _names(walked, saved, changed) if changed else []

    try:
        yield [m for _, m in walked]
    except BaseException as exc:
        changed = undo()
        if changed and isinstance(exc, Exception):
            raise CaptureError(_changed_message(changed)) from exc
        raise
    changed = undo()
    if changed:
        raise CaptureError(_changed_message(changed))


def _names(walked: list[tuple[str, nn.Module]], saved: list, ids: set[int]) -> list[str]:
    """The names of the tensors ``preserved`` keeps whose ids are in ``ids``, in its order (each module's
    parameters, buffers, then tensor attributes; a tensor's first name); the tables are as on entry."""
    names: dict[int, str] = {}
    for (path, m), (_, attrs) in zip(walked, saved, strict=True):
        for k, t in (*m._parameters.items(), *m._buffers.items(),
                     *((k, v) for k, v in attrs.items() if isinstance(v, torch.Tensor))):
            if id(t) in ids and id(t) not in names and isinstance(t, torch.Tensor):
                names[id(t)] = f"{path}.{k}" if path else k
    return list(names.values())


#: Bytes of plain tensor attributes ``preserved`` copies (a pruned layer's ``weight`` is one: big, and
#: reassigned rather than changed in place, so it need not be copied).
PLAIN_COPY_LIMIT = 1 << 24


def _copies(plain: list[torch.Tensor]) -> dict[int, torch.Tensor]:
    out: dict[int, torch.Tensor] = {}
    budget = PLAIN_COPY_LIMIT
    for t in plain:
        size = t.numel() * t.element_size()
        if t.device.type != "meta" and size <= budget:
            out[id(t)] = t.detach().clone()
            budget -= size
    return out


def _put_back(t: torch.Tensor, copy: torch.Tensor | None, version: int | None) -> bool:
    """Restore ``t``'s values (and version counter) from ``copy``; False when that is not possible."""
    if copy is None or version is None or t.shape != copy.shape or t.dtype != copy.dtype:
        return False
    with torch.no_grad():
        t.copy_(copy)
    torch._C._autograd._unsafe_set_version_counter([t], [version])
    return True


def _changed_message(names: list[str]) -> str:
    return (
        f"the model's forward changed {', '.join(names[:4])} in place during capture, which cannot be undone; "
        "register such a tensor as a buffer (parameters and buffers are protected) or avoid the in-place update"
    )


@contextlib.contextmanager
def substituted(
    model: nn.Module, make: Callable[[torch.Tensor], torch.Tensor],
    walked: list[tuple[str, nn.Module]] | None = None,
) -> Iterator[dict[int, tuple[str, torch.Tensor]]]:
    """Put ``make(t)`` in place of every parameter and buffer ``t`` of ``model`` (one stand-in per distinct
    tensor, so shared weights stay shared) and yield ``{id(stand-in): (name, t)}``; the tables are restored
    on exit. A parameter's stand-in is an ``nn.Parameter`` with the same ``requires_grad``. TorchScript
    modules keep their own tensors (their tables are not Python dicts). ``walked``: ``module_walk(model)``
    when the caller has it.

    With ``meta_like`` (what fx traces against) a module's table is an ``_UnreadTable`` meanwhile: a stand-in
    is made when its entry is first read, so the mapping holds those read so far, each under its first name
    in ``named_parameters()`` order. fx keeps layers whole, so most forwards never read a layer's tensors, and
    a stand-in for each of them was a tenth of a score. The table it replaces holds ``_UNREAD`` meanwhile
    (another reference to it never reaches a real tensor)."""
    stand: dict[int, torch.Tensor] = {}
    real_of: dict[int, tuple[str, torch.Tensor]] = {}
    first: dict[int, tuple[str, str]] = {}  # id(real tensor) -> (module path, key) where it is first held
    tables: list[tuple[str, dict]] = []  # (module path, a table's real entries), in walk order: fills ``first``
    filled = 0  # how many of ``tables`` are in ``first`` (filled as stand-ins are made: most captures make none)

    def first_name(t: torch.Tensor) -> str:
        nonlocal filled
        while id(t) not in first:
            path, reals = tables[filled]
            filled += 1
            for k, v in reals.items():
                if v is not None and id(v) not in first:
                    first[id(v)] = (path, k)
        path, k = first[id(t)]
        return f"{path}.{k}" if path else k  # the first name, as named_parameters() gives it

    saved = []  # (table, its copy): tables whose entries were replaced
    swapped = []  # (a module's __dict__, table attribute, the table, its entries, its stand-in table)
    fast = make is meta_like

    def stand_in(t: torch.Tensor) -> torch.Tensor:
        s = stand.get(id(t))
        if s is None:
            # made on first read, maybe inside the forward: as on entry, whatever the forward set up (unseen by
            # the torch-function modes it runs under: fx's factories, the layer-subclass check; no inference
            # tensor under its torch.inference_mode())
            with _NO_TORCH_FUNCTION(), _INFERENCE_MODE(False):
                s = stand[id(t)] = _stand_in(t, make, fast)
            real_of[id(s)] = (first_name(t), t)
        return s

    for path, m in (module_walk(model) if walked is None else walked):
        d = m.__dict__
        for attr, table in (("_parameters", m._parameters), ("_buffers", m._buffers)):
            if not table or type(table) not in _TABLES:  # a ScriptModule's tables cannot hold stand-ins
                continue
            reals = table.copy()
            tables.append((path, reals))
            if fast and type(table) is dict and d.get(attr) is table:
                lazy = d[attr] = _unread_table(reals, stand_in)
                table.update(dict.fromkeys(reals, _UNREAD))  # what another reference to the table reads
                swapped.append((d, attr, table, reals, lazy))
                continue
            saved.append((table, reals))
            for k, t in table.items():
                if t is not None:
                    table[k] = stand_in(t)
    try:
        yield real_of
    finally:
        for d, attr, table, reals, lazy in swapped:
            d[attr] = table
            _restore(table, reals)
            # a shallow copy of the module made by the forward holds ``lazy``: it holds the tensors again
            _restore(lazy, reals)
            lazy._reals = lazy._stand_in = None
        for table, orig in saved:
            _restore(table, orig)


def _stand_in(t: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor], fast: bool) -> torch.Tensor:
    """``make(t)``, an ``nn.Parameter`` (with ``t``'s ``requires_grad``) when ``t`` is one."""
    tp = type(t)
    if fast and (tp is nn.Parameter or tp is torch.Tensor) and t.is_contiguous():
        if tp is nn.Parameter:
            return _make_parameter(_empty_like(t, device=META, requires_grad=t.requires_grad))
        return _empty_like(t, device=META)  # meta_like(t), inlined
    s = make(t)
    if tp is nn.Parameter or (tp is not torch.Tensor and isinstance(t, nn.Parameter)):
        # what nn.Parameter(s, requires_grad) does for a plain tensor, without its Python layer (make's tensor
        # may be held elsewhere: its class is not set)
        s = (torch.Tensor._make_subclass(nn.Parameter, s, t.requires_grad) if type(s) is torch.Tensor
             else nn.Parameter(s, requires_grad=t.requires_grad))
    return s


class _Unread:
    """An entry of an ``_UnreadTable`` not read yet: what a direct read of the table's storage (C code,
    ``dict.values(table)``) meets instead of the real tensor."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unread stand-in>"


_UNREAD = _Unread()


class _UnreadTable(dict):
    """A module's parameter or buffer table ``_reals`` during ``substituted``: each entry's stand-in is made by
    ``_stand_in`` the first time the entry is read (indexing, ``get``, ``values``, ``items``, ``pop``,
    iteration, a copy), and kept; until then the entry holds ``_UNREAD``. Made by ``_unread_table``."""

    __slots__ = ("_reals", "_stand_in")

    def _made(self, k: object, v: object) -> object:
        """What entry ``k`` holding ``v`` reads as."""
        if v is not _UNREAD:
            return v
        real = self._reals[k]
        return None if real is None else self._stand_in(real)  # a table may hold None (``bias=False``)

    def _read(self, k: object, v: object) -> object:
        if v is _UNREAD:
            v = self._made(k, v)
            dict.__setitem__(self, k, v)
        return v

    def __getitem__(self, k: object) -> object:
        return self._read(k, dict.__getitem__(self, k))

    def get(self, k: object, default: object = None) -> object:
        v = dict.get(self, k, _MISSING)
        return default if v is _MISSING else self._read(k, v)

    def values(self) -> list:  # type: ignore[override]
        return [self[k] for k in list(dict.keys(self))]

    def items(self) -> list:  # type: ignore[override]
        return [(k, self[k]) for k in list(dict.keys(self))]

    def pop(self, k: object, *default: object) -> object:
        return self._made(k, dict.pop(self, k, *default))

    def popitem(self) -> tuple:
        k, v = dict.popitem(self)
        return k, self._made(k, v)

    def setdefault(self, k: object, default: object = None) -> object:
        if k in self:
            return self[k]
        dict.__setitem__(self, k, default)
        return default

    def copy(self) -> dict:
        return dict(self.items())

    def __iter__(self) -> Iterator:
        return iter(list(dict.keys(self)))

    def __eq__(self, other: object) -> bool:
        return dict(self.items()) == other

    def __ne__(self, other: object) -> bool:
        return dict(self.items()) != other

    def __reduce__(self) -> tuple:
        return dict, (self.items(),)


# torch's pytree (``tree_leaves(self._parameters)``) takes a dict by its exact type: this one flattens as a dict
_pytree.register_pytree_node(_UnreadTable, lambda t: (t.values(), list(dict.keys(t))),
                             lambda values, keys: dict(zip(keys, values, strict=True)),
                             serialized_type_name="scorer.capture.guard._UnreadTable")


def _unread_table(reals: dict, stand_in: Callable[[torch.Tensor], torch.Tensor]) -> _UnreadTable:
    """An ``_UnreadTable`` for the table ``reals`` (its class's ``fromkeys``, then the two slots: a third of an
    ``__init__``'s cost, paid for every table of every capture)."""
    table = _UnreadTable.fromkeys(reals, _UNREAD)
    table._reals, table._stand_in = reals, stand_in
    return table


def _make_parameter(s: torch.Tensor) -> torch.Tensor:
    """Turn ``s``, a plain leaf tensor just made here (with the ``requires_grad`` wanted), into what
    ``nn.Parameter(s, s.requires_grad)`` returns.

    It sets the tensor's class, as torch's own ``UninitializedTensorMixin.materialize`` does
    (pytorch/pytorch, torch/nn/parameter.py): the object ``Tensor._make_subclass`` would build, without the
    detached alias it makes first (half the cost).
    """
    s.__class__ = nn.Parameter
    return s


_empty_like = torch.empty_like


def _meta_tensor(t: torch.Tensor) -> torch.Tensor:
    # empty_like keeps a dense tensor's strides exactly (aten empty_like, memory_format=preserve) and is
    # cheaper than empty_strided; it keeps a subclass's type, so only plain tensors and Parameters take it
    if (type(t) is torch.Tensor or type(t) is nn.Parameter) and t.is_contiguous():
        return _empty_like(t, device=META)
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=META)


@contextlib.contextmanager
def versions_kept(model: nn.Module) -> Iterator[None]:
    """Put back the version counters of ``model``'s parameters, buffers and tensor attributes on exit.

    For a run whose ops only ever compute on fake copies: an in-place op on a real tensor bumps its counter
    before it reaches the fake mode, although no value changes.
    """
    found: list = []
    for _, m in module_walk(model):
        found += m._parameters.values()
        found += m._buffers.values()
        found += [v for v in m.__dict__.values() if type(v) not in _NOT_TENSORS]
    tensors = {id(t): t for t in found if isinstance(t, torch.Tensor)}
    kept = [(t, v) for t in tensors.values() if (v := _version(t)) is not None]
    try:
        yield
    finally:
        moved = [(t, v) for t, v in kept if t._version != v]
        if moved:
            torch._C._autograd._unsafe_set_version_counter([t for t, _ in moved], [v for _, v in moved])


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """A meta tensor with ``t``'s shape, strides and dtype."""
    return _meta_tensor(t)
