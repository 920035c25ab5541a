"""Bit-widths on tensor edges: the precision policy and its propagation along the captured ops.

An op costs max(input bits)/32 per multiplication (official page, §3.1), where the inputs are its
activation tensors and the weights it multiplies; additions run at the accumulator width. ``--bits 16``
is the freebie: parameters and multiplications at 16 bits, additions at 32. A parameter stored in a narrower
dtype (fp16, bf16, int8) is stored at that width, whatever its role, unless a config or its layer sets one.

A precision config has two sections, ``default`` (keys ``weight act acc input``) and ``layers`` (a glob
on layer names -> keys ``weight act acc bias``). Any other section or key is an error, and so is a glob
that matches no layer of any capture path (:meth:`PrecisionPolicy.check_unmatched`), unless
``allow_unmatched`` makes it a warning note: a typo must not silently leave a layer at another width.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from rules.kinds import PRESERVING_KINDS
from rules.records import Op
from scorer.errors import ScorerError
from scorer.globs import glob_match, is_literal
from scorer.ops import quant_bits
from scorer.ops.call import keeps_module_lookup, module_attr

_SECTIONS = ("default", "layers")
_DEFAULT_KEYS = ("weight", "act", "acc", "input")
_LAYER_KEYS = ("weight", "act", "acc", "bias")
#: Start of the report note for a glob that matched no layer (under ``allow_unmatched``).
UNMATCHED_NOTE = "WARNING: precision config:"


@dataclass
class PrecisionPolicy:
    """Default widths plus per-layer overrides (layer-name globs, later entries win)."""

    param_bits: int = 32
    act_bits: int = 32
    acc_bits: int = 32
    input_bits: int | None = None
    mul_bits_override: int | None = None
    add_bits_override: int | None = None
    layers: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    read_model_bits: bool = True
    allow_unmatched: bool = False
    # globs that matched a layer, and the layers looked up, over every annotate_bits call (all capture paths)
    _matched: set[str] = field(default_factory=set, repr=False)
    _seen: dict[str, None] = field(default_factory=dict, repr=False)
    _index: tuple = field(default=(0, {}, []), repr=False)  # (len(layers) indexed, literal globs, wildcard ones)

    @classmethod
    def from_options(
        cls,
        bits: int | None = None,
        param_bits: int | None = None,
        mul_bits: int | None = None,
        add_bits: int | None = None,
        config: str | Path | Mapping | None = None,
        allow_unmatched: bool = False,
    ) -> PrecisionPolicy:
        """Build the policy. ``bits=N`` stores parameters and runs multiplications at N bits with additions
        at 32 (for N=16 this is the official freebie); the other options override one aspect each.
        ``allow_unmatched``: a config glob matching no layer is a warning, not an error."""
        pol = cls(allow_unmatched=allow_unmatched)
        if bits is not None:
            _check_bits("bits", bits)
            pol.param_bits = pol.act_bits = bits
        if param_bits is not None:
            _check_bits("param_bits", param_bits)
            pol.param_bits = param_bits
        if mul_bits is not None:
            _check_bits("mul_bits", mul_bits)
            pol.mul_bits_override = mul_bits
        if add_bits is not None:
            _check_bits("add_bits", add_bits)
            pol.add_bits_override = add_bits
        if config is not None:
            pol.apply_config(load_precision_config(config))
        return pol

    def apply_config(self, cfg: Mapping) -> None:
        """Merge a config mapping ``{"default": {...}, "layers": {glob: {...}}}``; ScorerError for any other
        section or key."""
        if not isinstance(cfg, Mapping):
            raise ScorerError(f"precision config must be a table with sections {', '.join(_SECTIONS)}")
        for section in cfg:
            if section not in _SECTIONS:
                raise ScorerError(f"precision config: unknown section {section!r} (use {', '.join(_SECTIONS)})")
            if not isinstance(cfg[section], Mapping):
                raise ScorerError(f"precision config: [{section}] must be a table, got {cfg[section]!r}")
        default = cfg.get("default", {})
        for key, value in default.items():
            _check_bits(f"default.{key}", value)
            if key == "weight":
                self.param_bits = value
            elif key == "act":
                self.act_bits = value
            elif key == "acc":
                self.acc_bits = value
            elif key == "input":
                self.input_bits = value
            else:
                raise ScorerError(f"precision config: unknown default key {key!r} (use {', '.join(_DEFAULT_KEYS)})")
        for glob, spec in (cfg.get("layers") or {}).items():
            if not isinstance(spec, Mapping):
                raise ScorerError(f"precision config: layer {glob!r} must map to a table of bits")
            for key, value in spec.items():
                if key not in _LAYER_KEYS:
                    raise ScorerError(f"precision config: unknown key {key!r} for layer {glob!r} "
                                      f"(use {', '.join(_LAYER_KEYS)})")
                _check_bits(f"{glob}.{key}", value)
            self.layers.append((glob, dict(spec)))

    def layer(self, module: str) -> dict[str, int]:
        """Merged overrides for layer ``module`` (glob patterns match the dotted module path); the globs that
        match are remembered for :meth:`check_unmatched`."""
        self._seen[module] = None
        merged: dict[str, int] = {}
        if not self.layers:
            return merged
        for i in self._matching(module):
            glob, spec = self.layers[i]
            merged.update(spec)
            self._matched.add(glob)
        return merged

    def _matching(self, module: str) -> list[int]:
        """Positions in ``layers`` of the globs matching ``module``, in config order; a glob without wildcards
        is found by a dict lookup (a config naming every layer stays linear in the layers)."""
        if self._index[0] != len(self.layers):
            literal: dict[str, list[int]] = {}
            patterns: list[int] = []
            for i, (glob, _) in enumerate(self.layers):
                if is_literal(glob):
                    literal.setdefault(glob, []).append(i)
                else:
                    patterns.append(i)
            self._index = (len(self.layers), literal, patterns)
        _, literal, patterns = self._index
        hits = literal.get(module, []) + [i for i in patterns if glob_match(module, self.layers[i][0])]
        return sorted(hits) if patterns else hits

    def check_unmatched(self) -> list[str]:
        """After every capture path is annotated: ScorerError naming the config globs that matched no layer,
        or with ``allow_unmatched`` one warning note per such glob (``[]`` when all matched)."""
        globs = list(dict.fromkeys(g for g, _ in self.layers if g not in self._matched))
        if not globs:
            return []
        names = [m for m in self._seen if m]
        some = ", ".join(names[:6]) + (f", ... ({len(names)} layers)" if len(names) > 6 else "")
        which = ", ".join(repr(g) for g in globs)
        if not self.allow_unmatched:
            raise ScorerError(f"precision config: layer glob(s) {which} match no layer (layers: {some or 'none'}); "
                              "fix the glob, or pass --allow-unmatched (allow_unmatched=True) to ignore it")
        return [f"{UNMATCHED_NOTE} layer glob {g!r} matches no layer and was ignored (layers: {some or 'none'})"
                for g in globs]


def _check_bits(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
        raise ScorerError(f"{name} must be an integer number of bits between 1 and 64, got {value!r}")


def load_precision_config(src: str | Path | Mapping) -> Mapping:
    """Read a precision config from TOML or JSON (or pass a mapping through)."""
    if isinstance(src, Mapping):
        return src
    path = Path(src)
    if not path.is_file():
        raise ScorerError(f"precision config {path} does not exist")
    try:
        text = path.read_text()
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScorerError(f"precision config {path} is not valid {path.suffix[1:] or 'TOML'}: {exc}") from None


def _module_int(mod: nn.Module | None, attr: str) -> int | None:
    v = module_attr(mod, attr) if mod is not None else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


#: The layer attributes annotation reads: widths set on a layer, a QAT weight quantiser.
_LAYER_ATTRS = frozenset({"weight_bits", "weight_fake_quant", "bias_bits", "act_bits", "acc_bits"})
_EMPTY: dict = {}
_MISSING = object()


def _bare_layer(mod: nn.Module, plain: dict[type, bool]) -> bool:
    """True when ``mod`` certainly has none of ``_LAYER_ATTRS`` (``getattr`` would give None for each): the usual
    layer, whose class defines none and keeps ``nn.Module``'s lookup (``plain``: that answer per class, for one
    annotation) and whose instance, parameter, buffer and submodule tables hold none. False: read them."""
    cls = type(mod)
    ok = plain.get(cls)
    if ok is None:
        ok = plain[cls] = keeps_module_lookup(cls) and all(getattr(cls, n, _MISSING) is _MISSING
                                                           for n in _LAYER_ATTRS)
    if not ok:
        return False
    d = mod.__dict__
    return (d.keys().isdisjoint(_LAYER_ATTRS) and d.get("_parameters", _EMPTY).keys().isdisjoint(_LAYER_ATTRS)
            and d.get("_buffers", _EMPTY).keys().isdisjoint(_LAYER_ATTRS)
            and d.get("_modules", _EMPTY).keys().isdisjoint(_LAYER_ATTRS))


def _weight_fake_quant_bits(mod: nn.Module | None) -> int | None:
    """Width of a torch.ao QAT layer's ``weight_fake_quant`` range (e.g. -128..127: 8 bits)."""
    fq = module_attr(mod, "weight_fake_quant") if mod is not None else None
    return quant_bits(fq) if isinstance(fq, nn.Module) else None


