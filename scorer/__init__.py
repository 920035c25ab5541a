"""micronet-score: exact MicroNet Challenge (NeurIPS 2019) scoring of PyTorch models.

``from scorer import score`` is the Python API; ``micronet-score`` the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Report", "Scorer", "__version__", "score"]

if TYPE_CHECKING:  # pragma: no cover
    from scorer.api import score
    from scorer.costmodel import Scorer
    from scorer.report import Report


def __getattr__(name: str) -> object:
    # Lazy: `import scorer` (the CLI's --help, --version) does not import torch and pandas.
    if name == "score":
        from scorer.api import score

        return score
    if name == "Scorer":
        from scorer.costmodel import Scorer

        return Scorer
    if name == "Report":
        from scorer.report import Report

        return Report
    raise AttributeError(f"module 'scorer' has no attribute {name!r}")
