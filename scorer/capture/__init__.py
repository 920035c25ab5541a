"""Capture a model as a list of Ops: torch.fx first, then torch.export (non-strict), then a dispatch-level
recorder that runs the model once on fake tensors. The report says which one was used.

Captures are serialised process-wide and leave the model as it was (see ``scorer.capture.guard``).
Importing this package is cheap (torch is imported on first use), so that ``micronet-score --help`` can
list :data:`METHODS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from operator import attrgetter, is_not
from typing import TYPE_CHECKING

from scorer.errors import CaptureError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from scorer.capture.fx_capture import FxCapture

#: The capture methods, in the order ``auto`` tries them (the CLI's ``--capture`` choices, with ``auto``).
METHODS = ("fx", "export", "dispatch")


@contextlib.contextmanager
def eval_mode(model: nn.Module, modules: list[nn.Module] | None = None) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards (also on error);
    ``modules``: ``list(model.modules())`` when just walked."""
    from scorer.capture.guard import modules_of

    mods = modules_of(model) if modules is None else modules
    flags = list(map(attrgetter("training"), mods))
    direct = _plain_train(set(map(type, mods)))  # eval() would only set each module's flag in its __dict__
    try:
        if not direct:
            model.eval()
        elif any(flags):  # else already in eval mode
            for m in mods:
                m.__dict__["training"] = False
        yield
    finally:
        if any(map(is_not, map(attrgetter("training"), mods), flags)):
            for m, flag in zip(mods, flags, strict=True):
                if m.training is not flag:  # nn.Module.__setattr__ is slow: set only the flags that changed
                    if direct:
                        m.__dict__["training"] = flag
                    else:
                        m.training = flag


def _plain_train(types: set[type]) -> bool:
    """True when every type keeps ``nn.Module``'s own ``train``, ``eval`` and ``__setattr__`` and has no class
    attribute ``training`` (so ``eval()`` sets each module's ``training`` in its ``__dict__`` and does nothing
    else: ``nn.Module.__setattr__`` hands a bool to ``object.__setattr__``)."""
    import torch.nn as nn

    return all(t.train is nn.Module.train and t.eval is nn.Module.eval and t.__setattr__ is nn.Module.__setattr__
               and not hasattr(t, "training") for t in types)


def batch_of(example_inputs: tuple) -> int:
    """The batch the counts are divided by: dim 0 of the first tensor input of rank >= 2.

    Rank-0 and rank-1 tensors are single unbatched examples, so a model whose tensor inputs all have rank
    < 2 (``Linear(4, 8)`` on shape ``(4,)``) has batch 1, as has a model without tensor inputs.
    """
    import torch

    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.dim() >= 2:
            return int(x.shape[0])
    return 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _module_call_ops(*args: object, **kwargs: object) -> list:
    """``dispatch_capture.module_call_ops``, imported on first use: most models never need it, and its
    import (fake tensors, symbolic shapes, sympy) is a large part of a CLI run's start-up."""
    from scorer.capture.dispatch_capture import module_call_ops

    return module_call_ops(*args, **kwargs)


def _capture_with(method: str, model: nn.Module, example_inputs: tuple,
                  walked: list[tuple[str, nn.Module]] | None = None) -> FxCapture:
    """Capture with ``method``; ``walked``: ``module_walk(model)`` when the module tree is as walked."""
    if method == "fx":
        from scorer.capture.fx_capture import capture_fx

        return capture_fx(model, example_inputs, record_layer=_module_call_ops, walked=walked)
    if method == "export":
        from scorer.capture.export_capture import capture_export

        return capture_export(model, example_inputs)
    from scorer.capture.dispatch_capture import capture_dispatch

    return capture_dispatch(model, example_inputs)


def capture_model(model: nn.Module, example_inputs: tuple, method: str = "auto",
                  walked: list[tuple[str, nn.Module]] | None = None) -> FxCapture:
    """Capture ``model`` on ``example_inputs`` with ``method`` ("auto" tries fx, export, dispatch).

    Every op's ``batch`` is ``batch_of(example_inputs)``. SystemExit from the model's forward is a
    CaptureError; KeyboardInterrupt propagates (the model is restored first). ``walked``:
    ``list(model.named_modules())`` when the caller has just walked it.
    """
    import torch

    from scorer.capture.guard import CAPTURE_LOCK, module_walk, preserved

    order = METHODS if method == "auto" else (method,)
    if any(m not in METHODS for m in order):
        raise CaptureError(f"unknown capture method {method!r}; use auto, {', '.join(METHODS)}")
    batch = batch_of(example_inputs)
    failures: list[str] = []
    with CAPTURE_LOCK:
        if walked is None:
            walked = module_walk(model)  # walked once, for the guards and the fx trace
        for m in order:
            try:
                # each method on the model as it was: a failed one may have left attributes it set; and the
                # grad mode put back (a forward may call torch.set_grad_enabled(False))
                with (preserved(model, walked) as modules, eval_mode(model, modules),
                      torch.set_grad_enabled(torch.is_grad_enabled())):
                    cap = _capture_with(m, model, example_inputs, walked)
            except CaptureError:
                raise
            except SystemExit as exc:
                raise CaptureError(f"the model's forward raised SystemExit({exc.code!r}) during capture") from None
            except Exception as exc:  # noqa: BLE001 - every capture failure falls through to the next
                failures.append(f"{m}: {_first_line(exc)}")
                continue
            for op in cap.ops:
                op.batch = batch
            return cap
    shapes = ", ".join(str(tuple(getattr(x, "shape", ()))) for x in example_inputs)
    raise CaptureError(f"cannot capture the model on input {shapes}: " + " | ".join(failures))