def _dtype_bits(t: object) -> int:
    """The width a tensor's dtype stores each value at (64 for a complex one or a non-tensor)."""
    if not isinstance(t, torch.Tensor):
        return 64
    dtype = t.dtype
    bits = _DTYPE_BITS.get(dtype)
    if bits is None:
        bits = _DTYPE_BITS[dtype] = dtype.itemsize * 8 if not dtype.is_complex else 64
    return bits


_DTYPE_BITS: dict[torch.dtype, int] = {}
_PLAIN_TENSORS = (torch.Tensor, nn.Parameter)
_FLOAT32 = torch.float32


_MULTIPLIED_ROLES = frozenset({"weight", "operand", "prelu_weight", "scale"})
#: Roles stored at the weight width (every other parameter at the bias width).
_WEIGHT_ROLES = frozenset({"weight", "operand", "embedding"})


class _LayerWidths(NamedTuple):
    """What a layer runs at (``_layer_bits``)."""

    weight: int
    weight_by_dtype: bool  # a narrower stored dtype may lower the weight width
    bias: int
    bias_by_dtype: bool  # ... and the bias width
    act: int
    acc: int
    weight_set: bool  # the weight width is set for the layer (a config's ``weight``, ``weight_bits``, a QAT quantiser)


def _layer_bits(policy: PrecisionPolicy, module: str, mod: nn.Module | None, plain: dict[type, bool]) -> _LayerWidths:
    """What layer ``module`` (its module ``mod``, None when the model's widths are not read) runs at, from the
    config's overrides, then the layer's attributes, then the policy's defaults."""
    cfg = policy.layer(module)
    read = policy.read_model_bits
    if (mod is None or _bare_layer(mod, plain)) and not cfg:  # the usual layer: the policy's widths
        return _LayerWidths(policy.param_bits, read, policy.param_bits, read, policy.act_bits, policy.acc_bits, False)
    own = width_attrs(mod) if mod is not None else {}
    model_wbits, model_bbits = own.get("weight_bits"), own.get("bias_bits")
    wbits = cfg.get("weight") or model_wbits or policy.param_bits
    # a tensor stored in a narrower dtype (fp16, bf16, int8) is stored at that width unless a width is set for it
    return _LayerWidths(
        weight=wbits, weight_by_dtype=read and not cfg.get("weight") and model_wbits is None,
        bias=cfg.get("bias") or model_bbits or policy.param_bits,
        bias_by_dtype=read and not cfg.get("bias") and model_bbits is None,
        act=cfg.get("act") or own.get("act_bits") or policy.act_bits,
        acc=cfg.get("acc") or own.get("acc_bits") or policy.acc_bits,
        weight_set=bool(cfg.get("weight") or model_wbits))


