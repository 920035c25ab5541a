"""The early-exit head on its own: a view training the head alone (``ExitHeadView``), the block feeding it,
and the exit statistics on the test split. Shared by the ``exit`` and ``exit_prune`` stages."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from reference_models.training.distributed import all_gather_objects
from reference_models.training.recipes import RecipeError, StageSpec
from reference_models.training.trainer import RunContext, predict_batches


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the exit block's output is captured."""


class ExitHeadView(nn.Module):
    """Maps a batch to the exit head's logits; the backbone runs without gradients.

    With ``update_backbone_bn=True`` (OSI's "batchnorm stabilisation") the whole backbone runs in training
    mode so its BN running statistics keep updating; otherwise it runs in eval mode up to the exit block
    only.
    """

    def __init__(self, model: nn.Module, block: str, head: str, update_backbone_bn: bool = True) -> None:
        super().__init__()
        self.model = model
        self.block_name = block
        self.head_name = head
        self.update_backbone_bn = update_backbone_bn

    def forward(self, x: Tensor) -> Tensor:
        """Exit-head logits."""
        feats: list[Tensor] = []

        def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
            feats.append(out)
            if not self.update_backbone_bn:
                raise _StopForward

        head = self.model.get_submodule(self.head_name)
        if self.training and not self.update_backbone_bn:
            self.model.eval()
            head.train()
        handle = self.model.get_submodule(self.block_name).register_forward_hook(hook)
        try:
            with torch.no_grad():
                self.model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if len(feats) != 1:
            raise RuntimeError(f"exit block {self.block_name!r} ran {len(feats)} times in one forward")
        return head(feats[0].detach())


def exit_block_of(model: nn.Module, stage: StageSpec) -> str:
    """The block feeding the exit head: the stage's ``block``, else ``_blocks.<model.exit_block>``."""
    block = stage.params.get("block")
    if block is None:
        exit_block = getattr(model, "exit_block", None)
        blocks = getattr(model, "_blocks", None)
        if isinstance(exit_block, int) and blocks is not None:
            return f"_blocks.{exit_block}"
        raise RecipeError(f"stage {stage.name}: name the block feeding the exit head (block = '...')")
    return block


@torch.no_grad()
def exit_statistics(ctx: RunContext, model: nn.Module, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Exit confidences and correctness of both heads on the test split, gathered from every process."""
    env = ctx.env
    was_training = model.training
    model.eval()
    confs, exit_ok, final_ok = [], [], []
    try:
        for indices in predict_batches(ctx, ctx.local_batch(batch_size)):
            x, y = ctx.test_set.batch(indices)
            e, f = model.forward_with_exit(x.to(env.device))
            c, pred = torch.softmax(e, dim=1).max(dim=1)
            confs.append(c.cpu())
            exit_ok.append(pred.cpu() == y)
            final_ok.append(f.argmax(dim=1).cpu() == y)
    finally:
        model.train(was_training)
    mine = (
        torch.cat(confs) if confs else torch.zeros(0),
        torch.cat(exit_ok) if exit_ok else torch.zeros(0, dtype=torch.bool),
        torch.cat(final_ok) if final_ok else torch.zeros(0, dtype=torch.bool),
    )
    parts = all_gather_objects(env, mine)
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
