"""Text formatting shared by the renderers (``scorer.render``, ``scorer.summary``): exact counts, scores,
human units, the settings line, and the width text output is laid out for."""

from __future__ import annotations

import math
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from scorer.render import ReportView

#: Width of text output that goes to no terminal (a pipe, a file) when ``COLUMNS`` is not set.
PIPE_WIDTH = 100
_SCORE_KEYS = {"param_score", "ops_score", "score"}


def output_width(stream: TextIO | None = None) -> int:
    """Columns to lay text out for: ``COLUMNS`` when set to a positive integer, else the terminal's width
    when ``stream`` (default stdout) is a terminal, else :data:`PIPE_WIDTH`."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns
    except (AttributeError, ValueError, OSError):
        pass
    return PIPE_WIDTH


def _finite(value: Any) -> tuple[float | None, str]:
    """``(v, "")`` for a finite number, else ``(None, text)``: a non-number's own text, ``""`` for NaN,
    ``inf``/``-inf``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None, str(value)
    if math.isnan(v):
        return None, ""
    if math.isinf(v):
        return None, "inf" if v > 0 else "-inf"
    return v, ""


def fmt_number(value: Any) -> str:
    """A count with thousands separators: integers exactly, fractions to two decimals."""
    if value is None:
        return ""
    v, text = _finite(value)
    if v is None:
        return text
    if v.is_integer():
        return f"{int(v):,}"
    return f"{v:,.2f}"


def fmt_score(value: float) -> str:
    """A normalised score with six significant digits."""
    return f"{float(value):.6g}"


def fmt_human(value: Any) -> str:
    """A count in human units, four significant digits: ``950``, ``12.5``, ``238.5K``, ``88.61M``, ``1.2G``."""
    v, text = _finite(value)
    if v is None:
        return text
    size = abs(v)
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if size >= scale * 0.99995:
            x = v / scale
            digits = max(0, 3 - int(math.floor(math.log10(max(abs(x), 1.0)))))
            return f"{x:.{digits}f}{unit}"
    if v.is_integer():
        return str(int(v))
    return f"{v:.4g}"


def fmt_share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` with one decimal (``-`` when ``whole`` is zero)."""
    if not whole:
        return "-"
    return f"{100.0 * float(part) / float(whole):.1f}%"


def totals_rows(view: ReportView) -> list[tuple[str, str]]:
    """(key, formatted value) for every total, in the view's order."""
    return [(k, fmt_score(v) if k in _SCORE_KEYS else fmt_number(v)) for k, v in view.totals.items()]


def settings_parts(view: ReportView) -> list[str]:
    """The parts of :func:`settings_line`."""
    parts = [f"track: {view.track}", f"rules: {view.rules}", f"capture: {view.capture}"]
    s = view.settings or {}
    if s.get("bits") is not None:
        parts.append(f"bits: {s['bits']}")
    for key in ("mul_bits_override", "add_bits_override"):
        if s.get(key) is not None:
            parts.append(f"{key.replace('_override', '')}: {s[key]}")
    if s.get("sparsity") not in (None, "measured"):
        parts.append(f"sparsity: {s['sparsity']}")
    if s.get("mask_block"):
        parts.append("mask block: " + "x".join(map(str, s["mask_block"])))
    shapes = s.get("input_shapes")
    if shapes:
        parts.append("input: " + ", ".join("x".join(map(str, sh)) for sh in shapes))
    dtypes = [d for d in s.get("input_dtypes") or [] if d not in (None, "float32")]
    if dtypes:
        parts.append("dtype: " + ", ".join(str(d) for d in s["input_dtypes"]))
    if s.get("tokens") is not None:
        parts.append(f"tokens: {s['tokens']} (counts per token)")
    elif s.get("batch") is not None:
        parts.append(f"batch: {s['batch']} (counts per example)")
    fractions = s.get("path_fractions") or s.get("exit_fractions")
    if fractions:
        parts.append("path fractions: " + ", ".join(f"{k}={v:g}" for k, v in fractions.items()))
    return parts


def settings_line(view: ReportView) -> str:
    """One line: track, rules, capture method, the precision settings that differ from 32-bit, the input
    shapes and the batch the counts were divided by."""
    return " | ".join(settings_parts(view))


def group_kind(kinds: dict[str, tuple[float, int]]) -> str:
    """The kind cell of a group of ops: its costliest kind (``kinds``: kind -> (cost, op count); ties go to
    the most ops), with ``+N`` for the N other kinds in the group."""
    if not kinds:
        return ""
    top = max(kinds, key=lambda k: (kinds[k][0], kinds[k][1]))
    return top if len(kinds) == 1 else f"{top} +{len(kinds) - 1}"
