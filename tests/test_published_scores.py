"""Published MicroNet 2019 scores (team_scores.md §1) follow from their published params and ops.

``tests/data/published_scores.csv`` holds every leaderboard entry of §1. Where a row publishes both params and
ops (or both normalised components), ``params/baseline + ops/baseline`` must reproduce the published self
score and/or the leaderboard value (column ``check``) to the precision each was printed with, widened only
by the rounding of the printed inputs (``inputs=rounded``). Row notes of §1 are encoded per row: Woody's LB
op count (``lb_ops``), OSI's components rounded first (``rounding=components``), truncated self scores.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "published_scores.csv"

# team_scores.md "Conventions" (normalisers): (params, ops) of each track's baseline.
BASELINES: dict[str, tuple[float, float]] = {
    "cifar100": (36.5e6, 10.49e9),
    "imagenet": (6.9e6, 1170e6),
    "wikitext103": (159e6, 318e6),
}
# Number of ranked rows in the §1.1 / §1.2 / §1.3 tables.
RANKS = {"cifar100": 29, "imagenet": 19, "wikitext103": 5}

_TERM = re.compile(r"^(?P<mant>\d+(?:\.(?P<dec>\d*))?)(?:e(?P<exp>[+-]?\d+))?(?:(?P<op>[*/])(?P<k>\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class Printed:
    """A printed number: its value and half its last printed unit (the rounding it may carry)."""

    value: float
    half_unit: float


def parse_printed(cell: str) -> Printed:
    """Parse ``'0.3510e6'``, ``'3.652e6/2'``, ``'301.4e6/2+288.3e6'``: value and rounding half-unit."""
    value = half = 0.0
    for term in cell.split("+"):
        m = _TERM.match(term.strip())
        if not m:
            raise ValueError(f"cannot parse printed number {cell!r}")
        scale = 10.0 ** int(m["exp"] or 0)
        v = float(m["mant"]) * scale
        h = 0.5 * 10.0 ** -len(m["dec"] or "") * scale
        if m["op"]:
            k = float(m["k"])
            v, h = (v * k, h * k) if m["op"] == "*" else (v / k, h / k)
        value += v
        half += h
    return Printed(value, half)


def decimals(text: str) -> int:
    """Number of printed decimals of a score."""
    return len(text.split(".")[1]) if "." in text else 0


def load_rows() -> list[dict[str, str]]:
    """The CSV rows (comment lines skipped)."""
    with open(DATA, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


ROWS = load_rows()


def _id(row: dict[str, str]) -> str:
    return f"{row['track']}-{row['rank']}-{row['team']}-{row['entry']}".replace(" ", "_")


def components(row: dict[str, str]) -> tuple[float, float, float]:
    """(param component, ops component, rounding tolerance from the printed inputs)."""
    base_p, base_o = BASELINES[row["track"]]
    exact = row["inputs"] == "exact"
    if row["params"] and row["ops"]:
        p, o = parse_printed(row["params"]), parse_printed(row["ops"])
        tol = 0.0 if exact else p.half_unit / base_p + o.half_unit / base_o
        return p.value / base_p, o.value / base_o, tol
    ps, os_ = parse_printed(row["param_score"]), parse_printed(row["ops_score"])
    return ps.value, os_.value, 0.0 if exact else ps.half_unit + os_.half_unit


def _checked(what: str) -> list[dict[str, str]]:
    return [r for r in ROWS if what in r["check"].split()]


def test_every_leaderboard_entry_present() -> None:
    """Every ranked row of §1.1–§1.3 is in the CSV (UCI-M and Rocker hold two LB values each)."""
    for track, n in RANKS.items():
        ranks = {int(r["rank"]) for r in ROWS if r["track"] == track}
        assert ranks == set(range(1, n + 1)), track
    assert len(ROWS) == 29 + 1 + 19 + 1 + 5
    assert all(r["leaderboard_score"] for r in ROWS)
    assert {r["track"] for r in ROWS} == set(BASELINES)


@pytest.mark.parametrize("row", [r for r in ROWS if r["check"]], ids=_id)
def test_checked_rows_have_both_components(row: dict[str, str]) -> None:
    """A checked row has params and ops, or both normalised components."""
    assert (row["params"] and row["ops"]) or (row["param_score"] and row["ops_score"])


@pytest.mark.parametrize("row", [r for r in ROWS if r["params"] and r["param_score"]], ids=_id)
def test_printed_components_match_params_and_ops(row: dict[str, str]) -> None:
    """Where both are printed, params/baseline and ops/baseline round to the printed components."""
    p, o, tol = components(row)
    for value, printed in ((p, row["param_score"]), (o, row["ops_score"])):
        assert abs(value - float(printed)) <= 0.5 * 10.0 ** -decimals(printed) + tol


@pytest.mark.parametrize("row", _checked("self"), ids=_id)
def test_self_score_reproduced(row: dict[str, str]) -> None:
    """The team's published score follows from its published params and ops."""
    p, o, tol = components(row)
    pub, d = float(row["published_score"]), decimals(row["published_score"])
    unit = 10.0**-d
    score = p + o
    slack = tol + 4 * math.ulp(score)
    if row["rounding"] == "components":
        assert round(p, d) + round(o, d) == pytest.approx(pub, abs=1e-12)
    elif row["rounding"] == "truncate":
        assert pub - slack <= score < pub + unit + slack
    else:
        assert row["rounding"] == "half"
        assert abs(score - pub) <= 0.5 * unit + slack


@pytest.mark.parametrize("row", _checked("lb"), ids=_id)
def test_leaderboard_score_reproduced(row: dict[str, str]) -> None:
    """The leaderboard value (4 decimals) follows from the published numbers (Woody: the LB op count)."""
    p, o, tol = components(row)
    if row["lb_ops"]:
        lb_ops = parse_printed(row["lb_ops"])
        o = lb_ops.value / BASELINES[row["track"]][1]
        tol = parse_printed(row["params"]).half_unit / BASELINES[row["track"]][0] + lb_ops.half_unit / BASELINES[
            row["track"]][1]
    lb, d = float(row["leaderboard_score"]), decimals(row["leaderboard_score"])
    assert abs(p + o - lb) <= 0.5 * 10.0**-d + tol + 4 * math.ulp(lb)


def test_woody_self_ops_do_not_give_the_leaderboard() -> None:
    """§1.1 note: Woody's self-reported ops give 0.0155 / 0.0159, not the LB 0.0188 / 0.0193."""
    for row in (r for r in ROWS if r["team"] == "Woody" and r["lb_ops"]):
        p, o, tol = components(row)
        assert abs(p + o - float(row["leaderboard_score"])) > 1e-3


def test_parse_printed() -> None:
    """Printed-number parsing: value and half of the last printed unit."""
    assert parse_printed("0.3510e6") == Printed(351000.0, 50.0)
    x = parse_printed("301.4e6/2+288.3e6")
    assert x.value == pytest.approx(439.0e6) and x.half_unit == pytest.approx(0.025e6 + 0.05e6)
    assert parse_printed("2558732/2") == Printed(1279366.0, 0.25)
    with pytest.raises(ValueError):
        parse_printed("1.2M")
