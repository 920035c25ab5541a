"""Review of the training / compression pipelines: each test pins a bug found in review."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reference_models.training.cli import main
from reference_models.training.recipes import load_recipe
from tests.conftest import single_thread

SMOKE = ["--synthetic", "16", "--epochs", "0", "--limit-batches", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def _recipe(tmp_path: Path, stage: str, arch: str = "kaist_v1") -> Path:
    path = tmp_path / "r.toml"
    path.write_text(f'name = "r"\n[model]\narch = "{arch}"\n[[stages]]\n{stage}\n')
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("micronet-train: error:"), err
    return lines[0]


@pytest.mark.parametrize(
    "stage, words",
    [
        # a 1-bit signed grid has no room for a sign (int_range needs >= 2 bits)
        ('kind = "quantise"\nweight_bits = 1\nepochs = 0', "weight_bits"),
        ('kind = "quantise"\nweight_bits = 8\nact_bits = 8\nact_mode = "nope"\nepochs = 0', "act_mode"),
    ],
)
def test_bad_quantise_settings_are_recipe_errors(tmp_path, capsys, stage, words):
    code = main([str(_recipe(tmp_path, stage)), *SMOKE, "--out", str(tmp_path / "out")])
    line = _one_line_error(capsys)
    assert code == 2 and words in line


def test_prune_selecting_nothing_is_a_recipe_error(tmp_path, capsys):
    stage = 'kind = "prune"\nschedule = "50%"\nexclude = ["*"]\nepochs = 0'
    code = main([str(_recipe(tmp_path, stage)), *SMOKE, "--out", str(tmp_path / "out")])
    line = _one_line_error(capsys)
    assert code == 2 and "prunable" in line


def test_invalid_arch_kwargs_value_is_a_usage_error(tmp_path, capsys):
    # bottleneck PyramidNet depth must be 9n + 2: the factory raises ValueError
    code = main(["wavecomp", *SMOKE, "--arch-kwargs", '{"depth": 7}', "--out", str(tmp_path / "out")])
    line = _one_line_error(capsys)
    assert code == 2 and "depth" in line


def test_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "afile"
    out.write_text("x")
    code = main(["kaist_v1", *SMOKE, "--out", str(out)])
    _one_line_error(capsys)
    assert code == 2


def test_resume_after_quantise_keeps_activation_ranges(tmp_path):
    """``--resume`` rebuilds the model from the last checkpoint: the rebuilt quantised network must compute
    what the trained one computed, so its activation-quantiser ranges have to come back too."""
    from reference_models.compression.quantize import ActQuant
    from reference_models.training.pipeline import write_stage
    from reference_models.training.recipes import parse_recipe
    from reference_models.training.state import PipelineState, apply_quantise, build_model, restore_state
    from scorer.checkpoint import load_checkpoint

    doc = {
        "name": "q",
        "model": {"arch": "wavecomp_pyramidnet", "kwargs": {"depth": 11, "alpha": 12}},
        "stages": [{"kind": "quantise", "weight_bits": 8, "act_bits": 8, "epochs": 0}],
    }
    recipe = parse_recipe(doc, tmp_path / "q.toml")
    torch.manual_seed(0)
    model = build_model(recipe, dict(recipe.arch_kwargs))
    spec = {"op": "quantise", "weight_bits": 8, "act_bits": 8}
    apply_quantise(model, spec)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    for q in model.modules():
        if isinstance(q, ActQuant):
            q.train()  # calibration, as the quantise stage does
    with torch.no_grad():
        model(x)
    model.eval()
    ranges = [float(q.running_max) for q in model.modules() if isinstance(q, ActQuant)]
    assert ranges and all(r > 0 for r in ranges)
    state = PipelineState(model=model, arch=recipe.arch, arch_kwargs=dict(recipe.arch_kwargs), transforms=[spec])
    path, _ = write_stage(recipe, recipe.stages[0], 0, state, tmp_path, {})
    restored = restore_state(recipe, load_checkpoint(path)).model.eval()
    assert [float(q.running_max) for q in restored.modules() if isinstance(q, ActQuant)] == ranges
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


def test_bnn_recipe_decays_every_parameter_in_stage1():
    """seeds/bnn-training-tricks.txt trick 7: ``torch.optim.Adam(model.parameters(), args.lr,
    weight_decay=args.weight_decay)`` -- weight decay 1e-5 (trick 6) on every parameter, BN and biases too."""
    stage = load_recipe("bnn_resnet18").stages[0]
    s1 = stage.params["stage1"]
    assert s1.weight_decay == 1e-5
    assert s1.no_decay_bias is False and s1.no_decay_norm is False


def test_quantise_with_excluded_activations_claims_no_network_wide_act_width():
    """A default activation width in the checkpoint's bits table says *every* activation runs at it
    (export.checkpoint_bits); with ``exclude`` (or a per-layer act override) some stay in floating point, so
    only the quantised activations may carry the width."""
    from reference_models.training.state import PipelineState

    state = PipelineState(model=torch.nn.Identity(), arch="x", arch_kwargs={})
    state.transforms = [{"op": "quantise", "weight_bits": 9, "act_bits": 12}]
    assert state.act_bits == 12
    state.transforms = [{"op": "quantise", "weight_bits": 9, "act_bits": 12, "exclude": ["stem*"]}]
    assert state.act_bits is None
    state.transforms = [{"op": "quantise", "weight_bits": 9, "act_bits": 12, "per_layer": {"fc*": {"act": 32}}}]
    assert state.act_bits is None
    state.transforms = [{"op": "quantise", "weight_bits": 9, "act_bits": 12, "per_layer": {"fc*": {"weight": 8}}}]
    assert state.act_bits == 12
