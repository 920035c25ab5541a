"""CIFAR-100 for training: a synthetic writer, datasets and samplers, on the safe reader of ``scorer.cifar``.

The reading (format, restricted unpickling, bounds and dtype checks), :class:`DataError` and the
normalisation live in :mod:`scorer.cifar` (the scorer measures exit fractions with them); they are
re-exported here.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from scorer.cifar import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    NUM_COARSE,
    NUM_FINE,
    Cifar100Split,
    DataError,
    find_cifar100_dir,
    load_cifar100,
    normalize,
    safe_unpickle,
    to_unit,
)

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "Cifar100Dataset",
    "Cifar100Split",
    "DataError",
    "ShardedBatchSampler",
    "find_cifar100_dir",
    "iterate_batches",
    "load_cifar100",
    "normalize",
    "safe_unpickle",
    "write_synthetic_cifar100",
]


# --------------------------------------------------------------------------- synthetic data


def _synthetic_split(n: int, rng: np.random.Generator, prototypes: np.ndarray) -> dict[bytes, Any]:
    fine = np.arange(n) % NUM_FINE
    rng.shuffle(fine)
    noise = rng.normal(0.0, 40.0, size=(n, 3072))
    data = np.clip(prototypes[fine] + noise, 0, 255).astype(np.uint8)
    return {
        b"data": data,
        b"fine_labels": [int(v) for v in fine],
        b"coarse_labels": [int(v) // (NUM_FINE // NUM_COARSE) for v in fine],
        b"filenames": [f"synthetic_{i:05d}.png".encode() for i in range(n)],
    }


def write_synthetic_cifar100(directory: str | Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write a CIFAR-100-format folder (``train``, ``test``, ``meta``) of synthetic images.

    Each class has a smooth random colour prototype plus per-image noise, so the data is learnable.
    Labels cycle through all 100 classes before shuffling. Returns the folder.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError("n_train and n_test must be positive")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(NUM_FINE, 3, 4, 4))
    prototypes = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3).reshape(NUM_FINE, 3072)
    splits = {
        "train": _synthetic_split(n_train, rng, prototypes),
        "test": _synthetic_split(n_test, rng, prototypes),
    }
    splits["train"][b"batch_label"] = b"training batch 1 of 1"
    splits["test"][b"batch_label"] = b"testing batch 1 of 1"
    meta = {
        b"fine_label_names": [f"class_{i:03d}".encode() for i in range(NUM_FINE)],
        b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range(NUM_COARSE)],
    }
    for name, obj in (*splits.items(), ("meta", meta)):
        tmp = out / f".{name}.tmp"
        with tmp.open("wb") as fh:
            pickle.dump(obj, fh, protocol=2)
        tmp.replace(out / name)
    return out


# --------------------------------------------------------------------------- datasets


class Cifar100Dataset(Dataset):
    """Map-style dataset over uint8 images (N, 3, H, W): items are ``(float image, label)``.

    Images are scaled to [0, 1], passed through ``transform`` (a per-sample tensor function) and, with
    ``normalize=True``, standardised with the CIFAR-100 mean/std. Works with any sampler, including
    :class:`torch.utils.data.DistributedSampler`.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        normalize: bool = True,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if labels.shape[0] != images.shape[0]:
            raise ValueError("images and labels differ in length")
        self.images = images
        self.labels = labels.long()
        self.normalize = normalize
        self.transform = transform

    @classmethod
    def from_split(cls, split: Cifar100Split, **kwargs: Any) -> Cifar100Dataset:
        """Dataset of the fine labels of a loaded split."""
        return cls(split.images, split.fine_labels, **kwargs)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 -> float in [0, 1] -> ``transform`` -> normalisation (works on one image or a batch)."""
        x = to_unit(images)
        if self.transform is not None:
            x = self.transform(x)
        return normalize(x) if self.normalize else x

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.prepare(self.images[index]), int(self.labels[index])

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """The items at ``indices`` as one stacked batch (one tensor gather instead of N item calls)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.prepare(self.images[idx]), self.labels[idx]


class ShardedBatchSampler:
    """Split every *global* batch of a (seeded, per-epoch) permutation into ``world_size`` equal shards.

    Rank ``r`` gets ``global_batch[r*B:(r+1)*B]`` with ``B = global_batch_size / world_size``, so the union
    of the ranks' batches at step ``t`` is exactly the batch a single process with the global batch size
    sees at step ``t``: a DDP run and a one-process run of the same global batch are comparable. Call
    :meth:`set_epoch` before each epoch, as with DistributedSampler.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world size {world_size}")
        if global_batch_size < world_size or global_batch_size % world_size:
            raise ValueError(f"global batch {global_batch_size} is not a multiple of world size {world_size}")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def local_batch_size(self) -> int:
        """Samples per rank per step."""
        return self.global_batch_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.global_batch_size
        return math.ceil(self.num_samples / self.global_batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        b = self.local_batch_size
        for step in range(len(self)):
            chunk = order[step * self.global_batch_size : (step + 1) * self.global_batch_size]
            if len(chunk) < self.global_batch_size:  # last, partial batch: split as evenly as possible
                part = chunk.tensor_split(self.world_size)[self.rank]
            else:
                part = chunk[self.rank * b : (self.rank + 1) * b]
            if len(part):
                yield part.tolist()


def iterate_batches(
    dataset: Cifar100Dataset, batches: Iterator[list[int]] | Sequence[list[int]]
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``dataset.batch(indices)`` for each list of indices (a batch sampler)."""
    for indices in batches:
        yield dataset.batch(indices)


def eval_batches(num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Rank ``rank``'s share of an evaluation pass: indices ``rank, rank + world, ...`` in batches."""
    mine = list(range(rank, num_samples, world_size))
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
