"""Pruning schedules: cumulative sparsity targets per pruning round.

Two grammars are accepted by :func:`parse_schedule`:

* ``P%*N + P%`` terms: each ``P%*N`` adds ``P`` percentage points ``N`` times, a bare ``P%`` adds it once.
  OSI AI's ``10%*5+2.5%*4+2%*2`` gives 11 rounds ending at exactly 0.64.
* ``linear:END:N`` (or ``linear:START:END:N``): ``N`` equal steps from ``START`` (default 0) to ``END``.
  KAIST's "50% in 4 rounds" is ``linear:0.5:4`` -> 0.125, 0.25, 0.375, 0.5.

Arithmetic is done with :class:`fractions.Fraction` parsed from the decimal text, so the final target is
the exact decimal written (0.64, not 0.6399999) before conversion to ``float``.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["parse_schedule", "parse_schedule_fractions"]

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_TERM = re.compile(rf"^({_NUMBER})%(?:\*(\d+))?$")


def _fraction(text: str, what: str, original: str) -> Fraction:
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"schedule {original!r}: {what} {text!r} is not a number") from None


def _rounds(text: str, original: str) -> int:
    text = text.strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"schedule {original!r}: round count {text!r} must be a positive integer")
    return int(text)


def _parse_linear(body: str, original: str) -> list[Fraction]:
    parts = body.split(":")
    if len(parts) == 2:
        start, end, n = Fraction(0), _fraction(parts[0], "end", original), _rounds(parts[1], original)
    elif len(parts) == 3:
        start = _fraction(parts[0], "start", original)
        end = _fraction(parts[1], "end", original)
        n = _rounds(parts[2], original)
    else:
        raise ValueError(f"schedule {original!r}: expected 'linear:END:N' or 'linear:START:END:N'")
    if not (0 <= start < end <= 1):
        raise ValueError(f"schedule {original!r}: need 0 <= start < end <= 1 (fractions, not percent)")
    return [start + (end - start) * Fraction(i, n) for i in range(1, n + 1)]


def _parse_terms(text: str, original: str) -> list[Fraction]:
    out: list[Fraction] = []
    total = Fraction(0)
    for raw in text.split("+"):
        term = raw.replace(" ", "")
        match = _TERM.match(term)
        if match is None:
            raise ValueError(
                f"schedule {original!r}: term {raw.strip()!r} is not 'P%' or 'P%*N' (e.g. '10%*5+2.5%*4')"
            )
        step = Fraction(match.group(1)) / 100
        if step <= 0:
            raise ValueError(f"schedule {original!r}: term {raw.strip()!r} adds no sparsity")
        n = int(match.group(2)) if match.group(2) is not None else 1
        if n < 1:
            raise ValueError(f"schedule {original!r}: term {raw.strip()!r} has zero rounds")
        for _ in range(n):
            total += step
            out.append(total)
    if total > 1:
        raise ValueError(f"schedule {original!r}: total {float(total * 100):g}% exceeds 100%")
    return out


def parse_schedule_fractions(text: str) -> list[Fraction]:
    """Parse a schedule into exact cumulative sparsity targets (``Fraction`` in (0, 1])."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"schedule {text!r}: empty or not a string")
    stripped = text.strip()
    if stripped.lower().startswith("linear:"):
        return _parse_linear(stripped[len("linear:"):], text)
    return _parse_terms(stripped, text)


def parse_schedule(text: str) -> list[float]:
    """Parse a pruning schedule into cumulative sparsity targets, one per pruning round.

    >>> parse_schedule("10%*5+2.5%*4+2%*2")[-1]
    0.64
    >>> parse_schedule("linear:0.5:4")
    [0.125, 0.25, 0.375, 0.5]
    """
    return [float(f) for f in parse_schedule_fractions(text)]
