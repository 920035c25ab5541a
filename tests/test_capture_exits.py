"""SystemExit and KeyboardInterrupt from a model's forward during capture."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn as nn

from scorer import score
from scorer.cli import main
from scorer.errors import CaptureError

FACTORY = """
import sys
import torch.nn as nn


class Exits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        sys.exit({code})


def build():
    return Exits()
"""


@pytest.mark.parametrize("capture", ["auto", "fx", "export", "dispatch"])
@pytest.mark.parametrize("code", ["0", "'bye'"])
def test_system_exit_in_forward_is_a_one_line_error(tmp_path, capsys, capture, code) -> None:
    path = tmp_path / "exits.py"
    path.write_text(FACTORY.format(code=code))
    rc = main([f"{path}:build", "--input-shape", "1,4", "--capture", capture])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"SystemExit({code})" in lines[0], err


class Interrupts(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.n = 0

    def forward(self, x):
        self.calls += 1
        self.n += 1
        raise KeyboardInterrupt


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_keyboard_interrupt_propagates_and_leaves_the_model_as_it_was(capture) -> None:
    model = Interrupts()
    model.train()
    with pytest.raises(KeyboardInterrupt):
        score(model, input_shape=(1, 4), capture=capture)
    assert model.calls.item() == 0 and model.n == 0 and model.training
    assert not hasattr(model, "_tensor_constant0")
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_forward_pre_hooks
    assert score(nn.Linear(4, 4), input_shape=(1, 4)).capture == "fx"  # the capture lock was released


def test_keyboard_interrupt_in_the_cli_says_interrupted(tmp_path, capsys) -> None:
    path = tmp_path / "interrupts.py"
    path.write_text(textwrap.dedent("""
        import torch.nn as nn

        class M(nn.Module):
            def forward(self, x):
                raise KeyboardInterrupt

        def build():
            return M()
    """))
    assert main([f"{path}:build", "--input-shape", "1,4"]) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted")


def test_capture_error_names_system_exit() -> None:
    class Exits(nn.Module):
        def forward(self, x):
            raise SystemExit(3)

    with pytest.raises(CaptureError, match=r"the model's forward raised SystemExit\(3\)"):
        score(Exits(), input_shape=(1, 4))
