"""Rule sets: the official 2019 conventions, the official notebook, team variants and peer conventions."""

from __future__ import annotations

import importlib

from rules.base import Cost, RuleContext, RuleSet
from rules.micronet2019 import Micronet2019
from rules.official_notebook import OfficialNotebook
from rules.peers import Flops, Macs

_BUILTIN: dict[str, str] = {
    "micronet2019": "rules.micronet2019:Micronet2019",
    "official_notebook": "rules.official_notebook:OfficialNotebook",
    "macs": "rules.peers:Macs",
    "flops": "rules.peers:Flops",
    "osi_ai2019": "rules.teams:OsiAi2019",
    "osi_ai2019_prereview": "rules.teams:OsiAi2019PreReview",
    "kaist2019": "rules.teams:Kaist2019",
    "brain2019": "rules.teams:Brain2019",
    "mit_han2019": "rules.mit_han:MitHan2019",
    "jnlp2019": "rules.teams:Jnlp2019",
    # published-totals conventions (issue 10 item 2)
    "riair2019": "rules.teams2019:Riair2019",
    "woody2019": "rules.teams2019:Woody2019",
    "wavecomp2019": "rules.teams2019:Wavecomp2019",
    "mbpm2019": "rules.teams2019:Mbpm2019",
    "dnw2019": "rules.teams2019:Dnw2019",
    "dqstarter2019": "rules.teams2019:Dqstarter2019",
    "qualcomm2019": "rules.teams2019:Qualcomm2019",
    # reference-model teams (issue 10 item 3)
    "sisyphus2019": "rules.teams:Sisyphus2019",
    "rocker2019": "rules.teams:Rocker2019",
    "msunet2019": "rules.teams:Msunet2019",
}


def is_builtin(name: object) -> bool:
    """True when ``name`` is a built-in rule set's name (resolving it imports only this package)."""
    return isinstance(name, str) and name in _BUILTIN


def available_rulesets() -> list[str]:
    """Names of the built-in rule sets whose modules import."""
    names = []
    for name, path in _BUILTIN.items():
        try:
            _load(path)
        except (ImportError, AttributeError):
            continue
        names.append(name)
    return names


def _load(path: str) -> type[RuleSet]:
    if ":" in path:
        mod_name, attr = path.split(":", 1)
    else:
        mod_name, _, attr = path.rpartition(".")
    mod = importlib.import_module(mod_name)
    cls = getattr(mod, attr)
    return cls


def get_ruleset(spec: str | RuleSet | type[RuleSet]) -> RuleSet:
    """A RuleSet instance from a built-in name, an import path (``pkg.mod:Class``), a class or an instance."""
    if isinstance(spec, RuleSet):
        return spec
    if isinstance(spec, type) and issubclass(spec, RuleSet):
        return spec()
    path = _BUILTIN.get(spec, spec)
    if path == spec and ":" not in spec and "." not in spec:
        raise ValueError(f"unknown rule set {spec!r}; built-in: {', '.join(available_rulesets())}")
    try:
        cls = _load(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot load rule set {spec!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, RuleSet)):
        raise ValueError(f"rule set {spec!r} is not a rules.RuleSet subclass")
    return cls()


__all__ = [
    "Cost",
    "Flops",
    "Macs",
    "Micronet2019",
    "OfficialNotebook",
    "RuleContext",
    "RuleSet",
    "available_rulesets",
    "get_ruleset",
    "is_builtin",
]
