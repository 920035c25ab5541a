"""The default terminal output (issue 11 item 1): a summary that fits its width.

Golden files (tests/data/golden/summary_osi_ai_<width>.txt) hold the 80/100/150-column renderings of
``reference:osi_ai``; ``UPDATE_GOLDEN=1`` rewrites them (look at the diff before committing). The properties
are checked on their own as well, so that a golden file written from a broken layout still fails: no line
wider than the width, no number cut, every top-level module named, the score and exact totals first, and the
default output of osi_ai at most 60 lines (issue 11, "Done when").
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import pytest

from reference_models.registry import get_reference
from scorer import score
from scorer.formatting import fmt_human, fmt_number, fmt_score, group_kind, output_width
from scorer.render import RenderOptions, render
from scorer.summary import ELLIPSIS, abbreviate, summary_lines

GOLDEN = Path(__file__).parent / "data" / "golden"
WIDTHS = (80, 100, 150)
TITLE = "reference model osi_ai"
#: A human-unit or exact number as the summary writes them: 950, 12.5, 238.5K, 88.61M, 7,631,744, 0.0%.
NUMBER = re.compile(r"^-?(\d{1,3}(,\d{3})*|\d+)(\.\d+)?[KMGT%]?$")


@pytest.fixture(scope="module")
def osi():
    info = get_reference("osi_ai")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return score(info.build(), input_shape=info.default_input_shape, rules=info.rules, bits=info.bits,
                     track=info.track, path_fractions=info.path_fractions)


def _render(report, width: int, **kw) -> str:
    return render("table", report.view(kw.pop("depth", None)), RenderOptions(width=width, title=TITLE, **kw))


def _top_level_modules(report) -> list[str]:
    return list(dict.fromkeys(m.split(".")[0] if m else "<top>" for m in report.layers["module"]))


@pytest.mark.parametrize("width", WIDTHS)
def test_golden(osi, width: int) -> None:
    text = _render(osi, width)
    path = GOLDEN / f"summary_osi_ai_{width}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"rendering changed; UPDATE_GOLDEN=1 rewrites {path.name} (check it)"


NUMERIC_HEADERS = {"params", "% params", "ops", "% ops", "mults", "adds", "sparsity", "act live", "fraction",
                   "weight_numel", "nonzeros", "param_bits", "mul_bits", "add_bits", "act_bits_out", "act_bits_live"}
FOOTERS = ("no cost", "Modules to depth", "Not shown", "Every op", "note:", "WARNING")


def _numeric_cells(lines: list[str]) -> list[str]:
    """Every cell of a right-aligned (number) column of every table in ``lines``: the token that ends where
    its column's header ends."""
    cells = []
    for i, line in enumerate(lines):
        if not line or set(line) != {"─"}:
            continue
        ends = [m.end() for m in re.finditer(r"\S+(?: \S+)*", lines[i - 1]) if m.group() in NUMERIC_HEADERS]
        for row in lines[i + 1:]:
            if not row or row.startswith(FOOTERS) or re.match(r"\d+ free op", row):
                break
            for end in ends:
                if end <= len(row) and row[end - 1] != " ":
                    assert end == len(row) or row[end] == " ", f"a cell runs past its column: {row!r}"
                    cells.append(row[:end].split()[-1])
    return cells


@pytest.mark.parametrize("width", (*WIDTHS, 60))
@pytest.mark.parametrize("per_op", (False, True))
def test_fits_and_cuts_no_number(osi, width: int, per_op: bool) -> None:
    lines = _render(osi, width, per_op=per_op).splitlines()
    assert max(map(len, lines)) <= width
    cells = _numeric_cells(lines)
    assert len(cells) > (len(osi.layers) if per_op else 20)
    bad = [c for c in cells if not NUMBER.match(c)]
    assert bad == []


@pytest.mark.parametrize("width", WIDTHS)
def test_score_and_exact_totals_first(osi, width: int) -> None:
    lines = _render(osi, width).splitlines()
    df = osi.layers
    param_bits, ops = df["param_bits"].sum(), df["ops"].sum()
    assert lines[0] == TITLE
    assert lines[1].startswith(f"score   {fmt_score(osi.totals['score'])} = ")
    head = "\n".join(lines[:8])
    # official_rules.md §1: params = storage bits / 32; the exact counts are written in full
    for number in (param_bits / 32, param_bits, ops, df["mults"].sum(), df["adds"].sum()):
        assert fmt_number(number) in head
    assert "rules: osi_ai2019" in head and "bits: 16" in head and "capture: fx" in head
    assert fmt_number(osi.totals["mtas_bits"]) in head  # activation memory (MTAS) is shown


