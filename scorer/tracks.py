"""Challenge tracks: normalisation baselines (official_rules.md §1.2) and default example inputs."""

from __future__ import annotations

from dataclasses import dataclass

from scorer.errors import ScorerError


@dataclass(frozen=True)
class Track:
    """A challenge track: its baseline parameter and op counts (32-bit units), default input, and whether ops
    are counted per token (WikiText-103, official_rules.md §1.1) rather than per example."""

    name: str
    baseline_params: float
    baseline_ops: float
    input_shape: tuple[int, ...] | None
    input_dtype: str = "float32"
    per_token: bool = False


TRACKS: dict[str, Track] = {
    "cifar100": Track("cifar100", 36.5e6, 10.49e9, (1, 3, 32, 32)),
    "imagenet": Track("imagenet", 6.9e6, 1170e6, (1, 3, 224, 224)),
    # one new token per forward: batch of one sequence, online inference (official_rules.md §1.1)
    "wikitext103": Track("wikitext103", 159e6, 318e6, (1, 1), "long", per_token=True),
}


def get_track(name: str) -> Track:
    """The track called ``name``; ScorerError naming the known tracks otherwise."""
    try:
        return TRACKS[name]
    except KeyError:
        raise ScorerError(f"unknown track {name!r}; known: {', '.join(TRACKS)}") from None
