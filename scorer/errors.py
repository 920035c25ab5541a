"""Errors the scorer raises on purpose. The CLI turns each into one line on stderr and an exit code."""

from __future__ import annotations


class ScorerError(Exception):
    """A usage or input problem the user can fix (exit code 2)."""

    exit_code = 2


class CaptureError(ScorerError):
    """The model could not be captured as a graph by any of the capture methods."""


class UnknownOpError(ScorerError):
    """Ops without a rule were found (exit code 3). ``unknown`` lists (op, layer, target) triples."""

    exit_code = 3

    def __init__(self, unknown: list[tuple[str, str, str]]):
        self.unknown = unknown
        listed = "; ".join(f"{target} at {layer or '<top>'} (node {name})" for name, layer, target in unknown)
        super().__init__(
            f"{len(unknown)} op(s) have no counting rule: {listed}. Add a rule (a RuleSet subclass with a "
            "cost_<kind> method or an entry in its activation table, passed with --rules package.module:Class) "
            "or pass --allow-unknown to count them as zero with a warning"
        )
