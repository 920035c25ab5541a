"""Apply a rule set to annotated ops: one row per op, unknown ops collected."""

from __future__ import annotations

from collections import defaultdict

from rules.base import Cost, RuleContext, RuleSet
from rules.kinds import is_unknown
from rules.records import Op


def build_context(ops: list[Op], mask_block: tuple[int, int] | None) -> RuleContext:
    """The RuleContext for ``ops``: lookup by name and the consumers of every op's output."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for op in ops:
        for p in op.inputs:
            consumers[p].append(op.name)
    return RuleContext(ops=ops, by_name={o.name: o for o in ops}, consumers=dict(consumers), mask_block=mask_block)


def cost_ops(ops: list[Op], ruleset: RuleSet, ctx: RuleContext) -> tuple[list[tuple[Op, Cost]], list[Op]]:
    """(op, cost) pairs in order, and the ops for which the rule set has no rule (costed as zero)."""
    out: list[tuple[Op, Cost]] = []
    unknown: list[Op] = []
    for op in ops:
        cost = None if is_unknown(op.kind) else ruleset.cost(op, ctx)
        if cost is None:  # no rule: arithmetic zero (an error unless allowed), its parameters still stored
            unknown.append(op)
            stored = sum(ruleset.dense_storage(w) for w in op.weights)
            cost = Cost(param_bits=stored, note="UNKNOWN: arithmetic counted as zero")
        out.append((op, cost))
    return out, unknown
