"""Plain conventions for comparison with FLOP counters (thop, fvcore, ptflops, FlopCounterMode)."""

from __future__ import annotations

from rules.base import Cost, RuleContext, RuleSet
from rules.kinds import DOT_KINDS, is_unknown
from rules.records import Op


class Macs(RuleSet):
    """Multiply-accumulates of conv/linear/matmul only, dense, every parameter element counted at 32 bits
    (what most peers call MACs or FLOPs; peers.md §1). Every other op costs nothing."""

    name = "macs"
    description = "dense multiply-accumulates of conv/linear/matmul; all parameters, 32-bit"
    credit_sparsity = False
    honour_bits = False
    mask_policy = "none"
    fold_bn = False
    macs_as_adds = False

    def dot_product(self, op: Op, ctx: RuleContext) -> Cost:
        """One MAC per weight per output position: n per output, dense. A transposed convolution counts every
        input·weight product of its scatter form, cropped ones included (``scatter_len`` per output), as
        `torch.utils.flop_counter.conv_flop_count(transposed=True)` does."""
        macs = op.attrs.get("scatter_len", op.attrs["vector_len"]) * op.out_numel
        params = sum(self.dense_storage(w) for w in op.weights)
        return Cost(mults=macs, adds=macs if self.macs_as_adds else 0.0, param_bits=params)

    def cost(self, op: Op, ctx: RuleContext) -> Cost | None:
        """Dot products cost MACs; every other known op only its parameters."""
        if op.kind in DOT_KINDS:
            return self.dot_product(op, ctx)
        if is_unknown(op.kind):
            return None
        # a permutation matrix (role "permutation") is a value of the rule, not a parameter of the model; a
        # quantiser's buffers (role "qparam") are not parameters either
        return Cost(param_bits=sum(self.dense_storage(w) for w in op.weights if w.role not in ("permutation", "qparam")))


class Flops(Macs):
    """2 FLOPs per MAC (one mult, one add) of conv/linear/matmul, dense, 32-bit; parameters are every
    parameter element (BN γ/β included). WRN-28-10 gives 36,536,884 params and 10,486,772,736 ops
    (team_scores.md §0)."""

    name = "flops"
    description = "2 × dense MACs of conv/linear/matmul; all parameters, 32-bit"
    macs_as_adds = True
