"""Progress: rich bars on a terminal, plain lines every N batches otherwise, nothing when disabled."""

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


def test_plain_lines_without_a_terminal(monkeypatch):
    """A log (stderr not a terminal) gets one line every ``every`` batches and one at the end of the epoch."""
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    with ProgressReporter(True, every=3) as progress:
        assert progress.enabled and progress.lines and not progress.bars
        task = progress.start("prune round 2 (20.00%) epoch 1/1", total=7)
        for step in range(7):
            progress.update(task, loss=4.0 + step, acc=step / 10)
    lines = fake.getvalue().splitlines()
    # batches 3 and 6 (every 3) and 7 (the last): 3 lines, each with the running loss and accuracy
    assert [ln.split(",")[0] for ln in lines] == [f"prune round 2 (20.00%) epoch 1/1: batch {n}/7" for n in (3, 6, 7)]
    assert "loss 10.0000" in lines[-1] and "acc 60.00%" in lines[-1]


def test_plain_lines_follow_advances_of_several_batches():
    out = io.StringIO()
    with ProgressReporter(True, every=4, stream=out) as progress:
        task = progress.start("train epoch 1/2", total=10)
        for _ in range(5):
            progress.update(task, 1.0, 0.5, advance=2)  # 2, 4, 6, 8, 10: crosses 4 and 8, ends at 10
    assert [ln.split(",")[0].rsplit(" ", 1)[1] for ln in out.getvalue().splitlines()] == ["4/10", "8/10", "10/10"]


def test_disabled_when_asked(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with ProgressReporter(False) as progress:
        assert not progress.enabled and progress.start("x", 3) is None
        progress.update(None, 0.0, 0.0)
    assert sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert not ProgressReporter(False).enabled
