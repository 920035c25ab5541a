"""micronet-train's quick runs and logs (issue 11 item 7): a line when each stage starts, plain progress lines
when stderr is not a terminal, and a pruning schedule that fine-tunes after its last step only under
``--limit-batches`` (OSI's 11 rounds made the README smoke run spend ~5 minutes in its prune stage).
Behaviour only, nothing timed."""

from __future__ import annotations

from pathlib import Path

import pytest

from reference_models.training.cli import main
from scorer.checkpoint import load_checkpoint
from tests.conftest import single_thread

RECIPE = """
name = "quick"
[model]
arch = "kaist_v1"
[data]
augment = []
[[stages]]
kind = "train"
epochs = 3
[[stages]]
kind = "prune"
schedule = "10%*3"
method = "global"
epochs = 2
"""


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def _run(tmp_path: Path, capsys: pytest.CaptureFixture, *flags: str) -> tuple[str, str, dict]:
    recipe = tmp_path / "quick.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    args = [str(recipe), "--synthetic", "16", "--batch-size", "8", "--epochs", "1", "--out", str(out), *flags]
    assert main(args) == 0
    stdout, stderr = capsys.readouterr()
    return stdout, stderr, load_checkpoint(out / "prune.ckpt").meta["stage_results"]


def test_quick_run_lines_and_last_round_fine_tuning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stdout, stderr, results = _run(tmp_path, capsys, "--limit-batches", "1", "--progress-every", "1")
    assert "stage train (train, 1/2) started" in stdout and "stage prune (prune, 2/2) started" in stdout
    assert "prune: --limit-batches: 3 pruning steps, fine-tuning after the last one only" in stdout
    # capsys' stderr is not a terminal: plain lines, one per batch here (--progress-every 1, 1 batch per epoch)
    lines = stderr.splitlines()
    assert any(ln.startswith("train epoch 1/1: batch 1/1, loss ") for ln in lines), stderr
    assert [ln.split(":")[0] for ln in lines if ln.startswith("prune round")] == ["prune round 3 (30.00%) epoch 1/1"]
    # every pruning step still ran: 10%, 20%, 30% of the weights (global magnitude pruning, exact counts)
    assert results["sparsity_per_round"] == pytest.approx([0.1, 0.2, 0.3], abs=1e-6)
    assert results["fine_tuned_rounds"] == [3]


def test_full_run_fine_tunes_every_round(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stdout, stderr, results = _run(tmp_path, capsys, "--progress-every", "100")
    assert "fine-tuning after the last one only" not in stdout
    assert results["fine_tuned_rounds"] == [1, 2, 3]
    # 16 images in batches of 8: two batches per epoch, so one line per epoch (at its end)
    rounds = [ln.split(":")[0] for ln in stderr.splitlines() if ln.startswith("prune round")]
    assert rounds == [f"prune round {i} ({10 * i}.00%) epoch 1/1" for i in (1, 2, 3)]
    assert all(ln.split(", ")[0].endswith("batch 2/2") for ln in stderr.splitlines() if ln.startswith("prune round"))


def test_no_progress_prints_no_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, stderr, _ = _run(tmp_path, capsys, "--limit-batches", "1", "--no-progress")
    assert "batch" not in stderr
