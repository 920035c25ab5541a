"""The micronet-score CLI, run in-process through ``main([...])`` (plus one subprocess test).

Expected numbers are hand arithmetic for ``Tiny`` on a 1x3x32x32 input:
  conv 3->2, 3x3, stride 2, pad 1, no bias: 54 weights, 2*16*16 = 512 outputs, n = 27
      mults 27*512 = 13,824, adds 26*512 = 13,312
  flatten: free
  fc 512->10 with bias: 5,120 weights + 10 biases, mults 5,120, adds 511*10 + 10 = 5,120
  totals at 32 bits: params 54 + 5,130 = 5,184 (165,888 bits), mults 18,944, adds 18,432, ops 37,376
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from reference_models import registry
from scorer import cli
from scorer.checkpoint import Checkpoint, save_checkpoint
from scorer.cli import main
from scorer.report import TOTAL_KEYS
from tests.conftest import TINY_MODEL_SRC

MODEL_SRC = TINY_MODEL_SRC + textwrap.dedent(
    """
    class Cum(nn.Module):
        def forward(self, x):
            return torch.logcumsumexp(x, 1)


    class WithUnknown(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.body = Cum()

        def forward(self, x):
            return self.body(self.fc(x))


    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            raise ValueError("forward exploded\\nwith a second line")


    def unknown():
        return WithUnknown()


    def raises():
        return Raises()
    """
)

# Hand arithmetic (see the module docstring).
CONV_W, FC_W, FC_B = 2 * 3 * 3 * 3, 512 * 10, 10
CONV_MULTS, CONV_ADDS = 27 * 512, 26 * 512
FC_MULTS, FC_ADDS = 512 * 10, 511 * 10 + 10
PARAMS = CONV_W + FC_W + FC_B
MULTS = CONV_MULTS + FC_MULTS
ADDS = CONV_ADDS + FC_ADDS
CIFAR_PARAMS, CIFAR_OPS = 36.5e6, 10.49e9
IMAGENET_PARAMS, IMAGENET_OPS = 6.9e6, 1170e6

ROW_KEYS = {"name", "module", "kind", "weight_numel", "nonzeros", "sparsity", "param_bits", "mults", "adds",
            "mul_bits", "add_bits", "ops"}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_models.py"
    path.write_text(MODEL_SRC)
    return path


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("micronet-score: error: "), err
    assert "Traceback" not in err
    return lines[0]


def totals_of(out: str) -> dict:
    return json.loads(out)["totals"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- errors: exit 2 / 3, one line


def test_missing_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, out, err = run(capsys, tmp_path / "nope.pt")
    assert code == 2 and out == ""
    assert "nope.pt" in assert_one_line_error(err)


def test_corrupt_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(2048))
    code, _, err = run(capsys, path)
    assert code == 2
    line = assert_one_line_error(err)
    assert "noise.pt" in line and "corrupt" in line


def test_untrusted_pickle_then_trusted(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(32, 4)), path)  # a whole module: only loadable by unpickling
    before = _digest(path)
    code, _, err = run(capsys, path)
    assert code == 2
    line = assert_one_line_error(err)
    assert "pickled" in line and "arbitrary code" in line and "--trust-pickle" in line
    # trusted: Linear(32, 4) over the last dim of 1x3x32x32: 96 rows x 4 outputs = 384 outputs
    code, out, err = run(capsys, path, "--trust-pickle", "--format", "json")
    assert code == 0, err
    t = totals_of(out)
    assert t["params"] == 32 * 4 + 4
    assert (t["mults"], t["adds"]) == (32 * 384, 31 * 384 + 384)
    assert _digest(path) == before


def test_state_dict_without_arch(capsys: pytest.CaptureFixture, tmp_path: Path, model_file: Path) -> None:
    from scorer.load import load_model

    path = tmp_path / "weights.pt"

    torch.save(load_model(f"{model_file}:build").model.state_dict(), path)
    code, _, err = run(capsys, path)
    assert code == 2
    assert "--arch" in assert_one_line_error(err)
    code, out, err = run(capsys, path, "--arch", f"{model_file}:build", "--format", "json")
    assert code == 0, err
    assert totals_of(out)["params"] == PARAMS


def test_wrong_input_shape(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, out, err = run(capsys, f"{model_file}:build", "--input-shape", "1,5,32,32")
    assert code == 2 and out == ""
    assert "(1, 5, 32, 32)" in assert_one_line_error(err)


def test_bad_input_shape_text(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, _, err = run(capsys, f"{model_file}:build", "--input-shape", "1,three")
    assert code == 2
    assert "--input-shape" in assert_one_line_error(err)


def test_unknown_op_exit_3(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, out, err = run(capsys, f"{model_file}:unknown", "--input-shape", "1,8")
    assert code == 3 and out == ""
    line = assert_one_line_error(err)
    assert "logcumsumexp" in line and "at body" in line


def test_allow_unknown_warns_loudly(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, out, err = run(capsys, f"{model_file}:unknown", "--input-shape", "1,8", "--allow-unknown",
                         "--format", "json")
    assert code == 0
    assert "WARNING" in err and "logcumsumexp" in err and "body" in err
    t = totals_of(out)
    assert t["mults"] == 8 * 8  # the Linear only; logcumsumexp counted as zero
    assert [u["module"] for u in json.loads(out)["unknown_ops"]] == ["body"]


def test_forward_raises(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, out, err = run(capsys, f"{model_file}:raises", "--input-shape", "1,8")
    assert code == 2 and out == ""
    assert "forward exploded" in assert_one_line_error(err)


def test_unexpected_exception_is_one_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                          model_file: Path) -> None:
    def boom(*args, **kwargs):
        raise KeyError("internal\nfailure")

    monkeypatch.setattr("scorer.api.score", boom)
    code, _, err = run(capsys, f"{model_file}:build")
    assert code == 2
    assert "KeyError" in assert_one_line_error(err)


@pytest.mark.parametrize(
    "args",
    [
        ["--bits", "many"],
        ["--format", "yaml"],
        ["--track", "mnist"],
        ["--no-such-flag"],
        [],
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture, model_file: Path, args: list[str]) -> None:
    argv = ([f"{model_file}:build"] if args else []) + args
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert_one_line_error(err)


def test_unknown_reference(capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, "reference:no_such_model")
    assert code == 2
    assert "no_such_model" in assert_one_line_error(err)


def test_plot_without_matplotlib(capsys: pytest.CaptureFixture, model_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "layers.png"
    code, _, err = run(capsys, f"{model_file}:build", "--plot", png)
    if importlib.util.find_spec("matplotlib") is None:
        assert code == 2
        assert "pip install matplotlib" in assert_one_line_error(err)
        assert not png.exists()
    else:
        assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_leaderboard_dispatch_missing_module(capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "leaderboard", "scorer._no_such_leaderboard:leaderboard_main")
    code, _, err = run(capsys, "leaderboard", "--rules", "micronet2019")
    assert code == 2
    assert "leaderboard" in assert_one_line_error(err)


def test_leaderboard_dispatch_calls_function(capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "fake_leaderboard_mod.py").write_text(
        "def leaderboard_main(argv):\n    print('LB', *argv)\n    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "leaderboard", "fake_leaderboard_mod:leaderboard_main")
    code, out, _ = run(capsys, "leaderboard", "--format", "markdown")
    assert code == 0 and out.strip() == "LB --format markdown"
    sys.modules.pop("fake_leaderboard_mod", None)


# ----------------------------------------------------------------------------- success paths


def test_json_totals_by_hand(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    before = _digest(model_file)
    code, out, err = run(capsys, f"{model_file}:build", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data["totals"]) == set(TOTAL_KEYS) == {
        "param_bits", "params", "mults", "adds", "ops", "param_score", "ops_score", "score",
        "mtas_bits", "peak_op_activation_bits"}
    for row in data["layers"]:
        assert ROW_KEYS <= set(row)
    t = data["totals"]
    assert t["params"] == PARAMS and t["param_bits"] == PARAMS * 32
    assert (t["mults"], t["adds"], t["ops"]) == (MULTS, ADDS, MULTS + ADDS)
    assert math.isclose(t["score"], PARAMS / CIFAR_PARAMS + (MULTS + ADDS) / CIFAR_OPS, rel_tol=1e-12)
    # activation memory (scorer/memory.py): the conv step holds the 3x32x32 input and its 2x16x16 output,
    # the flatten aliases the conv output, the fc step holds 512 + 10; 32-bit activations
    assert t["mtas_bits"] == t["peak_op_activation_bits"] == (3 * 32 * 32 + 512) * 32
    conv = next(r for r in data["layers"] if r["kind"] == "conv")
    assert (conv["module"], conv["weight_numel"], conv["mults"], conv["adds"]) == (
        "conv", CONV_W, CONV_MULTS, CONV_ADDS)
    assert data["track"] == "cifar100" and data["rules"] == "micronet2019"
    assert _digest(model_file) == before


def test_bits_16_freebie(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, out, _ = run(capsys, f"{model_file}:build", "--bits", "16", "--format", "json")
    assert code == 0
    t = totals_of(out)
    # params and mults at 16 bits, adds at 32
    assert t["param_bits"] == PARAMS * 16
    assert t["ops"] == MULTS * 16 / 32 + ADDS


def test_track_and_input_shape_flags(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    # 1x3x32x32 given explicitly on the ImageNet track: same counts, ImageNet baselines
    code, out, _ = run(capsys, f"{model_file}:build", "--track", "imagenet", "--input-shape", "1,3,32,32",
                       "--format", "json")
    assert code == 0
    t = totals_of(out)
    assert math.isclose(t["score"], PARAMS / IMAGENET_PARAMS + (MULTS + ADDS) / IMAGENET_OPS, rel_tol=1e-12)


def test_markdown_output(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, out, _ = run(capsys, f"{model_file}:build", "--format", "markdown")
    assert code == 0
    assert "| name" in out and "|:--" in out
    assert "13,824" in out  # conv mults with a thousands separator
    assert "| param_score" in out and "| score" in out
    assert f"{PARAMS * 32:,}" in out
    assert "track: cifar100 | rules: micronet2019" in out


def test_csv_output_to_file(capsys: pytest.CaptureFixture, model_file: Path, tmp_path: Path) -> None:
    dest = tmp_path / "report.csv"
    code, out, _ = run(capsys, f"{model_file}:build", "--format", "csv", "--output", dest)
    assert code == 0 and out == ""
    import pandas as pd

    df = pd.read_csv(dest)
    assert ROW_KEYS <= set(df.columns)
    assert df["mults"].sum() == MULTS and df["adds"].sum() == ADDS


def test_markdown_and_table_to_file(capsys: pytest.CaptureFixture, model_file: Path, tmp_path: Path) -> None:
    md = tmp_path / "report.md"
    code, out, _ = run(capsys, f"{model_file}:build", "--format", "markdown", "-o", md)
    assert code == 0 and out == ""
    assert "| score" in md.read_text()
    txt = tmp_path / "report.txt"
    code, out, _ = run(capsys, f"{model_file}:build", "-o", txt)
    assert code == 0 and out == ""
    text = txt.read_text()
    assert "totals" in text and "\x1b[" not in text


def test_table_hides_free_ops(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    """The summary's tree names the free top-level module (the model's own flatten) instead of a row; the
    per-op table (--per-op) hides the free op and says so; --show-free shows both."""
    code, out, _ = run(capsys, f"{model_file}:build")
    assert code == 0 and out.startswith("build() from") and "score" in out.splitlines()[1]
    assert "no cost, not shown (--show-free shows them): <top>." in out and "flatten" not in out
    code, out, _ = run(capsys, f"{model_file}:build", "--per-op")
    assert "flatten" not in out and "1 free op(s)" in out
    code, out, _ = run(capsys, f"{model_file}:build", "--per-op", "--show-free")
    assert "flatten" in out and "free op(s)" not in out and "no cost" not in out


def test_depth_grouping(capsys: pytest.CaptureFixture, model_file: Path) -> None:
    code, out, _ = run(capsys, f"{model_file}:build", "--format", "csv", "--depth", "1")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 + 3  # header + conv, fc and the top-level flatten


def _choices(dest: str) -> tuple[str, ...]:
    (action,) = [a for a in cli.build_parser()._actions if a.dest == dest]
    return tuple(action.choices)


def test_choices_come_from_the_registries() -> None:
    from scorer.capture import METHODS
    from scorer.render import RENDERERS

    assert _choices("format") == tuple(RENDERERS) == ("table", "markdown", "csv", "json")
    assert _choices("capture") == ("auto", *METHODS) == ("auto", "fx", "export", "dispatch")


def test_a_new_format_is_one_registry_entry(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                            model_file: Path, tmp_path: Path) -> None:
    from scorer import render

    monkeypatch.setitem(render.RENDERERS, "names", lambda view, options: " ".join(view.rows["name"]))
    code, out, _ = run(capsys, f"{model_file}:build", "--format", "names")
    assert code == 0 and out == "conv flatten fc\n"
    dest = tmp_path / "names.txt"
    code, out, _ = run(capsys, f"{model_file}:build", "--format", "names", "-o", dest)
    assert code == 0 and out == "" and dest.read_text() == "conv flatten fc\n"


def test_report_methods_render_like_the_cli(capsys: pytest.CaptureFixture, model_file: Path,
                                            tmp_path: Path) -> None:
    from scorer import score
    from scorer.load import load_model

    report = score(load_model(f"{model_file}:build").model, input_shape=(1, 3, 32, 32))
    for fmt, text in (("markdown", report.to_markdown(1)), ("csv", report.to_csv(depth=1))):
        code, out, _ = run(capsys, f"{model_file}:build", "--format", fmt, "--depth", "1")
        assert code == 0 and out == text
    code, out, _ = run(capsys, f"{model_file}:build", "--format", "json")
    assert code == 0 and out == report.to_json() + "\n"


def test_checkpoint_without_flags(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                  model_file: Path, tmp_path: Path) -> None:
    """A checkpoint of a registered architecture: masks, per-layer bits and meta apply with no flag."""
    sys.path.insert(0, str(model_file.parent))
    try:
        import tiny_models  # the test's model module, registered below as a reference architecture
    finally:
        sys.path.remove(str(model_file.parent))
    monkeypatch.delitem(sys.modules, "tiny_models")
    registry.list_references()  # load the real registry first
    monkeypatch.setitem(registry._REGISTRY, "tiny_cli_test",
                        registry.ReferenceInfo(name="tiny_cli_test", factory=tiny_models.build))
    sd = {k: torch.ones_like(v) for k, v in tiny_models.build().state_dict().items()}
    mask = torch.ones(2, 3, 3, 3, dtype=torch.bool)
    mask.view(-1)[:27] = False  # half of the conv weights pruned
    ckpt = Checkpoint(
        arch="tiny_cli_test", arch_kwargs={"width": 2}, state_dict=sd, masks={"conv.weight": mask},
        bits={"conv": {"act": 8}, "fc": {"weight": 8}},
        meta={"input_shape": [1, 3, 32, 32], "track": "imagenet"},
    )
    path = save_checkpoint(ckpt, tmp_path / "final.ckpt")
    before = _digest(path)
    code, out, err = run(capsys, path, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["track"] == "imagenet"
    # conv: 27 nonzero weights at 32 bits + a 54-bit mask; n = 27 * 0.5 = 13.5 per output
    conv_bits = 27 * 32 + 54
    conv_mults, conv_adds = 13.5 * 512, 12.5 * 512
    # fc: weights at 8 bits, bias at 32; its input is the conv's 8-bit output, so mults run at 8 bits
    fc_bits = FC_W * 8 + FC_B * 32
    fc_ops = FC_MULTS * 8 / 32 + FC_ADDS
    t = data["totals"]
    assert t["param_bits"] == conv_bits + fc_bits
    assert (t["mults"], t["adds"]) == (conv_mults + FC_MULTS, conv_adds + FC_ADDS)
    assert t["ops"] == conv_mults + conv_adds + fc_ops
    assert math.isclose(t["score"], (conv_bits + fc_bits) / 32 / IMAGENET_PARAMS
                        + (conv_mults + conv_adds + fc_ops) / IMAGENET_OPS, rel_tol=1e-12)
    # a flag still overrides what the checkpoint recorded
    code, out, _ = run(capsys, path, "--format", "json", "--track", "cifar100", "--input-shape", "1,3,32,32")
    assert json.loads(out)["track"] == "cifar100"
    assert _digest(path) == before


def test_export_pt2(capsys: pytest.CaptureFixture, model_file: Path, tmp_path: Path) -> None:
    from scorer.load import load_model

    model = load_model(f"{model_file}:build").model.eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), str(path))
    before = _digest(path)
    code, out, err = run(capsys, path, "--format", "json")
    assert code == 0, err
    t = totals_of(out)
    assert (t["params"], t["mults"], t["adds"]) == (PARAMS, MULTS, ADDS)
    assert _digest(path) == before


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still loadable
def test_torchscript(capsys: pytest.CaptureFixture, model_file: Path, tmp_path: Path) -> None:
    from scorer.load import load_model

    model = load_model(f"{model_file}:build").model.eval()
    path = tmp_path / "tiny.ts"
    torch.jit.script(model).save(str(path))
    before = _digest(path)
    code, out, err = run(capsys, path, "--format", "json", "--trust-code")
    assert code == 0, err
    t = totals_of(out)
    assert (t["params"], t["mults"], t["adds"]) == (PARAMS, MULTS, ADDS)
    assert _digest(path) == before


def test_reference_wrn28_10(capsys: pytest.CaptureFixture) -> None:
    if "wrn28_10" not in {r.name for r in registry.list_references()}:
        pytest.skip("reference model wrn28_10 is not registered yet")
    code, out, err = run(capsys, "reference:wrn28_10", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["track"] == "cifar100"
    assert data["settings"]["input_shapes"] == [[1, 3, 32, 32]]
    # the ~36.5M-parameter CIFAR baseline: a score near 2 (each half near 1)
    assert 0.9 < data["totals"]["param_score"] < 1.1 and 0.9 < data["totals"]["ops_score"] < 1.1


def test_list_references_and_rules(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "--list-rules")
    assert code == 0 and "micronet2019" in out
    code, out, _ = run(capsys, "--list-references", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert all({"name", "track", "rules", "bits", "description"} <= set(r) for r in rows)


def test_subprocess_entry_points(model_file: Path) -> None:
    """``python -m scorer`` and the ``micronet-score`` console script: exit codes and one-line errors."""
    proc = subprocess.run([sys.executable, "-m", "scorer", f"{model_file}:build", "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["params"] == PARAMS
    script = shutil.which("micronet-score") or str(Path(sys.executable).parent / "micronet-score")
    if not Path(script).exists():
        pytest.skip("micronet-score console script is not installed")
    proc = subprocess.run([script, str(model_file.parent / "missing.pt")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr)
