"""CIFAR-100 in its python-pickle format: a safe reader, the normalisation, and test batches for the scorer.

The official archive ``cifar-100-python.tar.gz`` unpacks to a folder holding three pickles:

* ``train`` / ``test``: dicts with ``b'data'`` (uint8 array, N x 3072, channel-major 3 x 32 x 32 rows),
  ``b'fine_labels'`` and ``b'coarse_labels'`` (lists of ints), ``b'filenames'`` (list of bytes) and
  ``b'batch_label'``;
* ``meta``: ``b'fine_label_names'`` and ``b'coarse_label_names'`` (lists of bytes).

The files are read with a restricted :class:`pickle.Unpickler` that resolves only the globals needed to
rebuild numpy arrays and protocol-2 bytes (``numpy ... _reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``_codecs.encode``, ``bytes``), each replaced by a checking stand-in: any other global is refused, so no code named by
the file runs, and an array is allocated only after its shape, dtype and data length fit in the bytes the
file holds, so a small file cannot claim a huge array.

The scorer reads the test split to measure exit fractions (``micronet-score --measure-exits``);
``reference_models.training.data`` builds its datasets, samplers and synthetic writer on this module.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "Cifar100Split",
    "DataError",
    "find_cifar100_dir",
    "load_cifar100",
    "normalize",
    "safe_unpickle",
    "split_batches",
    "to_unit",
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

#: Largest pickle file read (the official CIFAR-100 ``train`` file is about 160 MB).
MAX_PICKLE_BYTES = 1 << 30

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_DTYPE_KINDS = "biufc"  # bool, signed, unsigned, float, complex: plain numbers, no objects or records


def _plain_dtype(spec: Any) -> np.dtype:
    if isinstance(spec, _DtypeStub):
        return spec.dtype
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 8:
        raise pickle.UnpicklingError(f"unsupported dtype {spec!r}")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise pickle.UnpicklingError(f"unsupported dtype {spec!r}") from None
    if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"unsupported dtype {spec!r} (plain numbers only)")
    return dtype


def _shape(value: Any) -> tuple[int, ...]:
    if (not isinstance(value, tuple) or len(value) > 32
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)):
        raise pickle.UnpicklingError(f"bad array shape {value!r}")
    return value


class _DtypeStub:
    """Stands for ``numpy.dtype(spec, align, copy)`` while unpickling: a plain numeric dtype whose only state
    is its byte order (numpy's own ``__setstate__`` never sees the file's values)."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        self.dtype = _plain_dtype(spec)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"bad dtype state {state!r:.80}")
        if any(v is not None for v in state[2:5]):  # subarray, names, fields
            raise pickle.UnpicklingError("structured dtypes are not supported")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArrayStub:
    """Stands for ``numpy...._reconstruct(ndarray, shape, dtype)`` while unpickling; ``__setstate__`` (the
    pickle's BUILD) checks shape, dtype and data length against the byte budget *before* allocating."""

    def __init__(self, budget: list[int], shape: Any, dtype: Any) -> None:
        self._budget = budget
        self.array = self._allocate(_shape(shape), _plain_dtype(dtype), None, False)

    def _allocate(self, shape: tuple[int, ...], dtype: np.dtype, raw: bytes | None, fortran: bool) -> np.ndarray:
        nbytes = math.prod(shape) * dtype.itemsize
        if raw is not None and len(raw) != nbytes:
            raise pickle.UnpicklingError(f"array data has {len(raw)} bytes for shape {shape} of {dtype}")
        if nbytes > self._budget[0]:
            raise pickle.UnpicklingError(
                f"arrays claim more bytes than the file holds (shape {shape} of {dtype} is {nbytes} bytes)"
            )
        self._budget[0] -= nbytes
        if raw is None:
            return np.zeros(shape, dtype)
        return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C").copy(order="K")

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, rawdata)
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("bad array state")
        shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStub) or not isinstance(fortran, bool) or not isinstance(raw, bytes):
            raise pickle.UnpicklingError("bad array state (dtype, order or data)")
        self.array = self._allocate(_shape(shape), dtype.dtype, raw, fortran)


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``, how protocol 2 writes ``b""`` (no argument: ``bytes(n)`` would allocate n bytes)."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is refused")
    return b""


_NDARRAY = object()  # numpy.ndarray may only be named as _reconstruct's first argument, never called


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy-array and latin-1 bytes reconstruction, within a byte budget.

    Arrays (and the bytes decoded from strings) may total at most ``budget`` bytes each, the size of the
    file for :func:`safe_unpickle`: a short file cannot claim a huge array or re-use one buffer many times.
    """

    def __init__(self, data: bytes, budget: int) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._arrays = [budget]
        self._decoded = [budget]

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> _ArrayStub:
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
        return _ArrayStub(self._arrays, shape, dtype)

    def _encode(self, obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise pickle.UnpicklingError(f"_codecs.encode only decodes latin-1 strings, not {encoding!r:.20}")
        if len(obj) > self._decoded[0]:
            raise pickle.UnpicklingError("encoded strings total more bytes than the file holds")
        self._decoded[0] -= len(obj)
        return obj.encode("latin1")

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if (module, name) in _RECONSTRUCT:
            return self._reconstruct
        allowed = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DtypeStub, ("_codecs", "encode"): self._encode,
                   ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes}
        try:
            return allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def _resolve(obj: Any, memo: dict[int, Any]) -> Any:
    """``obj`` with every stub replaced by its array or dtype (shared and cyclic containers kept so)."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, (_ArrayStub, _DtypeStub)):
        out: Any = obj.array if isinstance(obj, _ArrayStub) else obj.dtype
    elif isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(_resolve(v, memo) for v in obj)
    elif isinstance(obj, dict):
        out = memo[id(obj)] = {}
        out.update((_resolve(k, memo), _resolve(v, memo)) for k, v in obj.items())
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, memo) for v in obj)
    else:
        return obj
    memo[id(obj)] = out
    return out


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only builtins containers, bytes and plain numeric numpy arrays (no code
    runs), with arrays totalling at most ``len(data)`` bytes (checked before each allocation)."""
    unpickler = _RestrictedUnpickler(data, len(data))
    return _resolve(unpickler.load(), {})


def _read_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected the CIFAR-100 python version: train, test, meta)")
    try:
        if path.stat().st_size > MAX_PICKLE_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes, more than any CIFAR-100 file "
                            f"(limit {MAX_PICKLE_BYTES})")
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


# --------------------------------------------------------------------------- model inputs


def normalize(x: Tensor, mean: Sequence[float] = CIFAR100_MEAN, std: Sequence[float] = CIFAR100_STD) -> Tensor:
    """``(x - mean) / std`` per channel for (C, H, W) or (N, C, H, W) images in [0, 1]."""
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


def to_unit(images: Tensor) -> Tensor:
    """uint8 pixel values as floats in [0, 1]."""
    return images.float().div_(255.0)


def split_batches(split: Cifar100Split, batch_size: int, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """(normalised images, fine labels) of the first ``limit`` examples (all: None), ``batch_size`` at a time."""
    n = len(split) if limit is None else max(0, min(len(split), limit))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield normalize(to_unit(split.images[start:stop])), split.fine_labels[start:stop]
