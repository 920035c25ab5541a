"""The Python API: ``score(model, ...) -> Report``."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from rules import RuleSet, get_ruleset
from rules.records import Op
from scorer.capture import batch_of, capture_model
from scorer.capture.guard import CAPTURE_LOCK, module_at
from scorer.engine import build_context, cost_ops
from scorer.errors import CaptureError, ScorerError, UnknownOpError
from scorer.inputs import dtypes_of, make_inputs, parse_dtype, shapes_of, token_count
from scorer.memory import activation_memory, input_bits, input_numel
from scorer.ops.values import masked_name
from scorer.passes import run_passes
from scorer.precision import PrecisionPolicy, annotate_bits, tied_widths, width_attrs
from scorer.report import Report, row_of
from scorer.sparsity import GlobUse, SparsitySpec, annotate_sparsity, check_unmatched, measure_nonzeros
from scorer.tracks import Track, get_track


def _example_inputs(
    model: nn.Module, input_shape: object, input_dtype: object, example_inputs: object, track: Track
) -> tuple:
    """The inputs the model is captured on: ``example_inputs`` as given, else made from the shapes and dtypes
    (scorer.inputs); without a shape, the track's default shape, and then the track's dtype by default."""
    if example_inputs is not None:
        if input_dtype is not None:
            raise ScorerError("give input_dtype with input_shape, not with example_inputs (their dtypes are theirs)")
        if isinstance(example_inputs, torch.Tensor):
            return (example_inputs,)
        return tuple(example_inputs)  # type: ignore[arg-type]
    if input_shape is None:
        if track.input_shape is None:
            raise ScorerError("no input shape: pass input_shape (--input-shape) or example_inputs")
        shapes, default = [track.input_shape], parse_dtype(track.input_dtype)
    else:
        shapes, default = shapes_of(input_shape), torch.float32
    return make_inputs(model, shapes, dtypes_of(input_dtype, len(shapes), default))


def _parse_block(mask_block: object) -> tuple[int, int] | None:
    if mask_block is None:
        return None
    if isinstance(mask_block, str):
        try:
            a, b = (int(x) for x in mask_block.lower().split("x"))
        except ValueError:
            raise ScorerError(f"bad mask block {mask_block!r}: use RxC, e.g. 4x4") from None
        mask_block = (a, b)
    a, b = mask_block  # type: ignore[misc]
    if a <= 0 or b <= 0:
        raise ScorerError(f"mask block sizes must be positive, got {mask_block}")
    return int(a), int(b)


def _serialised(fn: Callable[..., Report]) -> Callable[..., Report]:
    """Run ``fn`` holding the capture lock: a model another thread is capturing is in eval mode and stood
    in for, so it is neither captured nor read meanwhile."""

    @functools.wraps(fn)
    def locked(*args: object, **kwargs: object) -> Report:
        with CAPTURE_LOCK:
            return fn(*args, **kwargs)

    return locked


@_serialised
def score(
    model: nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
    rules: str | RuleSet = "micronet2019",
    bits: int | None = None,
    track: str = "cifar100",
    sparsity: object = None,
    precision: str | Path | Mapping | None = None,
    example_inputs: object = None,
    exit_fractions: Mapping[str, float] | None = None,
    mask_block: object = None,
    allow_unknown: bool = False,
    param_bits: int | None = None,
    mul_bits: int | None = None,
    add_bits: int | None = None,
    capture: str = "auto",
    allow_unmatched: bool = False,
    input_dtype: object = None,
    path_fractions: Mapping[str, float] | None = None,
    tokens: int | None = None,
) -> Report:
    """Score ``model`` under the MicroNet rules.

    Args:
        model: the model; it is not changed: its forward runs against stand-ins for the parameters and
            buffers, and training flags, attributes (a ``self.n += 1`` counter too), parameter, buffer,
            submodule and hook tables and ``requires_grad`` are restored, also on error. Python objects the
            forward changes in place (a list it appends to, a global) cannot be restored. Calls from several
            threads are safe; captures run one at a time.
        input_shape: example input shape, or a list of shapes for several inputs; default: the track's
            ((1, 1) token ids on wikitext103). Counts are per example: divided by dim 0 of the first input of
            rank >= 2 (a rank-1 input is one unbatched example, batch 1); on wikitext103 per token: divided
            by the number of token ids of the first integer input (``scorer.inputs.token_count``).
        input_dtype: dtype name (float32, float16, bfloat16, long/int64, int32, bool) or torch dtype for the
            first input, or a list pairing with the shapes; default float32 (the track's without a shape).
            Integer inputs are token ids drawn inside the model's vocabulary.
        rules: rule set name (micronet2019, official_notebook, macs, flops, team sets), import path or object.
        bits: N stores parameters and runs multiplications at N bits, additions at 32 (16 = the freebie).
        track: cifar100, imagenet or wikitext103 (normalisation baselines).
        sparsity: None (measured zeros / prune masks), "uniform:S", S, or {name glob: S} (a glob on the names of
            conv/linear/matmul/embedding weights or their layers; one matching none of any path is a ScorerError).
        precision: per-layer bits config (TOML/JSON path or mapping).
        example_inputs: real example inputs instead of ``input_shape``.
        path_fractions: {path: fraction} for a model with data-dependent compute (``paths()`` or
            ``exit_paths()``, docs/contracts.md): each path's ops weighted by its share, parameters once;
            fractions sum to 1 (one path left out takes the rest).
        exit_fractions: the same, the early-exit spelling (kept for older callers).
        tokens: override the per-token divisor on wikitext103.
        mask_block: block-sparse mask size, e.g. (4, 4) or "4x4".
        allow_unknown: count ops without a rule as zero (listed in ``report.unknown``) instead of raising.
        param_bits, mul_bits, add_bits: global overrides of one width each.
        capture: "auto" (fx, then torch.export, then the dispatch recorder) or one of them.
        allow_unmatched: a ``precision`` layer glob that matches no layer of any path, or a ``sparsity`` glob
            that matches no creditable weight, is a warning note instead of a ScorerError.
    """
    opts = Options.parse(rules=rules, bits=bits, sparsity=sparsity, precision=precision, mask_block=mask_block,
                         param_bits=param_bits, mul_bits=mul_bits, add_bits=add_bits, allow_unmatched=allow_unmatched)
    cap = capture_paths(model, input_shape=input_shape, input_dtype=input_dtype, example_inputs=example_inputs,
                        track=track, capture=capture, path_fractions=path_fractions,
                        exit_fractions=exit_fractions, tokens=tokens)
    return evaluate(cap, opts, allow_unknown)


@dataclass
class CapturedPath:
    """One way through the model: its ops (captured, passes run), its share of the examples, its modules."""

    name: str
    ops: list[Op]
    fraction: float
    modules: dict[str, nn.Module]


@dataclass
class Captured:
    """The capture-time part of a score (``capture_paths``); ``evaluate`` annotates and costs it.

    ``nonzeros`` caches the measured nonzero count of each creditable weight (``scorer.sparsity``): empty after a
    capture (counted when first needed), filled at once by ``snapshot()`` for a held capture (``Scorer``).
    """

    model: nn.Module
    track: Track
    inputs: tuple
    method: str
    paths: list[CapturedPath]
    fractions: Mapping[str, float] | None
    divisor: int
    excluded: list[dict]
    notes: list[str] = field(default_factory=list)
    nonzeros: dict = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list)  # stored tensors that are neither parameter nor buffer
    aliases: dict[str, list[str]] = field(default_factory=dict)  # a tied parameter's first name -> its other names

    def copy(self) -> Captured:
        """A copy whose ops and weight references annotation may overwrite (tensors and modules shared)."""
        paths = [CapturedPath(p.name, [_copy_op(op) for op in p.ops], p.fraction, p.modules) for p in self.paths]
        return replace(self, paths=paths, notes=list(self.notes))

    def snapshot(self) -> None:
        """Hold what later evaluations read as it is now (a held capture, ``Scorer``): the nonzeros of every
        creditable weight; a copy of each tensor the ops hold (weights, biases, prune masks: rules read their
        values, e.g. a bias's or a row's nonzeros, and their dtype; capture refers to the model's own tensors,
        which an in-place edit or ``model.half()`` changes); and each layer's width attributes, as
        ``_HeldWidths`` in ``modules``. Activation quantisers' widths are already in the ops (``attrs``)."""
        self.nonzeros.clear()
        # one copy per stored tensor (``WeightRef.ident``: tied weights, and a pruned layer called again, whose
        # effective weight and mask are made anew per call, stay one tensor), else per tensor object
        copies: dict[object, torch.Tensor] = {}

        def held(t: object, key: object) -> object:
            if not isinstance(t, torch.Tensor):
                return t
            if key not in copies:
                copies[key] = t.detach().clone()
            return copies[key]

        for p in self.paths:
            for op in p.ops:
                for w in op.weights:
                    ident = w.ident if w.ident is not None else id(w.tensor)
                    w.tensor, w.mask = held(w.tensor, ("tensor", ident)), held(w.mask, ("mask", ident))
            measure_nonzeros(p.ops, self.nonzeros)
            p.modules = {**p.modules, **{op.module: _held_widths(p.modules.get(op.module)) for op in p.ops}}


class _HeldWidths(nn.Module):
    """A layer's width attributes as ``Captured.snapshot`` read them: what ``scorer.precision._layer_bits``
    reads (``weight_bits``, else a QAT ``weight_fake_quant``'s range; ``bias_bits``, ``act_bits``, ``acc_bits``)."""

    def __init__(self, widths: Mapping[str, int]) -> None:
        super().__init__()
        self.__dict__.update(widths)


def _held_widths(mod: nn.Module | None) -> nn.Module | None:
    return None if mod is None else _HeldWidths(width_attrs(mod))


def _copy_op(op: Op) -> Op:
    new = copy.copy(op)
    new.weights = [copy.copy(w) for w in op.weights]
    new.in_bits = list(op.in_bits)
    return new


def capture_paths(
    model: nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
    input_dtype: object = None,
    example_inputs: object = None,
    track: str = "cifar100",
    capture: str = "auto",
    path_fractions: Mapping[str, float] | None = None,
    exit_fractions: Mapping[str, float] | None = None,
    tokens: int | None = None,
) -> Captured:
    """Capture ``model`` (every weighted path) once, holding the capture lock; arguments as ``score()``'s.
    Raises CaptureError when a parameter the forward reads is stored by no op (parameter conservation)."""
    if not isinstance(model, nn.Module):
        raise ScorerError(f"score() needs a torch.nn.Module, got {type(model).__name__}")
    trk = get_track(track)
    inputs = _example_inputs(model, input_shape, input_dtype, example_inputs, trk)
    if path_fractions and exit_fractions:
        raise ScorerError("give path_fractions or exit_fractions (the same thing), not both")
    fractions = path_fractions or exit_fractions
    divisor = _divisor(trk, inputs, tokens)
    with CAPTURE_LOCK:
        paths = _weighted_paths(model, fractions) if fractions else [("", model, 1.0)]
        captured: list[CapturedPath] = []
        method = ""
        stored: set[int] = set()  # identities of the parameters some op stores, over every path
        read: set[int] = set()  # identities of the parameters the forward reads
        named, modules = _module_tree(model)  # one walk, shared by the checks below
        _refuse_unscorable(modules)
        aliases = _aliases(named)  # a tied parameter's other names; empty for most models
        reads = []  # (capture, its parameter ids): what the forward read, named only when needed below
        unnamed: set[str] = set()  # stored tensors that are not parameters (plain tensor attributes)
        for path_name, path_model, fraction in paths:
            cap = capture_model(path_model, inputs, capture,
                                walked=list(modules.items()) if path_model is model else None)
            method = cap.method
            ids = _param_ids(path_model, named if path_model is model else None)
            stored |= {ids[n] for n in cap.used_params if n in ids}
            unnamed.update(n for n in cap.used_params if n not in ids)
            reads.append((cap, ids))
            if path_model is model:
                _first_names(cap.ops, ids, named, modules, tied=bool(aliases))
            for op in cap.ops:
                op.path = path_name
                op.batch = divisor
            run_passes(cap.ops)
            captured.append(CapturedPath(path_name, cap.ops, fraction,
                                         modules if path_model is model else dict(path_model.named_modules())))
        if any(id(p) not in stored for _, p, first in named if first):  # else nothing read can be lost
            for cap, ids in reads:
                read |= {ids[n] for n in cap.read_params if n in ids}
        lost = _lost_params(named, stored, read)
        if lost:
            raise CaptureError(
                f"{len(lost)} parameter(s) the forward reads are stored by no op ({', '.join(lost[:4])}"
                f"{', ...' if len(lost) > 4 else ''}): the {method} capture lost track of them, and a count "
                "without them would be wrong; capture='export' or 'dispatch' may follow them"
            )
        return Captured(model=model, track=trk, inputs=inputs, method=method, paths=captured,
                        fractions=fractions, divisor=divisor, excluded=_excluded_params(named, stored),
                        notes=_meta_note(named), attributes=sorted(unnamed), aliases=aliases)


@dataclass
class Options:
    """The evaluation-time options of ``score()`` (rules, bits, sparsity, precision, ...), parsed and checked."""

    ruleset: RuleSet
    policy_args: tuple
    spec: SparsitySpec
    block: tuple[int, int] | None
    settings: dict
    allow_unmatched: bool = False  # for the sparsity globs (the precision config's is in policy_args)

    @classmethod
    def parse(cls, rules: str | RuleSet = "micronet2019", bits: int | None = None, sparsity: object = None,
              precision: object = None, mask_block: object = None, param_bits: int | None = None,
              mul_bits: int | None = None, add_bits: int | None = None,
              allow_unmatched: bool = False) -> Options:
        try:
            ruleset = get_ruleset(rules)
        except ValueError as exc:
            raise ScorerError(str(exc)) from None
        args = (bits, param_bits, mul_bits, add_bits, precision, allow_unmatched)
        policy = PrecisionPolicy.from_options(*args)  # validated once here
        block = _parse_block(mask_block)
        settings = {
            "bits": bits,
            "param_bits": policy.param_bits,
            "act_bits": policy.act_bits,
            "acc_bits": policy.acc_bits,
            "mul_bits_override": policy.mul_bits_override,
            "add_bits_override": policy.add_bits_override,
            "sparsity": sparsity if isinstance(sparsity, (str, float, int, type(None))) else dict(sparsity),
            "mask_block": block,
        }
        return cls(ruleset, args, SparsitySpec.parse(sparsity), block, settings, allow_unmatched)

    def policy(self) -> PrecisionPolicy:
        """A fresh policy (it records the globs it matched, so one per evaluation)."""
        if not self.ruleset.honour_bits:
            return PrecisionPolicy(read_model_bits=False)
        return PrecisionPolicy.from_options(*self.policy_args)


def cost_rows(cap: Captured, opts: Options) -> tuple[list[dict], list[dict], list[str]]:
    """Annotate (sparsity, bits) and cost the ops of ``cap`` in place: (rows, unknown rows, notes)."""
    policy = opts.policy()
    spec, ruleset = opts.spec, opts.ruleset
    notes: list[str] = []
    rows: list[dict] = []
    unknown_rows: list[dict] = []
    use = GlobUse()
    annotate_sparsity([path.ops for path in cap.paths], spec, cap.nonzeros, use, cap.aliases, opts.block)
    tied = tied_widths([(path.ops, path.modules) for path in cap.paths], policy)
    for path in cap.paths:
        annotate_bits(path.ops, policy, path.modules, tied)
        if spec.uniform is None and ruleset.mask_policy == "sparse" and ruleset.credit_sparsity:
            notes.extend(_costly_masks(path.ops))
        ctx = build_context(path.ops, opts.block)
        costed, unknown = cost_ops(path.ops, ruleset, ctx)
        memory = activation_memory(path.ops, input_bits(cap.inputs, cap.divisor,
                                                         policy.input_bits or policy.act_bits),
                                   input_numel(cap.inputs))
        rows.extend(row_of(op, cost, path.fraction, mem) for (op, cost), mem in zip(costed, memory, strict=True))
        unknown_rows.extend({"name": op.name, "module": op.module, "target": op.target, "path": path.name}
                            for op in unknown)
    notes.extend(policy.check_unmatched())  # after every path: a glob matching in any path is used
    notes.extend(check_unmatched(spec, use, opts.allow_unmatched))
    return rows, unknown_rows, notes


def evaluate(cap: Captured, opts: Options, allow_unknown: bool = False) -> Report:
    """The post-capture part of ``score()``: annotate and cost the ops of ``cap`` (in place: pass
    ``cap.copy()`` to keep them) under ``opts``; UnknownOpError for an op without a rule unless allowed."""
    rows, unknown_rows, notes = cost_rows(cap, opts)
    if unknown_rows and not allow_unknown:
        raise UnknownOpError([(u["name"], u["module"], u["target"]) for u in unknown_rows])
    if opts.spec.uniform is None:
        notes.extend(cap.notes)
    if unknown_rows:
        notes.append(f"WARNING: {len(unknown_rows)} op(s) without a rule were counted as zero")
    if cap.attributes:
        names = cap.attributes
        notes.append(f"{len(names)} tensor(s) the forward reads that are neither parameters nor buffers are stored "
                     "as parameters (anything needed for inference counts): " + ", ".join(names[:8])
                     + (" ..." if len(names) > 8 else "") + "; register a constant (a mask) as a buffer to leave it out")
    excluded = cap.excluded
    if excluded:
        names = [e["name"] for e in excluded]
        notes.append(f"{len(excluded)} parameter tensor(s) are not used by the forward pass and are not counted: "
                     + ", ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
    inputs, fractions = cap.inputs, cap.fractions
    settings = {
        **opts.settings,
        "input_shapes": [list(getattr(x, "shape", ())) for x in inputs],
        "input_dtypes": [str(x.dtype).removeprefix("torch.") if isinstance(x, torch.Tensor) else None
                         for x in inputs],
        "batch": batch_of(inputs),
        "tokens": cap.divisor if cap.track.per_token else None,
        "path_fractions": {p.name: p.fraction for p in cap.paths} if fractions else None,
        "exit_fractions": {p.name: p.fraction for p in cap.paths} if fractions else None,
    }
    return Report(
        layers=rows, track=cap.track, rules=opts.ruleset.name, capture=cap.method, settings=settings,
        notes=notes, unknown=unknown_rows, excluded=[dict(e) for e in excluded],
    )


def _divisor(track: Track, inputs: tuple, tokens: int | None) -> int:
    """What the counts are divided by: tokens on a per-token track, else examples (``batch_of``)."""
    if tokens is not None:
        if not track.per_token:
            raise ScorerError(f"tokens= is for the per-token track (wikitext103), not {track.name}")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
            raise ScorerError(f"tokens must be a positive integer, got {tokens!r}")
        return tokens
    return token_count(inputs) if track.per_token else batch_of(inputs)


def model_paths(model: nn.Module) -> dict[str, nn.Module]:
    """The model's ways through itself (``paths()``, or ``exit_paths()`` for early exits): name -> module."""
    getter = getattr(model, "paths", None)
    if not callable(getter):
        getter = getattr(model, "exit_paths", None)
    if not callable(getter):
        raise ScorerError(f"{type(model).__name__} has no paths() or exit_paths(); path fractions need a model "
                          "with data-dependent compute (docs/contracts.md)")
    paths = dict(getter())
    bad = [k for k, m in paths.items() if not isinstance(m, nn.Module)]
    if not paths or bad:
        raise ScorerError(f"{type(model).__name__}.paths() must map names to modules; bad: {bad or 'empty'}")
    return paths


def _weighted_paths(model: nn.Module, fractions: Mapping[str, float]) -> list[tuple[str, nn.Module, float]]:
    paths = model_paths(model)
    missing = [k for k in fractions if k not in paths]
    if missing:
        raise ScorerError(f"unknown path(s) {missing}; the model has {sorted(paths)}")
    total = sum(fractions.values())
    if any(not f >= 0 for f in fractions.values()):
        raise ScorerError("path fractions must be non-negative numbers")
    fr = dict(fractions)
    if len(fr) == len(paths) - 1 and total <= 1.0:
        rest = next(k for k in paths if k not in fr)
        fr[rest] = 1.0 - total
    if not math.isclose(sum(fr.values()), 1.0, abs_tol=1e-9) or set(fr) != set(paths):
        raise ScorerError(
            f"path fractions must cover every path {sorted(paths)} and sum to 1, got {fr}"
        )
    return [(name, paths[name], fr[name]) for name in paths]


def _costly_masks(ops: list) -> list[str]:
    """Notes for measured-sparse tensors whose 1-bit mask costs more than the zeros save."""
    out = []
    for op in ops:
        for w in op.weights:
            if w.role == "weight" and w.first_use and 0 < w.sparsity < 1 / w.bits and len(w.shape) > 1:
                zeros = w.numel - w.nonzeros
                out.append(
                    f"{w.name}: {zeros:.0f} zero(s) of {w.numel} make it sparse, so it pays a {w.numel}-bit mask "
                    f"that costs more than the zeros save (the official rule); pass --sparsity uniform:0 or "
                    f"a per-tensor sparsity to score it dense"
                )
    return out


def _module_tree(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter, bool]], dict[str, nn.Module]]:
    """``(_named_params(model), dict(model.named_modules()))`` from one walk of the module tree, the walk
    ``named_parameters(remove_duplicate=False)`` makes (a shared module under each of its names), each module
    kept under its first name (what ``named_modules()``, which skips a module seen before, yields: a repeated
    module's subtree holds only modules seen under its first name). A module class with its own
    ``named_modules``, ``named_parameters``, equality or hash is walked by torch's methods instead."""
    named: list[tuple[str, nn.Parameter, bool]] = []
    modules: dict[str, nn.Module] = {}
    seen_modules: set[int] = set()
    seen_params: set[int] = set()
    plain: dict[type, bool] = {}
    cls = type(model)
    if cls.named_parameters is not _NAMED_PARAMETERS or cls._named_members is not _NAMED_MEMBERS:
        return _named_params(model), dict(model.named_modules())
    stack = [("", model)]  # pre-order: children pushed last first
    while stack:
        prefix, mod = stack.pop()
        cls = type(mod)
        ok = plain.get(cls)
        if ok is None:
            ok = plain[cls] = (cls.named_modules is _NAMED_MODULES and cls.__hash__ is _OBJECT_HASH
                               and cls.__eq__ is _OBJECT_EQ)
        if not ok:
            return _named_params(model), dict(model.named_modules())
        if id(mod) not in seen_modules:
            seen_modules.add(id(mod))
            modules[prefix] = mod
        dot = prefix + "." if prefix else ""
        if mod._parameters:
            for k, p in mod._parameters.items():
                if p is not None:
                    named.append((dot + k, p, id(p) not in seen_params))
                    seen_params.add(id(p))
        if mod._modules:
            stack.extend(reversed([(dot + k, c) for k, c in mod._modules.items() if c is not None]))
    return named, modules


