"""Unpickling for the loaders: weights-only by default, a full unpickle only when the user trusts the file.

``weights_only_load`` runs torch's restricted unpickler (tensors, containers and numbers; no code runs) and
tells a pickle that holds other Python objects (``UnsafePickle``, naming the global it refers to) from a
corrupt one. ``trusted_load`` is the full unpickle, for files the user said they trust. Both first check a
zip archive's central directory (``check_zip_bomb``): torch inflates whole records, so a small deflated
file could otherwise take gigabytes.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from scorer.errors import ScorerError

#: What code from the user (a factory, an imported file, a trusted pickle) may raise; the loaders turn each
#: into a one-line ScorerError, so that not even ``sys.exit(0)`` ends the run quietly.
USER_ERRORS = (Exception, SystemExit, KeyboardInterrupt)

# The restricted unpickler's reasons for refusing an object (torch/_weights_only_unpickler.py).
_REFUSALS = (
    re.compile(r"\bGLOBAL ([\w.]+?)\.?(?:\s|$)"),  # an unsupported or blocked global, e.g. posix.system
    re.compile(r"unrecognized function (.+?)(?: which belongs to .+)?$", re.M),
    re.compile(r"(?:create new object for|Can only build) .*? but got (.+)$", re.M),
    re.compile(r"must be imported to load (.+)$", re.M),
)


@contextlib.contextmanager
def user_imports(extra_path: Path | None = None) -> Iterator[None]:
    """Import the user's modules: no ``__pycache__`` next to their files, and ``extra_path`` (a file's
    folder, the current directory) on sys.path for the duration only."""
    old = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    added = False
    if extra_path is not None and str(extra_path) not in sys.path:
        sys.path.insert(0, str(extra_path))
        added = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = old
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(extra_path))


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for messages about the user's code or file."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: A zip whose records unpack to more than this many times its size, plus ``MAX_UNPACK_SLACK``, is refused.
MAX_UNPACK_RATIO = 100
MAX_UNPACK_SLACK = 64 << 20
_ZIP_MAGIC = b"PK\x03\x04"  # torch.load reads a file starting so as a zip archive (else a legacy pickle)


def check_unpack_size(infos: list[zipfile.ZipInfo], packed: int, where: str) -> None:
    """ScorerError when the records listed in a zip's central directory unpack to more than
    ``MAX_UNPACK_RATIO`` times ``packed`` plus ``MAX_UNPACK_SLACK`` bytes (readers such as torch's allocate
    each record's listed size, so nothing is inflated before this check)."""
    unpacked = sum(info.file_size for info in infos)
    if unpacked > MAX_UNPACK_RATIO * packed + MAX_UNPACK_SLACK:
        raise ScorerError(f"{where}: its entries would unpack to {unpacked:,} bytes ({packed:,} packed); "
                          "refusing what looks like a zip bomb")


def check_zip_bomb(source: Path | bytes, where: str) -> None:
    """Before ``torch.load`` of ``source``: when torch would read it as a zip archive, check its central
    directory with ``check_unpack_size``; one torch can read but ``zipfile`` cannot is refused as corrupt."""
    try:
        if isinstance(source, bytes):
            head, packed = source[:4], len(source)
        else:
            with open(source, "rb") as fh:
                head = fh.read(4)
            packed = Path(source).stat().st_size
        if head != _ZIP_MAGIC:
            return
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        raise ScorerError(f"{where} is corrupt or truncated (not a readable PyTorch archive)") from None
    check_unpack_size(infos, packed, where)


class UnsafePickle(Exception):
    """The pickle holds an object the weights-only unpickler refuses; ``what`` names it (e.g. a global)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _refused_object(text: str) -> str | None:
    for pattern in _REFUSALS:
        m = pattern.search(text)
        if m:
            return m.group(1).strip()
    return None


def weights_only_load(source: Path | bytes, where: str) -> Any:
    """``torch.load(weights_only=True)`` of a file or of bytes, on the CPU.

    Raises UnsafePickle when the pickle holds Python objects beyond tensors and containers, and a
    ScorerError (naming ``where``) when it is corrupt or not a PyTorch file.
    """
    check_zip_bomb(source, where)
    f = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = _refused_object(str(exc))
        if what is not None:
            raise UnsafePickle(what) from None
        raise ScorerError(f"{where} is corrupt or not a PyTorch file (unpickling failed)") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        lowered = str(exc).lower()
        if "zip archive" in lowered or "central directory" in lowered or isinstance(exc, EOFError):
            raise ScorerError(f"{where} is corrupt or truncated (not a readable PyTorch archive)") from None
        raise ScorerError(f"{where} is corrupt or not a PyTorch file ({one_line(exc)})") from None


def trusted_load(source: Path | bytes, where: str) -> Any:
    """The full unpickle (``weights_only=False``): only for a file the user trusts, as it can run code.

    Classes are imported as ``--arch`` imports factories: the current directory is on sys.path meanwhile.
    """
    check_zip_bomb(source, where)
    f = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with user_imports(Path.cwd()):
            return torch.load(f, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ScorerError(
            f"{where}: cannot unpickle it: a class it needs is not importable here ({one_line(exc)})"
        ) from None
    except USER_ERRORS as exc:  # unpickling trusted data may raise anything, sys.exit() included
        raise ScorerError(f"{where}: cannot unpickle it ({one_line(exc)})") from None
