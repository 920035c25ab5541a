"""Ghost batch normalisation (Hoffer et al., 2017), as used by OSI AI (4 ghost batches of 32).

:class:`GhostBatchNorm2d` subclasses :class:`torch.nn.BatchNorm2d` (same parameters, buffers and state
dict keys), so the scorer counts it as a BN and checkpoints load into plain BN layers. In training it
normalises each virtual batch with its own statistics (each update of the running statistics uses one
virtual batch); in eval mode it is a plain BN with the running statistics.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["GhostBatchNorm2d", "convert_ghost_bn"]


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over virtual batches: ``splits`` chunks, or chunks of ``virtual_batch_size`` samples."""

    def __init__(
        self,
        num_features: int,
        splits: int | None = None,
        virtual_batch_size: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        if (splits is None) == (virtual_batch_size is None):
            raise ValueError("give exactly one of splits and virtual_batch_size")
        if (splits is not None and splits < 1) or (virtual_batch_size is not None and virtual_batch_size < 1):
            raise ValueError("splits and virtual_batch_size must be positive")
        self.splits = splits
        self.virtual_batch_size = virtual_batch_size

    def num_chunks(self, batch: int) -> int:
        """How many virtual batches a batch of ``batch`` samples is split into."""
        if self.splits is not None:
            return max(1, min(self.splits, batch))
        return max(1, math.ceil(batch / self.virtual_batch_size))  # type: ignore[operator]

    def forward(self, x: Tensor) -> Tensor:
        """Plain BN in eval mode; per-virtual-batch BN in training."""
        chunks = self.num_chunks(x.shape[0]) if self.training else 1
        if chunks == 1:
            return super().forward(x)
        size = math.ceil(x.shape[0] / chunks)
        return torch.cat([super(GhostBatchNorm2d, self).forward(part) for part in x.split(size)], dim=0)

    @classmethod
    def from_batchnorm(
        cls, bn: nn.BatchNorm2d, splits: int | None = None, virtual_batch_size: int | None = None
    ) -> GhostBatchNorm2d:
        """A GhostBatchNorm2d with ``bn``'s settings, parameters and running statistics."""
        new = cls(
            bn.num_features, splits=splits, virtual_batch_size=virtual_batch_size, eps=bn.eps,
            momentum=bn.momentum, affine=bn.affine, track_running_stats=bn.track_running_stats,
        )
        new.load_state_dict(bn.state_dict())
        ref = bn.weight if bn.affine else bn.running_mean
        if ref is not None:
            new.to(device=ref.device, dtype=ref.dtype)
        new.train(bn.training)
        return new

    def extra_repr(self) -> str:  # noqa: D102
        ghost = f"splits={self.splits}" if self.splits is not None else f"virtual_batch_size={self.virtual_batch_size}"
        return f"{super().extra_repr()}, {ghost}"


def convert_ghost_bn(model: nn.Module, splits: int | None = None, virtual_batch_size: int | None = None) -> int:
    """Replace every plain ``nn.BatchNorm2d`` of ``model`` in place; returns how many were replaced."""
    count = 0
    for _, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                setattr(module, child_name, GhostBatchNorm2d.from_batchnorm(child, splits, virtual_batch_size))
                count += 1
    return count
