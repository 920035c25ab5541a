"""Team rule sets for the §3 conventions of entries that publish totals (issue 10 item 2): RIAIR, Woody,
WaveComp, MB-PM, DNW, DQStarter, QualcommAI.

Each is the official set (``micronet2019``) with the precision-model settings of ``rules.base.RuleSet``
(``mul_width``, ``accumulation``, ``class_widths``, ``exponent_ops``, ``mask_policy``) or a formula override;
every setting cites `shared/spec/team_scores.md` (§3 conventions, §2.8 notes) and the team's public repository.
"""

from __future__ import annotations

from rules.base import ClassWidth, Cost, RuleContext
from rules.kinds import DOT_KINDS
from rules.micronet2019 import Micronet2019
from rules.records import Op

#: RIAIR's FP16 ops: scale/bias (BN), ReLU, sigmoid, swish and the point-wise add/product
#: (`peiswang/MicroNetChallenge` `Description.md`: "Type : FP16 (owing to model.half())"; team_scores.md §3).
_RIAIR_FP16 = frozenset({"bn", "act:relu", "act:relu6", "act:sigmoid", "act:silu", "act:hardswish",
                         "act:hardsigmoid", "add", "sub", "mul", "div"})


class Riair2019(Micronet2019):
    """RIAIR (CIFAR-100 1st, ImageNet 1st): adder-tree accumulation with growing widths, mults at the narrower
    operand's width, FP16 for everything else, and score-type 4's FP32 average pooling and bias (the CIFAR
    LB 0.0044 = score-type 4's 0.004375, team_scores.md §1.1 notes; §2.8, §3; `wps712/MicroNetChallenge`
    `Description.md`, `Score.md`, `flops_utils_final.py` ``adder_tree``).

    Note: `flops_utils_final.py` at 066ddff computes ``max(bit_width, act_bit_width)`` for the mults (also
    official_rules.md §3.3) where `Description.md` and team_scores.md §3 say ``min``: this rule set follows §3."""

    name = "riair2019"
    description = "RIAIR: adder-tree adds (width + 1 per level), mults at min(act, weight) bits, FP16 eltwise, FP32 pool/bias"
    #: ``total_params = (w_element + w_nonzero·bit_width)/32``: the mask over every conv/linear weight, dense or
    #: not (`flops_utils_final.py` ``count_conv_linear_adder_tree``)
    mask_policy = "always"
    mul_width = "min"
    accumulation = "adder_tree"
    class_widths = (
        ClassWidth("FP32 pooling (score-type 4)", frozenset({"avgpool", "mean"}), mul_bits=32, add_bits=32),
        ClassWidth("FP16 scale layer, activations, point-wise", _RIAIR_FP16, mul_bits=16, add_bits=16),
    )

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """A BN folded into its conv/linear is that layer's bias: its adds at FP32 (score-type 4, team_scores.md
        §1.1 notes); an unfolded one is a Scale layer (2C params, FP16 by ``class_widths``; official_rules.md §2.4)."""
        cost = super().cost_bn(op, ctx)
        if cost.note.startswith("folded"):
            cost.add_bits = 32
        return cost


class Woody2019(Micronet2019):
    """Woody (CIFAR-100): "binary-tree" accumulation with mixed widths — for Q-bit operands 50% of the adds at
    2Q bits, 25% at 2Q + 1, … (``adder_tree_bits``), mults at the operands' width (team_scores.md §3;
    official_rules.md §3.3; `LinLabNEU/reweighted_prune4` `README.md`). Woody counted the ops with one uniform
    sparsity of 0.5 (`score(..., sparsity="uniform:0.5")`, §2.8); the LB values match all adds at 32 bits
    instead (§1.1 notes), i.e. the common ``micronet2019``."""

    name = "woody2019"
    description = "Woody: binary-tree adds at 2Q, 2Q+1, … bits"
    accumulation = "adder_tree"


class Wavecomp2019(Micronet2019):
    """WaveComp (CIFAR-100): ``Storage = TotalNonZeroParameters·ParamBits/32 + TotalParameters/32`` and
    ``MathOps = Mults·MultBits/32 + Adds·32/32 + ExponentOps·8/32`` (team_scores.md §2.8, §3;
    `mhariat/MicroNet` `Reports/micronet_submissions.pdf`).

    The mask covers every parameter (``mask_policy = "all"``); every add runs at 32 bits; the shared-exponent
    format adds one 8-bit exponent op per output of a conv/linear/matmul (aligning the output onto the layer's
    shared exponent) [INF]: the report's ExponentOps count is not transcribed in the spec."""

    name = "wavecomp2019"
    description = "WaveComp: mask on every parameter, adds at 32 bits, 1 exponent op per dot-product output at 8 bits"
    mask_policy = "all"
    class_widths = (ClassWidth("adds at 32 bits", add_bits=32),)
    exponent_ops = {kind: 1.0 for kind in sorted(DOT_KINDS)}
    exponent_bits = 8


