"""The submission document (``--report FILE.md``): one markdown file an organiser can verify.

The challenge counts an entry only at or above its quality threshold and asks top entries to "thoroughly
document their calculation" (official_rules.md §1.1, §1.3). Sections, in order: the quality threshold result
(``scorer.evaluate``; "not evaluated" without data), the score and its formula, the per-module table
(``Report.by_depth``), the per-op table, the settings, the rule set (each class of its chain below
``rules.base.RuleSet``, with the docstring that cites its source and every formula or attribute it overrides),
and how to reproduce (tool, Python and torch versions, the command line, SHA-256 of the files it names).
"""

from __future__ import annotations

import hashlib
import inspect
import platform
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scorer.errors import ScorerError

if TYPE_CHECKING:  # pragma: no cover
    from scorer.evaluate import QualityResult
    from scorer.report import Report

#: Section headings, in order (tests and readers find the sections by them).
SECTIONS = ("Quality threshold", "Score", "Per-module table", "Per-op table", "Settings", "Rule set", "Reproduce")
PER_OP_COLUMNS = ["name", "module", "kind", "weight_numel", "nonzeros", "sparsity", "param_bits", "mults", "adds",
                  "mul_bits", "add_bits", "ops", "note"]
_TEXT = {"path", "name", "module", "kind", "note"}
_MAX_KINDS = 4


def tool_version() -> str:
    """``scorer.__version__``, else the installed distribution's version, else "unknown"."""
    import scorer

    version = getattr(scorer, "__version__", None)
    if version:
        return str(version)
    from importlib import metadata

    try:
        return metadata.version("micronet-score")
    except metadata.PackageNotFoundError:
        return "unknown"


def check_report_path(path: str | Path) -> Path:
    """``path`` if a report can be written there (not a folder, its folder exists); ScorerError otherwise."""
    out = Path(path)
    if out.is_dir():
        raise ScorerError(f"report path {out} is a directory; give a file name such as {out / 'submission.md'}")
    if not out.parent.is_dir():
        raise ScorerError(f"report path {out}: folder {out.parent} does not exist")
    return out


# --------------------------------------------------------------------------- tables


def _cell(column: str, value: Any) -> str:
    from scorer.render import fmt_number

    if column in _TEXT:
        text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
        return text.replace("|", "\\|")
    if column == "sparsity":
        return f"{float(value):.2%}"
    if column in ("share_storage", "share_ops"):
        return f"{float(value):.1%}"
    return fmt_number(value)


def _table(records: list[dict], columns: list[str]) -> str:
    from tabulate import tabulate

    rows = [[_cell(c, r.get(c)) for c in columns] for r in records]
    align = ["left" if c in _TEXT else "right" for c in columns]
    return tabulate(rows, headers=columns, tablefmt="pipe", colalign=align, disable_numparse=True)


def _kinds(joined: str) -> str:
    kinds = [k for k in str(joined).split(",") if k]
    if len(kinds) <= _MAX_KINDS:
        return ", ".join(kinds)
    return ", ".join(kinds[:_MAX_KINDS]) + f", +{len(kinds) - _MAX_KINDS} more"


def module_table(report: Report, depth: int) -> str:
    """Per-module rows at ``depth``: counts, and each module's share of the storage and of the ops."""
    groups = report.by_depth(depth)
    total_bits = float(groups["param_bits"].sum()) or 1.0
    total_ops = float(groups["ops"].sum()) or 1.0
    records = []
    for rec in groups.to_dict(orient="records"):
        rec["kind"] = _kinds(rec["kind"])
        rec["share_storage"] = float(rec["param_bits"]) / total_bits
        rec["share_ops"] = float(rec["ops"]) / total_ops
        records.append(rec)
    columns = ["module", "kind", "weight_numel", "nonzeros", "param_bits", "share_storage", "mults", "adds", "ops",
               "share_ops"]
    if groups["path"].astype(str).str.len().gt(0).any():
        columns.insert(0, "path")
    return _table(records, columns)


def op_table(report: Report) -> str:
    """One row per op (the report's layers), free ops included."""
    df = report.layers
    columns = [c for c in PER_OP_COLUMNS if c in df.columns]
    if "path" in df.columns and df["path"].astype(str).str.len().gt(0).any():
        columns = ["path", "fraction", *columns]
    return _table(df.to_dict(orient="records"), columns)


# --------------------------------------------------------------------------- sections


