"""micronet-score: exact MicroNet Challenge (NeurIPS 2019) scoring of PyTorch models."""

__version__ = "0.1.0"

from scorer.api import score
from scorer.report import Report

__all__ = ["Report", "__version__", "score"]
