"""Team rule sets: the official set plus each published team's own counting conventions.

Each override cites its source in `shared/spec/team_scores.md` (§2 architecture notes, §3 conventions).
"""

from __future__ import annotations

import math

from rules.base import ClassWidth, Cost, RuleContext
from rules.micronet2019 import Micronet2019
from rules.official_notebook import OfficialNotebook
from rules.records import Op, WeightRef


def is_residual_add(op: Op) -> bool:
    """An add of two activation tensors of the same shape (a skip connection)."""
    return not op.scalar_operand and len(op.in_shapes) == 2 and op.in_shapes[0] == op.in_shapes[1]


def is_channel_scale(op: Op) -> bool:
    """A multiply of an activation by a broadcast activation (SE excitation)."""
    return not op.scalar_operand and len(op.in_shapes) == 2 and op.in_shapes[0] != op.in_shapes[1]


class OsiAi2019(OfficialNotebook):
    """OSI AI (CIFAR-100, verified): the official notebook including its expanded-channel skip add
    (team_scores.md §2.1, official_rules.md §5.3), BN shift as a bias (after the organisers' review, OSI
    issue #7), and the nearest upsample as 1 full-precision op per output element on its own line
    (README rows from 2019-11-01: 11,907 ops for 63·63·3, §2.1.2)."""

    name = "osi_ai2019"
    description = "OSI AI: notebook skip-add quirk, BN as bias, upsample 1 full-precision op per output"

    def cost_upsample_nearest(self, op: Op, ctx: RuleContext) -> Cost:
        """1 mult per output element at 32 bits (OSI README adds 11,907 full-precision ops)."""
        return Cost(mults=op.out_numel, mul_bits=32, note="OSI: upsample counted at full precision")


class OsiAi2019PreReview(OsiAi2019):
    """OSI AI's numbers before the organisers' review (README before commit 2e1636b, 2019-11-01): no BN
    bias (``use_bias=False``) and no upsample term (team_scores.md §2.1.2: 0.014777, 0.005896, 0.005784,
    0.005604)."""

    name = "osi_ai2019_prereview"
    description = "OSI AI before review: no BN bias, no upsample"

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """BN not counted at all (``use_bias=False`` in their counter)."""
        return Cost(note="OSI pre-review: BN not counted")

    def cost_upsample_nearest(self, op: Op, ctx: RuleContext) -> Cost:
        """No upsample term before 2019-11-01."""
        return Cost()


class Kaist2019(Micronet2019):
    """KAIST AI (CIFAR-100 2nd/3rd, verified): `Counting/count_hooks.py` at commit 6abf891 and the revised
    score notebook (team_scores.md §2.2, §3)."""

    name = "kaist2019"
    description = "KAIST: bias on every conv, BN free, GAP adds H·W, SE scale and residual add free, mask on all"
    #: "bitmask(net)" charges numel/32 for every parameter tensor with ndim != 1, sparse or not.
    mask_policy = "always"

    def cost_conv(self, op: Op, ctx: RuleContext) -> Cost:
        """adds = N·(K·d − 1) + N and params = nnz + C_out for *every* conv (``bias_ops = 1``), even SE convs
        that already have a bias (their bias is that one)."""
        w = op.weight("weight")
        n = op.attrs["vector_len"] * self.density(w)
        outputs = op.out_numel
        vbits, mbits = self.weight_storage(w, ctx)
        c_out = op.attrs["out_channels"]
        bias_bits = (op.weight("bias").bits if op.weight("bias") else w.bits if w else 32) * c_out
        first = w is None or w.first_use
        return Cost(mults=n * outputs, adds=(n - 1) * outputs + outputs,
                    param_bits=vbits + (bias_bits if first else 0.0), mask_bits=mbits)

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """BatchNorm: 0 ops, 0 params (folded; its bias is the conv's ``+C_out``)."""
        return Cost(note="KAIST: BN folded into the conv's counted bias")

    def cost_linear(self, op: Op, ctx: RuleContext) -> Cost:
        """Linear: mults = in·out·d, adds = (in−1)·out·d (no bias add), params = nnz(weight) + nnz(bias)."""
        w, b = op.weight("weight"), op.weight("bias")
        d = self.density(w)
        rows = op.out_numel / op.attrs["out_features"]
        mults = op.attrs["vector_len"] * op.attrs["out_features"] * d * rows
        adds = (op.attrs["vector_len"] - 1) * op.attrs["out_features"] * d * rows
        vbits, mbits = self.weight_storage(w, ctx)
        bias_bits = 0.0
        if b is not None and b.first_use:
            bias_bits = b.tensor_nonzeros() * b.bits
        return Cost(mults=mults, adds=adds, param_bits=vbits + bias_bits, mask_bits=mbits)

    def cost_mean(self, op: Op, ctx: RuleContext) -> Cost:
        """AdaptiveAvgPool2d(1): H·W adds per output (not H·W − 1) and 1 mult."""
        return Cost(mults=op.out_numel, adds=op.attrs["reduce"] * op.out_numel)

    def cost_mul(self, op: Op, ctx: RuleContext) -> Cost:
        """The SE channel multiply ``out * w`` has no hook and is not counted; other multiplies are."""
        if is_channel_scale(op):
            return Cost(note="KAIST: SE scale not counted")
        return super().cost_mul(op, ctx)

    def cost_add(self, op: Op, ctx: RuleContext) -> Cost:
        """The residual add has no hook and is not counted; other adds are."""
        if is_residual_add(op):
            return Cost(note="KAIST: residual add not counted")
        return super().cost_add(op, ctx)


