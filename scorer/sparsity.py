"""Sparsity of weight tensors: measured exact zeros, torch.nn.utils.prune masks, or a user override.

The official code credits sparsity to the weights of Conv2D, DepthWiseConv2D and FullyConnected only
(official_rules.md §2.2); biases and normalisation parameters are always dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from rules.kinds import SPARSE_KINDS
from rules.records import Op, WeightRef
from scorer.errors import ScorerError
from scorer.globs import glob_match

SPARSE_ROLES = frozenset({"weight"})


@dataclass
class SparsitySpec:
    """How to obtain each weight tensor's nonzero count."""

    uniform: float | None = None
    per_tensor: Mapping[str, float] | None = None

    @classmethod
    def parse(cls, spec: object) -> SparsitySpec:
        """From None, a float, ``"uniform:0.64"``, ``"measured"``, a {glob: sparsity} mapping (a glob on tensor
        names or on layer names, later entries win) or that mapping as text, ``"conv*:0.5,fc:0.7"`` (the CLI's
        ``--sparsity``)."""
        if spec is None or spec == "measured":
            return cls()
        if isinstance(spec, SparsitySpec):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return cls(uniform=_check(float(spec)))
        if isinstance(spec, str):
            text = spec.strip()
            if text.startswith("uniform:"):
                text = text.split(":", 1)[1]
            elif ":" in text:
                return cls(per_tensor=parse_mapping(spec))
            try:
                return cls(uniform=_check(float(text)))
            except ValueError:
                raise ScorerError(
                    f"bad sparsity {spec!r}: use 'measured', 'uniform:S', a number S in [0, 1) or "
                    "GLOB:S[,GLOB:S...] (globs on tensor or layer names)"
                ) from None
        if isinstance(spec, Mapping):
            return cls(per_tensor={str(k): _check(float(v)) for k, v in spec.items()})
        raise ScorerError(f"bad sparsity {spec!r}")


def parse_mapping(text: str) -> dict[str, float]:
    """``"conv*:0.5,fc:0.7"`` as ``{"conv*": 0.5, "fc": 0.7}``, in order (a repeated glob moves to its last
    place, so that later entries still win); ScorerError naming a malformed item."""
    out: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        glob, sep, value = item.strip().rpartition(":")
        if not sep or not glob.strip():
            raise ScorerError(f"bad sparsity item {item.strip()!r} in {text!r}: use GLOB:S, e.g. conv*:0.5")
        try:
            sparsity = float(value)
        except ValueError:
            raise ScorerError(f"bad sparsity item {item.strip()!r} in {text!r}: {value!r} is not a number") from None
        if not 0.0 <= sparsity < 1.0:
            raise ScorerError(f"bad sparsity item {item.strip()!r} in {text!r}: sparsity must be in [0, 1)")
        out.pop(glob.strip(), None)
        out[glob.strip()] = sparsity
    if not out:
        raise ScorerError(f"bad sparsity {text!r}: no GLOB:S item")
    return out


def _check(s: float) -> float:
    if not 0.0 <= s < 1.0:
        raise ScorerError(f"sparsity must be in [0, 1), got {s}")
    return s


#: dtypes whose nonzeros numpy counts on the tensor's own memory (``Tensor.numpy()`` shares it).
_NUMPY_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.int8, torch.uint8, torch.int16,
                           torch.int32, torch.int64, torch.bool})


def measured_nonzeros(t: torch.Tensor | None) -> float | None:
    """Exact count of nonzero entries (``x != 0``: -0.0 is a zero, NaN is not), or None for a tensor without data.

    A plain CPU tensor is counted by numpy on a view of its memory: one thread, no copy of the tensor.
    ``torch.count_nonzero`` splits even a 10k-element weight over the intra-op threads, and on a shared CPU
    that synchronisation cost milliseconds per call (issue 12); other tensors still go to torch.
    """
    if t is None or t.is_meta:
        return None
    if type(t) in _PLAIN_TYPES and t.dtype in _NUMPY_DTYPES:
        try:
            # numpy() refuses what it cannot view as it is: another device, a sparse layout, a conjugate or
            # negative bit
            a = t.detach().numpy()
        except (RuntimeError, TypeError):
            pass
        else:
            return float(_numpy_nonzeros(a))
    return float(torch.count_nonzero(t).item())


_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
#: Elements compared per step (bounds the temporary boolean array).
_CHUNK = 1 << 20
#: Below this size ``np.count_nonzero`` on the values beats comparing first (it tests each value on its own).
_SMALL = 2048


def _numpy_nonzeros(a: np.ndarray) -> int:
    """Nonzeros of ``a``: ``a != 0`` (vectorised) counted chunk by chunk; a strided view, a boolean or a small
    array is counted as it is (numpy's per-value test is also ``!= 0``: -0.0 a zero, NaN not)."""
    if a.size < _SMALL or a.dtype == np.bool_ or not a.flags.c_contiguous:
        return int(np.count_nonzero(a))
    flat = a.reshape(-1)
    if flat.size <= _CHUNK:
        return int(np.count_nonzero(flat != 0))
    return sum(int(np.count_nonzero(flat[i:i + _CHUNK] != 0)) for i in range(0, flat.size, _CHUNK))


def creditable(op: Op, w: WeightRef) -> bool:
    """Whether ``w``'s zeros are credited to ``op`` (§2.2: the weights of conv/linear/matmul, rank >= 2)."""
    return op.kind in SPARSE_KINDS and w.role in SPARSE_ROLES and len(w.shape) >= 2


def measure_nonzeros(ops: list[Op], measured: dict) -> None:
    """Count the nonzeros of every creditable weight of ``ops`` into ``measured`` (key: tensor identity)."""
    for op in ops:
        for w in op.weights:
            if creditable(op, w):
                _measured(w, measured)


def _measured(w: WeightRef, measured: dict) -> float:
    key = w.ident if w.ident is not None else w.name
    if key not in measured:
        nz = measured_nonzeros(w.tensor)
        measured[key] = float(w.numel) if nz is None else nz
    return measured[key]


def annotate_sparsity(ops: list[Op], spec: SparsitySpec, seen: set | None = None,
                      measured: dict | None = None) -> None:
    """Set nonzeros and first-use flags on every weight reference.

    ``seen`` carries the identities of tensors already stored (shared weights, several exit paths);
    ``measured`` caches measured nonzero counts by tensor identity (``measure_nonzeros``), counted when missing.
    A per-tensor glob matches the tensor's name (``features.0.weight``) or the layer reading it (``features.0``,
    the name a precision config uses).
    """
    seen = set() if seen is None else seen
    measured = {} if measured is None else measured
    overrides = spec.uniform is not None or bool(spec.per_tensor)
    for op in ops:
        for w in op.weights:
            key = w.ident if w.ident is not None else w.name
            w.first_use = key not in seen
            seen.add(key)
            if not creditable(op, w):
                w.nonzeros = float(w.numel)
                continue
            override = _override(spec, w.name, op.module) if overrides else None
            if override is not None:
                w.nonzeros = w.numel * (1.0 - override)
                continue
            w.nonzeros = _measured(w, measured)


def _override(spec: SparsitySpec, name: str, layer: str) -> float | None:
    if spec.uniform is not None:
        return spec.uniform
    if spec.per_tensor:
        value = None
        for glob, s in spec.per_tensor.items():
            if glob_match(name, glob) or glob_match(layer, glob):
                value = s
        return value
    return None
