"""From a trained (possibly quantised / binarised) model to a scorer checkpoint, and back.

The scorer rebuilds a checkpoint's architecture from the registry and loads its state dict strictly, so
what is saved must use the *plain* architecture's names: wrappers added by the compression library are
folded away (``QuantizedAct`` ``N.act.*`` -> ``N.*``, its ``N.quant`` quantiser state dropped; ``SignInput``
``N.conv.*`` -> ``N.*``), fake-quantised weights are stored on their quantisation grid, and bit widths go to
the checkpoint's ``bits`` table instead (``{"default": {"act": A}, "layers": {module: {"weight": W}}}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reference_models.compression.binarize import SignInput
from reference_models.compression.quantize import QuantConv2d, QuantizedAct, QuantLinear, bits_of
from reference_models.registry import build_reference
from scorer.checkpoint import Checkpoint

__all__ = [
    "checkpoint_bits", "dropped_state", "load_dropped_state", "make_checkpoint", "plain_key_map", "plain_name",
    "plain_state_dict",
]


def _wrappers(model: nn.Module) -> list[tuple[str, str, str | None]]:
    """``(wrapper name, child kept, child dropped)`` for every compression wrapper, deepest first."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, QuantizedAct):
            out.append((name, "act", "quant"))
        elif isinstance(module, SignInput):
            out.append((name, "conv", "sign"))
    return sorted(out, key=lambda t: -t[0].count("."))


def plain_name(name: str, wrappers: list[tuple[str, str, str | None]]) -> str | None:
    """The plain-architecture name of a (module or tensor) name, or None if it belongs to a dropped part."""
    for wrapper, kept, dropped in wrappers:
        prefix = f"{wrapper}." if wrapper else ""
        if not name.startswith(prefix) and name != wrapper:
            continue
        rest = name[len(prefix):] if name != wrapper else ""
        if dropped is not None and (rest == dropped or rest.startswith(dropped + ".")):
            return None
        if rest == kept:
            name = wrapper
        elif rest.startswith(kept + "."):
            name = prefix + rest[len(kept) + 1:]
    return name


def plain_key_map(model: nn.Module) -> dict[str, str | None]:
    """``{state-dict key of model: plain key or None (dropped)}``; a quantised layer's output range
    (``out_running_max``, when it quantises its output) is quantiser state and dropped too."""
    wrappers = _wrappers(model)
    ranges = {f"{n}.out_running_max" if n else "out_running_max" for n, m in model.named_modules()
              if isinstance(m, (QuantConv2d, QuantLinear)) and m.act_bits is not None}
    return {key: None if key in ranges else plain_name(key, wrappers) for key in model.state_dict()}


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict under plain names, with quantised layers' weights replaced by their quantised values."""
    state = model.state_dict()
    for name, module in model.named_modules():
        getter = getattr(module, "quantized_weight", None)
        if callable(getter):
            with torch.no_grad():
                state[f"{name}.weight" if name else "weight"] = getter().detach()
    out: dict[str, Tensor] = {}
    for key, plain in plain_key_map(model).items():
        if plain is not None:
            out[plain] = state[key].detach().cpu().clone()
    return out


def checkpoint_bits(model: nn.Module, act_bits: int | None = None) -> dict[str, Any]:
    """Per-layer weight widths (quantised / binary layers) under plain names, plus a default activation
    width when the whole network runs its activations at ``act_bits``."""
    wrappers = _wrappers(model)
    layers: dict[str, dict[str, int]] = {}
    for name, entry in bits_of(model).items():
        plain = plain_name(name, wrappers)
        if plain is None:  # an activation quantiser: its width belongs to the activation it wraps
            parent = name.rpartition(".")[0]
            plain = plain_name(parent, wrappers) or parent
        layers.setdefault(plain, {}).update(entry)
    out: dict[str, Any] = {}
    if act_bits is not None:
        out["default"] = {"act": int(act_bits)}
    if layers:
        out["layers"] = layers
    return out


def check_against_arch(state: Mapping[str, Tensor], arch: str, arch_kwargs: Mapping[str, Any]) -> None:
    """Raise RuntimeError unless ``state`` has exactly the keys and shapes of ``arch(**arch_kwargs)``."""
    reference = build_reference(arch, **dict(arch_kwargs)).state_dict()
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    shapes = [k for k in set(reference) & set(state) if tuple(reference[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        raise RuntimeError(
            f"checkpoint state does not fit {arch}: missing {missing[:3]}, unexpected {extra[:3]}, "
            f"shape mismatches {shapes[:3]}"
        )


def make_checkpoint(
    model: nn.Module,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    masks: Mapping[str, Tensor],
    bits: Mapping[str, Any],
    exit_fractions: Mapping[str, float],
    meta: Mapping[str, Any],
) -> Checkpoint:
    """A scorer checkpoint of ``model`` (plain names, checked against the architecture)."""
    state = plain_state_dict(model)
    check_against_arch(state, arch, arch_kwargs)
    wrappers = _wrappers(model)
    plain_masks = {}
    for name, mask in masks.items():
        plain = plain_name(name, wrappers)
        if plain is not None:
            plain_masks[plain] = mask.detach().cpu().bool()
    return Checkpoint(
        arch=arch,
        state_dict=state,
        arch_kwargs=dict(arch_kwargs),
        masks=plain_masks,
        bits=dict(bits),
        exit_fractions={k: float(v) for k, v in exit_fractions.items()},
        meta=dict(meta),
    )


def dropped_state(model: nn.Module) -> dict[str, Any]:
    """The state the plain architecture has no place for (activation-quantiser ranges and clips), as
    JSON-able lists keyed by the wrapped model's state-dict keys: kept in the checkpoint's meta so that
    ``--resume`` rebuilds the network that was trained."""
    state = model.state_dict()
    return {key: state[key].detach().cpu().tolist() for key, plain in plain_key_map(model).items() if plain is None}


def load_dropped_state(model: nn.Module, values: Mapping[str, Any]) -> None:
    """Put back what :func:`dropped_state` saved (keys the model lacks are an error)."""
    own = model.state_dict()
    unknown = sorted(set(values) - set(own))
    if unknown:
        raise KeyError(f"quantiser state without a place in the model: {unknown[:4]}")
    with torch.no_grad():
        for key, value in values.items():
            own[key].copy_(torch.as_tensor(value, dtype=own[key].dtype))


def load_plain_state(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    """Load a plain-named state dict into a (wrapped) model; returns the model keys left at their init
    (quantiser statistics that checkpoints do not keep)."""
    mapping = plain_key_map(model)
    inverse = {plain: key for key, plain in mapping.items() if plain is not None}
    unknown = sorted(set(state) - set(inverse))
    if unknown:
        raise KeyError(f"checkpoint keys without a place in the model: {unknown[:4]}")
    own = model.state_dict()
    with torch.no_grad():
        for plain, value in state.items():
            own[inverse[plain]].copy_(value)
    return sorted(k for k, plain in mapping.items() if plain is None or plain not in state)


def score_checkpoint(path: str | Path) -> Any:
    """Score a checkpoint exactly as ``micronet-score PATH`` does (no flags): returns the Report."""
    from scorer import score
    from scorer.load import load_model

    loaded = load_model(str(path))
    return score(
        loaded.model,
        input_shape=loaded.input_shape,
        example_inputs=loaded.example_inputs,
        rules=loaded.rules or "micronet2019",
        bits=loaded.bits,
        track=loaded.track or "cifar100",
        precision=loaded.precision,
        exit_fractions=loaded.exit_fractions,
    )
