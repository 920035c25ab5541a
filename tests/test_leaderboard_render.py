"""The leaderboard's terminal rendering (issue 11 item 4): rows fitted to the width, the reasons as a
wrapped list under each row, and sources cited with their public repository and path (the team_scores.md
section second). Rendered from a hand-made board: nothing is scored here."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from scorer.leaderboard import PUBLIC_SOURCES, _markdown, public_source, render_table

WHY = [
    "sparsity: the team counted {'*': 0.64, '_exit*': 0.5} (team mode); the common column uses the real "
    "per-layer masks",
    "add: +109,770 ops — Residual add (two same-shaped tensors) over the expanded channels of the block.",
]


@pytest.fixture()
def board() -> pd.DataFrame:
    row = {"team": "OSI AI", "track": "cifar100", "entry": "final (64% + EE 50%, exit 29.29%)",
           "model": "reference:osi_ai", "published": 0.005798, "leaderboard": 0.0058, "own_rules": "osi_ai2019",
           "own_score": 0.0057986, "own_vs_published": 0.0000006, "common_rules": "micronet2019",
           "common_score": 0.0062671, "common_vs_own": 0.0004685, "why": WHY, "source": "team_scores.md §2.1.2",
           "reproduces": True, "cannot": ""}
    other = dict(row, team="Unlisted Team", entry="e", why=[], source="team_scores.md §9", reproduces=False,
                 cannot="organisers' recount not published", common_score=float("nan"))
    return pd.DataFrame([row, other])


@pytest.mark.parametrize("width", (80, 100, 150))
def test_fits_with_reasons_as_a_list(board: pd.DataFrame, width: int) -> None:
    text = render_table(board, "micronet2019", 16, width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width
    # every score in full: published, own and common
    for score in ("0.005798", "0.005799", "0.006267"):
        assert re.search(rf"(^| ){score}( |$)", text, re.M), score
    # each reason is one bullet whose wrapped lines, joined, give the reason back word for word
    bullets = re.findall(r"^    - (.*(?:\n      \S.*)*)", text, re.M)
    assert [" ".join(b.split()) for b in bullets] == [" ".join(w.split()) for w in WHY]
    assert "why the scores differ:" in text


def test_sources_cite_the_public_repository_first(board: pd.DataFrame) -> None:
    text = " ".join(render_table(board, "micronet2019", 16, 100).split())
    assert "source: github.com/Lee-Gihun/MicroNet_OSI-AI: README.md §3" in text
    assert "(spec: team_scores.md §2.1.2)" in text
    assert "source: team_scores.md §9 (no public repository recorded)" in text
    markdown = _markdown(board)
    assert "Source: github.com/Lee-Gihun/MicroNet_OSI-AI" in markdown and "- add: +109,770 ops" in markdown


def test_public_source_matches_on_the_team_name() -> None:
    assert public_source("KAIST AI", "§1").startswith("github.com/Kthyeon/micronet_neurips_challenge: ")
    assert public_source("MIT-HAN-Lab", "§2.5").startswith("github.com/mit-han-lab/neurips-micronet")
    assert public_source("MSUNet-V3", "§1.1").startswith("github.com/MSU-MLSys-Lab/MSUNet")
    assert all(src.startswith("github.com/") for src in PUBLIC_SOURCES.values())


def test_narrow_width_drops_the_low_value_columns(board: pd.DataFrame) -> None:
    lines = render_table(board, "micronet2019", 16, 80).splitlines()
    header = next(line for line in lines if line.startswith("team"))
    assert "own-published" not in header and "micronet2019" in header and "published" in header
    assert any(line.startswith("Not shown at 80 columns:") for line in lines)


def test_a_row_that_does_not_reproduce_says_why(board: pd.DataFrame) -> None:
    text = render_table(board, "micronet2019", 16, 100)
    assert "does not reproduce the published score: organisers' recount not published" in text
    md = _markdown(board)
    assert "- does not reproduce: organisers' recount not published" in md
    assert "nan" not in md  # a missing common recount reads "-"
