"""Per-tensor sparsity globs: one that matches no creditable weight (conv/linear/matmul weights, official_rules.md
§2.2) of any capture path is an error, as a precision config's unmatched layer glob is (``allow_unmatched`` /
``--allow-unmatched`` turns it into a warning note); score(), Scorer.score and the CLI share the check."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from scorer import Scorer, score
from scorer.cli import main
from scorer.errors import ScorerError

SHAPE = (1, 16)
#: Linear(16, 8) at 16 bits: dense (128 + 8) x 16; '0': 0.5 keeps 64 weights at 16 bits, a 128-bit mask and
#: the dense bias (official_rules.md §2.2: a sparse tensor stores its nonzeros plus 1 mask bit per element).
DENSE = (128 + 8) * 16
HALF = 64 * 16 + 128 + 8 * 16


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 8))


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_matching_glob_applies_on_every_capture(capture):
    for sparsity in ({"0": 0.5}, {"0.weight": 0.5}, {"*": 0.5}, "0:0.5", "uniform:0.5", 0.5):
        report = score(_net(), SHAPE, bits=16, sparsity=sparsity, capture=capture)
        assert report.totals["param_bits"] == HALF, sparsity
        assert not any("WARNING" in n for n in report.notes)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize("sparsity", [{"fc": 0.5}, "fc:0.5", {"O": 0.5}, {"0.bias": 0.5}, {"0": 0.5, "fc*": 0.7}])
def test_unmatched_or_bias_only_glob_raises(capture, sparsity):
    # '0.bias' names a real parameter, but a bias is never credited (§2.2): it cannot change the score
    with pytest.raises(ScorerError) as exc:
        score(_net(), SHAPE, bits=16, sparsity=sparsity, capture=capture)
    message = str(exc.value)
    assert "'0'" not in message and "0.weight" in message and "allow_unmatched" in message
    assert any(f"'{g}'" in message for g in ("fc", "O", "0.bias", "fc*"))


def test_allow_unmatched_is_a_note_and_the_rest_applies():
    report = score(_net(), SHAPE, bits=16, sparsity={"0": 0.5, "fc": 0.7}, allow_unmatched=True)
    assert report.totals["param_bits"] == HALF
    warnings = [n for n in report.notes if n.startswith("WARNING: sparsity:")]
    assert len(warnings) == 1 and "'fc'" in warnings[0] and "0.weight" in warnings[0]
    dense = score(_net(), SHAPE, bits=16, sparsity={"fc": 0.5}, allow_unmatched=True)
    assert dense.totals["param_bits"] == DENSE


class _TwoHeads(nn.Module):
    """An early-exit model whose heads are each used by one path only."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 4)
        self.head_exit = nn.Linear(4, 10)
        self.head_final = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_final(self.stem(x))

    def exit_paths(self) -> dict[str, nn.Module]:
        return {"exit": _Path(self, "head_exit"), "final": _Path(self, "head_final")}


class _Path(nn.Module):
    def __init__(self, net: _TwoHeads, head: str) -> None:
        super().__init__()
        self.stem = net.stem
        setattr(self, head, getattr(net, head))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head)(self.stem(x))


def test_a_glob_used_by_any_exit_path_is_matched():
    fractions = {"exit": 0.5, "final": 0.5}
    report = score(_TwoHeads(), SHAPE, sparsity={"head_exit": 0.5}, exit_fractions=fractions)
    # head_exit.weight: 20 of 40 kept at 32 bits + a 40-bit mask; stem 64 + 4, head_final 40 + 10 dense
    assert report.totals["param_bits"] == (20 + 10) * 32 + 40 + (64 + 4 + 40 + 10) * 32
    with pytest.raises(ScorerError, match="'head_none'"):
        score(_TwoHeads(), SHAPE, sparsity={"head_none": 0.5}, exit_fractions=fractions)


def test_scorer_checks_as_score_does():
    sc = Scorer(_net(), SHAPE)
    assert sc.score(bits=16, sparsity={"0": 0.5}).totals == score(_net(), SHAPE, bits=16, sparsity={"0": 0.5}).totals
    with pytest.raises(ScorerError, match="'fc'"):
        sc.score(bits=16, sparsity={"fc": 0.5})
    report = sc.score(bits=16, sparsity={"fc": 0.5}, allow_unmatched=True)
    assert report.totals["param_bits"] == DENSE and any("'fc'" in n for n in report.notes)
    assert sc.sweep([[16]], [[16]], [[0.5]]).loc[0, "param_bits"] == 64 * 16 + 128 + 8 * 32  # the bias at 32


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "sparse_net.py"
    path.write_text("import torch.nn as nn\n\n\ndef build():\n    return nn.Sequential(nn.Linear(16, 8), nn.ReLU())\n")
    return path


@pytest.mark.parametrize("glob", ["0.bias", "1"])
def test_cli_names_the_capture_uses(net_file, capsys, glob):
    # '0.bias' is a parameter and '1' (the ReLU) a module of the model, but neither holds a creditable weight
    assert main([f"{net_file}:build", "--input-shape", "1,16", "--sparsity", f"{glob}:0.5"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"'{glob}'" in err and "--allow-unmatched" in err


def test_cli_allow_unmatched_warns_on_stderr_and_in_the_report(net_file, capsys):
    assert main([f"{net_file}:build", "--input-shape", "1,16", "--bits", "16", "--sparsity", "0:0.5,fc:0.7",
                 "--allow-unmatched", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if "'fc'" in ln]
    assert len(lines) == 1 and lines[0].startswith("micronet-score: warning: sparsity:")
    report = json.loads(out)
    assert report["totals"]["param_bits"] == HALF and any("'fc'" in n for n in report["notes"])


def test_named_layers():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), relu=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(16, 2)))
    with pytest.raises(ScorerError, match=r"'cnov\*'.*conv\.weight, fc\.weight"):
        score(net, (1, 3, 4, 4), sparsity={"cnov*": 0.5})
