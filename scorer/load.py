"""Load the model named on the command line, safely.

MODEL forms (see ``load_model``):

* ``reference:NAME``: a registered reference model (carries its track, rules, bits and input shape);
* ``path/to/file.py:factory``: import the file by path and call ``factory()``;
* ``package.module:factory``: import the module and call ``factory()``;
* a ``torch.export`` program (``.pt2``), a TorchScript archive, a micronet checkpoint
  (``scorer.checkpoint``), a plain state_dict together with ``arch`` (a reference name or
  ``pkg.mod:factory``), or, only with ``trust_pickle=True``, a pickled whole ``nn.Module``.

Files are only read, never written. Nothing from a file is unpickled or imported unless the caller says
so: ``torch.load`` always runs weights-only first, so a file that holds a pickled Python object is refused
unless ``trust_pickle``; a ``.pt2`` archive is checked before torch reads it (``scorer.pt2``: pickles need
``trust_pickle``, program parts that could run Python need ``trust_code``); a checkpoint's ``arch`` must
be a registered reference model unless ``trust_code`` (an ``arch`` given by the caller is theirs to
choose). A TorchScript archive is a program (its code can call any torch operator, ``torch.from_file``
included): it is refused unless ``trust_code``. Memory stays in proportion to the file: zip records are
checked before inflating (``scorer.unpickle.check_zip_bomb``), stored tensors may not be expanded beyond
their bytes, and an architecture is built on the meta device and compared with the file's state_dict before
it is built for real (``_built_and_loaded``). Every problem is a ScorerError with one line naming the file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from scorer.checkpoint import checkpoint_from_payload, is_checkpoint_payload
from scorer.errors import ScorerError
from scorer.ops.values import meta_of
from scorer.pt2 import load_exported_program, quiet_torch_logs
from scorer.unpickle import (
    MAX_UNPACK_RATIO,
    MAX_UNPACK_SLACK,
    USER_ERRORS,
    UnsafePickle,
    one_line,
    trusted_load,
    user_imports,
    weights_only_load,
)

#: Keys under which training scripts commonly nest a state_dict.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
#: Prefixes added by DataParallel / torch.compile wrappers.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class LoadedModel:
    """A model ready for ``score()`` plus the defaults its source carries (None: not known)."""

    model: nn.Module
    input_shape: tuple[int, ...] | None = None
    #: dtype name of the first input ("long" for token ids); None: float32
    input_dtype: str | None = None
    track: str | None = None
    rules: str | None = None
    bits: int | None = None
    exit_fractions: dict[str, float] | None = None
    #: the reference's counting sparsity (``ReferenceInfo.sparsity``); None: measured
    sparsity: object = None
    precision: dict[str, Any] | None = None
    masks_applied: int = 0
    description: str = ""
    #: Example inputs recorded in the file (meta tensors keeping shape and dtype), e.g. a .pt2 program's.
    example_inputs: tuple | None = None
    #: Which loader was used: reference, factory, export, torchscript, checkpoint, state_dict, pickle.
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- factories


def _import_file(path: Path) -> Any:
    """Import ``path`` as a module under a private, unique name (the file is only read)."""
    if not path.exists():
        raise ScorerError(f"{path}: no such file")
    if path.is_dir():
        raise ScorerError(f"{path} is a directory, not a Python file")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"_micronet_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ScorerError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with user_imports(resolved.parent):
            spec.loader.exec_module(module)
    except USER_ERRORS as exc:  # the user's code may raise anything, sys.exit() included
        sys.modules.pop(name, None)
        raise ScorerError(f"importing {path} failed: {one_line(exc)}") from None
    return module


def _import_module(name: str) -> Any:
    try:
        with user_imports(Path.cwd()):
            return importlib.import_module(name)
    except USER_ERRORS as exc:
        raise ScorerError(f"cannot import module {name!r}: {one_line(exc)}") from None


def _getattr_path(obj: Any, dotted: str, where: str) -> Any:
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ScorerError(f"{where} has no attribute {dotted!r}") from None
    return obj


def _is_file_factory(spec: str) -> bool:
    left, sep, right = spec.rpartition(":")
    return bool(sep) and left.endswith(".py") and bool(right)


def _is_module_factory(spec: str) -> bool:
    return bool(_FACTORY_RE.match(spec))


def _resolve_factory(spec: str) -> tuple[Callable[..., Any] | nn.Module, str]:
    """The object named by ``file.py:attr`` or ``pkg.mod:attr`` and a description."""
    left, _, attr = spec.rpartition(":")
    if left.endswith(".py"):
        module = _import_file(Path(left))
        where = left
    else:
        module = _import_module(left)
        where = f"module {left!r}"
    return _getattr_path(module, attr, where), f"{attr}() from {left}"


def _call_factory(obj: Any, spec: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ScorerError(f"{spec} is a module instance; it cannot take arch_kwargs {dict(kwargs)}")
        return obj
    if not callable(obj):
        raise ScorerError(f"{spec} is not callable (a factory returning an nn.Module is needed)")
    try:
        model = obj(**dict(kwargs or {}))
    except USER_ERRORS as exc:  # the user's code may raise anything, sys.exit() included
        raise ScorerError(f"calling {spec} failed: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ScorerError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _reference_info(name: str) -> Any:
    from reference_models.registry import get_reference

    try:
        return get_reference(name)
    except KeyError as exc:
        raise ScorerError(str(exc.args[0]) if exc.args else f"unknown reference model {name!r}") from None
    except Exception as exc:  # noqa: BLE001 - a broken registry module
        raise ScorerError(f"cannot load the reference model registry: {one_line(exc)}") from None


def _build_reference(name: str, kwargs: Mapping[str, Any] | None = None) -> tuple[nn.Module, Any]:
    info = _reference_info(name)
    try:
        model = info.build(**dict(kwargs or {}))
    except USER_ERRORS as exc:
        raise ScorerError(f"building reference model {name!r} failed: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ScorerError(f"reference model {name!r} factory returned {type(model).__name__}, not an nn.Module")
    return model, info


def _arch_builder(arch: str, kwargs: Mapping[str, Any] | None = None) -> tuple[Callable[[], nn.Module], Any]:
    """How to build ``arch``: a reference name (optionally ``reference:NAME``), ``pkg.mod:factory`` or
    ``file.py:factory`` (imported once, here). Returns (build, ReferenceInfo or None); ``build()`` may be
    called twice (on the meta device, then for real)."""
    if arch.startswith("reference:"):
        arch = arch.split(":", 1)[1]
    if _is_file_factory(arch) or (":" in arch and _is_module_factory(arch)):
        obj, _ = _resolve_factory(arch)
        return (lambda: _call_factory(obj, arch, kwargs)), None
    info = _reference_info(arch)
    return (lambda: _build_reference(arch, kwargs)[0]), info


def _reference_defaults(info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    return {
        "input_shape": tuple(info.default_input_shape),
        "input_dtype": info.default_input_dtype,
        "exit_fractions": dict(info.path_fractions) if info.path_fractions else None,
        "track": info.track,
        "rules": info.rules,
        "bits": info.bits,
    }


# --------------------------------------------------------------------------- files


def _zip_names(path: Path) -> list[str] | None:
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return None


def _is_export_archive(names: list[str]) -> bool:
    return any(
        n.endswith("/archive_format") or n == "archive_format" or "serialized_exported_program" in n
        for n in names
    )


def _is_torchscript_archive(names: list[str]) -> bool:
    return any(n.endswith("constants.pkl") or "/code/" in n or n.startswith("code/") for n in names)


def _load_export(path: Path, trust_pickle: bool, trust_code: bool) -> LoadedModel:
    ep = load_exported_program(path, trust_pickle=trust_pickle, trust_code=trust_code)
    try:
        with quiet_torch_logs():
            module = ep.module()
    except USER_ERRORS as exc:
        raise ScorerError(f"{path}: cannot build a module from the torch.export program ({one_line(exc)})") from None
    # ep.module() replaces train()/eval() with methods that raise; the graph is already fixed, so the
    # ordinary nn.Module methods (which only flip flags) are safe and let the scorer toggle modes.
    for attr in ("train", "eval"):
        if attr in module.__dict__:
            delattr(module, attr)
    input_shape = None
    example = None
    ex = getattr(ep, "example_inputs", None)
    if isinstance(ex, tuple) and len(ex) == 2 and not ex[1]:
        args = tuple(ex[0])
        if args and all(isinstance(a, torch.Tensor) for a in args):
            example = tuple(meta_of(a) for a in args)
            if len(args) == 1:
                input_shape = tuple(args[0].shape)
    return LoadedModel(
        model=module, input_shape=input_shape, example_inputs=example,
        description=f"torch.export program {path.name}", source="export",
    )


def _load_torchscript(path: Path, trust_code: bool) -> LoadedModel:
    # A TorchScript archive is a program: loading runs its __setstate__ methods and scoring its forward, and
    # either can call any torch operator, torch.from_file (which creates and writes files) included.
    if not trust_code:
        raise ScorerError(
            f"{path} is a TorchScript program: loading and running it executes its code (which can call any "
            "torch operator, e.g. write files): pass --trust-code if you trust the file"
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ScorerError(f"{path}: cannot load the TorchScript archive ({one_line(exc)})") from None
    return LoadedModel(model=module, description=f"TorchScript module {path.name}", source="torchscript")


def _tensor_mapping(obj: Any) -> dict[str, torch.Tensor] | None:
    """``obj`` as a state_dict (a mapping of names to tensors), looking one level into common wrappers."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if all(isinstance(k, str) for k in obj):
            return dict(obj)
    if isinstance(obj, Mapping):
        for key in _NESTED_STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    return None


