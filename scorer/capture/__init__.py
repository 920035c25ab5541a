"""Capture a model as a list of Ops: torch.fx first, then torch.export (non-strict), then a dispatch-level
recorder that runs the model once. The report says which one was used."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn

from scorer.capture.fx_capture import FxCapture, capture_fx
from scorer.errors import CaptureError

METHODS = ("fx", "export", "dispatch")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards (also on error)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def capture_model(model: nn.Module, example_inputs: tuple, method: str = "auto") -> FxCapture:
    """Capture ``model`` on ``example_inputs`` with ``method`` ("auto" tries fx, export, dispatch)."""
    order = METHODS if method == "auto" else (method,)
    if any(m not in METHODS for m in order):
        raise CaptureError(f"unknown capture method {method!r}; use auto, {', '.join(METHODS)}")
    failures: list[str] = []
    with eval_mode(model):
        for m in order:
            try:
                if m == "fx":
                    return capture_fx(model, example_inputs)
                if m == "export":
                    from scorer.capture.export_capture import capture_export

                    return capture_export(model, example_inputs)
                from scorer.capture.dispatch_capture import capture_dispatch

                return capture_dispatch(model, example_inputs)
            except CaptureError:
                raise
            except Exception as exc:  # noqa: BLE001 - every capture failure falls through to the next
                failures.append(f"{m}: {_first_line(exc)}")
    shapes = ", ".join(str(tuple(getattr(x, "shape", ()))) for x in example_inputs)
    raise CaptureError(f"cannot capture the model on input {shapes}: " + " | ".join(failures))
