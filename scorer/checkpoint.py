"""The micronet checkpoint: a weights-only-loadable ``torch.save`` of tensors plus JSON metadata.

Layout (a plain dict, so ``torch.load(path, weights_only=True)`` reads it without executing code)::

    {
      "micronet_checkpoint": 1,
      "arch": "kaist_v1",                 # a reference model name (reference_models registry)
      "arch_kwargs": {...},               # JSON data: keyword arguments of the factory
      "state_dict": {name: tensor},       # weights; pruned entries are stored as exact zeros
      "masks": {param_name: bool tensor}, # optional: pruning masks (True = kept)
      "bits": {layer_glob: {"weight": int, "act": int, "acc": int}},   # optional per-layer precision
      "exit_fractions": {exit_name: float},                           # optional, measured on data
      "meta": {...},                      # optional: recipe, stage, accuracy, input_shape, track, rules
    }

Reading one (``load_checkpoint``, ``checkpoint_from_payload``) runs no code. ``micronet-score ckpt``
(``scorer.load``) then builds ``arch`` by calling that registered reference factory with ``arch_kwargs``
(this project's code, with JSON arguments), loads the weights, and applies the masks, bits and exit
fractions recorded here, so that no flag is needed to score what the pipeline produced. An ``arch`` that
names anything else to import (``pkg.mod:factory``, ``file.py:factory``) is refused unless the user passes
``--trust-code`` (``trust_code=True``); ``--arch`` on the command line overrides it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """An in-memory micronet checkpoint."""

    arch: str
    state_dict: dict[str, torch.Tensor]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    bits: dict[str, dict[str, int]] = field(default_factory=dict)
    exit_fractions: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _check_jsonable(name: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint field {name!r} must be JSON-serialisable: {exc}") from None


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary file, then rename) and return the path."""
    for name in ("arch_kwargs", "bits", "exit_fractions", "meta"):
        _check_jsonable(name, getattr(ckpt, name))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "micronet_checkpoint": FORMAT_VERSION,
        "arch": ckpt.arch,
        "arch_kwargs": ckpt.arch_kwargs,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "masks": {k: v.detach().cpu().bool() for k, v in ckpt.masks.items()},
        "bits": ckpt.bits,
        "exit_fractions": {k: float(v) for k, v in ckpt.exit_fractions.items()},
        "meta": ckpt.meta,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def is_checkpoint_payload(obj: Any) -> bool:
    """True when ``obj`` (the result of a weights-only load) is a micronet checkpoint dict."""
    return isinstance(obj, dict) and "micronet_checkpoint" in obj and "arch" in obj


_JSON_SCALARS = (str, int, float, bool, type(None))


def _check_json_data(value: Any, where: str) -> None:
    """ValueError unless ``value`` is JSON data: str/int/float/bool/None, lists, dicts with str keys."""
    if type(value) in _JSON_SCALARS:
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_json_data(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"checkpoint field {where} must be JSON data: key {key!r} is not a string")
            _check_json_data(item, f"{where}[{key!r}]")
        return
    raise ValueError(f"checkpoint field {where} must be JSON data, not {type(value).__name__}")


def checkpoint_from_payload(obj: dict) -> Checkpoint:
    """Validate a loaded payload and turn it into a Checkpoint; ValueError on a malformed one."""
    version = obj.get("micronet_checkpoint")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported micronet checkpoint version {version!r} (expected {FORMAT_VERSION})")
    if not isinstance(obj.get("state_dict"), dict):
        raise ValueError("micronet checkpoint has no state_dict")
    if not isinstance(obj["arch"], str) or not obj["arch"]:
        raise ValueError(f"micronet checkpoint arch must be a reference model name, not {obj['arch']!r}")
    arch_kwargs = obj.get("arch_kwargs") or {}
    if type(arch_kwargs) is not dict:
        raise ValueError(f"checkpoint field arch_kwargs must be a dict, not {type(arch_kwargs).__name__}")
    _check_json_data(arch_kwargs, "arch_kwargs")
    return Checkpoint(
        arch=obj["arch"],
        state_dict=obj["state_dict"],
        arch_kwargs=dict(arch_kwargs),
        masks=dict(obj.get("masks") or {}),
        bits=dict(obj.get("bits") or {}),
        exit_fractions={k: float(v) for k, v in (obj.get("exit_fractions") or {}).items()},
        meta=dict(obj.get("meta") or {}),
    )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a micronet checkpoint with weights-only unpickling (no code runs; nothing is built; a zip whose
    records would unpack to far more than its size is refused first, ``scorer.unpickle.check_zip_bomb``)."""
    from scorer.unpickle import check_zip_bomb

    check_zip_bomb(Path(path), str(path))
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not is_checkpoint_payload(obj):
        raise ValueError(f"{path} is not a micronet checkpoint")
    return checkpoint_from_payload(obj)
