"""The op vocabulary's capture side: extractors that turn calls (module, function, method, aten) into Ops.

Kinds and their traits are declared in ``rules.kinds``; each module here registers the extractors of one
family of kinds with every target they match (``scorer.ops.registry``). See docs/ops.md for adding an op.
"""

from __future__ import annotations

from scorer.ops import act, attention, dot, elementwise, free, norm, pool, quant, rnn, shuffle  # noqa: F401 - registers the extractors
from scorer.ops.call import Call
from scorer.ops.quant import quant_bits
from scorer.ops.registry import DEFS, is_known_leaf, is_whole, lookup, module_def, targets, translate

__all__ = ["DEFS", "Call", "is_known_leaf", "is_whole", "lookup", "module_def", "quant_bits", "targets", "translate"]