def _fold_prune_reparam(sd: dict[str, torch.Tensor],
                        expected: Mapping[str, tuple[int, ...]]) -> tuple[dict[str, torch.Tensor], int]:
    """Turn ``X_orig`` + ``X_mask`` pairs (torch.nn.utils.prune) into ``X = orig * mask``: only when both have
    exactly the model's shape for ``X`` (no broadcasting: 1xN times Nx1 would be NxN); other pairs stay
    as they are and are reported as keys that do not fit."""
    out = dict(sd)
    folded = 0
    for key in list(sd):
        if not key.endswith("_orig"):
            continue
        base = key[: -len("_orig")]
        mask_key = base + "_mask"
        if mask_key in sd and base not in sd and base in expected:
            orig, mask = sd[key], sd[mask_key]
            if not (tuple(orig.shape) == tuple(mask.shape) == tuple(expected[base])):
                continue
            out[base] = orig * mask.to(orig.dtype)
            del out[key], out[mask_key]
            folded += 1
    return out, folded


def _strip_wrapper_prefixes(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd) and not any(k.startswith(prefix) for k in expected):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _list(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _fit_state(own: Mapping[str, tuple[int, ...]], sd: dict[str, torch.Tensor], path: Path,
               arch: str) -> tuple[dict[str, torch.Tensor], int]:
    """``sd`` ready for ``load_state_dict`` into a model whose state_dict shapes are ``own``; ScorerError
    summarising what does not fit. Returns it and the number of prune folds."""
    expected = set(own)
    sd = _strip_wrapper_prefixes(dict(sd), expected)
    sd, folded = _fold_prune_reparam(sd, own)
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    mismatched = [
        f"{k} (file {'x'.join(map(str, sd[k].shape)) or 'scalar'}, model {'x'.join(map(str, own[k])) or 'scalar'})"
        for k in sorted(expected & set(sd))
        if tuple(sd[k].shape) != tuple(own[k])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_list(mismatched, 3)}")
    if problems:
        raise ScorerError(f"the state_dict in {path} does not fit arch {arch!r}: " + "; ".join(problems))
    return sd, folded


def _budget(path: Path) -> int:
    """The most tensor bytes a file may make the loader hold: as for zip records, 100 x its size + 64 MiB."""
    return MAX_UNPACK_RATIO * path.stat().st_size + MAX_UNPACK_SLACK


def _check_file_tensors(tensors: Mapping[Any, Any], path: Path, what: str) -> int:
    """ScorerError unless each value is a dense-layout tensor backed by its own stored bytes: a stored
    tensor's strides can reuse its storage (stride 0, as ``expand`` makes), so a few bytes could stand for
    gigabytes once copied or multiplied. Returns the bytes the tensors take."""
    total = 0
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise ScorerError(f"{path}: a {what} key is {type(name).__name__} {name!r}, not a string")
        if not isinstance(t, torch.Tensor):
            raise ScorerError(f"{path}: {what} {name!r} is {type(t).__name__}, not a tensor")
        if t.layout != torch.strided:
            raise ScorerError(f"{path}: {what} {name!r} has layout {t.layout}; only dense tensors are read")
        need = t.numel() * t.element_size()
        have = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
        if need > have:
            shape = "x".join(map(str, t.shape)) or "scalar"
            raise ScorerError(f"{path}: {what} {name!r} ({shape}, strides {tuple(t.stride())}) is expanded from "
                              f"{max(have, 0):,} stored bytes to {need:,}; refusing it")
        total += need
    return total


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _built_and_loaded(build: Callable[[], nn.Module], info: Any, sd: Mapping[Any, Any],
                      masks: Mapping[Any, Any], path: Path, arch: str) -> tuple[nn.Module, int]:
    """Build the architecture and load ``sd`` into it, with no memory the file's size does not account for.

    The file's tensors are checked first (``_check_file_tensors``); the architecture is then built on the
    meta device (nothing allocated, however large the arguments from the file ask it to be) and its
    state_dict keys and shapes compared with the file's; only then is it built for real and loaded.
    Returns the model and the number of prune folds."""
    budget = _budget(path)
    held = _check_file_tensors(sd, path, "tensor") + _check_file_tensors(masks, path, "mask")
    if held > budget:
        raise ScorerError(f"{path}: its tensors take {held:,} bytes, more than a file of its size holds")
    try:
        with torch.device("meta"):
            skeleton = build()
    except ScorerError:
        if info is not None:  # a reference model builds on the meta device
            raise
        skeleton = None  # the user's factory cannot: its real build is the user's choice
    if skeleton is not None:
        own = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        fitted, folded = _fit_state(own, dict(sd), path, arch)
        if _state_bytes(skeleton) > budget:  # buffers kept out of the state_dict, sized by arguments
            raise ScorerError(f"{path}: arch {arch!r} as the file asks for it takes "
                              f"{_state_bytes(skeleton):,} bytes, far more than the file's weights")
        is_meta = any(t.is_meta for t in (*skeleton.parameters(), *skeleton.buffers()))
        model = build() if is_meta else skeleton  # a factory that ignored the meta device built it already
    else:
        model = build()
        fitted, folded = _fit_state({k: tuple(v.shape) for k, v in model.state_dict().items()}, dict(sd),
                                    path, arch)
    try:
        model.load_state_dict(fitted, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise ScorerError(f"the state_dict in {path} does not fit arch {arch!r}: {one_line(exc)}") from None
    return model, folded


def _apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor], path: Path) -> int:
    """Zero the weights whose mask entry is False (True = kept). Returns how many masks were applied."""
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    applied = 0
    with torch.no_grad():
        for name, mask in masks.items():
            target_name = name
            if target_name not in tensors and target_name.endswith("_mask"):
                target_name = target_name[: -len("_mask")]
            target = tensors.get(target_name)
            if target is None:
                raise ScorerError(f"{path}: mask {name!r} names no parameter of the model")
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(target.shape):
                shape = "x".join(map(str, getattr(mask, "shape", ()))) or "?"
                raise ScorerError(
                    f"{path}: mask {name!r} has shape {shape}, the parameter has "
                    f"{'x'.join(map(str, target.shape))}"
                )
            target.mul_(mask.to(device=target.device).bool().to(target.dtype))
            applied += 1
    return applied


