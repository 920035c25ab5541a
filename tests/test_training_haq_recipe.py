"""The bundled kaist_v1_haq recipe end to end on synthetic data (0 training epochs: every stage still prunes,
allocates, quantises and writes its checkpoint): the final checkpoint scores at or under 60% of the score of
the pruned checkpoint, as micronet-score scores both."""

from __future__ import annotations

import json

import pytest

from reference_models.training.cli import main
from scorer.checkpoint import load_checkpoint
from tests.conftest import single_thread


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def test_kaist_v1_haq_end_to_end(tmp_path):
    out = tmp_path / "run"
    args = ["--synthetic", "32", "--epochs", "0", "--limit-batches", "1", "--batch-size", "16", "--no-progress"]
    assert main(["kaist_v1_haq", *args, "--out", str(out)]) == 0
    pruned = json.loads((out / "prune65.score.json").read_text())["totals"]["score"]
    final = json.loads((out / "haq.score.json").read_text())["totals"]["score"]
    assert final <= 0.6 * pruned  # budget_fraction = 0.6 of the model entering the stage
    ckpt = load_checkpoint(out / "final.ckpt")
    assert ckpt.meta["stage"] == "haq" and ckpt.meta["stage_results"]["score"] == final
    widths = {v["weight"] for v in ckpt.bits["layers"].values() if "weight" in v}
    assert len(widths) > 1 and widths <= {2, 3, 4, 5, 6, 8}
    assert ckpt.bits["default"] == {"act": 8}
