"""Pruning schedule parser."""

from __future__ import annotations

import pytest

from reference_models.compression.schedule import parse_schedule, parse_schedule_fractions


def test_osi_schedule_eleven_rounds_ending_at_exactly_64_percent() -> None:
    targets = parse_schedule("10%*5+2.5%*4+2%*2")
    # 5 rounds of 10 points, 4 of 2.5, 2 of 2: 50 + 10 + 4 = 64 points in 11 rounds
    assert len(targets) == 11
    assert targets[-1] == 0.64  # exact, not 0.6399999...
    assert targets[:5] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert targets[5:9] == [0.525, 0.55, 0.575, 0.6]
    assert targets[9:] == [0.62, 0.64]


def test_exact_fractions_and_single_terms() -> None:
    from fractions import Fraction

    assert parse_schedule_fractions("10%*5+2.5%*4+2%*2")[-1] == Fraction(16, 25)
    assert parse_schedule("30% + 20%") == [0.3, 0.5]
    assert parse_schedule("100%") == [1.0]


def test_linear_ramps() -> None:
    # KAIST: 50% in 4 rounds -> 12.5, 25, 37.5, 50
    assert parse_schedule("linear:0.5:4") == [0.125, 0.25, 0.375, 0.5]
    ramp = parse_schedule("linear:0.64:10")
    assert len(ramp) == 10 and ramp[0] == 0.064 and ramp[-1] == 0.64
    assert parse_schedule("linear:0.45:0.65:2") == [0.55, 0.65]


@pytest.mark.parametrize(
    "text",
    ["", "10", "10%*", "10%*0", "abc%", "10%+", "-5%", "60%*2", "50%+50.5%", "linear:1.5:3", "linear:0.5",
     "linear:0.5:0", "linear:0.5:x"],
)
def test_malformed_or_over_100_percent_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)