def _precision_from_bits(bits: Mapping[str, Any]) -> dict[str, Any] | None:
    if not bits:
        return None
    if set(bits) <= {"default", "layers"}:
        return dict(bits)
    return {"layers": dict(bits)}


def _checkpoint_arch_builder(arch: str, kwargs: Mapping[str, Any], path: Path,
                             trust_code: bool) -> tuple[Callable[[], nn.Module], Any]:
    """How to build the arch a checkpoint names: a registered reference model; code it names only with
    trust_code."""
    if trust_code:
        return _arch_builder(arch, kwargs)
    name = arch.removeprefix("reference:")
    from reference_models.registry import list_references

    if name not in {r.name for r in list_references()} and (":" in name or name.endswith(".py")):
        raise ScorerError(
            f"{path}: its arch {name!r} names code to import and run, not a reference model; pass "
            "--trust-code if you trust the file (or --arch to name the architecture yourself)"
        )
    return _arch_builder(name, kwargs)


def _known_track(name: object) -> bool:
    from scorer.tracks import TRACKS

    return isinstance(name, str) and name in TRACKS


def _builtin_rules(name: object) -> bool:
    from rules import is_builtin

    return is_builtin(name)


def _load_checkpoint_payload(obj: dict, path: Path, arch: str | None, trust_code: bool) -> LoadedModel:
    try:
        ckpt = checkpoint_from_payload(obj)
    except (ValueError, TypeError) as exc:
        raise ScorerError(f"{path}: {exc}") from None
    arch_name = arch or ckpt.arch
    if arch:  # named on the command line
        build, info = _arch_builder(arch, ckpt.arch_kwargs)
    else:
        build, info = _checkpoint_arch_builder(ckpt.arch, ckpt.arch_kwargs, path, trust_code)
    model, folded = _built_and_loaded(build, info, ckpt.state_dict, ckpt.masks, path, arch_name)
    applied = _apply_masks(model, ckpt.masks, path) + folded
    defaults = _reference_defaults(info)
    meta = ckpt.meta
    input_shape = meta.get("input_shape")
    if input_shape is not None:
        try:
            input_shape = tuple(int(d) for d in input_shape)
        except (TypeError, ValueError):
            raise ScorerError(f"{path}: meta input_shape {input_shape!r} is not a list of integers") from None
    global_bits = meta.get("bits") if isinstance(meta.get("bits"), int) else None
    track = meta.get("track")
    if track is not None and not _known_track(track):
        raise ScorerError(f"{path}: its meta track {track!r} is not a track name (cifar100, imagenet, wikitext103)")
    rules = meta.get("rules")
    if rules is not None and not trust_code and not _builtin_rules(rules):
        raise ScorerError(
            f"{path}: its meta rules {rules!r} is not a built-in rule set (naming one would import code); "
            "pass --trust-code if you trust the file"
        )
    precision = _precision_from_bits(ckpt.bits)
    parts = [f"micronet checkpoint {path.name} (arch {arch_name}"]
    if applied:
        parts.append(f", {applied} mask(s) applied")
    if ckpt.bits:
        parts.append(f", bits for {len(ckpt.bits)} layer pattern(s)")
    if ckpt.exit_fractions:
        parts.append(", exit fractions")
    description = "".join(parts) + ")"
    return LoadedModel(
        model=model.eval(),
        input_shape=input_shape or defaults.get("input_shape"),
        input_dtype=defaults.get("input_dtype") if input_shape is None else None,
        track=meta.get("track") or defaults.get("track"),
        rules=meta.get("rules") or defaults.get("rules"),
        bits=global_bits if global_bits is not None else (None if precision else defaults.get("bits")),
        exit_fractions=dict(ckpt.exit_fractions) or defaults.get("exit_fractions"),
        precision=precision,
        masks_applied=applied,
        description=description,
        source="checkpoint",
        extra={"arch": arch_name, "meta": dict(meta)},
    )


