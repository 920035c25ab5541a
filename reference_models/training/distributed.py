"""Process-group set-up from the ``torchrun`` environment, and the few collectives the trainer needs.

``torchrun --nproc_per_node N -m reference_models.training.cli RECIPE ...`` (or the ``micronet-train``
script under torchrun) sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them and joins the group with NCCL on CUDA and Gloo on CPU. Without them
(or with ``WORLD_SIZE=1``) everything runs in one process and the collectives are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv", "all_gather_objects", "all_reduce_sum", "barrier", "broadcast_buffers", "broadcast_object",
    "init_distributed", "shutdown",
]


class DeviceError(ValueError):
    """The requested device cannot be used."""


@dataclass
class DistEnv:
    """Where this process runs: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is initialised."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0


def _pick_device(requested: str | None, local_rank: int) -> torch.device:
    if requested in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"unknown device {requested!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        if device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device} does not exist ({torch.cuda.device_count()} GPU(s))")
    return device


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the torchrun process group if the environment names one; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    dev = _pick_device(device, local_rank)
    if world <= 1:
        return DistEnv(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def shutdown(env: DistEnv) -> None:
    """Leave the process group (if any)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every process."""
    if env.distributed:
        dist.barrier()


def all_reduce_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the processes."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def all_gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(env: DistEnv, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. quantiser ranges, BN statistics) to every process."""
    if not env.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)
