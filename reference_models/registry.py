"""Registry of reference model factories, addressed as ``reference:NAME`` by the CLI and the loader."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - annotations only: the registry imports without torch
    import torch.nn as nn

TRACK_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "cifar100": (1, 3, 32, 32),
    "imagenet": (1, 3, 224, 224),
    "wikitext103": (1, 1),  # one token id per forward (online inference)
}
TRACK_INPUT_DTYPES: dict[str, str] = {"wikitext103": "long"}


@dataclass(frozen=True)
class ReferenceInfo:
    """What the registry knows about one reference model."""

    name: str
    factory: Callable[..., nn.Module]
    track: str = "cifar100"
    rules: str = "micronet2019"
    bits: int | None = None
    input_shape: tuple[int, ...] | None = None
    description: str = ""
    kwargs: dict = field(default_factory=dict)
    #: dtype of the (first) input: "long" for token ids; None: the track's (float32, or long on wikitext103)
    input_dtype: str | None = None
    #: default share of each of the model's ``paths()`` (e.g. token-bin fractions); None: one path
    path_fractions: dict | None = None
    #: the team's counting sparsity for this (untrained) reference: a callable returning a ``score(sparsity=)``
    #: spec, used by ``micronet-score reference:NAME`` without ``--sparsity``; None: measured
    sparsity: Callable[[], object] | None = None

    @property
    def default_input_shape(self) -> tuple[int, ...]:
        """The example input shape: the model's own, else its track's."""
        return self.input_shape or TRACK_INPUT_SHAPES.get(self.track, (1, 3, 32, 32))

    @property
    def default_input_dtype(self) -> str:
        """The example input's dtype: the model's own, else its track's."""
        return self.input_dtype or TRACK_INPUT_DTYPES.get(self.track, "float32")

    def build(self, **overrides) -> nn.Module:
        """Build the model in eval mode with the registered keyword arguments plus ``overrides``."""
        import torch

        from scorer.sparsity import measured_nonzeros

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # reference weights are reproducible from run to run
            model = self.factory(**{**self.kwargs, **overrides})
        with torch.no_grad():
            # Random init can draw an exact 0.0, and one zero makes a whole tensor "sparse" under the
            # official rule (a 1-bit mask over every element). Untrained reference weights carry no such
            # intent, so those draws are nudged off zero; real sparsity comes from pruning or tables.
            # (counted first: the mask of a 36M-element tensor costs more than the count, and is rarely needed;
            # counted by the scorer's one-thread count: torch's threads wait on each other on a busy CPU)
            for p in model.parameters():
                if (p.dim() > 1 and p.is_floating_point() and p.device.type != "meta"
                        and measured_nonzeros(p) < p.numel()):
                    p[p == 0] = torch.finfo(p.dtype).tiny
        return model.eval()


_REGISTRY: dict[str, ReferenceInfo] = {}

# Modules whose import registers factories. Listed here so that the registry is complete without the
# caller importing them first; a module that is missing is reported by name, never silently skipped.
_MODULES = (
    "reference_models.baselines",
    "reference_models.teams",
)
_loaded = False


def register(name: str, **info) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``factory`` under ``name`` with ReferenceInfo fields given as keywords."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"reference model {name!r} registered twice")
        _REGISTRY[name] = ReferenceInfo(name=name, factory=factory, **info)
        return factory

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODULES:
        importlib.import_module(mod)
    _loaded = True


def list_references() -> list[ReferenceInfo]:
    """All registered reference models, sorted by name."""
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_reference(name: str) -> ReferenceInfo:
    """The registry entry for ``name``; KeyError naming the known models otherwise."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown reference model {name!r}; known: {known}") from None


def build_reference(name: str, **overrides) -> nn.Module:
    """Build reference model ``name`` (eval mode)."""
    return get_reference(name).build(**overrides)
