"""Values flowing through capture: a meta tensor (or Python value) plus where it came from."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def meta_of(v: object) -> object:
    """A tensor's meta stand-in (same shape and dtype, no data); any other value unchanged."""
    if isinstance(v, torch.Tensor):
        return torch.empty(v.shape, dtype=v.dtype, device="meta")
    return v


@dataclass(slots=True)
class Val:
    """One argument value seen by the capture.

    ``meta`` is a meta-device tensor (or any Python value); ``param`` names the model parameter or buffer
    it is (None for activations); ``real`` is that parameter's real tensor; ``producer`` names the op
    whose output this is (None for parameters, constants and the model input); ``buffer`` marks a buffer
    (BN running stats, a registered attention mask), which no op stores as a parameter; ``model_input``
    marks a tensor passed to the model (activation memory: ``scorer.memory``).
    """

    meta: object
    param: str | None = None
    real: torch.Tensor | None = None
    producer: str | None = None
    ident: int | None = None  # identity of the stored tensor, for shared-weight detection
    buffer: bool = False  # a buffer (running stats, masks, index tables): read, never stored as a parameter
    model_input: bool = False  # a tensor passed to the model
    mask: torch.Tensor | None = None  # a pruned parameter's mask (``real`` is then the masked weight: ``pruned``)

    @property
    def is_tensor(self) -> bool:
        """True when the value is a tensor."""
        return isinstance(self.meta, torch.Tensor)

    @property
    def is_activation(self) -> bool:
        """True for a tensor that is not a parameter/buffer."""
        return self.is_tensor and self.param is None

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return tuple(self.meta.shape)  # type: ignore[union-attr]


def carries_param(ops: list, vals: list[Val]) -> Val | None:
    """For a single free op applied to exactly one parameter or buffer (``w.t()``, ``w.T``, ``w.view(...)``,
    ``w.expand_as(x)``), or a quantiser applied to one (a QAT ``weight_fake_quant``: its other tensors are its
    scale and zero point), that tensor's Val: the op's output is still it, stored by the op that computes with it. For a
    parameter times the mask beside it (``pruned``), the masked weight's Val."""
    if len(ops) != 1 or ops[0].kind not in ("free", "quant", "mul"):
        return None
    tensors = [v for v in vals if isinstance(v, Val) and v.is_tensor]
    if ops[0].attrs.get("values_of_first"):  # p.expand_as(y): p's values in y's shape
        tensors = tensors[:1]
    if ops[0].kind == "mul":
        return pruned(tensors) if len(tensors) == 2 else None
    if ops[0].kind == "quant":
        return tensors[0] if tensors and tensors[0].param is not None else None
    if len(tensors) == 1 and tensors[0].param is not None:
        return tensors[0]
    return None


def masked_name(param: str) -> str | None:
    """The name a masked weight is stored under, from its unmasked parameter's: torch.nn.utils.prune's ``X_orig``
    gives ``X``, a parametrized ``A.parametrizations.W.original`` (torch.ao.pruning's ``FakeSparsity``) ``A.W``;
    None for any other name."""
    if param.endswith("_orig"):
        return param[: -len("_orig")]
    head, found, tail = param.rpartition("parametrizations.")
    if found and tail.endswith(".original") and tail.count(".") == 1 and (not head or head.endswith(".")):
        return head + tail[: -len(".original")]
    return None


def mask_name(param: str) -> str:
    """The mask buffer beside an unmasked parameter ``masked_name`` knows: ``X_mask``, ``A.parametrizations.W.0.mask``."""
    return param[: -len("_orig")] + "_mask" if param.endswith("_orig") else param[: -len("original")] + "0.mask"


def pruned(tensors: list[Val]) -> Val | None:
    """A parameter times the mask buffer beside it, what a ``torch.nn.utils.prune`` forward pre-hook (``X_orig *
    X_mask``) or torch.ao.pruning's parametrization computes on the aten captures (export, dispatch): the masked
    weight with its mask, stored under ``masked_name`` as a layer's module form stores it (``Call.module_weights``);
    None for any other product."""
    orig, mask = tensors if not tensors[0].buffer else tensors[::-1]
    name = masked_name(orig.param) if orig.param is not None and not orig.buffer else None
    if name is None or orig.real is None or not mask.buffer or mask.real is None or mask.param != mask_name(orig.param):
        return None
    bits = mask.real.detach()
    return Val(meta=orig.meta, param=name, real=masked_weight(orig.real, bits), ident=orig.ident, mask=bits)


def masked_weight(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight * mask``, detached; a weight without data (meta) as it is."""
    return (weight.detach() * mask).detach() if weight.device.type != "meta" else weight.detach()


def mask_parametrized(module: object, attr: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(original, mask)`` of ``module.attr`` when its one parametrization is torch.ao.pruning's ``FakeSparsity``
    (``mask * original`` until ``squash_mask``), else ``(None, None)``: a layer's module form cannot see what another
    parametrization computes (the aten captures see the product: ``pruned``)."""
    chain = module._modules.get("parametrizations")  # type: ignore[attr-defined]
    chain = chain._modules.get(attr) if chain is not None else None
    if chain is None or len(chain._modules) != 1:
        return None, None
    fake = next(iter(chain._modules.values()))
    original, mask = chain._parameters.get("original"), fake._buffers.get("mask")
    if type(fake).__name__ != "FakeSparsity" or original is None or mask is None or mask.shape != original.shape:
        return None, None
    return original, mask
