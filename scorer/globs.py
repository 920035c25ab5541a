"""Name globs (fnmatch, case-sensitive) as precision configs and sparsity mappings use them."""

from __future__ import annotations

import fnmatch
import functools


@functools.lru_cache(maxsize=4096)
def is_literal(glob: str) -> bool:
    """Whether ``glob`` has no wildcard (``*?[``): it matches only itself."""
    return not any(c in glob for c in "*?[")


def glob_match(name: str, glob: str) -> bool:
    """Whether ``name`` matches ``glob`` (``fnmatch.fnmatchcase``; a glob without ``*?[`` only itself)."""
    return glob == name if is_literal(glob) else fnmatch.fnmatchcase(name, glob)
