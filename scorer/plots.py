"""The report's figure (``--plot``, ``Report.plot``): per-module bars of storage and ops at the report's
depth (default 2), and a second view, each top-level module's share of the storage and of the ops.

``figure(view, plt)`` draws on a matplotlib module the caller imported (``scorer.render.plot`` checks the
path, imports matplotlib and saves); nothing here counts: the bars are the module tree's subtotals
(``scorer.summary.module_tree``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scorer.formatting import fmt_human, fmt_number, fmt_score
from scorer.summary import DEFAULT_DEPTH, ModuleNode, module_tree

if TYPE_CHECKING:  # pragma: no cover
    from scorer.render import ReportView

#: Bars drawn at most; the smaller modules are summed into one "other" bar.
MAX_BARS = 30
#: Top-level modules named in the share view; the others are one "other" segment.
MAX_SHARES = 8
WIDTH_IN = 12.0


def leaves(root: ModuleNode) -> list[ModuleNode]:
    """The modules at the tree's last level (or shallower where a path ends), in run order."""
    out = []
    for child in root.children.values():
        out.extend(leaves(child) if child.children else [child])
    return out


def _top(nodes: list[ModuleNode], limit: int, key: Any) -> tuple[list[ModuleNode], list[ModuleNode]]:
    """The ``limit`` - 1 largest nodes by ``key`` in their order, and the rest (all of them if they fit)."""
    if len(nodes) <= limit:
        return nodes, []
    keep = {id(n) for n in sorted(nodes, key=key, reverse=True)[: limit - 1]}
    return [n for n in nodes if id(n) in keep], [n for n in nodes if id(n) not in keep]


def bars(view: ReportView) -> tuple[list[str], list[float], list[float]]:
    """Labels, parameters (32-bit units) and ops of the bars: the modules at the view's depth that cost
    something, at most :data:`MAX_BARS` (the rest as one "other (N modules)" bar)."""
    depth = view.depth if view.depth else DEFAULT_DEPTH
    nodes = [n for n in leaves(module_tree(view.layers, depth)) if not n.free]
    shown, rest = _top(nodes, MAX_BARS, lambda n: n.cost)
    labels = [n.name for n in shown]
    params = [n.param_bits / 32 for n in shown]
    ops = [n.ops for n in shown]
    if rest:
        labels.append(f"other ({len(rest)} modules)")
        params.append(sum(n.param_bits for n in rest) / 32)
        ops.append(sum(n.ops for n in rest))
    return labels, params, ops


def shares(view: ReportView) -> tuple[list[str], list[float], list[float]]:
    """Top-level modules with their % of the storage and of the ops (at most :data:`MAX_SHARES`, the rest
    as "other"); each list of shares adds up to 100 (or is all zero)."""
    root = module_tree(view.layers, 1)
    nodes = [n for n in root.children.values() if not n.free]
    shown, rest = _top(nodes, MAX_SHARES, lambda n: n.param_bits / max(root.param_bits, 1) + n.ops / max(root.ops, 1))
    groups = [(n.name, n.param_bits, n.ops) for n in shown]
    if rest:
        groups.append((f"other ({len(rest)})", sum(n.param_bits for n in rest), sum(n.ops for n in rest)))
    names = [g[0] for g in groups]
    storage = [100 * g[1] / root.param_bits if root.param_bits else 0.0 for g in groups]
    ops = [100 * g[2] / root.ops if root.ops else 0.0 for g in groups]
    return names, storage, ops


def _tick(value: float) -> str:
    """An axis tick in human units without trailing zeros: 0, 500, 10K, 2.5M."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def figure(view: ReportView, plt: Any) -> Any:
    """The figure: storage and ops bars per module (top), the share view (bottom)."""
    labels, params, ops = bars(view)
    names, storage, op_share = shares(view)
    n = max(len(labels), 1)
    bar_height = 0.32 * n + 1.0
    fig = plt.figure(figsize=(WIDTH_IN, bar_height + 2.6), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[bar_height, 1.3])
    ax_p = fig.add_subplot(grid[0, 0])
    ax_o = fig.add_subplot(grid[0, 1], sharey=ax_p)
    y = list(range(len(labels)))
    for ax, values, color, xlabel in (
        (ax_p, params, "tab:blue", "parameters (32-bit units: storage bits / 32)"),
        (ax_o, ops, "tab:orange", "ops (32-bit units)"),
    ):
        ax.barh(y, values, color=color)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        top = max(values, default=0) or 1
        ax.set_xlim(0, top * 1.18)
        for yi, v in zip(y, values, strict=True):
            if v:
                ax.text(v + top * 0.01, yi, fmt_human(v), va="center", fontsize=8)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: _tick(v)))
    ax_p.set_yticks(y)
    ax_p.set_yticklabels(labels, fontsize=9)
    ax_p.invert_yaxis()
    depth = view.depth if view.depth else DEFAULT_DEPTH
    ax_p.set_ylabel(f"module (depth {depth}, in run order)")
    ax_p.set_title("storage per module", fontsize=11)
    ax_o.set_title("ops per module", fontsize=11)
    ax_o.tick_params(axis="y", labelleft=False)

    ax_s = fig.add_subplot(grid[1, :])
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(names))]
    handles = []
    for row, values in ((0, storage), (1, op_share)):
        left = 0.0
        for name, value, color in zip(names, values, colors, strict=True):
            bar = ax_s.barh(row, value, left=left, color=color, edgecolor="white")
            if row == 0:
                handles.append(bar)
            if value >= 6:
                text = f"{name} {value:.0f}%" if value >= 4 + 1.2 * len(name) else f"{value:.0f}%"
                ax_s.text(left + value / 2, row, text, ha="center", va="center", fontsize=9, color="white")
            left += value
    ax_s.set_yticks([0, 1])
    ax_s.set_yticklabels(["storage", "ops"])
    ax_s.invert_yaxis()
    ax_s.set_xlim(0, 100)
    ax_s.set_xlabel("% of the total, by top-level module")
    ax_s.set_title("share of storage and ops", fontsize=11)
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize=9, frameon=False)
    t = view.totals
    fig.suptitle(f"{view.track} / {view.rules}: score {fmt_score(t['score'])}  "
                 f"(params {fmt_number(t['params'])}, ops {fmt_number(t['ops'])})", fontsize=12)
    return fig
