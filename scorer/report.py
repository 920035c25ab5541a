"""The Report: one row per op in a pandas DataFrame, totals, and the normalised score for a track.

pandas is imported when a frame is first needed: ``score()`` hands the rows over as dicts, and the default
summary and the totals read them without it (a CLI score does not pay for importing pandas).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rules.base import Cost
from rules.kinds import FREE_KINDS, is_unknown
from rules.records import Op
from scorer import render
from scorer.formatting import group_kind
from scorer.tracks import Track

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns every layer row has (a contract: other tools read them).
COLUMNS = [
    "name",
    "module",
    "kind",
    "target",
    "path",
    "fraction",
    "in_shapes",
    "out_shape",
    "weight_numel",
    "nonzeros",
    "sparsity",
    "param_bits",
    "mask_bits",
    "mults",
    "adds",
    "mul_bits",
    "add_bits",
    "exp_ops",
    "exp_bits",
    "ops",
    "note",
    "act_bits_out",
    "act_bits_op",
    "act_bits_live",
]
#: Activation-memory columns (scorer.memory): bits the op writes, its own working set, all live at its step.
MEMORY_COLUMNS = ["act_bits_out", "act_bits_op", "act_bits_live"]
TOTAL_KEYS = ["param_bits", "params", "mults", "adds", "ops", "param_score", "ops_score", "score", "mtas_bits",
              "peak_op_activation_bits"]


def row_of(op: Op, cost: Cost, fraction: float = 1.0, memory: dict | None = None) -> dict:
    """The report row for ``op`` costed as ``cost``; counts weighted by the share of examples running it.
    ``memory``: the op's activation-memory columns (``scorer.memory.activation_memory``; sizes, not weighted);
    zeros when not given."""
    numel = nnz = 0  # over the stored tensors, in order (as sum() adds them)
    for w in op.weights:
        if w.role in _STORED_ROLES:
            numel += w.numel
            nnz += w.nonzeros
    mults, adds = cost.mults * fraction, cost.adds * fraction
    mul_bits = op.mul_bits if cost.mul_bits is None else cost.mul_bits
    add_bits = op.add_bits if cost.add_bits is None else cost.add_bits
    row = {
        "name": op.name,
        "module": op.module,
        "kind": op.kind,
        "target": op.target,
        "path": op.path,
        "fraction": fraction,
        "in_shapes": ";".join(map(_shape_text, op.in_shapes)),
        "out_shape": _shape_text(op.out_shape),
        "weight_numel": numel,
        "nonzeros": nnz,
        "sparsity": (1.0 - nnz / numel) if numel else 0.0,
        "param_bits": cost.param_bits + cost.mask_bits,
        "mask_bits": cost.mask_bits,
        "mults": mults,
        "adds": adds,
        "mul_bits": mul_bits,
        "add_bits": add_bits,
        "exp_ops": cost.exps * fraction,  # shared-exponent ops (``RuleSet.exponent_ops``), at exp_bits
        "exp_bits": cost.exp_bits,
        "ops": mults * mul_bits / 32 + adds * add_bits / 32 + cost.exps * fraction * cost.exp_bits / 32,
        "note": cost.note,
        "act_bits_out": 0.0,  # MEMORY_COLUMNS
        "act_bits_op": 0.0,
        "act_bits_live": 0.0,
    }
    if memory:
        row.update(memory)
    return row


#: Roles whose tensors make a row's ``weight_numel`` and ``nonzeros``.
_STORED_ROLES = frozenset({"weight", "operand"})


def _shape_text(shape: tuple) -> str:
    """``(1, 3, 32, 32)`` as ``1x3x32x32``: remembered per shape (a model's ops share a few shapes, and
    formatting the numbers is the costliest part of a row)."""
    try:
        text = _SHAPE_TEXT.get(shape)
    except TypeError:  # not hashable (a list, a symbolic size)
        return "x".join(map(str, shape))
    if text is None:
        text = "x".join(map(str, shape))
        if len(_SHAPE_TEXT) >= 4096:
            _SHAPE_TEXT.clear()
        _SHAPE_TEXT[shape] = text
    return text


_SHAPE_TEXT: dict[tuple, str] = {}


def totals_of(param_bits: object, mults: object, adds: object, ops: object, track: Track) -> dict:
    """The score totals (TOTAL_KEYS but the activation memory) from summed parameter bits, mults, adds and 32-bit ops: params = bits / 32, and
    the score params / baseline params + ops / baseline ops (official_rules.md §1). Floats or arrays alike."""
    params = param_bits / 32  # type: ignore[operator]
    param_score = params / track.baseline_params
    ops_score = ops / track.baseline_ops  # type: ignore[operator]
    return {
        "param_bits": param_bits,
        "params": params,
        "mults": mults,
        "adds": adds,
        "ops": ops,
        "param_score": param_score,
        "ops_score": ops_score,
        "score": param_score + ops_score,
    }


def frame_of(rows: list[dict]) -> pd.DataFrame:
    """The rows as the ``layers`` DataFrame (columns COLUMNS, in that order)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=COLUMNS)


