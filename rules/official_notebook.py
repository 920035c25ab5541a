"""``official_notebook``: micronet2019 with the official EfficientNet notebook's skip-add quirk."""

from __future__ import annotations

from rules.base import Cost, RuleContext
from rules.micronet2019 import Micronet2019
from rules.records import Op


def expanded_channels(op: Op, ctx: RuleContext) -> int | None:
    """Channels of the last depthwise convolution run before ``op`` inside the same block.

    The notebook's residual ``Add(size, n_channels)`` reuses the variable ``n_channels`` set in the SE
    branch, i.e. the block's expanded (depthwise) channel count (official_rules.md §2.3).
    """
    idx = next(i for i, o in enumerate(ctx.ops) if o.name == op.name)
    scope = op.module
    for prev in reversed(ctx.ops[:idx]):
        in_scope = not scope or prev.module == scope or prev.module.startswith(scope + ".")
        if in_scope and prev.kind == "conv" and prev.attrs.get("depthwise"):
            return int(prev.attrs["out_channels"])
    return None


class OfficialNotebook(Micronet2019):
    """The official `EfficientNetCounting.ipynb` as written: the residual add of an MBConv block is counted
    over the block's *expanded* channels (the notebook passes the SE branch's ``n_channels``), a bug that
    a verified entry (OSI-AI) replicated (official_rules.md §2.3, §5.3)."""

    name = "official_notebook"
    description = "official EfficientNet notebook, including its expanded-channel skip-add quirk"

    def cost_add(self, op: Op, ctx: RuleContext) -> Cost:
        """Residual add (two same-shaped tensors) over the expanded channels of the block."""
        if op.scalar_operand or len(op.in_shapes) != 2 or op.in_shapes[0] != op.in_shapes[1]:
            return super().cost_add(op, ctx)
        if len(op.out_shape) != 4:
            return super().cost_add(op, ctx)
        c_exp = expanded_channels(op, ctx)
        if c_exp is None:
            return super().cost_add(op, ctx)
        c_out = op.out_shape[1]
        return Cost(adds=op.out_numel / c_out * c_exp, note=f"skip add over expanded channels ({c_exp})")
