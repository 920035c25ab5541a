"""Per-layer nonzero tables (team_scores.md §2.1.3 OSI, §2.2.1 KAIST ver1, §2.2.2 KAIST ver2, §2.5 MIT-HAN-Lab) and a helper
that prunes a model to exactly those counts.

The tables are CSV files in ``reference_models/data/`` (``osi_ai_nonzeros.csv``, ``kaist_v1_nonzeros.csv``,
``kaist_v2_nonzeros.csv``) with columns ``tensor,shape,numel,nonzero`` (KAIST tables add the team's
per-layer hook values); lines starting with ``#`` are comments naming the source section.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

#: Shipped with the package (package data).
DATA_DIR = Path(__file__).resolve().parents[1] / "data"

NONZERO_TABLES: dict[str, str] = {
    "osi_ai": "osi_ai_nonzeros.csv",
    "kaist_v1": "kaist_v1_nonzeros.csv",
    "kaist_v2": "kaist_v2_nonzeros.csv",
    # MIT-HAN-Lab's WikiText-103 submissions 1-3 (team_scores.md §2.5): every masked tensor, biases included
    "mit_han_sub1": "mit_han_sub1_nonzeros.csv",
    "mit_han_sub2": "mit_han_sub2_nonzeros.csv",
    "mit_han_sub3": "mit_han_sub3_nonzeros.csv",
}


@dataclass(frozen=True)
class NonzeroRow:
    """One weight tensor of a published checkpoint: name, shape, element count and nonzero count."""

    tensor: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int


def nonzero_table_path(name: str) -> Path:
    """Path of the nonzero table for reference model ``name`` (``osi_ai``, ``kaist_v1``, ``kaist_v2``)."""
    try:
        return DATA_DIR / NONZERO_TABLES[name]
    except KeyError:
        raise KeyError(f"no nonzero table for {name!r}; known: {sorted(NONZERO_TABLES)}") from None


def load_nonzero_table(source: str | Path) -> list[NonzeroRow]:
    """Read a nonzero table: a reference model name or a CSV path. Comment lines (``#``) are skipped."""
    path = nonzero_table_path(source) if isinstance(source, str) and source in NONZERO_TABLES else Path(source)
    with open(path, newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.lstrip().startswith("#") and line.strip())
        rows = []
        for rec in reader:
            shape = tuple(int(d) for d in rec["shape"].split("x"))
            rows.append(NonzeroRow(rec["tensor"], shape, int(rec["numel"]), int(rec["nonzero"])))
    return rows


def nonzero_counts(source: str | Path) -> dict[str, int]:
    """``{tensor name: nonzero count}`` from :func:`load_nonzero_table`."""
    return {row.tensor: row.nonzero for row in load_nonzero_table(source)}


def apply_nonzero_counts(model: nn.Module, counts: dict[str, int]) -> nn.Module:
    """Zero the smallest-magnitude entries of each named parameter so exactly ``counts[name]`` stay nonzero.

    Ties in magnitude are broken by flat index (stable sort), so the result is a deterministic function of
    the weights: seed the initialisation (``torch.manual_seed``) for a reproducible pruned model. A kept
    entry that happens to be exactly zero is set to a small nonzero value so that the count is exact.
    Works in place and returns ``model``.

    Raises:
        KeyError: a name that is not a parameter of ``model``.
        ValueError: a count that is negative or larger than the tensor's element count.
    """
    params = dict(model.named_parameters())
    unknown = sorted(set(counts) - set(params))
    if unknown:
        raise KeyError(f"unknown parameter name(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    for name, keep in counts.items():
        weight = params[name]
        if not 0 <= keep <= weight.numel():
            raise ValueError(f"{name}: cannot keep {keep} nonzeros in a tensor of {weight.numel()} elements")
    with torch.no_grad():
        for name, keep in counts.items():
            flat = params[name].view(-1)
            order = torch.sort(flat.abs(), descending=True, stable=True).indices
            mask = torch.zeros_like(flat, dtype=torch.bool)
            mask[order[:keep]] = True
            kept = flat[mask]
            tiny = max(float(kept.abs().max()) * 1e-3, 1e-6) if keep else 0.0
            flat[mask] = torch.where(kept == 0, torch.full_like(kept, tiny), kept)
            flat[~mask] = 0.0
    return model
