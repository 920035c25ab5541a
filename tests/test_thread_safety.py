"""score() from several threads: identical results, and no process-wide state left changed or swapped."""

from __future__ import annotations

import logging
import sys
import threading
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scorer import score
from scorer.capture import capture_model


class Traceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)

    def forward(self, x):
        return torch.relu(self.fc(x))


class NeedsFallback(nn.Module):
    """Python branching on a shape (a Proxy under fx): fx cannot trace it, torch.export can."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)

    def forward(self, x):
        b, t, _ = x.shape
        y = self.fc(x).view(b, t, -1)
        return y if t > 1 else -y


class DataDependent(nn.Module):
    """Python branching on a value: fx and torch.export fail, the dispatch recorder runs it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if float(y.abs().sum()) >= 0:
            y = F.relu(y)
        return y


def _process_state() -> tuple:
    torch_loggers = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict
                     if name.startswith("torch")}
    handler_filters = [list(h.filters) for h in logging.getLogger("torch").handlers + logging.root.handlers]
    return (sys.stdout, sys.stderr, logging.root.manager.disable, torch_loggers, handler_filters,
            list(warnings.filters), nn.Module.__call__, nn.Module._call_impl, nn.Module.__getattr__,
            dict(nn.modules.module._global_forward_hooks), dict(nn.modules.module._global_forward_pre_hooks),
            torch.fx._symbolic_trace.is_fx_tracing(), torch.is_grad_enabled())


def _in_threads(fn, n: int = 4) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported in the results
            results[i] = repr(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize(("cls", "shape", "method"), [
    (Traceable, (2, 3, 4), "fx"),
    (NeedsFallback, (2, 3, 4), "export"),
    (DataDependent, (1, 3, 6, 6), "dispatch"),
])
@pytest.mark.parametrize("shared", [True, False], ids=["same-instance", "distinct-instances"])
def test_threads_get_identical_results_and_leave_the_process_alone(cls, shape, method, shared) -> None:
    ref = score(cls(), input_shape=shape)  # warm-up: first-use imports (sympy adds a warning filter) happen here
    assert ref.capture == method
    want = (ref.capture, ref.totals)
    before = _process_state()
    model = cls()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def one(_i: int) -> tuple:
        rep = score(model if shared else cls(), input_shape=shape)
        return rep.capture, rep.totals

    assert _in_threads(one) == [want] * 4
    assert _process_state() == before
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_concurrent_captures_restore_the_shared_models_training_flags() -> None:
    model = NeedsFallback()
    model.train()
    model.fc.eval()
    got = _in_threads(lambda i: capture_model(model, (torch.empty(2, 3, 4, device="meta"),)).method)
    assert got == ["export"] * 4
    assert model.training and not model.fc.training


def test_fx_trace_leaves_another_threads_model_run_alone() -> None:
    # fx patches nn.Module.__call__ for the whole process while it traces; a model run by another thread
    # meanwhile must compute normally and must not show up in the trace
    other = nn.Linear(4, 2)
    seen: list = []

    class SpawnsAThread(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            t = threading.Thread(target=lambda: seen.append(other(torch.ones(1, 4))))
            t.start()
            t.join()
            return self.fc(x)

    rep = score(SpawnsAThread(), input_shape=(1, 4))
    assert rep.capture == "fx"
    assert isinstance(seen[0], torch.Tensor) and type(seen[0]) is torch.Tensor
    assert torch.equal(seen[0], other(torch.ones(1, 4)))
    assert list(rep.layers.module) == ["fc"]


def test_dispatch_module_paths_ignore_another_threads_modules() -> None:
    other = nn.Sequential(nn.Linear(4, 2))

    class RunsAnotherModelInAThread(DataDependent):
        def forward(self, x):
            t = threading.Thread(target=lambda: other(torch.ones(1, 4)))
            t.start()
            t.join()
            return super().forward(x)

    rep = score(RunsAnotherModelInAThread(), input_shape=(1, 3, 6, 6))
    assert rep.capture == "dispatch"
    assert set(rep.layers.module) == {"conv", ""}


def test_fallback_captures_print_nothing(capfd: pytest.CaptureFixture) -> None:
    score(DataDependent(), input_shape=(1, 3, 6, 6))  # export fails on it: torch would print its graph
    score(NeedsFallback(), input_shape=(2, 3, 4), capture="export")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_another_threads_torch_logs_still_reach_the_handlers() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("torch").addHandler(handler)
    try:
        class LogsFromAnotherThread(NeedsFallback):
            def forward(self, x):
                t = threading.Thread(target=lambda: logging.getLogger("torch.other").warning("from a thread"))
                t.start()
                t.join()
                return super().forward(x)

        assert score(LogsFromAnotherThread(), input_shape=(2, 3, 4), capture="export").capture == "export"
    finally:
        logging.getLogger("torch").removeHandler(handler)
    assert [r.getMessage() for r in records] == ["from a thread"]