def _load_state_dict_file(sd: dict[str, torch.Tensor], path: Path, arch: str | None) -> LoadedModel:
    if not arch:
        raise ScorerError(
            f"{path} holds a state_dict ({len(sd)} tensors) but no architecture: pass --arch NAME "
            "(a reference model name or package.module:factory)"
        )
    build, info = _arch_builder(arch)
    model, folded = _built_and_loaded(build, info, sd, {}, path, arch)
    defaults = _reference_defaults(info)
    return LoadedModel(
        model=model.eval(),
        masks_applied=folded,
        description=f"state_dict {path.name} on arch {arch}",
        source="state_dict",
        **defaults,
    )


def _load_torch_file(path: Path, arch: str | None, trust_pickle: bool, trust_code: bool) -> LoadedModel:
    try:
        obj = weights_only_load(path, str(path))
    except UnsafePickle as unsafe:
        if not trust_pickle:
            raise ScorerError(
                f"{path} holds a pickled Python object ({unsafe.what}); loading it could run "
                "arbitrary code: pass --trust-pickle if you trust the file"
            ) from None
        obj = trusted_load(path, str(path))
        if isinstance(obj, Mapping) and not isinstance(obj, nn.Module):
            inner = obj.get("model")
            if isinstance(inner, nn.Module):
                obj = inner
        if isinstance(obj, nn.Module):
            return LoadedModel(model=obj, description=f"pickled {type(obj).__name__} from {path.name}",
                               source="pickle")
    if isinstance(obj, nn.Module):  # e.g. an allow-listed class
        return LoadedModel(model=obj, description=f"{type(obj).__name__} from {path.name}", source="pickle")
    if is_checkpoint_payload(obj):
        return _load_checkpoint_payload(obj, path, arch, trust_code)
    sd = _tensor_mapping(obj)
    if sd is not None:
        return _load_state_dict_file(sd, path, arch)
    kind = type(obj).__name__
    if isinstance(obj, Mapping):
        kind = f"dict with keys {_list(sorted(map(str, obj)), 5)}" if obj else "an empty dict"
    raise ScorerError(f"{path} is not a model: it holds {kind} (expected a module, state_dict or checkpoint)")