@pytest.mark.parametrize("width", WIDTHS)
def test_every_top_level_module_is_named(osi, width: int) -> None:
    text = _render(osi, width)
    rows = {line.split()[0] for line in text.splitlines() if line and not line.startswith(" ")}
    hidden = text.split("--show-free shows them): ", 1)[1].split(".\n", 1)[0].split(", ")
    for name in _top_level_modules(osi):
        assert name in rows or name in hidden, name


def test_default_output_is_short(osi) -> None:
    assert len(_render(osi, 100).splitlines()) <= 60
    assert len(_render(osi, 100, per_op=True).splitlines()) > len(osi.layers) // 2


def test_tree_subtotals_and_shares(osi) -> None:
    """The _blocks row sums every op under _blocks; its shares are of the totals."""
    text = _render(osi, 150)
    df = osi.layers
    blocks = df[df["module"].str.startswith("_blocks")]
    row = next(line.split() for line in text.splitlines() if line.startswith("_blocks "))
    share_p = 100 * blocks["param_bits"].sum() / df["param_bits"].sum()
    share_o = 100 * blocks["ops"].sum() / df["ops"].sum()
    assert row[1:3] == ["conv", "+7"] and row[3:7] == [fmt_human(blocks["param_bits"].sum() / 32), f"{share_p:.1f}%",
                        fmt_human(blocks["ops"].sum()), f"{share_o:.1f}%"]
    # conv is the costliest of the 8 kinds under _blocks; children of _blocks are indented under it, one per block, in run order
    children = [line.split()[0] for line in text.splitlines() if re.match(r"^  \d+ ", line)]
    assert children == [str(i) for i in range(len(children))] and len(children) >= 10


def test_depth_controls_the_tree(osi) -> None:
    one = _render(osi, 100, depth=1)
    assert not any(re.match(r"^  \d+ ", line) for line in one.splitlines())
    three = _render(osi, 150, depth=3)
    assert any(line.startswith("    ") and line.split()[0].startswith("_") for line in three.splitlines())
    zero = _render(osi, 100, depth=0)
    assert "─" not in zero and zero.splitlines()[1].startswith("score")


def test_narrow_widths_drop_low_value_columns_first(osi) -> None:
    wide = _render(osi, 150).splitlines()
    narrow = _render(osi, 80).splitlines()
    header = next(line for line in wide if line.startswith("module")).split()
    assert header[:2] == ["module", "kind"] and {"mults", "adds", "sparsity"} <= set(header)
    narrow_header = next(line for line in narrow if line.startswith("module")).split()
    assert {"params", "ops", "%", "module"} <= set(narrow_header) and "mults" not in narrow_header
    assert any(line.startswith("Not shown at 80 columns: ") for line in narrow)


def test_abbreviate_from_the_middle() -> None:
    assert abbreviate("_blocks_12__project_conv", 12) == "_block" + ELLIPSIS + "_conv"  # 6 + 1 + 5
    assert len(abbreviate("_blocks_12__project_conv", 12)) == 12
    assert abbreviate("    layer.attention", 10) == "    lay" + ELLIPSIS + "on"  # the indent is kept
    assert abbreviate("short", 10) == "short"


def test_human_units() -> None:
    assert fmt_human(950) == "950"
    assert fmt_human(238_492) == "238.5K"  # 238,492 / 1e3 to four significant digits
    assert fmt_human(88_607_225) == "88.61M"
    assert fmt_human(10.49e9) == "10.49G"
    assert fmt_human(999_999) == "1.000M"
    assert fmt_human(0.5625) == "0.5625"


def test_group_kind_is_the_costliest_kind_and_a_count() -> None:
    assert group_kind({"conv": (10.0, 2), "bn": (3.0, 2), "act:silu": (5.0, 2)}) == "conv +2"
    assert group_kind({"add": (0.0, 1)}) == "add"
    assert group_kind({"free": (0.0, 3), "view": (0.0, 1)}) == "free +1"


def test_grouped_rows_do_not_join_every_kind(osi) -> None:
    groups = osi.by_depth(1).set_index("module")
    assert "," not in "".join(groups["kind"])
    assert groups.loc["_blocks", "kind"].startswith("conv +")


def test_width_follows_columns_then_terminal_then_100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_width(io.StringIO()) == 100

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback: os.terminal_size((123, 40)))
    assert output_width(Tty()) == 123
    monkeypatch.setenv("COLUMNS", "77")
    assert output_width(io.StringIO()) == output_width(Tty()) == 77


def test_cli_piped_output_is_100_columns(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from scorer.cli import main

    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["reference:osi_ai"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100 and len(lines) <= 60
    assert lines[0].startswith("reference model osi_ai") and any(line.startswith("score ") for line in lines[:3])
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["reference:osi_ai", "--per-op"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80 and any(line.startswith("per op (") for line in lines)


def test_summary_lines_without_title(osi) -> None:
    lines = summary_lines(osi.view(), 100)
    assert lines[0].startswith("score ")
