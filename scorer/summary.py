"""The terminal summary (the ``table`` format): totals and score first, then a per-module tree with subtotals
and shares of storage and ops, and the full per-op table on request (``per_op``).

Every line fits ``width`` (the terminal's, ``COLUMNS``, or 100 when piped: ``scorer.formatting.output_width``).
Numbers are never cut: text columns are abbreviated from the middle (names) or wrapped (notes), and when that
is not enough the columns of least value are dropped first (their names are listed under the table).
Reads a ``scorer.render.ReportView``; counts nothing.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scorer.formatting import fmt_human, fmt_number, fmt_score, fmt_share, group_kind, settings_parts

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from scorer.render import ReportView

#: Levels of the module tree when the report has no depth of its own.
DEFAULT_DEPTH = 2
#: Children shown under one module; the others are summed into one "... N more" row.
MAX_CHILDREN = 20
ELLIPSIS = "…"
GAP = 2  # spaces between columns


@dataclass
class Column:
    """One column of a width-fitted table."""

    header: str
    cells: list[str]
    priority: int = 0  #: 0: always shown; at narrow widths the highest priority is dropped first
    text: str = ""  #: "" a number (right-aligned, never cut); "abbrev" cut in the middle; "wrap" wrapped
    min_width: int = 10  #: a text column is not narrowed below this while columns can still be dropped

    def natural(self) -> int:
        return max([len(self.header), *map(len, self.cells)])


def abbreviate(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut from the middle (leading indentation kept)."""
    if len(text) <= width:
        return text
    body = text.lstrip(" ")
    indent = min(len(text) - len(body), max(0, width - 4))
    room = width - indent
    if room <= 1:
        return text[:width]
    head = room // 2
    tail = room - 1 - head
    return " " * indent + body[:head] + ELLIPSIS + (body[-tail:] if tail else "")


def _shrink(columns: list[Column], width: int, soft: bool) -> list[int] | None:
    """Column widths that fit ``width``, narrowing the widest text column first; None if they cannot."""
    widths = [c.natural() for c in columns]
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    floors = [(c.min_width if soft else 4) if c.text else w for c, w in zip(columns, widths, strict=True)]
    while excess > 0:
        candidates = [i for i, c in enumerate(columns) if c.text and widths[i] > floors[i]]
        if not candidates:
            return None
        i = max(candidates, key=lambda j: (columns[j].text == "wrap", widths[j]))  # wrapped text gives first
        widths[i] -= 1
        excess -= 1
    return widths


def fit_columns(columns: list[Column], width: int) -> tuple[list[Column], list[int]]:
    """The columns shown at ``width`` and their widths: text columns narrow to their ``min_width``, then the
    columns of highest ``priority`` drop, then text columns narrow further. Numbers keep their full width."""
    shown = [c for c in columns]
    while True:
        widths = _shrink(shown, width, soft=True)
        if widths is not None:
            return shown, widths
        droppable = [c for c in shown if c.priority > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda c: (c.priority, shown.index(c))))
    widths = _shrink(shown, width, soft=False)
    return shown, widths if widths is not None else [4 if c.text else c.natural() for c in shown]


def _cell_lines(column: Column, text: str, width: int) -> list[str]:
    if not column.text:
        return [text.rjust(width)]
    if column.text == "wrap" and len(text) > width:
        return [line.ljust(width) for line in textwrap.wrap(text, width, break_on_hyphens=False)] or [""]
    return [abbreviate(text, width).ljust(width)]


def header_rule(shown: list[Column], widths: list[int], width: int) -> list[str]:
    """The header line and the rule under it."""
    header = (" " * GAP).join(abbreviate(c.header, w).ljust(w) if c.text else c.header.rjust(w)
                              for c, w in zip(shown, widths, strict=True))
    return [header.rstrip(), "─" * min(width, sum(widths) + GAP * (len(widths) - 1))]


def row_lines(shown: list[Column], widths: list[int], row: int) -> list[str]:
    """The lines of row ``row`` (more than one where a wrapped cell needs them)."""
    cells = [_cell_lines(c, c.cells[row], w) for c, w in zip(shown, widths, strict=True)]
    lines = []
    for k in range(max(len(x) for x in cells)):
        parts = [x[k] if k < len(x) else " " * w for x, w in zip(cells, widths, strict=True)]
        lines.append((" " * GAP).join(parts).rstrip())
    return lines