def _load_path(path: Path, arch: str | None, trust_pickle: bool, trust_code: bool) -> LoadedModel:
    if not path.exists():
        raise ScorerError(f"{path}: no such file")
    if path.is_dir():
        raise ScorerError(f"{path} is a directory, not a model file")
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ScorerError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if size == 0:
        raise ScorerError(f"{path} is empty")
    if path.suffix == ".py":
        raise ScorerError(f"{path} is a Python file: name the factory to call, e.g. {path}:build_model")
    names = _zip_names(path)
    if names is not None:
        if _is_export_archive(names):
            return _load_export(path, trust_pickle, trust_code)
        if _is_torchscript_archive(names):
            return _load_torchscript(path, trust_code)
    elif path.suffix == ".pt2":
        raise ScorerError(f"{path} is corrupt or truncated (not a readable torch.export archive)")
    return _load_torch_file(path, arch, trust_pickle, trust_code)


# --------------------------------------------------------------------------- entry point


def load_model(spec: str, *, arch: str | None = None, trust_pickle: bool = False,
               trust_code: bool = False) -> LoadedModel:
    """Load the model named by ``spec`` (see the module docstring for the accepted forms).

    Args:
        spec: ``reference:NAME``, ``file.py:factory``, ``package.module:factory`` or a file path.
        arch: architecture for a plain state_dict (or to override a checkpoint's): a reference name,
            ``pkg.mod:factory`` or ``file.py:factory``.
        trust_pickle: allow unpickling arbitrary objects (a whole pickled ``nn.Module``). Only for
            files the user trusts: unpickling can run code.
        trust_code: allow a file to name code to import and run (a checkpoint's ``arch`` that is
            ``pkg.mod:factory`` or ``file.py:factory``) or to be a program (TorchScript). Only for files
            the user trusts.

    Raises:
        ScorerError: with one line naming the file for every unusable input.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ScorerError("no MODEL given")
    spec = spec.strip()
    if spec.startswith("reference:"):
        name = spec.split(":", 1)[1]
        if not name:
            raise ScorerError("reference: needs a name, e.g. reference:wrn28_10 (see --list-references)")
        model, info = _build_reference(name)
        suffix = f": {info.description}" if info.description else ""
        return LoadedModel(model=model, description=f"reference model {name}{suffix}", source="reference",
                           sparsity=info.sparsity() if info.sparsity else None, **_reference_defaults(info))
    path = Path(spec)
    if path.exists():
        return _load_path(path, arch, trust_pickle, trust_code)
    if _is_file_factory(spec):
        obj, desc = _resolve_factory(spec)
        return LoadedModel(model=_call_factory(obj, spec), description=desc, source="factory")
    if _is_module_factory(spec):
        obj, desc = _resolve_factory(spec)
        return LoadedModel(model=_call_factory(obj, spec), description=desc, source="factory")
    return _load_path(path, arch, trust_pickle, trust_code)
