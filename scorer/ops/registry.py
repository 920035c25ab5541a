"""The extractor registry: which calls, in every capture form, an extractor translates into Ops.

An extractor is registered once with every target it matches: module classes (subclasses match through
their MRO), functions (``torch.*``, ``F.*``, ``operator.*``), tensor-method names and aten packet names.
Capture backends build a ``Call`` and ask :func:`translate` for its Ops; a call no extractor matches is an
``unknown:<target>`` op, which the rules engine reports as an error naming the target and the layer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

from rules.records import Op
from scorer.ops.call import Call

Extractor = Callable[[Call], "Op | list[Op] | None"]


@dataclass(frozen=True)
class OpDef:
    """One extractor and the targets it matches. ``weighted``: its modules hold parameters, so they win
    over the quantiser test (a quantised conv is a conv, a quantiser shaped like an activation a quantiser).
    ``whole``: its modules are captured as one module call on every path (their aten ops simulate another
    computation, e.g. a QAT conv's BatchNorm folded into its weight, or cannot be followed, e.g. packed int8
    weights)."""

    name: str
    extract: Extractor
    modules: tuple[type, ...] = ()
    functions: tuple[object, ...] = ()
    methods: tuple[str, ...] = ()
    aten: tuple[str, ...] = ()
    weighted: bool = False
    whole: bool = False


DEFS: dict[str, OpDef] = {}
_MODULES: dict[type, OpDef] = {}
_FUNCTIONS: dict[object, OpDef] = {}
_METHODS: dict[str, OpDef] = {}
_ATEN: dict[str, OpDef] = {}
#: Predicate claiming modules by what they hold rather than their class (activation quantisers).
_CLAIMS: list[tuple[Callable[[nn.Module], bool], OpDef]] = []


def _clash(table: dict, keys: Iterable, d: OpDef) -> None:
    for k in keys:
        if k in table:
            raise ValueError(f"{k!r} is matched by both {table[k].name} and {d.name}")


def register(
    name: str,
    *,
    modules: Iterable[type] = (),
    functions: Iterable[object] = (),
    methods: Iterable[str] = (),
    aten: Iterable[str] = (),
    weighted: bool = False,
    claims: Callable[[nn.Module], bool] | None = None,
    whole: bool = False,
) -> Callable[[Extractor], Extractor]:
    """Decorator registering an extractor for the given targets (each target matched by one extractor)."""

    def deco(fn: Extractor) -> Extractor:
        d = OpDef(name, fn, tuple(modules), tuple(functions), tuple(methods), tuple(aten), weighted, whole)
        if name in DEFS:
            raise ValueError(f"extractor {name!r} registered twice")
        tables = ((_MODULES, d.modules), (_FUNCTIONS, d.functions), (_METHODS, d.methods), (_ATEN, d.aten))
        for table, keys in tables:
            _clash(table, keys, d)
        DEFS[name] = d
        _BY_CLASS.clear()
        for table, keys in tables:
            table.update(dict.fromkeys(keys, d))
        if claims is not None:
            _CLAIMS.append((claims, d))
        return fn

    return deco


#: module class -> the extractor its MRO finds (filled on first use; registration clears it)
_BY_CLASS: dict[type, OpDef | None] = {}


#: The calling thread's answers inside ``memoised()``: (owning thread, {table name: table} (``memo_table``),
#: {id(module): (module, (its extractor, whether it is a known leaf))}).
_MEMO: tuple[int, dict[str, dict], dict[int, tuple]] | None = None


@contextlib.contextmanager
def memoised() -> Iterator[None]:
    """Remember per-module and per-class answers (``module_def``, ``is_known_leaf``, ``memo_table``) for the
    calling thread until exit (one capture asks them several times per call, and a module's claim test reads
    several attributes). A capture does not change what a module is; other threads keep asking afresh."""
    global _MEMO
    outer = _MEMO
    _MEMO = (threading.get_ident(), {}, {})
    try:
        yield
    finally:
        _MEMO = outer


def memo_table(name: str) -> dict | None:
    """The table ``name`` that lives as long as the calling thread's ``memoised()`` (None outside one): for
    answers that cannot change during a capture (a module's extractor, a class's attributes)."""
    memo = _MEMO
    if memo is None or memo[0] != threading.get_ident():
        return None
    table = memo[1].get(name)
    if table is None:
        table = memo[1][name] = {}
    return table


def _answers(mod: nn.Module) -> tuple[OpDef | None, bool]:
    """``(module_def(mod), is_known_leaf(mod))``, remembered by module identity inside ``memoised()``."""
    memo = _MEMO
    if memo is None or memo[0] != threading.get_ident():
        return _answer(mod)
    hit = memo[2].get(id(mod))
    if hit is not None and hit[0] is mod:
        return hit[1]
    answer = _answer(mod)
    memo[2][id(mod)] = (mod, answer)
    return answer


def _answer(mod: nn.Module) -> tuple[OpDef | None, bool]:
    d = _module_def(mod)
    # a fused torch.ao module is a Sequential but captured whole
    return d, d is not None and (d.whole or not isinstance(mod, _CONTAINERS))


def module_def(mod: nn.Module) -> OpDef | None:
    """The extractor for a call of ``mod``, or None (a container or a user module: traced into)."""
    return _answers(mod)[0]


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_known_leaf(mod: nn.Module) -> bool:
    """True for modules an extractor translates whole (capture does not trace into their forward); a fused
    torch.ao module is a Sequential but captured whole. Memoised with ``module_def``."""
    return _answers(mod)[1]


def _module_def(mod: nn.Module) -> OpDef | None:
    cls = type(mod)
    try:
        found = _BY_CLASS[cls]
    except KeyError:
        found = _BY_CLASS[cls] = next((_MODULES[t] for t in cls.__mro__ if t in _MODULES), None)
    if found is not None and found.weighted:
        return found
    for claims, d in _CLAIMS:
        if claims(mod):
            return d
    return found


def is_whole(mod: nn.Module) -> bool:
    """True for a module every capture path records as one module call (see ``OpDef.whole``)."""
    d = module_def(mod)
    return d is not None and d.whole


def lookup(form: str, target: object, base: str = "") -> OpDef | None:
    """The extractor for a call, or None."""
    if form == "module":
        return module_def(target)  # type: ignore[arg-type]
    if form == "method":
        return _METHODS.get(target)  # type: ignore[arg-type]
    if form == "aten":
        return _ATEN.get(base)
    try:
        return _FUNCTIONS.get(target)
    except TypeError:  # an unhashable callable
        return None


def targets(form: str, *names: str) -> frozenset:
    """The functions (``form="function"``) or method names (``"method"``) matched by extractors ``names``."""
    attr = {"function": "functions", "method": "methods", "aten": "aten", "module": "modules"}[form]
    return frozenset(t for n in names for t in getattr(DEFS[n], attr))


def _has_tensor(out: object) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    return isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)


def translate(call: Call) -> list[Op]:
    """The Ops of one call, in execution order (``[]`` for a call producing no tensor: shape arithmetic)."""
    if not _has_tensor(call.out):
        return []
    d = lookup(call.form, call.target, call.base)
    if d is None:
        return [call.unknown()]
    got = d.extract(call)
    if got is None:
        return []
    return got if isinstance(got, list) else [got]
