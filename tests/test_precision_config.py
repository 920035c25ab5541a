"""Precision configs: a typo in a section or key, or a layer glob that matches no layer, is an error
(``allow_unmatched`` / ``--allow-unmatched`` turns the glob check into a loud warning)."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from scorer import score
from scorer.cli import main
from scorer.errors import ScorerError


def _net() -> nn.Module:
    return nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 3), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
                                     flat=nn.Flatten(), fc=nn.Linear(4, 10)))


SHAPE = (1, 3, 8, 8)


class _TwoHeads(nn.Module):
    """An early-exit model whose heads are each used by one path only."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head_exit = nn.Linear(4, 10)
        self.head_final = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_final(self.pool(self.stem(x)))

    def exit_paths(self) -> dict[str, nn.Module]:
        return {"exit": _Path(self, "head_exit"), "final": _Path(self, "head_final")}


class _Path(nn.Module):
    def __init__(self, net: _TwoHeads, head: str) -> None:
        super().__init__()
        self.stem, self.pool = net.stem, net.pool
        setattr(self, head, getattr(net, head))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head)(self.pool(self.stem(x)))


@pytest.mark.parametrize(
    "config, words",
    [
        ({"defualt": {"weight": 8}}, ["'defualt'", "default", "layers"]),
        ({"default": {"wieght": 8}}, ["'wieght'", "weight", "act", "acc"]),
        ({"layers": {"conv1": {"wieght": 8}}}, ["'wieght'", "conv1", "weight", "act", "acc"]),
        ({"layers": {"conv1": {"bits": 8}}}, ["'bits'", "weight"]),
        ({"default": 8}, ["default", "table"]),
        ({"layers": ["conv1"]}, ["layers", "table"]),
    ],
)
def test_unknown_sections_and_keys_are_errors(config, words):
    with pytest.raises(ScorerError) as exc:
        score(_net(), SHAPE, precision=config)
    message = str(exc.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "text, words",
    [
        ("[defualt]\nweight = 8\n", ["'defualt'"]),
        ("[default]\nwieght = 8\n", ["'wieght'"]),
        ('[layers."conv1"]\nwieght = 8\n', ["'wieght'", "conv1"]),
        ('[layers."convv*"]\nweight = 8\n', ["'convv*'", "conv1", "fc"]),
    ],
)
def test_toml_file_typos_are_errors(tmp_path, text, words):
    path = tmp_path / "bits.toml"
    path.write_text(text)
    with pytest.raises(ScorerError) as exc:
        score(_net(), SHAPE, precision=path)
    for word in words:
        assert word in str(exc.value)


def test_glob_matching_no_layer_names_the_glob_and_some_layers():
    config = {"layers": {"conv*": {"weight": 8}, "fcc": {"weight": 4}}}
    with pytest.raises(ScorerError) as exc:
        score(_net(), SHAPE, precision=config)
    message = str(exc.value)
    assert "'fcc'" in message and "'conv*'" not in message and "conv1" in message and "fc" in message
    assert "allow" in message and "\n" not in message


def test_allow_unmatched_warns_in_the_report_and_still_applies_the_rest():
    config = {"layers": {"conv*": {"weight": 8}, "fcc": {"weight": 4}}}
    report = score(_net(), SHAPE, precision=config, allow_unmatched=True)
    warnings = [n for n in report.notes if "'fcc'" in n]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING")
    rows = report.layers.set_index("name")
    assert rows.loc["conv1", "param_bits"] == 8 * 4 * 3 * 3 * 3 + 32 * 4  # the matched glob applies
    assert not any("conv*" in n for n in report.notes)


def test_a_glob_used_by_any_exit_path_is_matched():
    both = {"layers": {"head_exit": {"weight": 8}, "head_final": {"weight": 4}}}
    report = score(_TwoHeads(), SHAPE, precision=both, exit_fractions={"exit": 0.5, "final": 0.5})
    assert not report.notes or not any("WARNING" in n for n in report.notes)
    with pytest.raises(ScorerError, match="'head_none'"):
        score(_TwoHeads(), SHAPE, precision={"layers": {"head_none": {"weight": 8}}},
              exit_fractions={"exit": 0.5, "final": 0.5})


def test_rules_that_ignore_bits_do_not_check_globs():
    # macs ignores every width, so the config is not applied and its globs are not checked
    score(_net(), SHAPE, rules="macs", precision={"layers": {"nothing": {"weight": 8}}})


# --------------------------------------------------------------------------- CLI


def test_cli_unmatched_glob_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bits.toml"
    path.write_text('[layers."no_such_layer*"]\nweight = 8\n')
    assert main(["reference:kaist_v1", "--precision", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("micronet-score: error:")
    assert "'no_such_layer*'" in err and "--allow-unmatched" in err


def test_cli_typo_section_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bits.toml"
    path.write_text("[defualt]\nweight = 8\n")
    assert main(["reference:kaist_v1", "--precision", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "'defualt'" in err


def test_cli_allow_unmatched_warns_on_stderr_and_in_the_report(tmp_path, capsys):
    path = tmp_path / "bits.toml"
    path.write_text('[layers."no_such_layer*"]\nweight = 8\n')
    assert main(["reference:kaist_v1", "--precision", str(path), "--allow-unmatched", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if "no_such_layer*" in ln]
    assert len(lines) == 1 and lines[0].startswith("micronet-score: warning:")
    assert any("'no_such_layer*'" in n for n in json.loads(out)["notes"])
