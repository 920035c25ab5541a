"""micronet-score: exact MicroNet Challenge (NeurIPS 2019) scoring of PyTorch models.

``from scorer import score`` is the Python API; ``micronet-score`` the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING


def _version() -> str:
    """The installed distribution's version, else (a source checkout not installed) pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("micronet-score")
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


#: The tool's version (``micronet-score --version``; the ``version`` of a JSON report).
__version__ = _version()
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
