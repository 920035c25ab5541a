"""Leaderboard rows of issue 10 item 4: the published-arithmetic rows reproduce their published scores from the
components the teams printed (team_scores.md §1, row numbers in the comments), ``--track`` filters, and a row
that does not reproduce says why. Expected values are the spec's numbers and the arithmetic written here."""

from __future__ import annotations

import json
import math

import pytest

from scorer.cli import main
from scorer.leaderboard import ENTRIES, leaderboard
from scorer.published import PUBLISHED_ROWS, PublishedArithmetic, printed_digits, reproduces

# team_scores.md "Conventions": baselines CIFAR-100 36.5M / 10.49B, ImageNet 6.9M / 1170M
C_P, C_O, I_P, I_O = 36.5e6, 10.49e9, 6.9e6, 1170e6

#: key -> (the spec's arithmetic, the published score as printed)
EXPECTED = {
    # §1.1 CIFAR-100
    "riair_cifar": (0.001365 + 0.003010, "0.004375"),  # row 1: score-type 4 (row notes)
    "woody_prune4": (0.3510e6 / C_P + 61.25e6 / C_O, "0.0155"),  # row 8, self
    "woody_pruning3": (0.3671e6 / C_P + 61.25e6 / C_O, "0.0159"),  # row 9, self
    "woody_pruning5": (0.5668e6 / C_P + 116.19e6 / C_O, "0.0266"),  # row 11
    "hhi_cifar": (0.43e6 / C_P + 129.83e6 / C_O, "0.0242"),  # row 10
    "mbpm_plus": (0.0058 + 0.0326, "0.0384"),  # row 12
    "wavecomp_sub3": (0.32467e6 / C_P + 384.8e6 / C_O, "0.04558"),  # row 13
    "wavecomp_sub2": (0.3558e6 / C_P + 384.8e6 / C_O, "0.0464"),  # row 14
    "wavecomp_sub1": (0.3445e6 / C_P + 391.2e6 / C_O, "0.0467"),  # row 15
    "mbpm": (0.0058 + 0.0595, "0.0653"),  # row 17
    "qualcomm_nanowrn": (0.5470e6 / C_P + 0.5987e9 / C_O, "0.0721"),  # row 18 (LB)
    "autoprune_cifar": (0.0618 + 0.0500, "0.1118"),  # row 21
    "frenzy": (2.1075e6 / C_P + 828.928e6 / C_O, "0.1368"),  # row 22 (LB; "the arithmetic gives 0.136761")
    "proxyless_ttq": (1.01e6 / C_P + 1.213e9 / C_O, "0.1433"),  # row 23
    "micro_machines": (0.07153 + 0.09441, "0.1659"),  # row 24 (LB)
    "punynet": (0.624e6 / C_P + 1.82e9 / C_O, "0.1906"),  # row 25
    "id56": (1845672 / C_P + 1627530482 / C_O, "0.2057170217506562"),  # row 26, self
    "soft_binary_mask": (5174199 / C_P + 2548422969 / C_O, "0.38470"),  # row 27
    "shinichi": (9693108 / C_P + 2075976028 / C_O, "0.4635"),  # row 28 (LB)
    # §1.2 ImageNet
    "qualcomm_mixnet": (0.6465e6 / I_P + 0.2376e9 / I_O, "0.2968"),  # row 3
    "distillers": (611808 / I_P + 304833216 / I_O, "0.3492"),  # row 4, first self score
    "qualcomm_effnet": (0.6568e6 / I_P + 0.3320e9 / I_O, "0.3789"),  # row 5
    "expasoft_effnet": (0.88e6 / I_P + 315.9e6 / I_O, "0.3975"),  # row 6 (LB)
    "dqstarter_star": (1.55e6 / I_P + 440e6 * 0.75 / I_O, "0.5067"),  # row 8, §3 "460M × 0.75"
    "qualcomm_m0": (1025740.75 / I_P + 466856173.0 / I_O, "0.5477"),  # row 9
    "dqstarter": (1.96e6 / I_P + 345e6 / I_O, "0.5789"),  # row 11
    "hhi_imagenet": (1.33e6 / I_P + 455.19e6 / I_O, "0.5818"),  # row 12 (LB)
    "mbpm_imagenet": (0.1 + 0.52, "0.62"),  # row 13
    "autoprune_imagenet": (0.3097 + 0.5184, "0.8281"),  # row 16
    "dnw": (2558732 / 2 / I_P + 772846965 / I_O, "0.8460"),  # row 17, §3 discount params/2
}


