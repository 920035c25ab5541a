"""``--list-rules`` and ``--list-references``: the built-in rule sets and reference models, without torch.

Rule sets are read from ``rules`` itself (it imports no torch); reference models from the static
:mod:`reference_models.catalog`, which a test keeps equal to the live registry. Descriptions are never cut:
the table format wraps them to the output width (the terminal's, ``COLUMNS`` when set, else 100), and
``--list-rules NAME`` prints one rule set's whole docstring.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import shutil
import textwrap

from scorer.errors import ScorerError

#: Output width when stdout is not a terminal and ``COLUMNS`` is not set.
DEFAULT_WIDTH = 100
_MIN_TEXT = 30  # narrower than this, a description goes on its own lines below its row


def output_width() -> int:
    """``COLUMNS`` when set, else the terminal's width, else :data:`DEFAULT_WIDTH` (piped output)."""
    return max(20, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line (whole: nothing is cut)."""
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def rule_rows() -> list[dict[str, str]]:
    """One row per built-in rule set: its name and the first paragraph of its class docstring."""
    from rules import available_rulesets, get_ruleset

    return [{"name": name, "description": first_paragraph(type(get_ruleset(name)).__doc__)}
            for name in available_rulesets()]


def rule_doc(name: str) -> str:
    """The whole docstring of built-in rule set ``name`` under a title line; ScorerError naming the known ones."""
    from rules import available_rulesets, get_ruleset, is_builtin

    if not is_builtin(name):
        raise ScorerError(f"unknown rule set {name!r}; built-in: {', '.join(available_rulesets())}")
    cls = type(get_ruleset(name))
    doc = inspect.cleandoc(cls.__doc__ or "(no description)")
    width = output_width()
    paragraphs = [textwrap.fill(" ".join(p.split()), width, break_on_hyphens=False) if not p.startswith((" ", "-", "*")) else p
                  for p in doc.split("\n\n")]
    return f"{name} ({cls.__module__}.{cls.__qualname__})\n\n" + "\n\n".join(paragraphs)


def reference_rows() -> list[dict[str, object]]:
    """One row per registered reference model (name, track, rules, bits, description), from the catalog."""
    from reference_models.catalog import entries

    return [{k: row[k] for k in ("name", "track", "rules", "bits", "description")} for row in entries()]


def render_rows(rows: list[dict], fmt: str, width: int | None = None) -> str:
    """``rows`` as ``json``, ``csv``, ``markdown`` or a plain ``table`` whose last column wraps to ``width``."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if not rows:
        return "nothing is registered"
    if fmt == "markdown":
        def cell(v: object) -> str:
            return str(v).replace("|", "\\|")

        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
        return "\n".join(lines)
    return _table(rows, columns, output_width() if width is None else width)


def _table(rows: list[dict], columns: list[str], width: int) -> str:
    """Left-aligned columns (numbers right-aligned); the last column wraps in the width that is left."""
    *fixed, text = columns
    sizes = [max(len(c), *(len(str(r[c])) for r in rows)) for c in fixed]
    indent = sum(sizes) + 2 * len(sizes)
    room = width - indent
    below = room < _MIN_TEXT  # too narrow: the description goes under its row, indented by 4
    wrap = max(20, width - 4) if below else room

    def head(values: list[object]) -> str:
        cells = [str(v).rjust(n) if isinstance(v, int) else str(v).ljust(n) for v, n in zip(values, sizes, strict=True)]
        return "  ".join(cells)

    lines = [head(fixed) + ("" if below else "  " + text), "  ".join("-" * n for n in sizes)
             + ("" if below else "  " + "-" * min(room, max(len(text), *(len(str(r[text])) for r in rows))))]
    for r in rows:
        parts = textwrap.wrap(str(r[text]), wrap, break_on_hyphens=False) or [""]
        if below:
            lines.append(head([r[c] for c in fixed]).rstrip())
            lines.extend("    " + p for p in parts)
        else:
            lines.append(head([r[c] for c in fixed]) + "  " + parts[0])
            lines.extend(" " * indent + p for p in parts[1:])
    return "\n".join(line.rstrip() for line in lines)
