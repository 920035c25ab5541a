"""The report's frame is built on first use (issue 11 item 5: a CLI score without importing pandas).

``score()`` hands its rows over as dicts; the totals and the default summary read them without pandas, and
must equal what the DataFrame gives: the same sums over the same dtypes, the same text. Behaviour only: the
import checks look at ``sys.modules`` in a fresh process, nothing is timed.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch.nn as nn

from scorer.api import score
from scorer.render import RenderOptions, render
from scorer.report import COLUMNS, Report, frame_of
from scorer.tracks import get_track
from tests.conftest import TINY_MODEL_SRC

ROOT = Path(__file__).resolve().parent.parent
#: Not needed to print the default summary of a score (pandas: the frame; the rest: other formats, plots).
LAZY = ("pandas", "rich", "tabulate", "matplotlib")


def _modules_after(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    model = tmp_path / "tiny_model.py"
    model.write_text(TINY_MODEL_SRC)
    code = ("import io, sys\nfrom scorer.cli import main\nout = io.StringIO()\nsys.stdout, real = out, sys.stdout\n"
            f"rc = main([{str(model) + ':build'!r}, *{list(args)!r}])\nsys.stdout = real\n"
            f"print(out.getvalue())\nprint('MODULES', sorted(m for m in {LAZY!r} if m in sys.modules), rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    *text, last = proc.stdout.strip().splitlines()
    assert last.startswith("MODULES") and last.endswith(" 0"), last
    return eval(last.split(" ", 1)[1].rsplit(" ", 1)[0]), "\n".join(text)  # noqa: S307 - our own list repr


def test_default_score_imports_no_pandas_rich_or_matplotlib(tmp_path: Path) -> None:
    loaded, out = _modules_after(tmp_path)
    assert loaded == []
    assert out.lstrip().splitlines()[1].startswith("score")  # the summary was printed


def test_other_formats_still_build_the_frame(tmp_path: Path) -> None:
    loaded, out = _modules_after(tmp_path, "--format", "csv")
    assert "pandas" in loaded
    assert out.splitlines()[0].startswith("name,module,kind")


def _rows(n: int, seed: int) -> list[dict]:
    """Report rows with counts mixing ints and floats (a column of both is float64 in the frame)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        r = {c: 0 for c in COLUMNS}
        r.update(name=f"op{i}", module=f"layer{i % 7}.sub{i % 3}", kind=rng.choice(["conv", "add", "act:relu"]),
                 target="t", path="", fraction=1.0, in_shapes="1x3", out_shape="1x3", note="")
        for c in ("param_bits", "mults", "adds", "ops", "weight_numel", "nonzeros", "act_bits_live",
                  "act_bits_op"):
            r[c] = rng.randrange(10**9) if rng.random() < 0.5 else rng.random() * 10**rng.randrange(1, 12)
        rows.append(r)
    return rows


@pytest.mark.parametrize("n", [0, 1, 9, 1000])
def test_totals_from_rows_equal_the_frames(n: int) -> None:
    rows = _rows(n, seed=n)
    track = get_track("cifar100")
    lazy = Report(layers=rows, track=track, rules="micronet2019", capture="fx")
    eager = Report(layers=frame_of(rows), track=track, rules="micronet2019", capture="fx")
    assert lazy.records() is rows
    assert lazy.totals == eager.totals  # exactly: pandas sums a float64 column pairwise, as numpy does
    assert render("table", lazy.view(), RenderOptions(width=100)) == render("table", eager.view(),
                                                                            RenderOptions(width=100))
    assert lazy.records() is rows  # the summary read the rows: no frame was built
    pd.testing.assert_frame_equal(lazy.layers, eager.layers)
    assert lazy.records() is None and lazy.totals == eager.totals


def test_score_report_layers_is_the_frame() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    report = score(model, input_shape=(1, 3, 8, 8))
    totals = report.totals
    assert isinstance(report.layers, pd.DataFrame) and list(report.layers.columns) == COLUMNS
    assert report.totals == totals
    # conv: 4*3*3*3 weights + 4 biases, linear: 4*5 + 5, all at 32 bits (official_rules.md §1: params = bits/32)
    assert totals["params"] == 4 * 27 + 4 + 4 * 5 + 5
