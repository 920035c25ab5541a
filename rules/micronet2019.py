"""``micronet2019``: the official counting code's arithmetic plus the organisers' rulings (the default)."""

from __future__ import annotations

from rules.base import RuleSet

#: (mults, adds) per output element. Sources: official_rules.md §2.2 (`get_flops_per_activation`:
#: relu 1 mult, swish 3 mults + 1 add, sigmoid 2 mults + 1 add) and §2.4 (organisers' announcement via
#: KAIST: relu6 2 mults; hswish 4 mults + 1 add, KAIST and Rocker, verified). Entries marked [INF] have no
#: official guidance and follow the decomposition given beside them.
OFFICIAL_ACTIVATIONS: dict[str, tuple[float, float]] = {
    "act:relu": (1, 0),  # one comparison, counted as a mult (code comment: freebie for ReLUs)
    "act:relu6": (2, 0),  # two clamps
    "act:hardtanh": (2, 0),  # two clamps, like relu6
    "act:sigmoid": (2, 1),  # exp(x)/(1+exp(x))
    "act:silu": (3, 1),  # swish x/(1+exp(-x))
    "act:hardswish": (4, 1),  # x·relu6(x+3)/6
    "act:hardsigmoid": (3, 1),  # relu6(x+3)/6 [INF, same decomposition]
    "act:tanh": (2, 2),  # (e^2x − 1)/(e^2x + 1): exp, division; subtraction, addition [INF]
    # GELU as written in its definition 0.5·x·(1 + erf(x/√2)): x/√2, erf (one op, official page), +1, 0.5·x, ×
    # = 4 mults + 1 add [INF]; the tanh approximation as written: x³ (2 mults), ·0.044715, + x, ·√(2/π),
    # tanh (2, 2 below), + 1, 0.5·x, × = 8 mults + 4 adds [INF]. Either equals the written-out form's count.
    "act:gelu": (4, 1),
    "act:gelu_tanh": (8, 4),
    "act:erf": (1, 0),  # a transcendental evaluation counts as one op (official page)
    "act:leaky_relu": (2, 0),  # comparison + slope multiplication [INF]
    "act:elu": (3, 1),  # comparison, exp, scale; −1 [INF]
    "act:selu": (4, 1),  # ELU's, then the λ scale [INF]
    "act:mish": (5, 2),  # x·tanh(softplus(x)): exp, log, tanh (2,2), final mult [INF]
    "act:sign": (1, 0),  # a bitwise op counts as one op (official page)
    "act:exp": (1, 0),  # a transcendental evaluation counts as one op (official page)
    "act:log": (1, 0),
    "act:sqrt": (1, 0),
    "act:rsqrt": (1, 0),
    "act:reciprocal": (1, 0),
    "act:abs": (1, 0),  # sign-bit operation: one op
    "act:neg": (1, 0),  # sign-bit operation: one op
    "act:compare": (1, 0),  # a comparison, counted as a mult like ReLU's [INF]
    "act:not": (1, 0),  # ~mask, logical_not: a bitwise op counts as one op (official page)
    "act:select": (1, 0),  # where(cond, a, b): one selection per element, like a comparison [INF]
}


class Micronet2019(RuleSet):
    """The official `counting.py` formulas (official_rules.md §2.2) with the organisers' rulings: BN shift
    folded as a bias (§2.3, OSI-AI issue #7), relu6 2 mults and hswish 4 mults + 1 add (§2.4), the 1-bit
    mask over every sparse tensor (§4), residual adds over the tensor's real channels."""

    name = "micronet2019"
    description = "official counting.py arithmetic + organisers' rulings (default)"
    activations = OFFICIAL_ACTIVATIONS
