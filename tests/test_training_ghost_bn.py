"""Ghost batch norm: per-virtual-batch statistics in training, plain BN in eval, a BatchNorm2d subclass."""

from __future__ import annotations

import torch
from torch import nn

from reference_models.training.ghost_bn import GhostBatchNorm2d, convert_ghost_bn


def test_training_normalises_each_virtual_batch_separately():
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    ghost = GhostBatchNorm2d(3, virtual_batch_size=4).train()
    plain = nn.BatchNorm2d(3).train()
    expected = torch.cat([plain(x[:4]), plain(x[4:])])
    assert torch.allclose(ghost(x), expected, atol=1e-6)
    # running statistics were updated once per virtual batch, like the plain BN above
    assert torch.allclose(ghost.running_mean, plain.running_mean, atol=1e-6)
    assert GhostBatchNorm2d(3, splits=4).num_chunks(128) == 4


def test_eval_is_plain_batch_norm_and_state_dict_is_bn():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    ghost = GhostBatchNorm2d.from_batchnorm(bn, splits=2).eval()
    x = torch.randn(4, 3, 2, 2)
    assert torch.allclose(ghost(x), bn.eval()(x))
    assert isinstance(ghost, nn.BatchNorm2d)
    assert set(ghost.state_dict()) == set(bn.state_dict())


def test_convert_replaces_every_plain_bn():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    keys = set(model.state_dict())
    assert convert_ghost_bn(model, virtual_batch_size=32) == 2
    assert isinstance(model[1], GhostBatchNorm2d) and isinstance(model[2][0], GhostBatchNorm2d)
    assert set(model.state_dict()) == keys