class Mbpm2019(Micronet2019):
    """MB-PM (QuantBinSimpNet, CIFAR-100; QuantEfficientNet, ImageNet): binary-weight convs count their mults at
    1/32 (the official sign-bit rule, annotation of a 1-bit weight) and their adds at the input's width n/32
    (n = 16 or 9; ``accumulation = "input"``); BatchNorm stays FP32 and unfolded (2C params, 1 mult + 1 add per
    element); each quantise/dequantise step costs 10 mults + 2 adds per element (team_scores.md §3;
    `mb-pm/micronet-cifar100-submissions` `README.md`)."""

    name = "mbpm2019"
    description = "MB-PM: dot-product adds at the input's width, BN FP32 unfolded, quantiser 10 mults + 2 adds/element"
    accumulation = "input"
    fold_bn = False
    class_widths = (ClassWidth("FP32 BatchNorm", frozenset({"bn"}), mul_bits=32, add_bits=32),)

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """BatchNorm in FP32: 2C parameters at 32 bits, 1 mult + 1 add per element (at 32 bits by
        ``class_widths``; team_scores.md §3)."""
        first = all(w.first_use for w in op.weights) if op.weights else True
        return Cost(mults=op.out_numel, adds=op.out_numel, param_bits=2 * op.attrs["channels"] * 32 if first else 0.0,
                    note="MB-PM: BN FP32")

    def cost_quant(self, op: Op, ctx: RuleContext) -> Cost:
        """A quantise/dequantise step: 10 mults + 2 adds per element (team_scores.md §3)."""
        return Cost(mults=10 * op.out_numel, adds=2 * op.out_numel, note=f"MB-PM: {op.attrs.get('bits')}-bit quantiser")


class Dnw2019(Micronet2019):
    """DNW (ImageNet, ResNet-50 v1.5): "ops = 2 × multiply-adds as an upper bound": a dot product is n mults
    and n adds per output (n the nonzero products), nothing else is counted (1,030,462,620 = 2 × 515,231,310
    multiply-adds exactly); with the freebie, params/2 and mults/2 + adds (team_scores.md §1.2, §2.8, §3;
    `mitchellnw/micro-net-dnw` `README.md`). Parameters are stored as under the official rules."""

    name = "dnw2019"
    description = "DNW: 2 × multiply-adds of conv/linear/matmul (n mults + n adds per output), no other op counted"

    def cost(self, op: Op, ctx: RuleContext) -> Cost | None:
        """Dot products: ``dot_product``; every other op with a rule: its storage only (0 ops)."""
        cost = super().cost(op, ctx)
        if cost is None or op.kind in DOT_KINDS:
            return cost
        return Cost(param_bits=cost.param_bits, mask_bits=cost.mask_bits, note=f"{self.name}: not counted")

    def dot_product(self, op: Op, ctx: RuleContext) -> Cost:
        """n mults + n adds per output (one multiply-add per nonzero product, the bias add included in it)."""
        cost = super().dot_product(op, ctx)
        cost.adds = cost.mults
        return cost


class Dqstarter2019(Dnw2019):
    """DQStarter (ImageNet): "FLOPs reduced to 460M × 0.75 as all the multiplications are quantized to 16
    bits", i.e. FLOPs = 2 × MACs and ops = MACs·(16 + 32)/32 = 1.5 MACs with the freebie (team_scores.md §1.2,
    §3; `zhoudaquan/MicroNet_ImageNet_Lv_DQ` `README.md`): the DNW arithmetic (a MAC is one mult and one add,
    nothing else counted), registered under its own name so the entry names its own convention."""

    name = "dqstarter2019"
    description = "DQStarter: FLOPs = 2 × MACs of conv/linear, mults at 16 bits (ops = 1.5 MACs with the freebie)"


class Qualcomm2019(Micronet2019):
    """QualcommAI (CIFAR-100 nanoWRN, ImageNet MixNet / EfficientNet / M0): the sparsity mask costs one bit per
    nonzero, nnz/32, not per dense element (official_rules.md §4.3: `yashbhalgat/QualcommAI-MicroNet-submission-MixNet`
    `lsq_quantizer/flops_counter.py`; team_scores.md §2.8, §3)."""

    name = "qualcomm2019"
    description = "QualcommAI: mask = nnz/32 (1 bit per nonzero)"
    mask_policy = "nonzeros"