_NAMED_MODULES = nn.Module.named_modules
_NAMED_PARAMETERS = nn.Module.named_parameters
_NAMED_MEMBERS = nn.Module._named_members
_OBJECT_HASH = object.__hash__
_OBJECT_EQ = object.__eq__


def _named_params(model: nn.Module) -> list[tuple[str, nn.Parameter, bool]]:
    """Every name of every parameter, as ``named_parameters(remove_duplicate=False)`` gives them, each with
    whether it is the tensor's first name (what ``named_parameters()`` yields)."""
    seen: set[int] = set()
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        out.append((name, p, id(p) not in seen))
        seen.add(id(p))
    return out


def _param_ids(model: nn.Module, named: list[tuple[str, nn.Parameter, bool]] | None = None) -> dict[str, int]:
    """Every name of every parameter (tied ones under each of their names; a masked weight's unmasked parameter,
    a pruned ``X_orig``, also under the name it is stored as, ``X``) mapped to the parameter's identity;
    ``named``: ``_named_params(model)`` when already walked."""
    ids = {}
    for name, p, _ in named if named is not None else _named_params(model):
        ids[name] = id(p)
        if name.endswith("original") or name.endswith("_orig"):  # the usual name skips masked_name's parsing
            stored_as = masked_name(name)
            if stored_as is not None:
                ids[stored_as] = id(p)
    return ids