class Brain2019(Micronet2019):
    """BrAIn (CIFAR-100): `Final/profile.py` (team_scores.md §2.3). Run with the freebie (``bits=16``):
    every parameter tensor at 16 bits, BN γ and β included."""

    name = "brain2019"
    description = "BrAIn: BN 3 full ops/element, ReLU 1 full op, AvgPool int-kernel quirk, Linear no bias add"
    fold_bn = False

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """BN: 3 full-precision ops per input element ("2 sub + 1 div"), γ and β stored."""
        first = all(w.first_use for w in op.weights)
        params = 2 * op.attrs["channels"] * self._norm_bits(op) if first else 0.0
        return Cost(adds=3 * op.out_numel, add_bits=32, param_bits=params, note="BrAIn: 2 sub + 1 div")

    def cost_act_relu(self, op: Op, ctx: RuleContext) -> Cost:
        """ReLU: 1 op per input element at full precision."""
        return Cost(mults=op.out_numel, mul_bits=32)

    def cost_avgpool(self, op: Op, ctx: RuleContext) -> Cost:
        """AvgPool2d(k): ``(prod(Tensor([k])) − 1) + 1`` = k ops per output with an int kernel (the bug
        gives 2 for k = 2 and 4 for k = 4, not k²), at full precision."""
        k_int = op.attrs.get("kernel_int") or op.attrs["window"]  # a tuple kernel: prod = k², no bug
        return Cost(mults=op.out_numel, adds=(k_int - 1) * op.out_numel, mul_bits=32, add_bits=32,
                    note="BrAIn: int-kernel AvgPool count")

    def cost_linear(self, op: Op, ctx: RuleContext) -> Cost:
        """Linear: in mults (halved by the freebie) + (in − 1) adds per output, no bias add."""
        cost = self.dot_product(op, ctx)
        if op.weight("bias") is not None:
            cost.adds -= op.out_numel
        return cost


def producer_kinds(op: Op, ctx: RuleContext) -> list[str]:
    """Kinds of the ops producing ``op``'s tensor inputs (recorded producers only)."""
    return [ctx.by_name[name].kind for name in op.inputs if name in ctx.by_name]


