"""Every registered reference model scores and renders cleanly (issue 3).

Each model of ``list_references()`` is built once (module-scoped fixture), captured with torch.fx and scored
under ``micronet2019`` with its registered track, bits and input shape; the report then renders as markdown,
CSV, JSON and a rich table. Nothing in that chain may raise a Python warning or meet an op without a
counting rule. The team models are also scored under their own registered rule sets.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass

import pytest
from rich.console import Console

from reference_models.registry import ReferenceInfo, get_reference, list_references
from scorer import score
from scorer.inputs import shapes_of
from scorer.render import RenderOptions, fmt_score, print_rich, render
from scorer.report import COLUMNS, TOTAL_KEYS, Report

NAMES = [info.name for info in list_references()]
JSON_KEYS = {"schema", "version", "totals", "layers", "track", "rules", "capture", "settings", "notes", "unknown_ops", "excluded_params"}


@dataclass
class Rendered:
    """A scored reference model, its renderings, and the warnings raised while producing them."""

    info: ReferenceInfo
    report: Report
    markdown: str
    markdown_grouped: str
    csv_text: str
    json_text: str
    rich_text: str
    caught: list[warnings.WarningMessage]
    summaries: list[str]  #: the default terminal output (with every op) at 80 and 150 columns


def render_all(info: ReferenceInfo) -> Rendered:
    """Build, score under micronet2019 and render ``info``'s model, recording every warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = info.build()
        report = score(model, input_shape=info.default_input_shape, input_dtype=info.default_input_dtype,
                       rules="micronet2019", bits=info.bits, track=info.track, path_fractions=info.path_fractions)
        markdown = report.to_markdown()
        grouped = report.to_markdown(depth=1)
        csv_text = report.to_csv()
        json_text = report.to_json()
        console = Console(record=True, width=200, file=io.StringIO())
        print_rich(report.view(), console=console)
        print_rich(report.view(depth=1), console=console)
        rich_text = console.export_text()
        summaries = [render("table", report.view(), RenderOptions(width=w, per_op=True)) for w in (80, 150)]
    return Rendered(info, report, markdown, grouped, csv_text, json_text, rich_text, list(caught), summaries)


@pytest.fixture(scope="module", params=NAMES)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """One scored and rendered reference model per registered name (built once)."""
    return render_all(get_reference(request.param))


def test_registry_is_not_empty() -> None:
    """The registry lists the baselines and the team models (their modules import)."""
    assert len(NAMES) >= 10
    assert {"osi_ai", "kaist_v1", "kaist_v2", "brain_densenet_bc196", "wrn28_10"} <= set(NAMES)


def test_no_warnings(rendered: Rendered) -> None:
    """Building, scoring and rendering raise no Python warning at all."""
    messages = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in rendered.caught]
    assert messages == []


def test_scores_with_fx_and_no_unknown_ops(rendered: Rendered) -> None:
    """Captured with torch.fx, every op has a rule, and the totals are finite and positive."""
    report, info = rendered.report, rendered.info
    assert report.capture == "fx"
    assert report.unknown == []
    assert not any(str(n).startswith("UNKNOWN") for n in report.layers["note"])
    assert report.rules == "micronet2019"
    assert report.track.name == info.track
    assert report.settings["bits"] == info.bits
    assert report.settings["input_shapes"] == [list(shape) for shape in shapes_of(info.default_input_shape)]
    totals = report.totals
    assert set(totals) == set(TOTAL_KEYS)
    assert all(math.isfinite(v) for v in totals.values())
    assert totals["params"] > 0 and totals["ops"] > 0 and totals["score"] > 0
    assert not any("WARNING" in n for n in report.notes)


def test_markdown(rendered: Rendered) -> None:
    """Markdown: a pipe table with one line per op, the totals table with the score, the settings line."""
    report, text = rendered.report, rendered.markdown
    lines = text.splitlines()
    assert lines[0].startswith("| name") or lines[0].startswith("| path")
    table = lines[: lines.index("")]
    assert len(table) == 2 + len(report.layers)
    cells = {tuple(c.strip() for c in line.strip("|").split("|")) for line in lines if line.startswith("|")}
    assert ("total", "value") in cells
    assert ("score", fmt_score(report.totals["score"])) in cells
    assert "rules: micronet2019" in text and f"track: {rendered.info.track}" in text and "capture: fx" in text
    grouped_header = rendered.markdown_grouped.splitlines()[0]
    assert grouped_header.startswith("| module") or grouped_header.startswith("| path")


def test_csv(rendered: Rendered) -> None:
    """CSV: the contract's columns, one record per op, numbers that add up to the totals."""
    rows = list(csv.DictReader(io.StringIO(rendered.csv_text)))
    report = rendered.report
    assert rows and list(rows[0]) == COLUMNS
    assert len(rows) == len(report.layers)
    assert sum(float(r["ops"]) for r in rows) == pytest.approx(report.totals["ops"], rel=1e-12)
    assert sum(float(r["param_bits"]) for r in rows) == pytest.approx(report.totals["param_bits"], rel=1e-12)


def test_json(rendered: Rendered) -> None:
    """JSON: json.loads works; top-level keys, totals keys, one layer record per op with the contract's
    columns, and the capture, rules and track."""
    data = json.loads(rendered.json_text)
    report = rendered.report
    assert set(data) == JSON_KEYS
    assert set(data["totals"]) == set(TOTAL_KEYS)
    assert data["totals"]["score"] == pytest.approx(report.totals["score"], rel=1e-12)
    assert len(data["layers"]) == len(report.layers)
    assert set(data["layers"][0]) == set(COLUMNS)
    assert (data["capture"], data["rules"], data["track"]) == ("fx", "micronet2019", rendered.info.track)
    assert data["unknown_ops"] == []


def test_rich_table(rendered: Rendered) -> None:
    """Rich: the per-op and per-module tables and the totals panel render to text with the score."""
    text = rendered.rich_text
    assert "totals" in text
    assert fmt_score(rendered.report.totals["score"]) in text
    assert "rules: micronet2019" in text
    assert "UNKNOWN" not in text and "WARNING" not in text


def test_summary_fits(rendered: Rendered) -> None:
    """The summary (score first, module tree, every op) fits 80 and 150 columns and names the score."""
    for width, text in zip((80, 150), rendered.summaries, strict=True):
        lines = text.splitlines()
        assert max(map(len, lines)) <= width
        assert any(line.startswith(f"score   {fmt_score(rendered.report.totals['score'])} = ") for line in lines[:3])


TEAM_RULES = sorted({info.name for info in list_references() if info.rules != "micronet2019"})


@pytest.mark.parametrize("name", TEAM_RULES)
def test_team_models_score_under_registered_rules(name: str) -> None:
    """Models registered with a team rule set also score under it (fx, no unknown op, no warning)."""
    info = get_reference(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = score(info.build(), input_shape=info.default_input_shape, input_dtype=info.default_input_dtype,
                       rules=info.rules, bits=info.bits, track=info.track, path_fractions=info.path_fractions)
        report.to_markdown()
    assert [str(w.message) for w in caught] == []
    assert report.capture == "fx" and report.unknown == [] and report.rules == info.rules
    assert report.totals["score"] > 0
