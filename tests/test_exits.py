"""Exit fractions measured by running the exit rule (max softmax > threshold) over data."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from scorer import score
from scorer.errors import ScorerError
from scorer.exits import measure_exit_fractions


class TwoExits(nn.Module):
    """The exit head's logits are the first 3 input features: confidence is set by the data itself."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 3, bias=False)

    def forward(self, x):
        return self.body(x)

    def forward_with_exit(self, x):
        return x, self.body(x)

    def exit_paths(self):
        return {"exit": nn.Identity(), "final": self.body}


def test_measured_fraction_from_softmax_confidence() -> None:
    confident = torch.tensor([[10.0, 0.0, 0.0]])  # softmax max = 1/(1+2e-10) > 0.85
    unsure = torch.tensor([[0.0, 0.0, 0.0]])  # softmax max = 1/3
    data = [torch.cat([confident] * 3 + [unsure]), torch.cat([unsure] * 4)]
    fr = measure_exit_fractions(TwoExits(), data, threshold=0.85, progress=False)
    assert fr == {"exit": 3 / 8, "final": 5 / 8}
    rep = score(TwoExits(), input_shape=(1, 3), exit_fractions=fr)
    assert rep.totals["mults"] == pytest.approx(5 / 8 * 9)


def test_bad_inputs() -> None:
    with pytest.raises(ScorerError):
        measure_exit_fractions(nn.Linear(2, 2), [torch.zeros(1, 2)], 0.85, progress=False)
    with pytest.raises(ScorerError):
        measure_exit_fractions(TwoExits(), [], 0.85, progress=False)
    with pytest.raises(ScorerError):
        measure_exit_fractions(TwoExits(), [torch.zeros(1, 3)], 1.5, progress=False)


def test_cli_measures_exits_on_cifar_format_data(tmp_path, capsys) -> None:
    import json

    from reference_models.training.data import write_synthetic_cifar100
    from scorer.cli import main

    write_synthetic_cifar100(tmp_path, 10, 20, seed=0)
    assert main(["reference:osi_ai", "--measure-exits", str(tmp_path), "--exit-threshold", "0.0",
                 "--format", "json"]) == 0
    out = capsys.readouterr()
    # threshold 0: every max softmax exceeds it, so every sample leaves at the exit
    assert json.loads(out.out)["settings"]["exit_fractions"] == {"exit4": 1.0, "final": 0.0}
    assert "measured exit fractions" in out.err
    assert main(["reference:osi_ai", "--measure-exits", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
