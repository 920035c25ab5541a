"""Sparsity of weight tensors: measured exact zeros, torch.nn.utils.prune masks, or a user override.

The official code credits sparsity to the weights of Conv2D, DepthWiseConv2D and FullyConnected only
(official_rules.md §2.2); biases and normalisation parameters are always dense. A per-tensor glob that matches
no such weight of any capture path is an error (:func:`check_unmatched`), unless ``allow_unmatched`` makes it a
warning note, as a precision config's layer globs (``scorer.precision``): a typo must not score a layer dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from rules.kinds import SPARSE_KINDS
from rules.records import Op, WeightRef
from scorer.errors import ScorerError
from scorer.globs import glob_match

SPARSE_ROLES = frozenset({"weight"})
#: Start of the report note for a glob that matched no creditable weight (under ``allow_unmatched``).
UNMATCHED_NOTE = "WARNING: sparsity:"


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
    """Whether ``w``'s zeros are credited to ``op`` (§2.2: the weights of conv/linear/matmul, rank >= 2, and
    embedding tables)."""
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


@dataclass
class GlobUse:
    """What the per-tensor globs met over every capture path of one evaluation: the globs that matched a
    creditable weight, and the creditable weights seen (tensor name -> layer name), for :func:`check_unmatched`."""

    matched: set[str] = field(default_factory=set)
    weights: dict[str, str] = field(default_factory=dict)


def tensor_key(w: WeightRef) -> object:
    """What identifies the tensor ``w`` refers to across ops and paths (a tied tensor: one key)."""
    return w.ident if w.ident is not None else w.name


def annotate_sparsity(paths: list[list[Op]], spec: SparsitySpec, measured: dict | None = None,
                      use: GlobUse | None = None, aliases: Mapping[str, list[str]] | None = None,
                      block: tuple[int, int] | None = None) -> None:
    """Set nonzeros and first-use flags on every weight reference of the ops of every capture path (``paths``),
    one decision per tensor over all of them.

    ``measured`` caches measured nonzero counts by tensor identity (``measure_nonzeros``), counted when missing;
    ``use`` collects the globs that matched and the creditable weights. A per-tensor glob matches the tensor's
    name (``features.0.weight``; a tied one's other names, ``aliases``) or a layer reading it (``features.0``, the
    name a precision config uses), and sets the sparsity of the tensor at every use, the last matching entry
    winning: a table tied to an output layer is as sparse where it is stored as where it is multiplied
    (official_rules.md §4.2: one s for storage and products). A tensor with a creditable use is stored at the
    first one (sparse, with its mask), not where a use that credits nothing (``w.sum()``) reads it first, once over
    the paths. With a block mask (``block``), a measured tensor keeps every value of each block holding a nonzero
    (``block_nonzeros``).
    """
    measured = {} if measured is None else measured
    use = GlobUse() if use is None else use
    stored_at: dict = {}  # tensor key -> the weight reference storing it: its first creditable use, if any
    uses: dict = {}  # tensor key -> (tensor name, layer or None) of each creditable use
    refs = []  # (weight reference, its key, whether creditable, its layer), in order
    for ops in paths:
        for op in ops:
            for w in op.weights:
                key = w.ident if w.ident is not None else w.name  # tensor_key, inlined (per weight, per call)
                credit = creditable(op, w)
                refs.append((w, key, credit, op.module))
                if credit:
                    if key not in stored_at:
                        stored_at[key] = w
                        uses[key] = [(alias, None) for alias in aliases.get(w.name, ())] if aliases else []
                    uses[key].append((w.name, op.module))
    override = _overrides(spec, uses, use.matched) if spec.uniform is not None or spec.per_tensor else {}
    seen: set = set()
    for w, key, credit, layer in refs:
        at = stored_at.get(key)
        w.first_use = key not in seen and (at is None or at is w)
        if w.first_use:
            seen.add(key)
        if at is None or not credit:
            w.nonzeros = float(w.numel)
            continue
        use.weights.setdefault(w.name, layer)
        s = override.get(key)
        if s is not None:
            w.nonzeros = w.numel * (1.0 - s)
        else:
            w.nonzeros = _measured(w, measured) if block is None else _measured_blocks(w, measured, block)


def _measured_blocks(w: WeightRef, measured: dict, block: tuple[int, int]) -> float:
    key = (tensor_key(w), block)
    if key not in measured:
        nz = block_nonzeros(w.tensor, block)
        measured[key] = float(w.numel) if nz is None else nz
    return measured[key]


def block_nonzeros(t: torch.Tensor | None, block: tuple[int, int]) -> float | None:
    """The elements of the blocks of ``t`` that hold a nonzero, or None for a tensor without data: what a block
    mask stores and multiplies (official_rules.md §4.1: one bit marks a block, so a zero inside a kept block cannot
    be located and is stored). Blocks tile ``t`` as a ``shape[0] x numel/shape[0]`` matrix, partial ones at the
    edges, as ``RuleSet.mask_bits`` counts them."""
    if t is None or t.is_meta or t.dim() == 0 or t.numel() == 0:
        return None
    nz = t.detach().reshape(t.shape[0], -1) != 0
    rows, cols = nz.shape
    bh, bw = block
    rb, cb = -(-rows // bh), -(-cols // bw)
    tiles = torch.zeros(rb * bh, cb * bw, dtype=torch.bool)
    tiles[:rows, :cols] = nz
    kept = tiles.reshape(rb, bh, cb, bw).any(dim=3).any(dim=1)
    tall = torch.clamp(rows - torch.arange(rb) * bh, max=bh)
    wide = torch.clamp(cols - torch.arange(cb) * bw, max=bw)
    return float((kept * tall[:, None] * wide[None, :]).sum())


def _overrides(spec: SparsitySpec, uses: dict, matched: set[str]) -> dict:
    """Tensor key -> the sparsity ``spec`` gives it (absent: measure it): the uniform one, or the last glob matching
    a name or layer of any of its uses (``uses``: key -> [(tensor name, layer; None for an alias)]); matching globs
    go to ``matched``."""
    if spec.uniform is not None:
        return dict.fromkeys(uses, spec.uniform)
    out: dict = {}
    for glob, s in (spec.per_tensor or {}).items():
        for key, named in uses.items():
            if any(glob_match(name, glob) or layer is not None and glob_match(layer, glob) for name, layer in named):
                out[key] = s
                matched.add(glob)
    return out


def check_unmatched(spec: SparsitySpec, use: GlobUse, allow_unmatched: bool = False) -> list[str]:
    """After every capture path is annotated: ScorerError naming the per-tensor globs that matched no creditable
    weight (§2.2: conv, linear, matmul and embedding weights, by tensor or layer name; a bias never is), or with
    ``allow_unmatched`` one warning note per such glob (``[]`` when all matched), as
    ``PrecisionPolicy.check_unmatched`` does for a precision config."""
    globs = [g for g in spec.per_tensor or () if g not in use.matched]
    if not globs:
        return []
    names = [f"{name} ({layer})" if layer and not name.startswith(f"{layer}.") else name
             for name, layer in use.weights.items()]
    some = ", ".join(names[:6]) + (f", ... ({len(names)} weights)" if len(names) > 6 else "")
    what = ("no weight whose zeros are credited (conv, linear, matmul and embedding weights; biases and norm "
            f"parameters stay dense), by tensor or layer name (weights: {some or 'none'})")
    if not allow_unmatched:
        raise ScorerError(f"sparsity: glob(s) {', '.join(repr(g) for g in globs)} match {what}; fix the glob, or "
                          "pass --allow-unmatched (allow_unmatched=True) to ignore it")
    return [f"{UNMATCHED_NOTE} glob {g!r} matches {what} and was ignored" for g in globs]