@pytest.fixture(scope="module")
def rows():
    return leaderboard(keys=[r.key for r in PUBLISHED_ROWS]).set_index("key")


def _by_key(rows, key: str):
    return rows.loc[key]


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_published_arithmetic_reproduces(rows, key: str) -> None:
    expected, printed = EXPECTED[key]
    row = _by_key(rows, key)
    assert row.own_score == pytest.approx(expected, rel=1e-12)
    decimals = len(printed.split(".")[1])
    assert row.published == float(printed) and row.digits == decimals
    assert round(expected, decimals) == pytest.approx(float(printed), abs=1e-15) or \
        abs(expected - float(printed)) <= 1e-12 * float(printed)
    assert row.reproduces and row.cannot == ""
    assert row.model == "published arithmetic" and row.why


def test_riair_imagenet_does_not_reproduce_and_says_why(rows) -> None:
    # §1.2 row 1: param score 0.049394 + op score 0.075749 = 0.125143, self-reported 0.125144; LB 0.1295 (§4.2)
    row = _by_key(rows, "riair_imagenet")
    assert row.own_score == pytest.approx(0.049394 + 0.075749, rel=1e-12)
    assert not row.reproduces
    assert "0.125143" in row.cannot and "§4.2" in row.cannot


def test_woody_common_column_is_the_leaderboard_recount(rows) -> None:
    # §1.1 Woody notes: prune4 0.3510/36.5 + (19.75 + 76.7)/10490 = 0.018811 -> LB 0.0188; pruning3 -> 0.0193
    for key, params, lb in (("woody_prune4", 0.3510e6, 0.0188), ("woody_pruning3", 0.3671e6, 0.0193)):
        row = _by_key(rows, key)
        assert row.common_score == pytest.approx(params / C_P + (19.75e6 + 76.7e6) / C_O, rel=1e-12)
        assert round(row.common_score, 4) == lb == row.leaderboard


def test_every_non_reproducing_entry_explains_itself() -> None:
    for entry in ENTRIES:
        if isinstance(entry, PublishedArithmetic) and not reproduces(entry.score(), entry.published,
                                                                     printed_digits(entry.published, entry.digits)):
            assert "team_scores.md" in entry.cannot, entry.key
    assert all("team_scores.md" in e.source for e in ENTRIES)


def test_tracks_and_counts() -> None:
    tracks = {r.track for r in PUBLISHED_ROWS}
    assert tracks == {"cifar100", "imagenet"}
    assert len({r.key for r in ENTRIES}) == len(ENTRIES)  # keys unique


def test_printed_digits() -> None:
    assert printed_digits(0.005798) == 6 and printed_digits(0.8460, 4) == 4 and printed_digits(0.62) == 2
    assert reproduces(0.0057984, 0.005798, 6) and not reproduces(0.0057989, 0.005798, 6)


def test_cli_track_filter(capsys) -> None:
    keys = [r.key for r in PUBLISHED_ROWS]
    assert main(["leaderboard", "--track", "imagenet", "--only", *keys, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out and {r["track"] for r in out} == {"imagenet"}
    assert len(out) == sum(r.track == "imagenet" for r in PUBLISHED_ROWS)
    dnw = next(r for r in out if r["team"] == "DNW")
    assert dnw["common_score"] is None and dnw["reproduces"] is True  # NaN written as null
    assert main(["leaderboard", "--track", "cifar100", "--only", "dnw", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["leaderboard", "--track", "mnist"]) == 2


def test_markdown_renders_data_rows(capsys) -> None:
    assert main(["leaderboard", "--only", "dnw", "woody_prune4", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| DNW" in out and "published arithmetic" in out


def test_recount_only_under_the_rules_it_was_made_with() -> None:
    # the Woody LB recount is the official reading (adds at 32 bits): under another common rule set no number
    row = leaderboard(common_rules="macs", keys=["woody_prune4"]).iloc[0]
    assert row.common_rules == "macs" and math.isnan(row.common_score) and row.reproduces


def test_published_names_whose_number_it_is(rows) -> None:
    # §1.1 row 18: the report prints 0.0720, the LB 0.0721 (= the arithmetic 0.07206); row 21: self "0.2"
    assert rows.loc["qualcomm_nanowrn", "published_is"] == "LB" and rows.loc["frenzy", "published_is"] == "LB"
    assert rows.loc["dnw", "published_is"] == "self"
