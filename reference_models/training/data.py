"""CIFAR-100 in its python-pickle format: a safe reader, a synthetic writer, datasets and samplers.

The official archive ``cifar-100-python.tar.gz`` unpacks to a folder holding three pickles:

* ``train`` / ``test``: dicts with ``b'data'`` (uint8 array, N x 3072, channel-major 3 x 32 x 32 rows),
  ``b'fine_labels'`` and ``b'coarse_labels'`` (lists of ints), ``b'filenames'`` (list of bytes) and
  ``b'batch_label'``;
* ``meta``: ``b'fine_label_names'`` and ``b'coarse_label_names'`` (lists of bytes).

The files are read with a restricted :class:`pickle.Unpickler` that resolves only the globals needed to
rebuild numpy arrays and protocol-2 bytes (``numpy ... _reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``_codecs.encode``); any other global is refused, so no code named by the file runs.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

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

#: Per-channel mean and standard deviation of the CIFAR-100 training images (pixel values in [0, 1]).
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)

NUM_FINE = 100
NUM_COARSE = 20
IMAGE_SHAPE = (3, 32, 32)
SPLITS = ("train", "test")


class DataError(ValueError):
    """A missing, unreadable or malformed dataset (the message is one line naming the file)."""


# --------------------------------------------------------------------------- safe unpickling


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray._reconstruct


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import _codecs

    reconstruct = _numpy_reconstruct()
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy-array and bytes reconstruction globals."""

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only builtins containers, bytes and numpy arrays (no code runs)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _read_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected the CIFAR-100 python version: train, test, meta)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        obj = safe_unpickle(raw)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt or hostile file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: corrupt or unsupported CIFAR-100 pickle ({reason})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _names(value: Any, path: Path, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{path}: {key!r} must be a list")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value]


def _labels(value: Any, n: int, limit: int, path: Path, key: str) -> Tensor:
    try:
        arr = np.asarray(value, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key!r} is not a list of integers") from None
    if arr.shape[0] != n:
        raise DataError(f"{path}: {key!r} has {arr.shape[0]} entries for {n} images")
    if n and (arr.min() < 0 or arr.max() >= limit):
        raise DataError(f"{path}: {key!r} has labels outside 0..{limit - 1}")
    return torch.from_numpy(arr.copy())


# --------------------------------------------------------------------------- reading


@dataclass
class Cifar100Split:
    """One split of CIFAR-100: uint8 images (N, 3, 32, 32), labels and names."""

    images: Tensor
    fine_labels: Tensor
    coarse_labels: Tensor
    filenames: list[str]
    fine_label_names: list[str]
    coarse_label_names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def find_cifar100_dir(root: str | Path) -> Path:
    """The folder holding ``train``/``test``/``meta``: ``root`` itself or ``root/cifar-100-python``."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such directory (put the CIFAR-100 python version there)")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory (expected the cifar-100-python folder)")
    for cand in (root, root / "cifar-100-python"):
        if (cand / "train").is_file() or (cand / "meta").is_file():
            return cand
    raise DataError(f"{root}: no CIFAR-100 'train', 'test' and 'meta' files found (nor in cifar-100-python/)")


def load_cifar100(root: str | Path, split: str = "train") -> Cifar100Split:
    """Read ``split`` (``"train"`` or ``"test"``) from a CIFAR-100 python-format folder.

    Raises:
        DataError: one line naming the file, for missing, corrupt or inconsistent data.
    """
    if split not in SPLITS:
        raise DataError(f"unknown CIFAR-100 split {split!r}; choose one of {SPLITS}")
    folder = find_cifar100_dir(root)
    meta = _read_pickle(folder / "meta")
    path = folder / split
    obj = _read_pickle(path)
    for key in ("data", "fine_labels", "coarse_labels"):
        if key not in obj:
            raise DataError(f"{path}: missing key {key!r}")
    data = obj["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), found {shape}")
    n = int(data.shape[0])
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(n, *IMAGE_SHAPE).copy())
    fine = _labels(obj["fine_labels"], n, NUM_FINE, path, "fine_labels")
    coarse = _labels(obj["coarse_labels"], n, NUM_COARSE, path, "coarse_labels")
    filenames = _names(obj.get("filenames", []), path, "filenames")
    if filenames and len(filenames) != n:
        raise DataError(f"{path}: 'filenames' has {len(filenames)} entries for {n} images")
    fine_names = _names(meta.get("fine_label_names", []), folder / "meta", "fine_label_names")
    coarse_names = _names(meta.get("coarse_label_names", []), folder / "meta", "coarse_label_names")
    if len(fine_names) != NUM_FINE:
        raise DataError(f"{folder / 'meta'}: expected {NUM_FINE} fine label names, found {len(fine_names)}")
    return Cifar100Split(images, fine, coarse, filenames, fine_names, coarse_names)


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


def normalize(x: Tensor, mean: Sequence[float] = CIFAR100_MEAN, std: Sequence[float] = CIFAR100_STD) -> Tensor:
    """``(x - mean) / std`` per channel for (C, H, W) or (N, C, H, W) images in [0, 1]."""
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


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
        x = images.float().div_(255.0)
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