def _quality_section(quality: QualityResult | None) -> list[str]:
    if quality is None:
        return ["Not evaluated. Measure it with `micronet-score evaluate MODEL --data DATA` or add `--data DATA` "
                "to the scoring command (the challenge counts an entry only at or above the threshold, "
                "official_rules.md §1.1)."]
    first, *rest = quality.describe().splitlines()
    lines = [f"**{first}**", ""]
    lines += [f"- {line}" for line in rest]
    if quality.correct is not None:
        sign = "≥" if quality.qualifies else "<"
        lines.append(f"- exact integer comparison: {quality.correct:,} correct {sign} {quality.required:,} needed "
                     f"(the least n with n / {quality.total:,} at or above the threshold), no rounding")
    return lines


def _exact(value: float) -> str:
    """A count to six decimals with trailing zeros dropped (627.875, not the tables' 627.88)."""
    return f"{float(value):,.6f}".rstrip("0").rstrip(".")


def _score_section(report: Report) -> list[str]:
    from tabulate import tabulate

    t = report.totals
    keys = ["param_bits", "params", "mults", "adds", "ops", "param_score", "ops_score", "score"]
    rows = [(k, f"{t[k]:.10g}" if k.endswith("score") else _exact(t[k])) for k in keys]
    fmt_number, fmt_score = _exact, (lambda v: f"{v:.10g}")
    track = report.track
    formula = (f"score = params / {fmt_number(track.baseline_params)} + ops / {fmt_number(track.baseline_ops)} "
               f"= {fmt_number(t['params'])} / {fmt_number(track.baseline_params)} + {fmt_number(t['ops'])} / "
               f"{fmt_number(track.baseline_ops)} = **{fmt_score(t['score'])}** ({track.name} baselines, "
               "official_rules.md §1.2-§1.3; params = stored bits / 32, ops in 32-bit units"
               + (", per token" if track.per_token else ", per example") + ")")
    return [tabulate(rows, headers=["total", "value"], tablefmt="pipe", colalign=["left", "right"],
                     disable_numparse=True), "", formula]


def _settings_section(report: Report) -> list[str]:
    from scorer.render import fmt_number

    lines = [f"- track: {report.track.name}", f"- rules: {report.rules}", f"- capture: {report.capture}"]
    for key, value in (report.settings or {}).items():
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        lines.append(f"- {key}: {value}")
    if report.unknown:
        lines.append(f"- **WARNING: {len(report.unknown)} op(s) without a counting rule were counted as zero:** "
                     + ", ".join(f"{u.get('target')} at {u.get('module') or '<top>'}" for u in report.unknown))
    for ex in report.excluded:
        lines.append(f"- parameter not stored: {ex.get('name')} ({fmt_number(ex.get('numel'))} values): "
                     f"{ex.get('reason')}")
    lines += [f"- note: {n}" for n in report.notes]
    return lines