def _stored_bits(t: object, bits: int) -> int:
    """The width a parameter ``t`` at ``bits`` is stored at when its own dtype may lower it: the narrower of the
    two (a float16 bias at 16 bits; official_rules.md §2.2, §3.2: parameters count at their stored width)."""
    if bits <= 32 and type(t) in _PLAIN_TENSORS and t.dtype is _FLOAT32:  # the usual parameter: bits
        return bits
    stored = _dtype_bits(t)
    return stored if stored < bits else bits


def tied_widths(paths: list[tuple[list[Op], Mapping[str, nn.Module]]], policy: PrecisionPolicy) -> dict:
    """The one width of each weight tensor several layers read (a tied table), over every capture path (``paths``:
    each path's ops and modules): the width of the last of those layers, in the order they first run, that sets
    one (a config's ``weight``, ``weight_bits``, a QAT weight quantiser); stored and multiplied at it by every
    layer. Tensor key -> bits; empty without such a tensor (``annotate_bits`` then reads each layer's)."""
    first: dict = {}  # tensor key -> the first layer reading it
    readers: dict = {}  # tensor key -> every layer reading it, for the tensors of several layers
    for ops, _ in paths:
        for op in ops:
            for w in op.weights:
                if w.role in _WEIGHT_ROLES:
                    key = w.ident if w.ident is not None else w.name  # sparsity.tensor_key, inlined (per call)
                    held = first.setdefault(key, op.module)
                    if held != op.module:
                        readers.setdefault(key, {held: None})[op.module] = None
    if not readers:
        return {}
    where: dict[str, int] = {}  # layer -> the first path it runs in (whose modules hold it), in run order
    for i, (ops, _) in enumerate(paths):
        for op in ops:
            where.setdefault(op.module, i)
    plain: dict[type, bool] = {}
    read = policy.read_model_bits
    order = {m: n for n, m in enumerate(where)}
    out = {}
    for key, layers in readers.items():
        for module in sorted(layers, key=order.__getitem__, reverse=True):  # the last to run first
            mod = paths[where[module]][1].get(module) if read else None
            widths = _layer_bits(policy, module, mod, plain)
            if widths.weight_set:
                out[key] = widths.weight
                break
    return out


