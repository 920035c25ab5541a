"""``torchrun --nproc_per_node 2`` on CPU (gloo) gives the same model as one process with the same global
batch: each rank trains on its half of every global batch, DDP averages the gradients, and Ghost BN with
a virtual batch of one rank's share makes the single process normalise exactly the same sub-batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch

from reference_models.registry import build_reference
from reference_models.training.cli import main
from scorer.checkpoint import load_checkpoint
from tests.conftest import single_thread

RECIPE = """
name = "ddp_check"
[model]
arch = "wavecomp_pyramidnet"
kwargs = { depth = 11, alpha = 12 }
ghost_batch_size = 4           # one rank's share of the global batch of 8
[data]
batch_size = 8
augment = []                   # no random draws that would differ between ranks
[train]
lr = 0.1
momentum = 0.9
weight_decay = 1e-4
scheduler = "constant"
[[stages]]
kind = "train"
epochs = 1
"""
ARGS = ["--synthetic", "64", "--limit-batches", "3", "--no-progress", "--device", "cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_two(tmp_path, out):
    """Run the test recipe with ``torchrun --nproc_per_node 2`` (gloo, CPU); returns (process, recipe path)."""
    # torchrun's module under this interpreter: a `torchrun` on PATH may belong to another Python
    # (a shim, a venv without the console script) that cannot import this checkout
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    recipe = tmp_path / "ddp.toml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "reference_models.training.cli", str(recipe), *ARGS, "--out", str(out)],
        capture_output=True, text=True, timeout=55, env=env, cwd=tmp_path,
    )
    return proc, recipe


def test_two_process_torchrun_matches_one_process(tmp_path):
    two = tmp_path / "two"
    proc, recipe = _torchrun_two(tmp_path, two)
    assert proc.returncode == 0, proc.stderr[-2000:]  # the registry seeds builds: same init on both ranks
    assert "2 process(es)" in proc.stdout
    one = tmp_path / "one"
    with single_thread():
        assert main([str(recipe), *ARGS, "--out", str(one)]) == 0
    a, b = load_checkpoint(one / "final.ckpt"), load_checkpoint(two / "final.ckpt")
    assert (a.meta["run"]["world_size"], b.meta["run"]["world_size"]) == (1, 2)
    moved = 0.0
    init = build_reference("wavecomp_pyramidnet", depth=11, alpha=12).state_dict()
    for key, value in a.state_dict.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # per-rank BN statistics are not synchronised (rank 0's are kept)
        assert torch.allclose(value, b.state_dict[key], atol=1e-4, rtol=1e-3), key
        moved = max(moved, float((value - init[key]).abs().max()))
    assert moved > 1e-3  # three SGD steps really changed the weights
    totals = [json.loads((d / "train.score.json").read_text())["totals"] for d in (one, two)]
    assert totals[0] == totals[1]


def test_two_process_bad_out_stops_every_rank(tmp_path):
    # rank 0 cannot create --out (it is a file): every rank must stop with the one-line error, none may hang
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    proc, _ = _torchrun_two(tmp_path, blocker / "run")
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("micronet-train: error")]
    assert len(ours) == 2 and all("cannot create the output folder" in line for line in ours)  # one per rank
    # (torchrun's launcher then reports the failed children with its own traceback)