def _attribute_comment(cls: type, attr: str) -> str:
    """The ``#:`` comment lines just above ``attr = ...`` in ``cls``'s source, or its trailing comment."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return ""
    pattern = re.compile(rf"^\s+{re.escape(attr)}\s*[:=]")
    for i, line in enumerate(lines):
        if not pattern.match(line):
            continue
        above = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#:"):
            above.insert(0, lines[j].strip()[2:].strip())
            j -= 1
        if above:
            return " ".join(above)
        _, hash_, trailing = line.partition("  # ")
        return trailing.strip() if hash_ else ""
    return ""


def _first_paragraph(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _value(cls: type, attr: str, value: Any) -> str:
    if isinstance(value, dict):
        parent = next((getattr(b, attr) for b in cls.__mro__[1:] if attr in vars(b)), {})
        changed = {k: v for k, v in value.items() if parent.get(k) != v} if isinstance(parent, dict) else value
        shown = ", ".join(f"{k}: {v}" for k, v in list(changed.items())[:8])
        more = f", +{len(changed) - 8} more" if len(changed) > 8 else ""
        return f"table of {len(value)} entries; differing from the parent: {{{shown}{more}}}"
    return f"`{value!r}`"


def rule_set_lines(rules: str) -> list[str]:
    """The rule set's chain of classes below ``RuleSet``, each with its docstring and overrides."""
    from rules import get_ruleset
    from rules.base import RuleSet

    try:
        ruleset = get_ruleset(rules)
    except ValueError as exc:
        return [f"`{rules}`: cannot describe it ({exc})"]
    leaf = type(ruleset)
    lines = [f"`{rules}` ({leaf.__module__}.{leaf.__qualname__}): {ruleset.description or _first_paragraph(leaf)}",
             "", "Formulas not listed below are the base `rules.base.RuleSet`'s: the official `counting.py` "
             "formulas (official_rules.md §2.2). Each class overrides its parent's:"]
    for cls in leaf.__mro__:
        if cls is RuleSet or not (isinstance(cls, type) and issubclass(cls, RuleSet)):
            continue
        lines += ["", f"### {cls.__qualname__} (`{cls.__module__}`)", "", _first_paragraph(cls), ""]
        own = vars(cls)
        overrides = []
        for attr, value in own.items():
            if attr.startswith("cost_") and callable(value):
                overrides.append(f"- `{attr}`: {_first_paragraph(value) or '(no docstring)'}")
            elif (not attr.startswith("_") and attr not in ("name", "description") and not callable(value)
                  and not isinstance(value, (classmethod, staticmethod, property))):
                comment = _attribute_comment(cls, attr)
                overrides.append(f"- `{attr}` = {_value(cls, attr, value)}" + (f": {comment}" if comment else ""))
        lines += overrides or ["- (no formula or attribute of its own)"]
    return lines


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _named_files(argv: Sequence[str]) -> list[Path]:
    """Files the command line names: paths, the file of a ``file.py:name`` and a CIFAR folder's test/meta."""
    out: list[Path] = []
    for token in argv:
        if token.startswith("-"):
            continue
        candidates = [Path(token)]
        left, sep, _ = token.rpartition(":")
        if sep and left.endswith(".py"):
            candidates.append(Path(left))
        for cand in candidates:
            if cand.is_file():
                out.append(cand)
            elif cand.is_dir():
                for sub in (cand, cand / "cifar-100-python"):
                    out += [sub / name for name in ("test", "meta") if (sub / name).is_file()]
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _reproduce_section(argv: Sequence[str] | None) -> list[str]:
    import torch

    lines = [f"- tool: micronet-score {tool_version()} (Python {platform.python_version()}, torch "
             f"{torch.__version__})"]
    if argv is None:
        lines.append("- command: not recorded (built through the Python API)")
        return lines
    lines += ["- command:", "", "```bash", "micronet-score " + shlex.join(list(argv)), "```", ""]
    files = _named_files(argv)
    if files:
        lines.append("- files it names (SHA-256):")
        lines += [f"  - `{p}`: `{_sha256(p)}`" for p in files]
    return lines


# --------------------------------------------------------------------------- document


def submission_markdown(report: Report, *, quality: QualityResult | None = None, argv: Sequence[str] | None = None,
                        title: str | None = None, depth: int = 2) -> str:
    """The submission document for ``report`` (and the measured ``quality``; ``argv``: the command line after
    ``micronet-score``)."""
    if depth < 0:
        raise ScorerError(f"depth must be >= 0, got {depth}")
    parts = [f"# MicroNet Challenge submission: {title or 'model'}", ""]
    body = {
        "Quality threshold": _quality_section(quality),
        "Score": _score_section(report),
        f"Per-module table (depth {depth})": [
            f"Modules grouped by the first {depth} level(s) of their path; param_bits are stored bits, ops in "
            "32-bit units; shares of the totals.", "", module_table(report, depth)],
        "Per-op table": [f"{len(report.layers)} ops, free ones included.", "", op_table(report)],
        "Settings": _settings_section(report),
        "Rule set": rule_set_lines(report.rules),
        "Reproduce": _reproduce_section(argv),
    }
    for heading, lines in body.items():
        parts += [f"## {heading}", "", *lines, ""]
    return "\n".join(parts)


def write_submission(path: str | Path, report: Report, **kwargs: Any) -> Path:
    """Write :func:`submission_markdown` to ``path``; ScorerError when it cannot be written."""
    out = check_report_path(path)
    text = submission_markdown(report, **kwargs)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ScorerError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def score_loaded(loaded: Any, *, track: str, rules: str | None = None, bits: int | None = None,
                 exit_fractions: dict[str, float] | None = None) -> Report:
    """Score a ``scorer.load.LoadedModel`` with the defaults it carries (input, rules, bits, precision, exit
    fractions: measured ones win), as ``micronet-score MODEL`` does without options."""
    from scorer.api import score
    from scorer.inputs import shapes_of

    kwargs: dict[str, Any] = {}
    if loaded.example_inputs is not None:
        kwargs["example_inputs"] = loaded.example_inputs
    elif loaded.input_shape is not None and (loaded.track is None or loaded.track == track):
        kwargs["input_shape"] = shapes_of(loaded.input_shape)
        if loaded.input_dtype is not None:
            given = loaded.input_dtype
            kwargs["input_dtype"] = list(given) if isinstance(given, (list, tuple)) else [given]
    return score(loaded.model, rules=rules or loaded.rules or "micronet2019",
                 bits=bits if bits is not None else loaded.bits, track=track, precision=loaded.precision,
                 exit_fractions=exit_fractions or loaded.exit_fractions, **kwargs)
