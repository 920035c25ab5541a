"""Machine formats (issue 11 item 2): JSON with ``schema`` and ``version`` keys and shapes as lists, CSV
counts as integers, and the CLI's JSON identical to ``Report.to_json()``.

The model is the conftest's Tiny: Conv2d(3, 2, 3, stride 2, padding 1, no bias) on 1x3x32x32 -> 1x2x16x16,
flatten -> 1x512, Linear(512, 10) -> 1x10. Its counts at 32 bits (official_rules.md §2, §3): conv 54 weights,
mults 2*16*16*27 = 13,824, adds 2*16*16*26 = 13,312; fc 5,120 weights + 10 biases, mults 5,120, adds 5,120.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import TINY_MODEL_SRC

import scorer
from scorer import score
from scorer.cli import main
from scorer.load import load_model
from scorer.render import SCHEMA, integral


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_formats.py"
    path.write_text(TINY_MODEL_SRC)
    return path


@pytest.fixture()
def report(model_file: Path):
    return score(load_model(f"{model_file}:build").model, input_shape=(1, 3, 32, 32))


def test_json_has_schema_version_and_shape_lists(report) -> None:
    doc = json.loads(report.to_json())
    assert doc["schema"] == SCHEMA == 2
    assert doc["version"] == scorer.__version__
    rows = {r["name"]: r for r in doc["layers"]}
    assert rows["conv"]["in_shapes"] == [[1, 3, 32, 32]] and rows["conv"]["out_shape"] == [1, 2, 16, 16]
    assert rows["flatten"]["out_shape"] == [1, 512]
    assert rows["fc"]["in_shapes"] == [[1, 512]] and rows["fc"]["out_shape"] == [1, 10]
    # counts are JSON integers: conv 2*16*16*27 mults, 54 weights at 32 bits
    assert rows["conv"]["mults"] == 2 * 16 * 16 * 27 and isinstance(rows["conv"]["mults"], int)
    assert rows["conv"]["param_bits"] == 54 * 32 and isinstance(rows["conv"]["param_bits"], int)
    assert doc["totals"]["params"] == 54 + 5130 and isinstance(doc["totals"]["params"], int)
    assert isinstance(doc["totals"]["score"], float)
    assert isinstance(rows["conv"]["sparsity"], float) and isinstance(rows["conv"]["fraction"], float)


def test_csv_counts_are_integers(report) -> None:
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report.to_csv()))}
    conv = rows["conv"]
    assert (conv["weight_numel"], conv["nonzeros"], conv["param_bits"]) == ("54", "54", str(54 * 32))
    assert (conv["mults"], conv["adds"], conv["ops"]) == ("13824", "13312", str(13824 + 13312))
    assert (conv["mul_bits"], conv["add_bits"]) == ("32", "32")
    assert conv["sparsity"] == "0.0" and conv["fraction"] == "1.0"  # ratios stay floats
    assert rows["conv"]["out_shape"] == "1x2x16x16"  # CSV keeps the shape text


def test_integral_keeps_fractions_per_value() -> None:
    import pandas as pd

    df = integral(pd.DataFrame({"ops": [1.0, 0.5], "mults": [2.0, 3.0], "sparsity": [0.0, 1.0]}))
    assert df["mults"].tolist() == [2, 3] and str(df["mults"].dtype) == "int64"
    assert df["ops"].tolist() == [1, 0.5] and type(df["ops"][0]) is int and type(df["ops"][1]) is float
    assert df.to_csv(index=False).splitlines() == ["ops,mults,sparsity", "1,2,0.0", "0.5,3,1.0"]


def test_cli_json_is_report_to_json(capsys: pytest.CaptureFixture, model_file: Path, report) -> None:
    assert main([f"{model_file}:build", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert out == report.to_json() + "\n"
    assert json.loads(out)["version"] == scorer.__version__


def test_cli_json_with_depth_adds_groups(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    assert main([f"{model_file}:build", "--format", "json", "--depth", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    groups = {g["module"]: g for g in doc["groups"]}
    assert groups["conv"]["mults"] == 13824 and groups["fc"]["param_bits"] == 5130 * 32
    assert groups["<top>"]["kind"] == "free"
