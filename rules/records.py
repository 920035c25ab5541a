"""The op records: one Op per captured operation, one WeightRef per parameter tensor it reads.

Capture (``scorer.capture``) turns a model into a list of Ops in execution order; annotation (precision,
sparsity) fills their widths and nonzeros; a rule set turns each into a Cost. ``Op.kind`` is a name declared
in ``rules.kinds``, and ``Op.attrs`` holds the attributes that kind declares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - annotations only: `rules` imports without torch (--list-rules)
    import torch


@dataclass(slots=True)
class WeightRef:
    """A parameter tensor an op reads, with what sparsity and precision annotation adds later."""

    role: str  # "weight", "bias", "bn_weight", "bn_bias", "prelu_weight", ...
    name: str  # fully qualified parameter name (as in state_dict)
    tensor: torch.Tensor | None  # the real tensor (None for a meta-only capture)
    shape: tuple[int, ...]
    mask: torch.Tensor | None = None  # torch.nn.utils.prune mask, when present
    # Filled by annotation:
    numel: int = 0
    nonzeros: float = 0.0
    bits: int = 32
    first_use: bool = True  # storage is counted at the first op that reads a tensor
    ident: int | None = None  # identity of the stored tensor (tied weights share it); None: the name

    def __post_init__(self) -> None:
        self.numel = math.prod(self.shape)
        if self.nonzeros == 0.0:
            self.nonzeros = float(self.numel)

    @property
    def sparsity(self) -> float:
        """Fraction of zeros (0 for an empty tensor)."""
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0

    def tensor_nonzeros(self) -> float:
        """Nonzeros of the tensor itself, whose zeros annotation may not credit (a bias: §2.2 credits matrices), or its
        element count when it holds no data (a meta tensor): what a rule set storing a bias sparse counts."""
        t = self.tensor
        return float((t != 0).sum()) if t is not None and t.device.type != "meta" else float(self.numel)


@dataclass(slots=True)
class Op:
    """One captured operation."""

    name: str  # graph node name, unique
    module: str  # dotted module path of the layer that ran it ("" for the top level)
    kind: str  # canonical kind: conv, linear, matmul, bn, act:relu, add, mul, div, mean, ...
    target: str  # what was called, for messages: "nn.Conv2d", "torch.relu", "Tensor.add_", "aten.add.Tensor"
    in_shapes: list[tuple[int, ...]]  # shapes of the tensor inputs (activations, not weights)
    out_shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    weights: list[WeightRef] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # names of the ops producing the tensor inputs
    scalar_operand: bool = False  # elementwise op with a Python scalar operand
    reads_input: bool = False  # reads a tensor passed to the model (its input), which no op produces
    #: what activation memory (scorer.memory) reads instead of ``inputs``, when the values the op holds live are
    #: not the ones its width comes from (a recurrent term reading its state; ``zeros_like(x)`` reading no value)
    memory_inputs: list[str] | None = None
    #: what activation memory writes instead of ``out_shape``: an in-place write into a view of a bigger tensor
    #: (``out[:, t] = h``) leaves that whole tensor changed, a new one as every in-place call's (scorer.memory)
    memory_out_shape: tuple[int, ...] | None = None
    # Filled by annotation:
    batch: int = 1
    in_bits: list[int] = field(default_factory=list)
    out_bits: int = 32
    acc_bits: int = 32
    mul_bits: int = 32
    add_bits: int = 32
    #: widths of the values multiplied: the activation inputs' then the multiplied weights' (annotation sets
    #: it; a rule set's ``mul_width`` and adder tree read it)
    operand_bits: list[int] = field(default_factory=list)
    path: str = ""  # early-exit path name, when scoring a model with exits

    @property
    def out_numel(self) -> float:
        """Output elements per example (a 0-d output, e.g. a full reduction, is one element)."""
        return math.prod(self.out_shape) / self.batch

    def weight(self, role: str) -> WeightRef | None:
        """The weight with ``role``, or None."""
        for w in self.weights:
            if w.role == role:
                return w
        return None
