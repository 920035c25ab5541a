"""Progress bars: rich bars on a terminal, nothing otherwise."""

from __future__ import annotations

import io
import sys

from reference_models.training.progress import ProgressReporter


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_show_loss_and_accuracy_on_a_terminal(monkeypatch):
    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    with ProgressReporter(True) as progress:
        assert progress.enabled
        task = progress.start("train epoch 1/1", total=2)
        progress.update(task, loss=1.2345, acc=0.5)
        progress.update(task, loss=1.0, acc=0.75)
    text = fake.getvalue()
    assert "train epoch 1/1" in text and "loss 1.0000" in text and "75.00%" in text


def test_disabled_without_a_terminal_or_when_asked(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with ProgressReporter(True) as progress:
        assert not progress.enabled and progress.start("x", 3) is None
        progress.update(None, 0.0, 0.0)
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert not ProgressReporter(False).enabled