class Jnlp2019(Micronet2019):
    """JNLP (WikiText-103, LB 0.8232): the official `counting.py` extended by the team with ``QRNN``,
    ``Embedding`` and ``GlobalMax`` ops and tied weights (team_scores.md §1.3, §2.8;
    `binhdt95/Jaist-MicroNet-Challenge` `counting.py` ``count_ops`` and `test.py` ``read_model``). Run with the
    freebie (``bits=16``): `test.py` prints with PARAMETER_BITS = INPUT_BITS = 16, ACCUMULATOR_BITS = 32.

    A QRNN layer there is its Linear (n mults, n − 1 adds + 1 bias add per output), tanh (3 mults + 2 adds),
    two sigmoids (2 mults + 1 add) and the ForgetMult (2 mults + 2 adds) per hidden unit: the output-gate
    product o·c is not counted. The decoder is two FCs: the tied weight (n mults and n − 1 adds per output,
    stored by the embedding) and the bias as ``FullyConnected(kernel_shape=(0, V), use_bias=True)``, stored
    with (0 − 1)·V + V = 0 adds. The prediction's ``GlobalMax`` is V mults."""

    name = "jnlp2019"
    description = "JNLP: tanh 3 mults + 2 adds, QRNN output gate free, tied decoder without bias add, max V mults"
    #: `counting.py` ``get_flops_per_activation('tanh')``: (exp(x) − exp(−x))/(exp(x) + exp(−x)) = 3 mults, 2 adds.
    activations = {**Micronet2019.activations, "act:tanh": (3, 2)}

    def cost_mul(self, op: Op, ctx: RuleContext) -> Cost:
        """The QRNN output gate h = σ(o)·c (a mul of a sigmoid gate and the cell-state sum) is not counted:
        `counting.py` ``QRNN`` counts tanh, 2 sigmoids and the ForgetMult only."""
        if not op.scalar_operand and sorted(producer_kinds(op, ctx)) == ["act:sigmoid", "add"]:
            return Cost(note="JNLP: QRNN output gate o·c not counted")
        return super().cost_mul(op, ctx)

    def cost_linear(self, op: Op, ctx: RuleContext) -> Cost:
        """A linear whose weight another op stored (the decoder tied to the embedding): n mults and n − 1 adds
        per output, no bias add (`test.py`: ``decoder_bias`` is an FC of kernel (0, V), (0 − 1)·V + V = 0
        adds); its bias is stored. Other linears: the official dot product."""
        cost = self.dot_product(op, ctx)
        w = op.weight("weight")
        if w is not None and not w.first_use and op.weight("bias") is not None:
            cost.adds -= op.out_numel
            cost.note = "JNLP: tied decoder, bias add not counted"
        return cost

    def cost_max(self, op: Op, ctx: RuleContext) -> Cost:
        """``GlobalMax(input_size=1, n_channels=V)``: 1·V mults, i.e. n per output, not n − 1."""
        return Cost(mults=op.attrs["reduce"] * op.out_numel, param_bits=self._operand_storage(op))


class Sisyphus2019(Micronet2019):
    """Sisyphus (ImageNet OneShot-S+, team_scores.md §1.2 #14/#18, §2.7, §3): the official `counting.py`
    (`CanyonWind/MXNet-Single-Path-One-Shot-NAS` `utils/micronet_counting.py`) fed by the team's symbol walker
    `utils/calculate_flops.py` in ``mode='micronet'``. What that walker emits decides the conventions: h-swish
    = ``_plus_scalar`` (1 add) + ``clip`` (2 mults) + ``_div_scalar`` + ``elemwise_mul`` (1 mult each), i.e.
    4 mults + 1 add, and h-sigmoid 3 mults + 1 add (the official table's entries); a channel shuffle is a 1×1
    conv of sparsity (C − 1)/C: 1 mult per element and C values + a C²-bit mask (``permutation_storage =
    "sparse"``, `MicroNetChallenge/detailed_profiling.md` ``shufflechannels`` rows); BatchNorm and the SE
    ``broadcast_mul`` are not emitted, so they cost nothing (below). Run with the freebie (``bits=16``): the
    README's float16 score halves params and mults, adds at 32 bits."""

    name = "sisyphus2019"
    description = "Sisyphus: BN not counted, SE channel scale not counted, shuffle 1 mult/element + sparse matrix"

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """BatchNorm: not counted (`utils/calculate_flops.py` adds BN to its own FLOPs only, never to the
        MicroNet op list; the profiled convs have no bias, e.g. ``first_conv_fwd`` 5.218M adds = 26·200,704)."""
        return Cost(note="Sisyphus: BN not counted")

    def cost_mul(self, op: Op, ctx: RuleContext) -> Cost:
        """The SE gate ``broadcast_mul`` is not counted (`utils/calculate_flops.py` emits only
        ``_plus_scalar``, ``clip``, ``_div_scalar`` and ``elemwise_mul`` as elementwise ops); other
        multiplies are."""
        if is_channel_scale(op):
            return Cost(note="Sisyphus: SE scale (broadcast_mul) not counted")
        return super().cost_mul(op, ctx)


