"""Example inputs from shapes and dtypes, and the number the counts are divided by.

A float input is a meta tensor (shape and dtype only: nothing of its size is made). An integer input is a real
tensor of token ids drawn below the smallest ``num_embeddings`` of its embedding tables (so every lookup is
valid), from a fixed seed: an adaptive input whose bins have tables of their own, indexed by id minus the bin's
start, sees ids of its first bin only, so a forward that branches on the ids needs ``paths()`` and path fractions
(docs/contracts.md) to count every bin; a bool input is all False. On a model whose weights are on the meta device, integer inputs are meta tensors too.

Counts are per example (``batch_of``: dim 0 of the first input of rank >= 2) on the image tracks and per token
on WikiText-103 (``token_count``: official_rules.md §1.1, "counts are per token").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from scorer.errors import ScorerError

#: ``--input-dtype`` names and the torch dtypes they stand for.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64, "long": torch.int64,
    "int32": torch.int32, "int": torch.int32,
    "bool": torch.bool,
}


def parse_dtype(value: object) -> torch.dtype:
    """A torch dtype from a name of ``DTYPES`` (case-insensitive, ``torch.`` prefix allowed) or a dtype."""
    if isinstance(value, torch.dtype):
        if value not in DTYPES.values():
            raise ScorerError(f"input dtype {value} is not supported; use one of {', '.join(DTYPES)}")
        return value
    name = str(value).strip().lower().removeprefix("torch.")
    if name not in DTYPES:
        raise ScorerError(f"unknown input dtype {value!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _is_shape(value: object) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in value)


def shapes_of(input_shape: object) -> list[tuple[int, ...]]:
    """One shape ``(1, 3, 32, 32)`` or several ``[(1, 8), (1, 1, 2048)]`` as a list of shapes."""
    if _is_shape(input_shape) and len(input_shape) > 0:  # type: ignore[arg-type]
        shapes = [tuple(input_shape)]  # type: ignore[arg-type]
    elif isinstance(input_shape, (tuple, list)) and input_shape and all(_is_shape(s) for s in input_shape):
        shapes = [tuple(s) for s in input_shape]
    else:
        raise ScorerError(f"input shape must be positive integers or a list of such shapes, got {input_shape!r}")
    for shape in shapes:
        if not shape or any(isinstance(d, bool) or d <= 0 for d in shape):
            raise ScorerError(f"input shape must be positive integers, got {shape}")
    return shapes  # type: ignore[return-value]


def dtypes_of(input_dtype: object, n: int, default: torch.dtype) -> list[torch.dtype]:
    """One dtype per input: a single name or dtype applies to the first input, a list pairs with the inputs in
    order; inputs without one get ``default`` for the first and float32 for the rest."""
    if input_dtype is None:
        given: list[object] = []
    elif isinstance(input_dtype, (list, tuple)):
        given = list(input_dtype)
    else:
        given = [input_dtype]
    if len(given) > n:
        raise ScorerError(f"{len(given)} input dtypes for {n} input shape(s): give one shape per input")
    out = [parse_dtype(d) for d in given]
    out += [default if i == 0 else torch.float32 for i in range(len(out), n)]
    return out


def vocabulary_size(model: nn.Module) -> int | None:
    """The smallest ``num_embeddings`` of the model's embedding tables (None without one)."""
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    return min(sizes) if sizes else None


def make_inputs(model: nn.Module, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[torch.dtype]) -> tuple:
    """Example inputs for ``shapes`` and ``dtypes`` (module docstring)."""
    if all(dtype.is_floating_point for dtype in dtypes):  # meta tensors whatever the model: no walk of it
        return tuple(torch.empty(shape, dtype=dtype, device="meta") for shape, dtype in zip(shapes, dtypes, strict=True))
    meta_model = any(p.is_meta for p in model.parameters())
    vocab = vocabulary_size(model)
    gen = torch.Generator().manual_seed(0)
    out = []
    for shape, dtype in zip(shapes, dtypes, strict=True):
        if dtype.is_floating_point or meta_model:
            out.append(torch.empty(shape, dtype=dtype, device="meta"))
        elif dtype == torch.bool:
            out.append(torch.zeros(shape, dtype=dtype))
        else:
            out.append(torch.randint(0, vocab or 1, shape, generator=gen, dtype=dtype))
    return tuple(out)


def token_count(example_inputs: tuple) -> int:
    """Tokens in one forward: the number of elements of the first integer tensor input (the token ids, batch ×
    sequence in any layout); without one, from the first float input: ``[B, T, C]`` embeddings are B·T tokens,
    ``[T, C]`` T tokens, a vector one."""
    tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
    for x in tensors:
        if not x.dtype.is_floating_point and not x.dtype.is_complex and x.dtype != torch.bool:
            return max(1, x.numel())
    for x in tensors:
        if x.dim() >= 3:
            return int(x.shape[0] * x.shape[1])
        if x.dim() == 2:
            return int(x.shape[0])
    return 1