def _first_names(ops: list[Op], ids: dict[str, int], named: list[tuple[str, nn.Parameter, bool]],
                 modules: dict[str, nn.Module], tied: bool) -> None:
    """Name each tied parameter (``out.weight = emb.weight``) and each module held under several names
    (``self.b = self.a``) by its first name, as ``named_parameters()`` and ``named_modules()`` give them, whichever
    name the capture read it by: one tensor, one layer, one name on every capture path (sparsity and precision
    globs match the same rows). ``ids``: ``_param_ids``; ``modules``: ``dict(model.named_modules())``; ``tied``:
    whether a parameter has several names."""
    first_param = {id(p): name for name, p, first in named if first} if tied else {}
    first_module: dict[int, str] | None = None
    for op in ops:
        if op.module not in modules:
            if first_module is None:
                first_module = {id(m): name for name, m in reversed(modules.items())}
            held = module_at(modules.get(""), op.module)
            if held is not None and id(held) in first_module:
                op.module = first_module[id(held)]
        if tied:
            for w in op.weights:
                ident = ids.get(w.name)
                if ident is not None and ident == w.ident:
                    w.name = first_param.get(ident, w.name)


def _aliases(named: list[tuple[str, nn.Parameter, bool]]) -> dict[str, list[str]]:
    """A tied parameter's first name -> its other names (``out.weight`` for ``emb.weight``), which a sparsity glob
    may name too."""
    out: dict[str, list[str]] = {}
    first: dict[int, str] = {}
    for name, p, is_first in named:
        if is_first:
            first[id(p)] = name
        else:
            out.setdefault(first[id(p)], []).append(name)
    return out