class Rocker2019(Micronet2019):
    """Rocker (ImageNet ProfitableNet, team_scores.md §1.2 #2, §2.6, §3): the team's Caffe ``scoring`` tool as its
    per-layer log `submission/log/score.log` (``Zeitzmz/nips-micronet``) shows it. Widths come from the model
    (6-bit weights, 8-bit activations, FP16 accumulation, 16-bit bias and SE path, see
    ``reference_models.teams.rocker_profitablenet``); this rule set adds what the log fixes per op class:

    - a sparse conv computes ``floor(n·(1 − s))`` products per output (conv1: 27·0.5 → 13, log row
      ``conv1/3x3_s2 ... 1304576`` = 401,408·13·8/32), one add fewer, plus the bias add;
    - h-swish, sigmoid and pooling run at 32 bits (``class_widths``; log rows ``HardSwish``/``Sigmoid``/
      ``Pooling``: mul and add bits 32);
    - the SE's per-channel ``Scale`` (``SE_bn``, a BatchNorm that cannot fold) is 1 mult per element and
      stores nothing (log: ``SE_bn, Scale, 16, -, 16, -, 16, -, 48, -, 0``).
    Storage keeps the fractional ``numel·(1 − s)`` values (conv1: (864·0.5·6 + 864 + 32·16)/32 = 124)."""

    name = "rocker2019"
    description = "Rocker: floor(n·density) products, h-swish/sigmoid/pooling at 32 bits, SE Scale 1 mult, 16-bit adds"
    class_widths = (ClassWidth("h-swish, sigmoid, pooling at 32 bits (score.log)",
                               frozenset({"act:hardswish", "act:sigmoid", "mean", "avgpool"}), None, 32, 32),)

    def cost_conv(self, op: Op, ctx: RuleContext) -> Cost:
        """``floor(n·density)`` mults and ``floor(n·density) − 1`` adds per output (+1 for the bias); storage as
        official (fractional nonzeros at the weight width, a mask when sparse, the bias at its width)."""
        cost = self.dot_product(op, ctx)
        n = math.floor(op.attrs["vector_len"] * self.density(op.weight("weight")) + 1e-9)
        cost.mults = n * op.out_numel
        cost.adds = (n - 1 + (1 if op.weight("bias") is not None else 0)) * op.out_numel
        return cost

    def cost_bn(self, op: Op, ctx: RuleContext) -> Cost:
        """A BN that folds into a conv: official. Otherwise (the SE's Caffe ``Scale``): 1 mult per element and
        no storage, as the team's log counts it."""
        if self.bn_folds(op, ctx) is not None:
            return super().cost_bn(op, ctx)
        return Cost(mults=op.out_numel, note="Rocker: SE Scale, 1 mult per element, not stored")


