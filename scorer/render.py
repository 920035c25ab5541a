"""Renderers of a scored model: one registry, :data:`RENDERERS` (format name -> text renderer), plus the
rich terminal table and a per-layer bar plot.

They read a :class:`ReportView`, plain data that ``scorer.report.Report.view`` builds; nothing here counts
and nothing here imports the report (the dependency is one-way: report -> render). A new output format is
one function ``(view, options) -> str`` and one entry in :data:`RENDERERS`; the CLI's ``--format`` choices
are its keys.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scorer.errors import ScorerError
from scorer.formatting import (  # noqa: F401 - fmt_score, settings_line, totals_rows: the API of this module
    fmt_number,
    fmt_score,
    output_width,
    settings_line,
    totals_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from rich.console import Console


@dataclass(frozen=True)
class ReportView:
    """What a renderer reads: the report as plain data, rows already grouped at ``depth``. ``layers`` and
    ``rows`` may be given as functions returning the frame: each is called once, when first read."""

    layers: pd.DataFrame  #: one row per op
    rows: pd.DataFrame  #: the rows shown: ``layers`` (depth None) or the groups at ``depth``
    depth: int | None
    totals: dict[str, float]  #: in display order
    track: str
    rules: str
    capture: str
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unknown: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)  #: parameters no op stores, with the reason
    #: the rows of ``layers`` as dicts when the report holds them so (``Report.records``): read without pandas
    records: list[dict] | None = None


def _lazy_frame(name: str) -> property:
    """A ReportView field that may be given as a function: called on first read, its frame kept."""

    def get(view: ReportView) -> pd.DataFrame:
        value = view.__dict__[name]
        if callable(value):
            value = view.__dict__[name] = value()
        return value

    def set_(view: ReportView, value: Any) -> None:
        view.__dict__[name] = value

    return property(get, set_)


# After the dataclass is made: its __init__ assigns these through the properties.
ReportView.layers = _lazy_frame("layers")  # type: ignore[assignment]
ReportView.rows = _lazy_frame("rows")  # type: ignore[assignment]


@dataclass(frozen=True)
class RenderOptions:
    """Options a renderer may use: ``show_free``, ``title``, ``per_op`` and ``width`` (table), ``indent``
    (json)."""

    show_free: bool = False
    title: str | None = None
    indent: int | None = 2
    per_op: bool = False  #: table: the per-op table after the module tree
    width: int | None = None  #: table: columns to fit (None: ``scorer.formatting.output_width()``)


#: A renderer: the whole output of one format as text.
Renderer = Callable[[ReportView, RenderOptions], str]

#: Columns shown per op (depth None) and per group (depth N); optional ones appear only when used.
#: ``act_bits_out``: activation bits the op (group) writes; ``act_bits_live``: activation bits live at its step
#: (the group's max): scorer.memory.
OP_COLUMNS = ["name", "module", "kind", "weight_numel", "nonzeros", "sparsity", "param_bits", "mults", "adds",
              "mul_bits", "add_bits", "ops", "act_bits_out", "act_bits_live"]
GROUP_COLUMNS = ["module", "kind", "weight_numel", "nonzeros", "sparsity", "param_bits", "mults", "adds", "ops",
                 "act_bits_out", "act_bits_live"]
#: Totals that are counts (bits, params, mults, adds, ops): written as integers when whole; the scores stay floats.
_COUNT_TOTALS = {"param_bits", "params", "mults", "adds", "ops", "mtas_bits", "peak_op_activation_bits"}
_RATIO_COLUMNS = {"fraction", "sparsity"}
_TEXT_COLUMNS = {"name", "module", "kind", "path", "note", "target"}


def _fmt_cell(column: str, value: Any) -> str:
    if column in _TEXT_COLUMNS:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    if column == "sparsity":
        return f"{float(value):.2%}"
    if column == "fraction":
        return f"{float(value):.4g}"
    return fmt_number(value)


def _columns(df: pd.DataFrame, depth: int | None) -> list[str]:
    cols = list(OP_COLUMNS if depth is None else GROUP_COLUMNS)
    if "path" in df.columns and df["path"].astype(str).str.len().gt(0).any():
        cols.insert(0, "path")
        if depth is None and "fraction" in df.columns:
            cols.insert(1, "fraction")
    if depth is None and "note" in df.columns and df["note"].astype(str).str.len().gt(0).any():
        cols.append("note")
    return [c for c in cols if c in df.columns]


def _row(rec: dict, cols: list[str]) -> list[str]:
    cells = []
    for c in cols:
        if c == "sparsity" and not float(rec.get("weight_numel") or 0):
            cells.append("")  # no weight tensor: sparsity does not apply
        else:
            cells.append(_fmt_cell(c, rec[c]))
    return cells


def _rows(df: pd.DataFrame, cols: list[str]) -> list[list[str]]:
    return [_row(rec, cols) for rec in df.to_dict(orient="records")]


def to_markdown(view: ReportView, options: RenderOptions = RenderOptions()) -> str:
    """Pipe-format markdown: the per-op (or per-group) table, a totals table, then the settings line and notes."""
    from tabulate import tabulate

    df = view.rows
    cols = _columns(df, view.depth)
    align = ["left" if c in _TEXT_COLUMNS else "right" for c in cols]
    table = tabulate(_rows(df, cols), headers=cols, tablefmt="pipe", colalign=align, disable_numparse=True)
    totals = tabulate(totals_rows(view), headers=["total", "value"], tablefmt="pipe",
                      colalign=["left", "right"], disable_numparse=True)
    parts = [table, "", totals, "", settings_line(view)]
    if view.unknown:
        parts += ["", f"**WARNING: {len(view.unknown)} op(s) without a counting rule were counted as zero:** "
                  + ", ".join(f"{u['target']} at {u['module'] or '<top>'}" for u in view.unknown)]
    if view.notes:
        parts += [""] + [f"- {n}" for n in view.notes]
    return "\n".join(parts) + "\n"


#: Version of the JSON document's layout (``schema`` key): 2 added ``schema``, ``version`` and shapes as lists.
SCHEMA = 2


def tool_version() -> str:
    """The version of micronet-score: ``scorer.__version__``, else the installed distribution's."""
    version = getattr(sys.modules.get("scorer"), "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("micronet-score")
    except PackageNotFoundError:
        return "unknown"


def integral(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its counts written as integers where they are whole (``10368``, not ``10368.0``): a float
    column of whole numbers becomes an integer column; in one with fractions (ops weighted by a path's share,
    half-precision ops) each whole value is an int and the others stay floats. Ratios (``fraction``,
    ``sparsity``) stay floats."""
    out = df.copy()
    for column in out.columns:
        values = out[column]
        if column in _RATIO_COLUMNS or values.dtype.kind != "f" or not len(values):
            continue
        whole = values.map(lambda v: math.isfinite(v) and float(v).is_integer())
        if whole.all():
            out[column] = values.astype("int64")
        elif whole.any():
            out[column] = pd_object([int(v) if w else float(v) for v, w in zip(values, whole, strict=True)],
                                    values.index)
    return out


def pd_object(items: list, index: object) -> object:
    """A pandas Series of Python objects (keeps ints and floats apart)."""
    import pandas as pd

    return pd.Series(items, index=index, dtype=object)


def shape_list(text: object) -> list[int]:
    """A row's shape text (``"1x3x32x32"``) as a list of ints (``""``: a scalar, ``[]``)."""
    return [int(d) for d in str(text).split("x")] if text not in (None, "") else []


def records(df: pd.DataFrame) -> list[dict]:
    """The rows as JSON records: whole-number columns as integers, ``in_shapes`` a list of shapes and
    ``out_shape`` a shape, each shape a list of ints."""
    out = integral(df).to_dict(orient="records")
    for rec in out:
        if "in_shapes" in rec:
            rec["in_shapes"] = [shape_list(s) for s in str(rec["in_shapes"]).split(";")] if rec["in_shapes"] else []
        if "out_shape" in rec:
            rec["out_shape"] = shape_list(rec["out_shape"])
    return out


def to_csv(view: ReportView, options: RenderOptions = RenderOptions()) -> str:
    """CSV of the rows (or groups), every column; whole-number columns as integers."""
    return integral(view.rows).to_csv(index=False)


def document(view: ReportView) -> dict:
    """The JSON document (docs/contracts.md, "JSON report"): ``schema``, ``version``, totals, every op row,
    track, rules, capture, settings, notes, unknown ops, excluded parameters, and the groups when the view has
    a depth."""
    doc = {
        "schema": SCHEMA,
        "version": tool_version(),
        "totals": {k: int(v) if k in _COUNT_TOTALS and float(v).is_integer() else v for k, v in view.totals.items()},
        "layers": records(view.layers),
        "track": view.track,
        "rules": view.rules,
        "capture": view.capture,
        "settings": view.settings,
        "notes": view.notes,
        "unknown_ops": view.unknown,
        "excluded_params": view.excluded,
    }
    if view.depth is not None:
        doc["groups"] = records(view.rows)
    return doc


def to_json(view: ReportView, options: RenderOptions = RenderOptions()) -> str:
    """JSON text of :func:`document` (values JSON cannot hold are written as strings)."""
    return json.dumps(document(view), indent=options.indent, default=str)


def to_table(view: ReportView, options: RenderOptions = RenderOptions()) -> str:
    """The summary (``scorer.summary``): totals and score, the module tree at the view's depth (default 2),
    and with ``options.per_op`` every op; ``options.width`` columns wide (default: ``output_width()``)."""
    from scorer.summary import render_summary

    return render_summary(view, options.width or output_width(), per_op=options.per_op,
                          show_free=options.show_free, title=options.title)


def _is_free(rec: dict) -> bool:
    note = str(rec.get("note") or "")
    return float(rec.get("param_bits") or 0) == 0 and float(rec.get("ops") or 0) == 0 and not note.startswith("UNKNOWN")


def print_rich(
    view: ReportView,
    show_free: bool = False,
    console: Console | None = None,
    title: str | None = None,
) -> None:
    """Print a rich table of the rows (or groups) and a totals panel.

    Rows that cost nothing (no parameters, no ops) are hidden unless ``show_free``; a footer says how many.
    """
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table

    if console is None:
        console = Console(width=output_width())
    df = view.rows
    cols = _columns(df, view.depth)
    records = df.to_dict(orient="records")
    hidden = 0
    if not show_free:
        kept = [r for r in records if not _is_free(r)]
        hidden = len(records) - len(kept)
        records = kept
    table = Table(title=title, show_lines=False, header_style="bold")
    for c in cols:
        if c in _TEXT_COLUMNS:
            table.add_column(c, justify="left", overflow="fold")
        else:
            table.add_column(c, justify="right", no_wrap=True)
    for rec in records:
        style = "bold red" if str(rec.get("note") or "").startswith("UNKNOWN") else None
        table.add_row(*_row(rec, cols), style=style)
    if hidden:
        table.caption = f"{hidden} free op(s) with zero cost hidden (--show-free shows them)"
    console.print(table)

    grid = Table.grid(padding=(0, 2))
    grid.add_column(justify="left", style="bold")
    grid.add_column(justify="right")
    for key, value in totals_rows(view):
        grid.add_row(key, value)
    console.print(Panel(Group(grid, "", settings_line(view)), title="totals", expand=False))
    if view.unknown:
        console.print(f"[bold red]WARNING: {len(view.unknown)} op(s) without a counting rule were counted "
                      "as zero[/bold red]")
    for note in view.notes:
        console.print(f"note: {note}", markup=False, highlight=False)


def require_matplotlib() -> Any:
    """Import matplotlib with a file-only backend; ScorerError telling how to install it otherwise."""
    try:
        import matplotlib
    except ImportError:
        raise ScorerError("plotting needs matplotlib, which is not installed: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_formats() -> list[str]:
    """File extensions matplotlib writes here without external tools (pgf needs a TeX installation)."""
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"})


def check_plot_path(path: str | Path) -> Path:
    """``path`` if a plot can be written there: not a directory, an extension matplotlib writes (png, pdf,
    svg, ...; see :func:`plot_formats`) and an existing, writable folder; ScorerError otherwise. Run it
    before scoring, so that a bad path fails before any output."""
    out = Path(path)
    if out.is_dir():
        raise ScorerError(f"plot path {out} is a directory; give a file name such as {out / 'layers.png'}")
    formats = plot_formats()
    ext = out.suffix[1:].lower()
    if ext not in formats:
        what = f"extension {out.suffix!r}" if ext else "no extension"
        raise ScorerError(f"plot path {out} has {what}; matplotlib writes {', '.join(formats)}")
    folder = out.parent
    if not folder.is_dir():
        raise ScorerError(f"plot path {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ScorerError(f"plot path {out} is not writable")
    return out


def plot(view: ReportView, path: str | Path) -> Path:
    """The report's figure (``scorer.plots``: storage and ops per module at the view's depth, default 2, and
    each top-level module's share), saved to ``path`` in the format its extension names (checked first by
    :func:`check_plot_path`)."""
    out = check_plot_path(path)
    plt = require_matplotlib()
    from scorer.plots import figure

    fig = figure(view, plt)
    try:
        fig.savefig(out, dpi=100, format=out.suffix[1:].lower())
    except OSError as exc:
        raise ScorerError(f"cannot write plot {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


#: Output formats: name -> renderer. The CLI's ``--format`` choices are these keys, in this order.
RENDERERS: dict[str, Renderer] = {
    "table": to_table,
    "markdown": to_markdown,
    "csv": to_csv,
    "json": to_json,
}


def render(fmt: str, view: ReportView, options: RenderOptions = RenderOptions()) -> str:
    """``view`` in format ``fmt`` (a key of :data:`RENDERERS`); ScorerError naming the formats otherwise."""
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise ScorerError(f"unknown output format {fmt!r}; use {', '.join(RENDERERS)}") from None
    return renderer(view, options)