def _refuse_unscorable(modules: dict[str, nn.Module]) -> None:
    """ScorerError naming the lazy modules (``nn.LazyLinear``, ...) whose parameters have no shape yet: only a
    forward pass on real data gives them one, and a count needs it; or the torch.ao layers whose packed int8 weights
    no capture reads (dynamic LSTM/GRU, quantised embeddings: ``--allow-unknown`` would zero their storage too)."""
    if not any(issubclass(t, (_LAZY, *_PACKED_UNREAD)) for t in set(map(type, modules.values()))):
        return
    lazy, packed = [], []
    for name, m in modules.items():
        if isinstance(m, _LAZY) and m.has_uninitialized_params():  # type: ignore[operator]
            lazy.append(f"{name or 'the model'} ({type(m).__name__})")
        elif isinstance(m, _PACKED_UNREAD):
            packed.append(f"{name or 'the model'} ({type(m).__name__})")
    if lazy:
        raise ScorerError(f"{len(lazy)} lazy module(s) have uninitialised parameters ({', '.join(lazy[:4])}): run "
                          "one forward pass on an example input first, which gives them their shapes")
    if packed:
        raise ScorerError(f"{len(packed)} quantised layer(s) ({', '.join(packed[:4])}) keep packed int8 weights no "
                          "capture reads: score the float model with 8-bit weights instead (--precision with weight "
                          "= 8 for those layers)")


