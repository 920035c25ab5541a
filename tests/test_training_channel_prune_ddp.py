"""Hessian channel pruning under ``torchrun --nproc_per_node 2`` (gloo, CPU): rank 0 ranks the channels and
every rank removes and grows the same ones (DDP refuses to wrap ranks whose parameter shapes differ)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from scorer.checkpoint import load_checkpoint

RECIPE = """
name = "ddp_channel_prune"
[model]
arch = "wavecomp_pyramidnet"
kwargs = { depth = 11, alpha = 12 }
[data]
batch_size = 8
augment = []
[train]
lr = 0.1
scheduler = "constant"
[[stages]]
kind = "channel_prune"
schedule = "linear:0.5:2"
fisher_batches = 1
epochs = 1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_prune_the_same_channels(tmp_path):
    recipe = tmp_path / "cp.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "reference_models.training.cli", str(recipe),
         "--synthetic", "32", "--limit-batches", "2", "--no-progress", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    mid = load_checkpoint(out / "final.ckpt").arch_kwargs["mid_widths"]
    # 2*(20+24+28) = 144 inner channels, half of them removed by the end (round(0.5*144) = 72)
    assert sum(map(sum, mid)) == 72