def table_lines(columns: list[Column], width: int) -> tuple[list[str], list[str]]:
    """The lines of a table fitted to ``width`` (header, rule, rows) and the headers of dropped columns."""
    shown, widths = fit_columns(columns, width)
    dropped = [c.header for c in columns if c not in shown]
    lines = header_rule(shown, widths, width)
    for r in range(len(columns[0].cells) if columns else 0):
        lines += row_lines(shown, widths, r)
    return lines, dropped


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` wrapped at spaces to ``width`` (words and numbers are never split unless longer than a line)."""
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False) or [""]


def wrap_parts(parts: list[str], width: int, sep: str, indent: str = "") -> list[str]:
    """``parts`` joined by ``sep`` into lines of at most ``width``, breaking only between parts; a line that
    continues ends with the separator (a part longer than a line is wrapped on its own)."""
    mark = " " + sep.strip() if sep.strip() else ""
    lines: list[str] = []
    line = ""
    for i, part in enumerate(parts):
        candidate = part if not line else line + sep + part
        room = width - (len(mark) if i < len(parts) - 1 else 0)
        if len(candidate) <= room or not line:
            line = candidate
        else:
            lines.append(line + mark)
            line = indent + part
    if line:
        lines.append(line)
    out: list[str] = []
    for line in lines:
        out += wrap(line, width, indent) if len(line) > width else [line]
    return out


# --------------------------------------------------------------------------- the module tree


@dataclass
class ModuleNode:
    """A module of the tree with the subtotals of every op under it."""

    name: str  #: dotted path ("<top>": ops of the model's own forward)
    label: str  #: the last component
    level: int
    param_bits: float = 0.0
    ops: float = 0.0
    mults: float = 0.0
    adds: float = 0.0
    weight_numel: float = 0.0
    nonzeros: float = 0.0
    act_bits_live: float = 0.0
    unknown: int = 0
    kinds: dict[str, tuple[float, int]] = field(default_factory=dict)
    children: dict[str, ModuleNode] = field(default_factory=dict)

    def add(self, rec: dict) -> None:
        for key in ("param_bits", "ops", "mults", "adds", "weight_numel", "nonzeros"):
            setattr(self, key, getattr(self, key) + float(rec.get(key) or 0))
        self.act_bits_live = max(self.act_bits_live, float(rec.get("act_bits_live") or 0))
        if str(rec.get("note") or "").startswith("UNKNOWN"):
            self.unknown += 1
        cost, count = self.kinds.get(rec["kind"], (0.0, 0))
        self.kinds[rec["kind"]] = (cost + float(rec.get("ops") or 0) + float(rec.get("param_bits") or 0) / 32,
                                   count + 1)

    @property
    def free(self) -> bool:
        return self.param_bits == 0 and self.ops == 0 and not self.unknown

    @property
    def cost(self) -> float:
        return self.param_bits / 32 + self.ops


def module_tree(layers: pd.DataFrame | list[dict], depth: int) -> ModuleNode:
    """The tree of module paths down to ``depth`` levels, in the order the ops run; the root holds the totals.
    ``layers``: the report's frame, or its rows as dicts (``ReportView.records``; counts are read as floats)."""
    root = ModuleNode("", "", 0)
    if isinstance(layers, list):
        records = layers
    else:
        cols = [c for c in ("module", "kind", "note", "param_bits", "ops", "mults", "adds", "weight_numel",
                            "nonzeros", "act_bits_live") if c in layers.columns]
        records = layers[cols].to_dict(orient="records")
    for rec in records:
        module = str(rec.get("module") or "")
        parts = module.split(".") if module else ["<top>"]
        root.add(rec)
        node = root
        for level in range(1, min(depth, len(parts)) + 1):
            name = ".".join(parts[:level])
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = ModuleNode(name, parts[level - 1], level)
            child.add(rec)
            node = child
    return root


@dataclass
class _Row:
    node: ModuleNode
    label: str
    more: int = 0  #: > 0: the row sums this many modules not shown one by one


def _merge(nodes: list[ModuleNode], level: int) -> ModuleNode:
    total = ModuleNode("", "", level)
    for n in nodes:
        for key in ("param_bits", "ops", "mults", "adds", "weight_numel", "nonzeros", "unknown"):
            setattr(total, key, getattr(total, key) + getattr(n, key))
        total.act_bits_live = max(total.act_bits_live, n.act_bits_live)
        for kind, (cost, count) in n.kinds.items():
            c0, n0 = total.kinds.get(kind, (0.0, 0))
            total.kinds[kind] = (c0 + cost, n0 + count)
    return total


def tree_rows(root: ModuleNode, show_free: bool, max_children: int = MAX_CHILDREN) -> tuple[list[_Row], list[str], int]:
    """The rows of the tree, depth first; the names of the free top-level modules hidden, and the number of
    free deeper modules hidden (``show_free`` shows them)."""
    rows: list[_Row] = []
    hidden_top: list[str] = []
    hidden_deeper = 0

    def walk(node: ModuleNode) -> None:
        nonlocal hidden_deeper
        kids = list(node.children.values())
        if not show_free:
            free = [k for k in kids if k.free]
            if node is root:
                hidden_top.extend(k.name for k in free)
            else:
                hidden_deeper += len(free)
            kids = [k for k in kids if not k.free]
        rest: list[ModuleNode] = []
        if len(kids) > max_children:
            keep = {id(k) for k in sorted(kids, key=lambda k: -k.cost)[: max_children - 1]}
            rest = [k for k in kids if id(k) not in keep]
            kids = [k for k in kids if id(k) in keep]
        for kid in kids:
            rows.append(_Row(kid, "  " * (kid.level - 1) + kid.label))
            walk(kid)
        if rest:
            level = rest[0].level
            rows.append(_Row(_merge(rest, level), "  " * (level - 1) + f"{ELLIPSIS} {len(rest)} more", len(rest)))

    walk(root)
    return rows, hidden_top, hidden_deeper


def _sparsity(node: ModuleNode) -> str:
    return f"{1 - node.nonzeros / node.weight_numel:.1%}" if node.weight_numel else ""


def tree_columns(rows: list[_Row], root: ModuleNode) -> list[Column]:
    """The tree's columns: module, kind, params and ops with their shares, then mults, adds, sparsity and the
    activation bits live at the module's busiest step (dropped in that order of value at narrow widths)."""
    nodes = [r.node for r in rows]
    return [
        Column("module", [r.label for r in rows], 0, "abbrev", 16),
        Column("kind", [group_kind(n.kinds) for n in nodes], 3, "abbrev", 8),
        Column("params", [fmt_human(n.param_bits / 32) for n in nodes]),
        Column("% params", [fmt_share(n.param_bits, root.param_bits) for n in nodes]),
        Column("ops", [fmt_human(n.ops) for n in nodes]),
        Column("% ops", [fmt_share(n.ops, root.ops) for n in nodes]),
        Column("mults", [fmt_human(n.mults) for n in nodes], 5),
        Column("adds", [fmt_human(n.adds) for n in nodes], 5),
        Column("sparsity", [_sparsity(n) for n in nodes], 4),
        Column("act live", [fmt_human(n.act_bits_live) for n in nodes], 2),
    ]


# --------------------------------------------------------------------------- the per-op table

#: Per-op columns: (column, priority, text kind); the exact counts of the report's rows.
OP_TABLE: list[tuple[str, int, str]] = [
    ("path", 1, "abbrev"), ("fraction", 3, ""), ("name", 0, "abbrev"), ("module", 4, "abbrev"),
    ("kind", 1, "abbrev"), ("weight_numel", 8, ""), ("nonzeros", 9, ""), ("sparsity", 6, ""),
    ("param_bits", 0, ""), ("mults", 3, ""), ("adds", 3, ""), ("mul_bits", 7, ""), ("add_bits", 7, ""),
    ("ops", 0, ""), ("act_bits_out", 10, ""), ("act_bits_live", 5, ""), ("note", 2, "wrap"),
]


def _op_cell(column: str, rec: dict) -> str:
    value = rec.get(column)
    if column in ("path", "name", "module", "kind", "note"):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    if column == "sparsity":
        return f"{float(value):.2%}" if float(rec.get("weight_numel") or 0) else ""
    if column == "fraction":
        return f"{float(value):.4g}"
    return fmt_number(value)


def op_columns(layers: pd.DataFrame, show_free: bool) -> tuple[list[Column], int]:
    """The per-op table's columns (path and note only when used) and the number of free ops hidden."""
    records = layers.to_dict(orient="records")
    kept = records if show_free else [
        r for r in records
        if float(r.get("param_bits") or 0) or float(r.get("ops") or 0) or str(r.get("note") or "").startswith("UNKNOWN")
    ]
    columns = []
    for name, priority, text in OP_TABLE:
        if name not in layers.columns:
            continue
        if name in ("path", "fraction", "note") and not any(str(r.get(name if name != "fraction" else "path") or "")
                                                              for r in kept):
            continue
        columns.append(Column(name, [_op_cell(name, r) for r in kept], priority, text,
                              {"wrap": 20, "abbrev": 20}.get(text, 0) if name != "kind" else 10))
    return columns, len(records) - len(kept)


# --------------------------------------------------------------------------- the summary


def _exact(value: float) -> str:
    """The exact count, then its human form when that is shorter: ``238,492 (238.5K)``, ``20``."""
    exact, human = fmt_number(value), fmt_human(value)
    return exact if human == exact else f"{exact} ({human})"


def header_lines(view: ReportView, width: int) -> list[str]:
    """Score, params, ops and activation memory (exact, with human units), then the settings line."""
    from scorer.tracks import TRACKS

    t = view.totals
    track = TRACKS.get(view.track)
    base_p = f" / {fmt_human(track.baseline_params)}" if track else ""
    base_o = f" / {fmt_human(track.baseline_ops)}" if track else ""
    items = [
        ("score", f"{fmt_score(t['score'])} = {fmt_score(t['param_score'])} (params{base_p}) + "
                  f"{fmt_score(t['ops_score'])} (ops{base_o})"),
        ("params", f"{_exact(t['params'])} 32-bit parameters = {fmt_number(t['param_bits'])} bits of storage"),
        ("ops", f"{_exact(t['ops'])} 32-bit ops: mults {fmt_number(t['mults'])}, adds {fmt_number(t['adds'])}"),
    ]
    if "mtas_bits" in t:
        items.append(("memory", f"activations {_exact(t['mtas_bits'])} bits live at the peak step (MTAS); "
                                f"largest single op {fmt_number(t.get('peak_op_activation_bits', 0))} bits"))
    key_width = max(len(k) for k, _ in items) + 2
    lines = []
    for key, value in items:
        lines += wrap(key.ljust(key_width) + value, width, " " * key_width)
    lines += wrap_parts(settings_parts(view), width, " | ", "  ")
    return lines


def summary_lines(view: ReportView, width: int, depth: int | None = None, per_op: bool = False,
                  show_free: bool = False, title: str | None = None) -> list[str]:
    """The whole summary as lines no wider than ``width`` (a word longer than a line excepted)."""
    depth = view.depth if depth is None else depth
    depth = DEFAULT_DEPTH if depth is None else depth
    lines: list[str] = []
    if title:
        lines += wrap(title, width, "  ")
    lines += header_lines(view, width)
    if depth > 0:
        root = module_tree(view.layers if view.records is None else view.records, depth)
        rows, hidden_top, hidden_deeper = tree_rows(root, show_free)
        lines.append("")
        table, dropped = table_lines(tree_columns(rows, root), width)
        lines += table
        foot = []
        if hidden_top or hidden_deeper:
            what = ", ".join(hidden_top)
            if hidden_deeper:
                what += (" and " if what else "") + f"{hidden_deeper} module(s) below the top level"
            foot.append(f"no cost, not shown (--show-free shows them): {what}.")
        foot.append(f"Modules to depth {depth} (--depth N), in run order, each with the subtotal of every op "
                    "under it. params: 32-bit parameters (storage bits / 32); ops: 32-bit ops; % of the totals; "
                    "kind: the costliest kind, +N other kinds; act live: activation bits live at the module's "
                    "busiest step.")
        if dropped:
            foot.append(f"Not shown at {width} columns: {', '.join(dropped)}.")
        for text in foot:
            lines += wrap(text, width, "  ")
    if per_op:
        columns, hidden = op_columns(view.layers, show_free)
        lines += ["", f"per op ({len(columns[0].cells) if columns else 0} ops):"]
        table, dropped = table_lines(columns, width)
        lines += table
        foot = []
        if hidden:
            foot.append(f"{hidden} free op(s) with zero cost hidden (--show-free shows them).")
        if dropped:
            foot.append(f"Not shown at {width} columns: {', '.join(dropped)} (--format csv has every column).")
        for text in foot:
            lines += wrap(text, width, "  ")
    elif depth > 0:
        lines += wrap("Every op: --per-op; every column: --format csv or json.", width)
    if view.unknown:
        lines += [""] + wrap(f"WARNING: {len(view.unknown)} op(s) without a counting rule were counted as zero: "
                             + ", ".join(f"{u['target']} at {u['module'] or '<top>'}" for u in view.unknown),
                             width, "  ")
    for note in view.notes:
        lines += wrap(f"note: {note}", width, "  ")
    return lines


def render_summary(view: ReportView, width: int, **kwargs: Any) -> str:
    """:func:`summary_lines` as text ending in a newline."""
    return "\n".join(summary_lines(view, width, **kwargs)) + "\n"