_LAZY = nn.modules.lazy.LazyModuleMixin
_DYNAMIC_RNN = torch.ao.nn.quantized.dynamic.modules.rnn
_PACKED_UNREAD = (_DYNAMIC_RNN.RNNBase, _DYNAMIC_RNN.RNNCellBase, torch.ao.nn.quantized.Embedding,
                  torch.ao.nn.quantized.EmbeddingBag)


def _lost_params(named: list[tuple[str, nn.Parameter, bool]], stored: set[int], read: set[int]) -> list[str]:
    """Parameters the forward read (identities in ``read``) that no op stores (parameter conservation): their
    first names (``named``: ``_named_params(model)``)."""
    missing = read - stored
    return [name for name, p, first in named if first and id(p) in missing]


def _meta_note(named: list[tuple[str, nn.Parameter, bool]]) -> list[str]:
    """A note naming the parameters on the meta device: they have no values, so none of their zeros is seen."""
    names = [name for name, p, first in named if first and p.is_meta]
    if not names:
        return []
    return [f"{len(names)} parameter tensor(s) are on the meta device (no values), so their sparsity was not "
            "measured: they are counted dense (pass --sparsity to set it): " + ", ".join(names[:8])
            + (" ..." if len(names) > 8 else "")]


def _excluded_params(named: list[tuple[str, nn.Parameter, bool]], stored: set[int]) -> list[dict]:
    """Parameters whose identity is not in ``stored``, with the reason (each tied tensor once, by its first name)."""
    return [{"name": name, "numel": p.numel(), "reason": "not used by the forward pass"}
            for name, p, first in named if first and id(p) not in stored]