def width_attrs(mod: nn.Module) -> dict[str, int]:
    """The widths layer ``mod`` sets on itself, as ``_layer_bits`` reads them: ``weight_bits`` (else a QAT
    ``weight_fake_quant``'s range), ``bias_bits``, ``act_bits``, ``acc_bits``; those it does not set are absent."""
    widths = {"weight_bits": _module_int(mod, "weight_bits") or _weight_fake_quant_bits(mod),
              **{k: _module_int(mod, k) for k in ("bias_bits", "act_bits", "acc_bits")}}
    return {k: v for k, v in widths.items() if v is not None}


def annotate_bits(ops: list[Op], policy: PrecisionPolicy, modules: Mapping[str, nn.Module],
                  tied: Mapping | None = None) -> None:
    """Set weight bits, edge bits and the mul/add widths of every op, in execution order; ``tied``: ``tied_widths``
    over every capture path (default: over ``ops``)."""
    out_bits: dict[str, int] = {}
    integer: set[str] = set()  # ops whose output is a quantised integer tensor (a converted torch.ao model)
    input_bits = policy.input_bits or policy.act_bits
    read_model = policy.read_model_bits
    mul_override, add_override = policy.mul_bits_override, policy.add_bits_override
    per_layer: dict[str, _LayerWidths] = {}  # what a layer's config and attributes say, read once per layer
    plain: dict[type, bool] = {}
    if tied is None:
        tied = tied_widths([(ops, modules)], policy)
    for op in ops:
        layer = per_layer.get(op.module)
        if layer is None:
            mod = modules.get(op.module) if read_model else None
            layer = per_layer[op.module] = _layer_bits(policy, op.module, mod, plain)
        wbits, by_dtype, bias_bits, bias_by_dtype, act, acc, _ = layer
        multiplied = []
        if op.weights:
            if by_dtype:
                stored = [_dtype_bits(w.tensor) for w in op.weights if w.role in _WEIGHT_ROLES]
                if stored and min(stored) < wbits:
                    wbits = min(stored)
            for w in op.weights:
                if w.role in _WEIGHT_ROLES:
                    w.bits = tied.get(w.ident if w.ident is not None else w.name, wbits) if tied else wbits
                else:  # a bias, a norm's scale and shift, a PReLU slope: each at its own dtype's width
                    w.bits = _stored_bits(w.tensor, bias_bits) if bias_by_dtype else bias_bits
                if w.role in _MULTIPLIED_ROLES:
                    multiplied.append(w.bits)
        ins = [out_bits.get(p, act) for p in op.inputs] if op.inputs else []
        if len(ins) < len(op.in_shapes):
            ins.append(input_bits)
        in_bits = op.in_bits = ins or [input_bits]
        if op.kind == "quant":
            op.out_bits = int(op.attrs["bits"])
            if op.attrs.get("integer"):
                integer.add(op.name)
        elif integer and op.inputs and all(p in integer for p in op.inputs):
            # a quantised kernel returns its input's quantised dtype (pooling, flatten, relu, add of int8)
            op.out_bits = max(in_bits)
            integer.add(op.name)
        elif op.kind in PRESERVING_KINDS:
            op.out_bits = max(in_bits)
        else:
            op.out_bits = act
        op.acc_bits = acc
        op.operand_bits = in_bits + multiplied
        if multiplied and min(multiplied) == 1:
            # A ±1 weight times a value with a standalone sign bit counts 1/32 (official page §3.1).
            op.mul_bits = 1
        else:
            op.mul_bits = max(op.operand_bits)
        op.add_bits = acc
        if mul_override is not None:
            op.mul_bits = mul_override
        if add_override is not None:
            op.add_bits = add_override
        out_bits[op.name] = op.out_bits
