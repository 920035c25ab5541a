"""Apply a rule set to annotated ops: one row per op, unknown ops collected."""

from __future__ import annotations

from collections import defaultdict

from rules.base import Cost, RuleContext, RuleSet
from scorer.graph import Op


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
        cost = None if op.kind.startswith("unknown:") else ruleset.cost(op, ctx)
        if cost is None:
            unknown.append(op)
            cost = Cost(note="UNKNOWN: counted as zero")
        out.append((op, cost))
    return out, unknown