def _column(rows: list[dict], column: str) -> np.ndarray:
    """One column of ``rows`` with the dtype pandas gives it (int64 if all ints, float64 if numbers mixed), so
    that its sum is the frame's: a contiguous 1-d array summed by numpy, as ``Series.sum()`` does."""
    return np.asarray([r.get(column) for r in rows])


@dataclass
class Report:
    """A scored model: ``layers`` (one row per op: a DataFrame; given as a list of row dicts, the frame is built
    on first use) and ``totals`` (see TOTAL_KEYS)."""

    layers: pd.DataFrame
    track: Track
    rules: str
    capture: str
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unknown: list[dict] = field(default_factory=list)
    #: parameters no op stores, each ``{"name", "numel", "reason"}`` (every other parameter is stored once)
    excluded: list[dict] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, float]:
        """param_bits, params, mults, adds, ops, param_score, ops_score, score; then the activation memory
        (``scorer.memory``): ``mtas_bits`` (max over steps of the live activations) and
        ``peak_op_activation_bits`` (max over ops of one op's inputs + output), both in bits per example, max
        over every row (over every weighted path: not weighted)."""
        rows = self.__dict__.get("_rows")
        if rows is None:
            df = self.layers
            col: Any = df.__getitem__
        else:  # no frame yet: the same sums over the same dtypes (tests/test_report_lazy.py checks equality)
            df = rows
            col = functools.partial(_column, rows)
        totals = totals_of(float(col("param_bits").sum()), float(col("mults").sum()), float(col("adds").sum()),
                           float(col("ops").sum()), self.track)
        totals["mtas_bits"] = float(col("act_bits_live").max()) if len(df) else 0.0
        totals["peak_op_activation_bits"] = float(col("act_bits_op").max()) if len(df) else 0.0
        return totals

    def records(self) -> list[dict] | None:
        """The rows as ``score()`` made them (dicts, one per op), while no frame was built; else None."""
        return self.__dict__.get("_rows")

    def by_depth(self, depth: int | None) -> pd.DataFrame:
        """Rows grouped by the first ``depth`` components of the module path (None: one row per op): counts
        summed; ``kind`` the group's costliest kind with ``+N`` other kinds; of the activation memory, ``act_bits_out`` summed (what the group writes), ``act_bits_op`` and
        ``act_bits_live`` the max over its ops (the group's peak)."""
        if depth is None:
            return self.layers
        df = self.layers.copy()
        df["module"] = df["module"].map(lambda m: ".".join(m.split(".")[:depth]) if m else "<top>")
        agg = {c: "sum" for c in ("weight_numel", "nonzeros", "param_bits", "mask_bits", "mults", "adds", "ops")}
        agg.update({"act_bits_out": "sum", "act_bits_op": "max", "act_bits_live": "max"})
        out = df.groupby(["path", "module"], sort=False).agg(agg).reset_index()
        kinds: dict[tuple, dict[str, tuple[float, int]]] = {}
        cost = df["ops"].astype(float) + df["param_bits"].astype(float) / 32
        for key, kind, c in zip(zip(df["path"], df["module"], strict=True), df["kind"], cost, strict=True):
            group = kinds.setdefault(key, {})
            c0, n0 = group.get(kind, (0.0, 0))
            group[kind] = (c0 + c, n0 + 1)
        out.insert(2, "kind", [group_kind(kinds[key]) for key in zip(out["path"], out["module"], strict=True)])
        out["sparsity"] = [1 - n / w if w else 0.0 for n, w in zip(out["nonzeros"], out["weight_numel"], strict=True)]
        return out

    def coverage(self) -> pd.DataFrame:
        """Ops per module: ``counted`` (a rule gave them a cost), ``free`` (no arithmetic by rule: data movement,
        quantisers) and ``unsupported`` (no rule; zero only under ``allow_unknown``)."""
        import pandas as pd

        kinds = self.layers["kind"]
        status = kinds.map(lambda k: "unsupported" if is_unknown(k) else "free" if k in FREE_KINDS else "counted")
        table = pd.crosstab(self.layers["module"].replace("", "<top>"), status)
        return table.reindex(columns=["counted", "free", "unsupported"], fill_value=0)

    def view(self, depth: int | None = None) -> render.ReportView:
        """The report as the plain data renderers read (``scorer.render``), rows grouped at ``depth``."""
        totals = self.totals
        return render.ReportView(
            layers=lambda: self.layers,  # built when a renderer reads it (the summary reads ``records``)
            rows=lambda: self.by_depth(depth),
            records=self.records(),
            depth=depth,
            totals={k: totals[k] for k in TOTAL_KEYS},
            track=self.track.name,
            rules=self.rules,
            capture=self.capture,
            settings=self.settings,
            notes=self.notes,
            unknown=self.unknown,
            excluded=self.excluded,
        )

    # Renderers live in scorer.render (one registry, render.RENDERERS); these methods keep the Python API.
    def to_markdown(self, depth: int | None = None) -> str:
        """Markdown table of the rows (or groups) plus a totals table."""
        return render.render("markdown", self.view(depth))

    def to_csv(self, path: str | Path | None = None, depth: int | None = None) -> str:
        """CSV of the rows; written to ``path`` when given. Returns the text."""
        text = render.render("csv", self.view(depth))
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_dict(self) -> dict:
        """``{"totals": {...}, "layers": [rows], "track", "rules", "capture", "settings", "notes",
        "unknown_ops", "excluded_params"}``."""
        return render.document(self.view())

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of ``to_dict()``."""
        return render.render("json", self.view(), render.RenderOptions(indent=indent))

    def print(self, depth: int | None = None, per_op: bool = False) -> None:
        """Print the summary (``--format table``): totals and score, the module tree to ``depth`` levels
        (default 2), and every op with ``per_op``; as wide as the terminal (``COLUMNS``, else 100)."""
        print(render.render("table", self.view(depth), render.RenderOptions(per_op=per_op)), end="")

    def plot(self, path: str | Path, depth: int | None = None) -> Path:
        """Bar plots of params and ops per module at ``depth`` (default 2) and each top-level module's share,
        in the format the path's extension names (needs matplotlib; ``scorer.plots``)."""
        return render.plot(self.view(depth), path)


def _get_layers(self: Report) -> pd.DataFrame:
    if self.__dict__.get("_frame") is None:
        self.__dict__["_frame"] = frame_of(self.__dict__.pop("_rows"))
    return self.__dict__["_frame"]


def _set_layers(self: Report, value: pd.DataFrame | list[dict]) -> None:
    if isinstance(value, list):
        self.__dict__.update(_rows=value, _frame=None)
    else:
        self.__dict__.update(_rows=None, _frame=value)


# After the dataclass is made: its __init__ assigns ``layers`` through this property.
Report.layers = property(_get_layers, _set_layers, doc="One row per op (a pandas DataFrame, columns COLUMNS).")
