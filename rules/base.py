"""The rules engine: a RuleSet turns one annotated Op into a Cost.

A rule set is data (an activation table and a few switches) plus a handful of structural formulas, one
``cost_<kind>`` method per op kind. A team's convention is a subclass that changes a table entry or
overrides one formula; each override cites its source in its docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase

from rules.records import Op, WeightRef


@dataclass(slots=True)
class Cost:
    """What one op costs: raw counts plus the bit-widths they run at and the storage they need."""

    mults: float = 0.0
    adds: float = 0.0
    param_bits: float = 0.0  # stored parameter values (nonzeros × bits), biases included
    mask_bits: float = 0.0  # sparsity masks
    note: str = ""
    #: A convention that counts this op at a fixed width (e.g. "full precision") sets it here. ``add_bits`` may
    #: be fractional: the mean width of adds at several widths (an adder tree, ``RuleSet.tree_add_bits``).
    mul_bits: int | None = None
    add_bits: float | None = None
    #: Exponent operations of a shared-exponent format (``RuleSet.exponent_ops``) and their width.
    exps: float = 0.0
    exp_bits: int = 8


@dataclass(frozen=True)
class ClassWidth:
    """Fixed widths for one class of ops (a team's per-op-class precision: SE at 16 bits, pooling at 32).

    An op is in the class when its kind is in ``kinds`` (empty: any kind) and its layer name matches the glob
    ``module`` (None: any layer). ``None`` widths leave that width to annotation."""

    name: str
    kinds: frozenset[str] = frozenset()
    module: str | None = None
    mul_bits: int | None = None
    add_bits: int | None = None

    def matches(self, op: Op) -> bool:
        """True when ``op`` is in this class."""
        return (not self.kinds or op.kind in self.kinds) and (self.module is None or fnmatchcase(op.module, self.module))


def adder_tree_bits(n: int, base: int) -> int:
    """Bits of the adds that sum ``n`` products of ``base`` bits pairwise: level l (1, 2, …) adds
    ⌊m/2⌋ pairs at ``base + l − 1`` bits and leaves m ← ⌈m/2⌉ values, until one is left; n − 1 adds in all.

    Sources: RIAIR `peiswang/MicroNetChallenge` (the `wps712/MicroNetChallenge` fork) `flops_utils_final.py`
    ``adder_tree(base, length)`` and `demo/adder_tree_demo.py` (team_scores.md §2.8, §3); Woody
    `LinLabNEU/reweighted_prune4` `README.md`: "50% of adds at 2Q bits, 25% at 2Q+1, …" (official_rules.md §3.3,
    team_scores.md §3)."""
    bits, width = 0, base
    while n > 1:
        bits += (n // 2) * width
        n = (n + 1) // 2
        width += 1
    return bits


def adder_tree_bits_mean(n: float, base: int) -> float:
    """``adder_tree_bits`` at a fractional length (a mean number of nonzero products): linear between
    ⌊n⌋ and ⌈n⌉. [INF]"""
    lo = math.floor(n)
    frac = n - lo
    low = adder_tree_bits(lo, base)
    return low if not frac else low + frac * (adder_tree_bits(lo + 1, base) - low)


@dataclass
class RuleContext:
    """What a formula may look at besides its own op."""

    ops: list[Op]
    by_name: dict[str, Op]
    consumers: dict[str, list[str]]
    mask_block: tuple[int, int] | None = None


#: Kinds whose adds sum n products per output (the adder tree applies to them).
_TREE_KINDS = frozenset({"conv", "linear", "matmul"})
#: op kind -> the name of the ``RuleSet`` method costing it (``act:relu`` -> ``cost_act_relu``)
_COST_METHODS: dict[str, str] = {}


def _only_consumer(ctx: RuleContext, producer: str, consumer: str) -> bool:
    """Whether ``consumer`` is the one op reading ``producer``'s output."""
    readers = ctx.consumers.get(producer)
    return readers is not None and len(readers) == 1 and readers[0] == consumer


def bias_adds(op: Op, bias: WeightRef | None) -> float:
    """One add per output of a dot product for its added term: ``attrs["has_bias"]`` where the extractor says
    (an activation added in the same call, ``addmm(h, x, W)``; none for ``addmm``'s beta = 0, whose stored input
    torch ignores), else a stored bias; official_rules.md §2.2."""
    added = op.attrs.get("has_bias")
    return op.out_numel if (bias is not None if added is None else added) else 0.0


def scaling_mults(op: Op) -> float:
    """One mult per output of a dot product for each scaling factor other than 1 (``addmm``'s alpha and beta,
    ``attrs["scalings"]``), as ``add``'s alpha costs one."""
    return op.attrs.get("scalings", 0) * op.out_numel


class RuleSet:
    """Base rule set with the official MicroNet 2019 formulas (`official_rules.md` §2.2).

    Subclasses change the class attributes or override ``cost_<kind>`` methods.
    """

    name = "base"
    description = ""
    #: activation kind -> (mults, adds) per output element.
    activations: dict[str, tuple[float, float]] = {}
    #: "sparse": 1 bit per dense element of a tensor with any zero (official code); "always": every
    #: weight tensor of ndim > 1 pays its mask; "all": every stored tensor, biases and norm parameters
    #: included (WaveComp "TotalParameters/32", team_scores.md §2.8; the dense tensors' mask bits are in
    #: ``param_bits``); "nonzeros": 1 bit per nonzero of a sparse tensor (QualcommAI
    #: `lsq_quantizer/flops_counter.py`, official_rules.md §4.3); "none": no mask.
    mask_policy = "sparse"
    #: BatchNorm right after a conv/linear folds into it as a bias (official notebook, organisers' ruling).
    fold_bn = True
    #: Sparsity is credited for the weights of conv/linear/matmul (False: every tensor dense).
    credit_sparsity = True
    #: Bit-widths honoured (False: every count at 32 bits, every parameter at 32 bits).
    honour_bits = True
    #: ops per element for nearest-neighbour upsampling (a copy).
    upsample_nearest = (0.0, 0.0)
    #: (mults, adds) per output element for bilinear upsampling.
    upsample_bilinear = (4.0, 3.0)
    #: Storage of a permutation's n × n matrix (``cost_shuffle``): "sparse" — the official sparse format, its n
    #: nonzero values plus the n²-bit mask (the site FAQ: "the cost of storing the sparse permutation matrix
    #: should be taken into account"); "none" — not stored. (Sisyphus' published table gives the shuffle's
    #: 1 mult per element; whether it stored the permutation is not recorded, team_scores.md §2.7.)
    permutation_storage = "sparse"

    # ----------------------------------------------------------------- precision model (issue 10 item 1)
    #: Width of a multiplication from its operands' widths (``Op.operand_bits``): "max" (official page §3.1,
    #: official_rules.md §3.1) or "min" (RIAIR `Description.md`: ``min(act_bitwidth, weight_bitwidth)``,
    #: team_scores.md §3).
    mul_width = "max"
    #: Accumulation of the dot products (conv, linear, matmul): "flat" — every add at the op's accumulator
    #: width (``Op.add_bits``); "adder_tree" — the n − 1 adds per output summed pairwise at growing widths
    #: (``adder_tree_bits``; RIAIR, Woody, team_scores.md §3), the other adds (bias) at the accumulator width;
    #: "input" — every add at the activation input's width (MB-PM: "adds scaled by input bits n/32",
    #: team_scores.md §3).
    accumulation = "flat"
    #: Adder tree: activations are signed, so a product has one bit less than the sum of its operands' widths
    #: (RIAIR ``adder_tree_demo.py``: ``bitwidth_init -= 1`` when ``act_signed``).
    tree_signed_activations = False
    #: Fixed widths per class of ops (``ClassWidth``), the first matching class wins; a width the op's
    #: formula fixed (``Cost.mul_bits``/``add_bits``) is kept.
    class_widths: tuple[ClassWidth, ...] = ()
    #: Exponent operations per output element, by op kind (a shared-exponent format: WaveComp's
    #: ``ExponentOps``, team_scores.md §2.8, §3), counted at ``exponent_bits``.
    exponent_ops: dict[str, float] = {}
    exponent_bits = 8

    # ----------------------------------------------------------------- dispatch
    def cost(self, op: Op, ctx: RuleContext) -> Cost | None:
        """The Cost of ``op``, or None when this rule set has no rule for its kind; then the precision model's
        widths (``apply_widths``)."""
        name = _COST_METHODS.get(op.kind)
        if name is None:
            if len(_COST_METHODS) > 4096:  # kinds are declared (rules.kinds): bounded anyway
                _COST_METHODS.clear()
            name = _COST_METHODS[op.kind] = "cost_" + op.kind.replace(":", "_")
        method = getattr(self, name, None)
        if method is not None:
            cost = method(op, ctx)
        elif op.kind in self.activations:
            cost = self.cost_activation(op, ctx)
        else:
            return None
        return self.apply_widths(op, cost)

    def apply_widths(self, op: Op, cost: Cost) -> Cost:
        """The rule set's precision model on ``cost``: class widths, then the min/max multiplication width,
        the adder tree and the exponent ops. Each setting is a class attribute (above); the defaults change
        nothing."""
        for cls in self.class_widths:
            if cls.matches(op):
                if cost.mul_bits is None and cls.mul_bits is not None:
                    cost.mul_bits = cls.mul_bits
                if cost.add_bits is None and cls.add_bits is not None:
                    cost.add_bits = cls.add_bits
                break
        if self.mul_width == "min" and cost.mul_bits is None and cost.mults and op.operand_bits:
            cost.mul_bits = self.mul_bits_min(op)
        if cost.add_bits is None and op.kind in _TREE_KINDS and cost.adds:
            if self.accumulation == "adder_tree":
                cost.add_bits = self.tree_add_bits(op, cost)
            elif self.accumulation == "input":
                cost.add_bits = max(op.in_bits)
        if self.exponent_ops.get(op.kind):
            cost.exps = self.exponent_ops[op.kind] * op.out_numel
            cost.exp_bits = self.exponent_bits
        return cost

    def mul_bits_min(self, op: Op) -> int:
        """``min`` of the operand widths (RIAIR `Description.md` "We use min(act_bitwidth, weight_bitwidth) as
        the mul_bit_base", team_scores.md §3); a 1-bit operand still gives 1 (official page §3.1)."""
        return min(op.operand_bits)

    def tree_base_bits(self, op: Op) -> int:
        """Width of one product, the tree's first level: the two widest operands' widths summed (activation +
        weight), less 1 for signed activations (RIAIR `flops_utils_final.py` ``base_bit_width = bit_width +
        act_bit_width``, ``-= 1`` if ``input_signed``; Woody "2Q" for Q-bit operands, team_scores.md §3)."""
        widths = sorted(op.operand_bits or op.in_bits, reverse=True)
        base = widths[0] + (widths[1] if len(widths) > 1 else widths[0])
        return base - (1 if self.tree_signed_activations else 0)

    def tree_add_bits(self, op: Op, cost: Cost) -> float:
        """Mean width of ``cost.adds``: the (n − 1)·outputs tree adds at ``adder_tree_bits(n, base)`` per
        output, n the nonzero products per output — per output channel from the weight's real nonzeros where
        the tensor holds the counted sparsity (RIAIR counts ``adder_tree`` per kernel), else the mean ``n``
        linearly between ⌊n⌋ and ⌈n⌉ [INF]; the remaining adds (a bias) at the op's accumulator width."""
        base = self.tree_base_bits(op)
        w = op.weight("weight")
        n = op.attrs["vector_len"] * self.density(w)
        outputs = op.out_numel
        per_channel = self._row_nonzeros(w) if op.kind in ("conv", "linear") else None
        if per_channel is not None:
            tree = sum(adder_tree_bits(int(k), base) for k in per_channel) * outputs / len(per_channel)
        else:
            tree = adder_tree_bits_mean(n, base) * outputs
        tree_adds = max(n - 1, 0.0) * outputs
        rest = cost.adds - tree_adds
        if rest < -1e-6 * cost.adds:
            raise ValueError(f"{self.name}: adder tree on {op.name} ({op.module or 'top level'}) at weight density "
                             f"{self.density(w):.6g} (n = {n:.6g} products per output): the formula counts "
                             f"{cost.adds:.10g} adds, fewer than the tree's max(n − 1, 0)·outputs = {tree_adds:.10g}")
        return (tree + max(rest, 0.0) * op.add_bits) / cost.adds

    def _row_nonzeros(self, w: WeightRef | None) -> list[int] | None:
        """Nonzeros of each output row of ``w`` when its tensor holds exactly the credited nonzeros."""
        if w is None or w.tensor is None or w.tensor.device.type == "meta" or not self.credit_sparsity:
            return None
        t = w.tensor.detach()
        if w.mask is not None:
            t = t * w.mask
        rows = (t.reshape(t.shape[0], -1) != 0).sum(dim=1).tolist()
        return rows if sum(rows) == w.nonzeros else None

    # ----------------------------------------------------------------- storage
    def mask_bits(self, w: WeightRef, ctx: RuleContext) -> float:
        """Mask storage of weight tensor ``w`` (official rules §4: 1 bit per dense element, or per block).

        Blocks tile ``w`` viewed as a ``shape[0] × numel/shape[0]`` matrix (a conv weight: C_out × C_in/g·k²),
        partial blocks at the edges included: ceil(rows/bh)·ceil(cols/bw) bits.
        """
        if self.mask_policy == "none":
            return 0.0
        if self.mask_policy == "sparse" and not w.sparsity > 0:
            return 0.0
        if self.mask_policy == "always" and len(w.shape) <= 1:
            return 0.0
        if self.mask_policy == "nonzeros":
            return float(w.nonzeros) if w.sparsity > 0 else 0.0
        if ctx.mask_block is not None:
            bh, bw = ctx.mask_block
            rows = w.shape[0]
            cols = w.numel // rows if rows else 0
            return float(math.ceil(rows / bh) * math.ceil(cols / bw))
        return float(w.numel)

    def weight_storage(self, w: WeightRef | None, ctx: RuleContext, sparse: bool = True) -> tuple[float, float]:
        """(value bits, mask bits) of ``w``; zero when another op already stored it."""
        if w is None or not w.first_use:
            return 0.0, 0.0
        if sparse and self.credit_sparsity:
            return w.nonzeros * w.bits, self.mask_bits(w, ctx)
        return w.numel * w.bits, 0.0

    def dense_storage(self, w: WeightRef | None) -> float:
        """Bits of a tensor stored dense (biases, norm parameters: never sparse, no mask)."""
        if w is None or not w.first_use:
            return 0.0
        return w.numel * (w.bits + (1 if self.mask_policy == "all" else 0))

    def density(self, w: WeightRef | None) -> float:
        """Share of nonzero weights credited to the op counts (1 when sparsity is not credited)."""
        if w is None or not self.credit_sparsity or not w.numel:
            return 1.0
        return w.nonzeros / w.numel

    # ----------------------------------------------------------------- dot products
    def dot_product(self, op: Op, ctx: RuleContext) -> Cost:
        """n mults and n−1 adds per output, n the (sparse) vector length; +1 add per output for a bias (stored, or
        an activation added in the same call: ``addmm(h, x, W)``, ``attrs["has_bias"]``); +1 mult per output for
        each scaling factor other than 1 (``addmm``'s alpha and beta, ``attrs["scalings"]``, as ``add``'s alpha).

        Source: `counting.py` Conv2D/DepthWiseConv2D/FullyConnected (official_rules.md §2.2); grouped
        convolution uses n = k²·C_in/groups (the natural generalisation, §2.2 [INF]).
        """
        w = op.weight("weight")
        b = op.weight("bias")
        n = op.attrs["vector_len"] * self.density(w)
        outputs = op.out_numel
        mults = n * outputs + scaling_mults(op)
        adds = (n - 1) * outputs + bias_adds(op, b)
        vbits, mbits = self.weight_storage(w, ctx)
        return Cost(mults=mults, adds=adds, param_bits=vbits + self.dense_storage(b), mask_bits=mbits)

    def cost_conv(self, op: Op, ctx: RuleContext) -> Cost:
        """Convolution (any dimension, groups, dilation, padding; shapes from the real tensors)."""
        return self.dot_product(op, ctx)

    def cost_conv_transpose(self, op: Op, ctx: RuleContext) -> Cost:
        """Transposed convolution as the sum, per output, of the input·weight products that land on it: n (the
        mean count, ``vector_len``, scaled by the weight density like a conv's) mults per output and one add
        fewer than products for each output that receives any, + 1 add per output for a bias. The dot-product
        count of §2.2 (`counting.py` Conv2D) applied to the products actually computed [INF]; products the
        padding crops are not counted (FlopCounterMode counts them: see ``rules.peers``)."""
        w, b = op.weight("weight"), op.weight("bias")
        n = op.attrs["vector_len"] * self.density(w)
        outputs = op.out_numel
        mults = n * outputs
        adds = (n - op.attrs["covered"]) * outputs + (outputs if b is not None else 0.0)
        vbits, mbits = self.weight_storage(w, ctx)
        return Cost(mults=mults, adds=adds, param_bits=vbits + self.dense_storage(b), mask_bits=mbits)

    def cost_linear(self, op: Op, ctx: RuleContext) -> Cost:
        """Fully connected layer over any leading dimensions."""
        return self.dot_product(op, ctx)

    def cost_matmul(self, op: Op, ctx: RuleContext) -> Cost:
        """matmul/bmm/@/einsum: n mults and n−1 adds per output, n the contracted length."""
        return self.dot_product(op, ctx)

    # ----------------------------------------------------------------- normalisation
    def bn_folds(self, op: Op, ctx: RuleContext) -> list[Op] | None:
        """The conv/linear layers ``op`` (a BatchNorm) folds into, or None.

        One layer whose only consumer is the BN; or, after a concatenation along the channels whose only
        consumer is the BN (MixConv), every branch of it, each a conv/linear whose only consumer is the
        concatenation: each channel's scale and shift then fold into the one layer producing that channel,
        exactly as a BN per branch would.
        """
        if not self.fold_bn or not op.inputs:
            return None
        prod = ctx.by_name.get(op.inputs[0])
        if prod is None or not _only_consumer(ctx, prod.name, op.name):
            return None
        if prod.kind in ("conv", "conv_transpose", "linear"):
            return [prod]
        if prod.kind != "free" or prod.attrs.get("cat_dim") != 1 or len(prod.inputs) != len(prod.in_shapes):
            return None
        branches = [ctx.by_name.get(name) for name in prod.inputs]
        if any(b is None or b.kind not in ("conv", "linear") or not _only_consumer(ctx, b.name, prod.name)
               for b in branches):
            return None
        return branches  # type: ignore[return-value]

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """BatchNorm. Folded into the conv/linear producing each channel (``bn_folds``): the scale merges
        into the weights and the shift becomes a bias, 1 param per channel + 1 add per output (official
        notebook; organisers' ruling in OSI-AI issue #7), nothing for the channels of a layer that already
        has a bias. Otherwise 2C params and 1 mult + 1 add per element (MSUNet, verified;
        official_rules.md §2.4)."""
        c = op.attrs["channels"]
        bits = self._norm_bits(op)
        first = self._first_use(op)
        prods = self.bn_folds(op, ctx)
        if prods is None:
            return Cost(mults=op.out_numel, adds=op.out_numel, param_bits=2 * c * bits if first else 0.0)
        names = ", ".join(p.name for p in prods)
        if len(prods) == 1:
            unbiased = c if prods[0].weight("bias") is None else 0  # channels whose shift becomes a new bias
        else:
            unbiased = sum(p.out_shape[1] for p in prods if p.weight("bias") is None)
        if not unbiased:
            return Cost(note=f"folded into {names} (bias merged)")
        return Cost(adds=op.out_numel * unbiased / c, param_bits=unbiased * bits if first else 0.0,
                    note=f"folded into {names}")

    def _norm_bits(self, op: Op) -> int:
        for w in op.weights:
            return w.bits
        return op.attrs.get("param_bits", 32)

    def _first_use(self, op: Op) -> bool:
        return all(w.first_use for w in op.weights) if op.weights else op.attrs.get("first_use", True)

    def layer_norm_counts(self, n: float) -> tuple[float, float]:
        """(mults, adds) to normalise one group of n values without the affine part: mean (n−1 adds,
        1 division), centring (n adds), squares (n mults), variance (n−1 adds, 1 division), eps (1 add),
        rsqrt (1 op, counted as a mult), scaling (n mults). [INF], in the spirit of MIT-HAN-Lab's
        verified LayerNorm count (official_rules.md §2.4)."""
        return 2 * n + 3, 3 * n - 1

    def cost_layernorm(self, op: Op, ctx: RuleContext) -> Cost:
        """LayerNorm: the normalisation per group plus the affine γ/β (n mults + n adds, 2n params)."""
        n = op.attrs["norm_numel"]
        groups = op.out_numel / n
        m, a = self.layer_norm_counts(n)
        mults, adds = m * groups, a * groups
        params = sum(self.dense_storage(w) for w in op.weights)
        if op.weights:
            mults += op.out_numel
            adds += op.out_numel
        return Cost(mults=mults, adds=adds, param_bits=params)

    def rms_norm_counts(self, n: float) -> tuple[float, float]:
        """(mults, adds) to normalise one group of n values by its root mean square, without γ: squares
        (n mults), mean (n−1 adds, 1 division), eps (1 add), rsqrt (1 op, counted as a mult), scaling
        (n mults). ``layer_norm_counts`` without the centring [INF] (official_rules.md §2.4)."""
        return 2 * n + 2, n

    def cost_rmsnorm(self, op: Op, ctx: RuleContext) -> Cost:
        """RMSNorm: the normalisation per group plus the affine γ (n mults, n params; no β)."""
        n = op.attrs["norm_numel"]
        m, a = self.rms_norm_counts(n)
        groups = op.out_numel / n
        mults = m * groups + (op.out_numel if op.weights else 0.0)
        return Cost(mults=mults, adds=a * groups, param_bits=sum(self.dense_storage(w) for w in op.weights))

    def cost_groupnorm(self, op: Op, ctx: RuleContext) -> Cost:
        """GroupNorm: LayerNorm's count per group, plus the per-channel affine part."""
        groups = op.attrs["groups"]
        n = op.out_numel / groups
        m, a = self.layer_norm_counts(n)
        mults, adds = m * groups, a * groups
        if op.weights:
            mults += op.out_numel
            adds += op.out_numel
        return Cost(mults=mults, adds=adds, param_bits=sum(self.dense_storage(w) for w in op.weights))

    # ----------------------------------------------------------------- activations
    def cost_activation(self, op: Op, ctx: RuleContext) -> Cost:
        """Table-driven activation: (mults, adds) per output element."""
        m, a = self.activations[op.kind]
        n = op.out_numel
        return Cost(mults=m * n, adds=a * n, param_bits=self._operand_storage(op))

    def cost_act_clamp(self, op: Op, ctx: RuleContext) -> Cost:
        """clamp/clip: one comparison (counted as a mult, like ReLU) per bound given."""
        return Cost(mults=op.attrs.get("bounds", 2) * op.out_numel, param_bits=self._operand_storage(op))

    def cost_act_prelu(self, op: Op, ctx: RuleContext) -> Cost:
        """PReLU: a comparison and a multiplication per element, plus its slopes as parameters. [INF]"""
        return Cost(mults=2 * op.out_numel, param_bits=sum(self.dense_storage(w) for w in op.weights))

    def cost_act_softmax(self, op: Op, ctx: RuleContext) -> Cost:
        """Softmax over n values: n exp + n divisions (mults) and n−1 adds, i.e. 3n − 1 ops
        (MIT-HAN-Lab, verified WikiText entry; official_rules.md §2.4)."""
        n = op.attrs["n"]
        groups = op.out_numel / n
        return Cost(mults=2 * n * groups, adds=(n - 1) * groups)

    def cost_act_log_softmax(self, op: Op, ctx: RuleContext) -> Cost:
        """log-softmax x_i − log Σ_j exp(x_j) over n values: n exp and 1 log (transcendental evaluations, one op
        each, official_rules.md §2.4) as mults, n−1 adds for the sum and n subtractions. [INF]"""
        n = op.attrs["n"]
        groups = op.out_numel / n
        return Cost(mults=(n + 1) * groups, adds=(2 * n - 1) * groups)

    def cost_act_softplus(self, op: Op, ctx: RuleContext) -> Cost:
        """Softplus log(1 + exp(βx))/β per element: the threshold comparison, exp and log (a transcendental
        evaluation is one op, official_rules.md §2.4) as 3 mults, the + 1 as an add; β ≠ 1 adds the
        multiplication by β and the division by β (2 mults). [INF]"""
        m = 3 + (2 if op.attrs["beta"] != 1 else 0)
        return Cost(mults=m * op.out_numel, adds=op.out_numel, param_bits=self._operand_storage(op))

    def pow_mults(self, exponent: float | None) -> float:
        """Ops per element of ``x ** exponent``: an integer n ≥ 2 is n−1 multiplications (x·x·…·x as
        written), a negative integer −n those plus one reciprocal, 0 and 1 nothing (a constant, a copy);
        any other exponent, a tensor exponent or a tensor of exponents on a scalar base is one
        transcendental evaluation, one op (official page), counted as a mult like exp. [INF]"""
        if exponent is None or float(exponent) != int(exponent):
            return 1.0
        k = abs(int(exponent))
        return max(k - 1, 0) + (1.0 if exponent < 0 else 0.0)

    def cost_pow(self, op: Op, ctx: RuleContext) -> Cost:
        """Power, elementwise (``pow_mults`` per output); a learned exponent or base is stored here."""
        return Cost(mults=self.pow_mults(op.attrs["exponent"]) * op.out_numel, param_bits=self._operand_storage(op))

    # ----------------------------------------------------------------- elementwise
    def _operand_storage(self, op: Op) -> float:
        """Bits of the parameters an op without a weight role reads (a learned gate, scale or token), dense."""
        return sum(self.dense_storage(w) for w in op.weights) if op.weights else 0

    def cost_add(self, op: Op, ctx: RuleContext) -> Cost:
        """Elementwise add (residual, bias-like broadcast, or + scalar): 1 add per output element
        (`counting.py` Add, official_rules.md §2.2, over the tensor's real channels)."""
        return Cost(mults=self._alpha_mults(op), adds=op.out_numel, param_bits=self._operand_storage(op))

    def cost_sub(self, op: Op, ctx: RuleContext) -> Cost:
        """Elementwise subtraction counts as an addition."""
        return Cost(mults=self._alpha_mults(op), adds=op.out_numel, param_bits=self._operand_storage(op))

    def _alpha_mults(self, op: Op) -> float:
        """``torch.add(x, y, alpha=a)`` with a ≠ 1 multiplies every element of y by a first."""
        return op.out_numel if "alpha" in op.attrs else 0.0

    def cost_mul(self, op: Op, ctx: RuleContext) -> Cost:
        """Elementwise multiply (e.g. SE scale): 1 mult per output element (`counting.py` Scale)."""
        return Cost(mults=op.out_numel, param_bits=self._operand_storage(op))

    def cost_div(self, op: Op, ctx: RuleContext) -> Cost:
        """Elementwise division: 1 mult per output element (the official code counts GlobalAvg's
        division as a mult)."""
        return Cost(mults=op.out_numel, param_bits=self._operand_storage(op))

    # ----------------------------------------------------------------- reductions and pools
    def cost_mean(self, op: Op, ctx: RuleContext) -> Cost:
        """Mean over n values (global average pooling, torch.mean): n−1 adds and 1 division per output
        (`counting.py` GlobalAvg: C mults, (HW−1)·C adds)."""
        n = op.attrs["reduce"]
        return Cost(mults=op.out_numel, adds=(n - 1) * op.out_numel, param_bits=self._operand_storage(op))

    def cost_sum(self, op: Op, ctx: RuleContext) -> Cost:
        """Sum over n values: n−1 adds per output. [INF]"""
        return Cost(adds=(op.attrs["reduce"] - 1) * op.out_numel, param_bits=self._operand_storage(op))

    def cost_cumsum(self, op: Op, ctx: RuleContext) -> Cost:
        """Running sum along a row of n: output i is output i−1 plus input i, so n−1 adds per row (the first
        output is a copy). [INF], by the sum count above."""
        n = op.attrs["n"]
        return Cost(adds=(n - 1) * op.out_numel / n if n else 0.0, param_bits=self._operand_storage(op))

    def cost_avgpool(self, op: Op, ctx: RuleContext) -> Cost:
        """k×k average pooling: k²−1 adds + 1 mult per output (MSUNet, RIAIR; official_rules.md §2.4)."""
        k = op.attrs["window"]
        return Cost(mults=op.out_numel, adds=(k - 1) * op.out_numel)

    def cost_maxpool(self, op: Op, ctx: RuleContext) -> Cost:
        """k×k max pooling: k²−1 comparisons per output, counted as mults like ReLU's. [INF]"""
        return Cost(mults=(op.attrs["window"] - 1) * op.out_numel)

    def cost_max(self, op: Op, ctx: RuleContext) -> Cost:
        """Maximum (or its index: the prediction step's argmax over a vocabulary) over n values: n−1
        comparisons per output, counted as mults like ReLU's comparison (official_rules.md §2.2). [INF]"""
        return Cost(mults=(op.attrs["reduce"] - 1) * op.out_numel, param_bits=self._operand_storage(op))

    def cost_upsample_nearest(self, op: Op, ctx: RuleContext) -> Cost:
        """Nearest upsampling is a copy: 0 ops by default ([INF]; OSI-AI listed 1 mult per output but
        left it out of its total, official_rules.md §2.4)."""
        m, a = self.upsample_nearest
        return Cost(mults=m * op.out_numel, adds=a * op.out_numel)

    def cost_upsample_bilinear(self, op: Op, ctx: RuleContext) -> Cost:
        """Bilinear upsampling: about 4 mults + 3 adds per output element. [INF]"""
        m, a = self.upsample_bilinear
        return Cost(mults=m * op.out_numel, adds=a * op.out_numel)

    # ----------------------------------------------------------------- permutations
    def cost_shuffle(self, op: Op, ctx: RuleContext) -> Cost:
        """A permutation of n positions (channel shuffle, index by a permutation) is "the product of a dense
        matrix and a sparse permutation matrix" (site FAQ, official_rules.md §2.4): `counting.py`'s dot
        product with vector length n at density 1/n, i.e. 1 mult and 0 adds per output element (Sisyphus,
        ImageNet: channel shuffle 1 mult per element, team_scores.md §2.7). Its storage per
        ``permutation_storage``, the values at the layer's parameter width."""
        w = op.weight("permutation")
        note = "" if op.attrs.get("known", True) else "index values unknown: counted as a permutation"
        if self.permutation_storage == "none" or w is None or not w.first_use:
            return Cost(mults=op.out_numel, note=note)
        n = op.attrs["n"]
        matrix = WeightRef(role=w.role, name=w.name, tensor=None, shape=(n, n), nonzeros=float(n))
        return Cost(mults=op.out_numel, param_bits=n * w.bits, mask_bits=self.mask_bits(matrix, ctx), note=note)

    # ----------------------------------------------------------------- free
    def cost_free(self, op: Op, ctx: RuleContext) -> Cost:
        """Data movement (view, reshape, flatten, permute, cat, slice, pad, dropout in eval, identity):
        no ops (the notebook counts nothing for them, official_rules.md §2.3). A parameter it moves
        (a learned class token concatenated to the activations) is stored here, dense."""
        return Cost(param_bits=self._operand_storage(op))

    def cost_quant(self, op: Op, ctx: RuleContext) -> Cost:
        """Quantise/dequantise between FP32-representable formats: free (official rules §3.1)."""
        return Cost(note=f"{op.attrs.get('bits')}-bit quantiser")

    def cost_embedding(self, op: Op, ctx: RuleContext) -> Cost:
        """Embedding lookup: a table read, no arithmetic; the table is stored."""
        vbits, mbits = self.weight_storage(op.weight("weight"), ctx)
        return Cost(param_bits=vbits, mask_bits=mbits)