class Msunet2019(Micronet2019):
    """MSUNet (CIFAR-100 #5–#7, team_scores.md §1.1, §2.8, §3): `counting.py` of ``MSU-MLSys-Lab/MSUNet`` under
    ``--amp --opt-level O3`` (everything FP16, denominator d = 2). Run with ``bits=16``; ternary layers carry
    ``weight_bits = 1`` (``reference_models.teams.mixnet.msunet_v3``).

    - A ternary conv is a sparse binary one: per output n·density 1-bit products plus one FP16 multiplication by
      the layer's scale √M; storage nonzeros·1 bit + a 1-bit mask over every element + one FP16 scale.
    - Other convs count their sparsity only where it is ≥ 0.4 (then with a mask); below, dense.
    - Adds outside the convs' and the linear's dot products are FP16 (``/ d``): BN (its shift: C params and 1
      add per element, since the convs have no bias), activations, residual adds, pooling.
    - The SE pooling counts one mult per element of its *input* (``output.numel() / d`` of the SE module) and
      (H·W − 1)·C adds; the linear stores no bias and adds none."""

    name = "msunet2019"
    description = "MSUNet: ternary = sparse binary + FP16 scale, sparsity only >= 0.4, FP16 adds outside dot products"
    #: `counting.py`: "layers with sparsity < 0.4 does not count".
    min_sparsity = 0.4
    class_widths = (ClassWidth("FP16 adds outside the dot products (counting.py, / d)", frozenset({
        "bn", "add", "mean", "avgpool", "act:relu", "act:silu", "act:sigmoid", "act:hardswish", "mul"}), None,
        None, 16),)

    def density(self, w: WeightRef | None) -> float:
        """Nonzero share, counted only for ternary (1-bit) tensors or when the sparsity reaches 0.4."""
        if w is None or not w.numel:
            return 1.0
        if w.bits != 1 and w.sparsity < self.min_sparsity:
            return 1.0
        return w.nonzeros / w.numel

    def cost_conv(self, op: Op, ctx: RuleContext) -> Cost:
        """``counting.py`` ``nn.Conv2d``: n·density mults and (n·density − 1) adds per output (+1 for a bias);
        a ternary conv adds one FP16 scale mult per output (its ``mul_bits`` is then the mean width of its
        mults: (n·density·1 + 16)/(n·density + 1)) and stores its mask and scale."""
        w, b = op.weight("weight"), op.weight("bias")
        d = self.density(w)
        n = op.attrs["vector_len"] * d
        out = op.out_numel
        adds = (n - 1) * out + (out if b is not None else 0.0)
        bias_bits = self.dense_storage(b)
        first = w is not None and w.first_use
        if w is not None and w.bits == 1:
            values = (w.nonzeros + 16) if first else 0.0  # 1-bit nonzeros and the FP16 scale
            mask = float(w.numel) if first else 0.0  # stored for every ternary layer, sparse or not
            return Cost(mults=(n + 1) * out, adds=adds, param_bits=values + bias_bits, mask_bits=mask,
                        mul_bits=(n + 16) / (n + 1), note="MSUNet: ternary as sparse binary + FP16 scale per output")
        vbits = (w.numel * d * w.bits if first else 0.0) if w is not None else 0.0
        mask = self.mask_bits(w, ctx) if (first and d < 1.0) else 0.0
        return Cost(mults=n * out, adds=adds, param_bits=vbits + bias_bits, mask_bits=mask)

    def cost_mean(self, op: Op, ctx: RuleContext) -> Cost:
        """The SE pooling (a mean feeding a conv): H·W·C mults (``output.numel() / d`` of the SE block) and
        (H·W − 1)·C adds; any other mean: official."""
        consumers = [ctx.by_name[c] for c in ctx.consumers.get(op.name, []) if c in ctx.by_name]
        if consumers and all(c.kind == "conv" for c in consumers):
            n = op.attrs["reduce"]
            return Cost(mults=n * op.out_numel, adds=(n - 1) * op.out_numel, note="MSUNet: SE pooling mults H·W·C")
        return super().cost_mean(op, ctx)

    def cost_linear(self, op: Op, ctx: RuleContext) -> Cost:
        """``nn.Linear``: in·out params (dense), in mults and in − 1 adds per output; no bias stored or added."""
        n = op.attrs["vector_len"]
        return Cost(mults=n * op.out_numel, adds=(n - 1) * op.out_numel,
                    param_bits=self.dense_storage(op.weight("weight")), note="MSUNet: linear bias not counted")
