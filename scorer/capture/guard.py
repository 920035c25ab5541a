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

import torch
import torch.nn as nn

from scorer.errors import CaptureError

CAPTURE_LOCK = threading.RLock()
_TABLES = (dict, OrderedDict, set)


def _restore(live: dict | set, saved: dict | set | None) -> None:
    """Make ``live`` hold exactly ``saved``'s entries (None: none), in ``saved``'s order (values compared by
    identity)."""
    if saved is None:
        if live:
            live.clear()
        return
    if isinstance(saved, set):
        same = live == saved
    else:
        same = list(live) == list(saved) and all(map(operator.is_, live.values(), saved.values()))  # type: ignore[union-attr]
    if not same:
        live.clear()
        live.update(saved)  # type: ignore[arg-type]


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter
        return None


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Restore every module's ``__dict__`` and tables and every tensor's ``requires_grad`` on exit; yields the
    modules (``model.modules()``, as walked on entry).

    Tensor attributes that are neither parameters nor buffers (fx and torch.export may run in-place ops
    on them for real) are copied first, up to ``PLAIN_COPY_LIMIT`` bytes, and put back if changed. A tensor
    changed in place without a copy raises CaptureError: it cannot be undone, so it is not passed over.
    """
    saved = []
    empty: list[dict | set] = []  # tables that were empty (most hook tables): emptied again on exit
    tensors: dict[int, tuple[str, torch.Tensor]] = {}
    plain: list[torch.Tensor] = []
    for path, m in model.named_modules():
        attrs = m.__dict__.copy()
        full = []
        attr_tensors = []
        for k, v in attrs.items():
            if type(v) in _TABLES:
                if v:
                    full.append((v, v.copy()))
                else:
                    empty.append(v)
            elif isinstance(v, torch.Tensor):
                attr_tensors.append((k, v))
        saved.append((m, attrs, full))
        prefix = f"{path}." if path else ""
        for items in (m._parameters, m._buffers):
            for k, t in items.items():
                if isinstance(t, torch.Tensor) and id(t) not in tensors:
                    tensors[id(t)] = (prefix + k, t)
        for k, t in attr_tensors:
            if id(t) not in tensors:
                tensors[id(t)] = (prefix + k, t)
                plain.append(t)
    state = [(name, t, t.requires_grad, _version(t)) for name, t in tensors.values()]
    copies = _copies(plain)

    def undo() -> list[str]:
        for m, attrs, tables in saved:
            _restore(m.__dict__, attrs)
            for live, copy in tables:  # each non-empty table the module held, as it held it
                _restore(live, copy)
        for live in empty:
            if live:
                live.clear()
        changed = []
        for name, t, grad, version in state:
            if t.requires_grad != grad:
                t.requires_grad_(grad)
            if _version(t) != version and not _put_back(t, copies.get(id(t)), version):
                changed.append(name)
        return changed

    try:
        yield [m for m, _, _ in saved]
    except BaseException as exc:
        changed = undo()
        if changed and isinstance(exc, Exception):
            raise CaptureError(_changed_message(changed)) from exc
        raise
    changed = undo()
    if changed:
        raise CaptureError(_changed_message(changed))


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
    model: nn.Module, make: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[dict[int, tuple[str, torch.Tensor]]]:
    """Put ``make(t)`` in place of every parameter and buffer ``t`` of ``model`` (one stand-in per distinct
    tensor, so shared weights stay shared) and yield ``{id(stand-in): (name, t)}``; the tables are restored
    on exit. A parameter's stand-in is an ``nn.Parameter`` with the same ``requires_grad``. TorchScript
    modules keep their own tensors (their tables are not Python dicts)."""
    stand: dict[int, torch.Tensor] = {}
    real_of: dict[int, tuple[str, torch.Tensor]] = {}
    saved = []
    for path, m in model.named_modules():
        prefix = f"{path}." if path else ""
        for table in (m._parameters, m._buffers):
            if type(table) not in _TABLES or not table:  # a ScriptModule's tables cannot hold stand-ins
                continue
            saved.append((table, table.copy()))
            for k, t in table.items():
                if t is None:
                    continue
                s = stand.get(id(t))
                if s is None:
                    s = make(t)
                    if type(t) is nn.Parameter or (type(t) is not torch.Tensor and isinstance(t, nn.Parameter)):
                        # what nn.Parameter(s, requires_grad) does for a plain tensor, without its Python layer
                        s = (torch.Tensor._make_subclass(nn.Parameter, s, t.requires_grad) if type(s) is torch.Tensor
                             else nn.Parameter(s, requires_grad=t.requires_grad))
                    stand[id(t)] = s
                    real_of[id(s)] = (prefix + k, t)  # the first name, as named_parameters() gives it
                table[k] = s
    try:
        yield real_of
    finally:
        for table, orig in saved:
            _restore(table, orig)


@contextlib.contextmanager
def versions_kept(model: nn.Module) -> Iterator[None]:
    """Put back the version counters of ``model``'s parameters, buffers and tensor attributes on exit.

    For a run whose ops only ever compute on fake copies: an in-place op on a real tensor bumps its counter
    before it reaches the fake mode, although no value changes.
    """
    tensors = {id(t): t for m in model.modules() for table in (m._parameters, m._buffers, m.__dict__)
               for t in table.values() if isinstance(t, torch.Tensor)}
    kept = [(t, v) for t in tensors.values() if (v := _version(t)) is not None]
    try:
        yield
    finally:
        moved = [(t, v) for t, v in kept if t._version != v]
        if moved:
            torch._C._autograd._unsafe_set_version_counter([t for t, _ in moved], [v for _, v in moved])


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """A meta tensor with ``t``'s shape, strides and dtype."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=_META)


_META = torch.device("meta")
