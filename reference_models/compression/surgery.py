"""Module surgery shared by the compression passes: find a submodule's parent and swap a child."""

from __future__ import annotations

from torch import nn


def parent_of(root: nn.Module, name: str) -> nn.Module:
    """The module holding submodule ``name`` (``root`` itself for a top-level child)."""
    parent_name = name.rpartition(".")[0]
    return root.get_submodule(parent_name) if parent_name else root


def set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace submodule ``name`` of ``root`` by ``new``."""
    setattr(parent_of(root, name), name.rpartition(".")[2], new)
