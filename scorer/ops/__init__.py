"""The op vocabulary's capture side: extractors that turn calls (module, function, method, aten) into Ops.

Kinds and their traits are declared in ``rules.kinds``; each module here registers the extractors of one
family of kinds with every target they match (``scorer.ops.registry``). See docs/ops.md for adding an op.
"""

from __future__ import annotations

import torch.nn as nn

from scorer.ops import act, dot, elementwise, free, norm, pool, shuffle  # noqa: F401 - registers the extractors
from scorer.ops.call import Call
from scorer.ops.free import quant_bits
from scorer.ops.registry import DEFS, lookup, module_def, targets, translate

__all__ = ["DEFS", "Call", "is_known_leaf", "lookup", "module_def", "quant_bits", "targets", "translate"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_known_leaf(mod: nn.Module) -> bool:
    """True for modules an extractor translates whole (capture does not trace into their forward)."""
    return not isinstance(mod, _CONTAINERS) and module_def(mod) is not None
