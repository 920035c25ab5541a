"""End to end: every bundled recipe runs with tiny limits, and each stage's score report changes as the
stage predicts (expected numbers from hand arithmetic on published totals, never pasted output)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from reference_models.training.cli import main
from scorer import score
from scorer.checkpoint import load_checkpoint
from scorer.cli import main as score_main
from scorer.load import load_model
from tests.conftest import single_thread

TINY = ["--synthetic", "64", "--epochs", "1", "--limit-batches", "1", "--batch-size", "16", "--no-progress"]
SMALL_ARCH = {"wavecomp": ["--arch-kwargs", '{"depth": 11, "alpha": 12}']}
OPTIONS = {"kaist_v2": ["--with", "trained_init"]}  # KAIST contribution 2 on one of the two versions


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run each bundled recipe once; tests read the outputs."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("osi_ai", "kaist_v1", "kaist_v2", "wavecomp", "bnn_resnet18"):
        out[name] = root / name
        assert main([name, *TINY, *SMALL_ARCH.get(name, []), *OPTIONS.get(name, []), "--out", str(out[name])]) == 0
    return out


def _report(path: Path) -> tuple[dict, pd.DataFrame]:
    doc = json.loads(path.read_text())
    return doc["totals"], pd.DataFrame(doc["layers"])


def _dims(shape: list[int] | str) -> list[int]:
    """An ``out_shape`` cell: a list of dims (report JSON schema 2) or ``"1x16x32x32"`` (before)."""
    return [int(d) for d in (shape.split("x") if isinstance(shape, str) else shape)]


def _weights(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["kind"].isin(["conv", "linear"]) & (df["weight_numel"] > 0)]


def _check_param_bits(rows: pd.DataFrame, bits: int, mask_all: bool = False) -> None:
    """Each weight costs ``bits`` per nonzero plus, when it has zeros, a 1-bit mask per element; a layer
    with a bias also stores one 16-bit value per output channel. ``mask_all`` (WaveComp, team_scores.md §2.8:
    ``Storage = TotalNonZeroParameters·ParamBits/32 + TotalParameters/32``): every parameter, dense or not,
    bias included, pays the 1-bit mask."""
    for _, r in rows.iterrows():
        mask = r["weight_numel"] if mask_all or r["nonzeros"] < r["weight_numel"] else 0
        assert r["mask_bits"] == mask, r["module"]
        channels = _dims(r["out_shape"])[1]
        bias = (16 + mask_all) * channels
        assert r["param_bits"] - mask - bits * r["nonzeros"] in (0, bias), r["module"]


def test_every_stage_writes_checkpoint_and_report(runs):
    stages = {
        "osi_ai": ["train", "prune", "exit", "exit_prune"],
        "kaist_v1": ["train", "prune45", "prune65"],
        "kaist_v2": ["probe", "reinit", "train", "prune45", "prune65"],
        "wavecomp": ["train", "channel_prune", "prune", "quantise"],
        "bnn_resnet18": ["binarise"],
    }
    for name, names in stages.items():
        for stage in names:
            ckpt = load_checkpoint(runs[name] / f"{stage}.ckpt")
            assert ckpt.meta["stage"] == stage and ckpt.meta["recipe"] == name
            totals, _ = _report(runs[name] / f"{stage}.score.json")
            assert totals["score"] == pytest.approx(totals["param_score"] + totals["ops_score"])
        final = load_checkpoint(runs[name] / "final.ckpt")
        assert final.meta["stage"] == names[-1]
        assert json.loads((runs[name] / "run.json").read_text())["completed"] == names


def test_osi_pruning_reaches_64_percent_and_pays_masks(runs):
    _, before = _report(runs["osi_ai"] / "train.score.json")
    assert before["mask_bits"].sum() == 0
    _check_param_bits(_weights(before), 16)
    _, df = _report(runs["osi_ai"] / "prune.score.json")
    rows = _weights(df)
    # the main network has 467,824 weights (team_scores.md §2.1.3); 64% of them is 299,407.36 -> 299,407
    total = 467_824
    zeros = round(0.64 * total)
    assert rows["weight_numel"].sum() == total
    assert (rows["weight_numel"] - rows["nonzeros"]).sum() == zeros
    assert round(1 - rows["nonzeros"].sum() / rows["weight_numel"].sum(), 3) == 0.640
    ckpt = load_checkpoint(runs["osi_ai"] / "prune.ckpt")
    assert sum(int((~m).sum()) for m in ckpt.masks.values()) == zeros
    assert df["mask_bits"].sum() == sum(m.numel() for m in ckpt.masks.values() if not bool(m.all()))
    _check_param_bits(rows, 16)


@pytest.mark.parametrize("stage", ["exit", "exit_prune"])
def test_osi_exit_weights_ops_by_the_measured_fraction(runs, stage):
    path = runs["osi_ai"] / f"{stage}.ckpt"
    fraction = load_checkpoint(path).exit_fractions["exit4"]
    _check_exit_weighting(path, fraction)


def test_osi_ends_with_the_exit_head_pruned_to_half(runs):
    # team_scores.md §2.1.3: early-exit module 10,280 of 20,560 weights kept; main network 64% of 467,824
    ckpt = load_checkpoint(runs["osi_ai"] / "final.ckpt")
    assert ckpt.meta["stage"] == "exit_prune"
    head = {k: m for k, m in ckpt.masks.items() if k.startswith("_exit.")}
    assert sum(m.numel() for m in head.values()) == 20_560
    assert sum(int((~m).sum()) for m in head.values()) == 10_280
    main_zeros = sum(int((~m).sum()) for k, m in ckpt.masks.items() if not k.startswith("_exit."))
    assert main_zeros == round(0.64 * 467_824)
    assert ckpt.meta["stage_results"]["sparsity_per_round"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    # storage does not depend on which weights survive, only on how many per tensor: the published
    # parameter components of team_scores.md §2.1.2 ("+ early exit (EE dense)" 0.003119, "+ EE pruned 50%
    # (final)" 0.002995) to their printed digits
    dense, _ = _report(runs["osi_ai"] / "exit.score.json")
    pruned, df = _report(runs["osi_ai"] / "exit_prune.score.json")
    assert (round(dense["param_score"], 6), round(pruned["param_score"], 6)) == (0.003119, 0.002995)
    rows = _weights(df)
    head_rows = rows[rows["module"].str.startswith("_exit.") & (rows["path"] == "exit4")]  # once per path
    assert (head_rows["weight_numel"] - head_rows["nonzeros"]).sum() == 10_280


def _check_exit_weighting(path: Path, fraction: float) -> None:
    ckpt = load_checkpoint(path)
    assert ckpt.exit_fractions == pytest.approx({"exit4": fraction, "final": 1 - fraction})
    totals, df = _report(path.with_suffix(".score.json"))
    assert set(df.loc[df["path"] == "exit4", "fraction"]) == {fraction}
    assert set(df.loc[df["path"] == "final", "fraction"]) == {1 - fraction}
    loaded = load_model(str(path))
    kwargs = dict(input_shape=loaded.input_shape, rules=loaded.rules, bits=loaded.bits, track=loaded.track)
    exit_ops = score(loaded.model, exit_fractions={"exit4": 1.0, "final": 0.0}, **kwargs).totals["ops"]
    final_ops = score(loaded.model, exit_fractions={"exit4": 0.0, "final": 1.0}, **kwargs).totals["ops"]
    assert exit_ops < final_ops  # the exit path stops after block 4
    assert totals["ops"] == pytest.approx(fraction * exit_ops + (1 - fraction) * final_ops)


def test_exit_fraction_chosen_on_data(tmp_path):
    recipe = tmp_path / "exit_only.toml"
    recipe.write_text(
        'name = "exit_only"\n[model]\narch = "osi_ai"\n[data]\naugment = []\n'
        '[[stages]]\nkind = "exit"\nhead = "_exit"\nblock = "_blocks.4"\nloss = "soft_smoothing"\n'
        "target_fraction = 0.5\n"
    )
    out = tmp_path / "out"
    # a few head steps, so that BN statistics and the head move off their initial values and the exit
    # confidences differ from image to image
    args = ["--synthetic", "64", "--epochs", "2", "--limit-batches", "4", "--batch-size", "16", "--no-progress"]
    assert main([str(recipe), *args, "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "exit.ckpt")
    measured = ckpt.meta["stage_results"]["measured_on"]
    assert measured == 4 * 16  # four evaluation batches of 16 test images
    fraction = ckpt.exit_fractions["exit4"]
    exited = fraction * measured
    assert 0 < fraction <= 0.5 and exited == round(exited)  # a whole number of images, at most half
    _check_exit_weighting(out / "exit.ckpt", fraction)


@pytest.mark.parametrize("name, total", [("kaist_v1", 450_456), ("kaist_v2", 471_184)])
def test_kaist_pruning_schedule_ends_at_65_percent(runs, name, total):
    # totals of every conv and FC weight (team_scores.md §2.2: 450,456 for ver1, 471,184 for ver2)
    for stage, target in (("prune45", 0.45), ("prune65", 0.65)):
        _, df = _report(runs[name] / f"{stage}.score.json")
        rows = _weights(df)
        assert rows["weight_numel"].sum() == total
        zeros = math.floor(target * total + 0.5)
        assert (rows["weight_numel"] - rows["nonzeros"]).sum() == zeros
        _check_param_bits(rows, 16)


def test_kaist_trained_init_draws_each_weight_from_its_trained_values(runs):
    probe = load_checkpoint(runs["kaist_v2"] / "probe.ckpt").state_dict
    reinit = load_checkpoint(runs["kaist_v2"] / "reinit.ckpt")
    assert reinit.meta["stage_results"]["mode"] == "empirical"
    weights = [k for k, v in probe.items() if k.endswith("weight") and v.dim() > 1]
    assert len(weights) == reinit.meta["stage_results"]["tensors"] > 0
    for key in weights:
        drawn, trained = reinit.state_dict[key], probe[key]
        assert torch.isin(drawn, trained).all(), key  # every value is one of the trained tensor's values
        assert not torch.equal(drawn, trained), key  # redrawn, not kept
    bn = [k for k in probe if k.endswith("running_mean")]
    assert bn and all(torch.all(reinit.state_dict[k] == 0) for k in bn)  # BN statistics start afresh


def test_wavecomp_sparsity_then_9_bit_weights_and_12_bit_activations(runs):
    _, pruned = _report(runs["wavecomp"] / "prune.score.json")
    rows = _weights(pruned)
    total = int(rows["weight_numel"].sum())
    assert (rows["weight_numel"] - rows["nonzeros"]).sum() == math.floor(0.4531 * total + 0.5)
    totals_q, quant = _report(runs["wavecomp"] / "quantise.score.json")
    rows = _weights(quant)
    _check_param_bits(rows, 9, mask_all=True)  # wavecomp2019
    assert set(rows["mul_bits"]) == {12}  # max(12-bit activations, 9-bit weights)
    totals_p, _ = _report(runs["wavecomp"] / "prune.score.json")
    assert totals_q["score"] < totals_p["score"]


def test_wavecomp_checkpoints_score_with_exponent_ops(runs):
    # wavecomp2019 (team_scores.md §2.8: MathOps = Mults*MultBits/32 + Adds*32/32 + ExponentOps*8/32): one
    # 8-bit exponent op per output element of every conv and FC of the channel-pruned, quantised network
    assert load_checkpoint(runs["wavecomp"] / "final.ckpt").meta["rules"] == "wavecomp2019"
    _, df = _report(runs["wavecomp"] / "quantise.score.json")
    rows = _weights(df)
    outputs = rows["out_shape"].map(lambda shape: math.prod(_dims(shape)))
    assert (rows["exp_ops"] == outputs).all() and set(rows["exp_bits"]) == {8}
    assert df["exp_ops"].sum() == outputs.sum()  # nothing else carries exponent ops


def _pyramid_conv_weights(depth: int, alpha: float, mid: list[list[int]] | None) -> int:
    """Conv and FC weights of a bottleneck PyramidNet, by the layout in wavecomp_pyramidnet.py: stem 3x3 3->16,
    per block 1x1 cin->w1, 3x3 w1->w2, 1x1 w2->4*planes (planes = round of the running width), FC cout->100."""
    n = (depth - 2) // 9
    width, cin, total = 16.0, 16, 3 * 16 * 9
    for b in range(3 * n):
        width += alpha / (3 * n)
        planes = int(round(width))
        w1, w2 = mid[b] if mid else (planes, planes)
        total += cin * w1 + 9 * w1 * w2 + w2 * 4 * planes
        cin = 4 * planes
    return total + cin * 100


def test_wavecomp_hessian_channel_pruning_narrows_the_scored_network(runs):
    ckpt = load_checkpoint(runs["wavecomp"] / "channel_prune.ckpt")
    mid = ckpt.arch_kwargs["mid_widths"]
    # depth 11, alpha 12: one bottleneck per stage, widths 16+4=20, 24, 28: 2*(20+24+28) = 144 inner channels;
    # schedule linear:0.85:10 ends with round(0.85*144) = 122 removed, 22 left
    assert sum(map(sum, mid)) == 144 - 122
    rounds = ckpt.meta["stage_results"]["rounds"]
    assert len(rounds) == 10 and all("grown" in r for r in rounds[:-1]) and "grown" not in rounds[-1]
    for stage, widths in (("train", None), ("channel_prune", mid)):
        _, df = _report(runs["wavecomp"] / f"{stage}.score.json")
        assert _weights(df)["weight_numel"].sum() == _pyramid_conv_weights(11, 12, widths)
    # the sparsity and quantisation stages keep the narrower network
    assert load_checkpoint(runs["wavecomp"] / "final.ckpt").arch_kwargs["mid_widths"] == mid


def test_channel_pruning_needs_an_architecture_naming_its_chains(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "channel_prune"\nschedule = "50%"\n')
    assert main([str(recipe), *TINY, "--out", str(tmp_path / "out")]) == 2


def test_exit_pruning_needs_an_exit_stage_before_it(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\narch = "osi_ai"\n[[stages]]\nkind = "exit_prune"\nhead = "_exit"\n'
                      'block = "_blocks.4"\nschedule = "50%"\n')
    assert main([str(recipe), *TINY, "--out", str(tmp_path / "out")]) == 2
    assert "needs an exit stage before it" in capsys.readouterr().err


def test_bnn_binary_convs_cost_one_bit(runs):
    _, df = _report(runs["bnn_resnet18"] / "binarise.score.json")
    rows = _weights(df)
    binary = rows[rows["module"].str.match(r"layer\d\.\d\.conv$")]
    assert len(binary) == 16  # ResNet-18's 8 basic blocks doubled into 16 single-conv blocks
    assert (binary["param_bits"] == binary["weight_numel"]).all()
    assert set(binary["mul_bits"]) == {1}
    full = rows[~rows.index.isin(binary.index)]  # stem, downsampling 1x1 convs and the classifier
    assert set(full["module"]) == {"stem.0", "layer2.0.downsample.0", "layer3.0.downsample.0",
                                   "layer4.0.downsample.0", "fc"}
    _check_param_bits(full, 16)
    assert load_checkpoint(runs["bnn_resnet18"] / "final.ckpt").arch_kwargs["binary_weights"] is True


def test_8_bit_quantisation_puts_params_and_mults_at_8_bits(tmp_path):
    recipe = tmp_path / "q8.toml"
    recipe.write_text(
        'name = "q8"\n[model]\narch = "kaist_v1"\n[data]\naugment = []\n'
        '[[stages]]\nkind = "train"\n[[stages]]\nkind = "quantise"\nweight_bits = 8\nact_bits = 8\n'
    )
    out = tmp_path / "out"
    assert main([str(recipe), *TINY, "--out", str(out)]) == 0
    _, before = _report(out / "train.score.json")
    assert set(_weights(before)["mul_bits"]) == {16}  # the 16-bit freebie
    _check_param_bits(_weights(before), 16)
    _, after = _report(out / "quantise.score.json")
    rows = _weights(after)
    assert set(rows["mul_bits"]) == {8}
    _check_param_bits(rows, 8)
    assert load_checkpoint(out / "final.ckpt").bits["default"] == {"act": 8}


@pytest.mark.parametrize("name", ["osi_ai", "wavecomp", "bnn_resnet18"])
def test_micronet_score_reads_final_checkpoint_without_flags(runs, name, tmp_path, capsys):
    output = tmp_path / "score.json"
    assert score_main([str(runs[name] / "final.ckpt"), "--format", "json", "--output", str(output)]) == 0
    cli_totals = json.loads(output.read_text())["totals"]
    last = load_checkpoint(runs[name] / "final.ckpt").meta["stage"]
    stage_totals, _ = _report(runs[name] / f"{last}.score.json")
    assert cli_totals == pytest.approx(stage_totals)


def test_resume_continues_after_the_last_completed_stage(runs, tmp_path):
    out = tmp_path / "wavecomp"
    shutil.copytree(runs["wavecomp"], out)
    done = ["train", "channel_prune", "prune"]
    (out / "run.json").write_text(json.dumps({"recipe": "wavecomp", "completed": done}))
    for stale in ("quantise.ckpt", "quantise.score.json", "final.ckpt"):
        (out / stale).unlink()
    before = {n: (out / f"{n}.ckpt").read_bytes() for n in done}
    args = ["wavecomp", *TINY, *SMALL_ARCH["wavecomp"], "--out", str(out), "--resume"]
    assert main(args) == 0
    assert {n: (out / f"{n}.ckpt").read_bytes() for n in before} == before  # earlier stages were not rerun
    resumed = load_checkpoint(out / "final.ckpt")
    assert resumed.meta["stage"] == "quantise" and resumed.bits["default"] == {"act": 12}
    pruned = load_checkpoint(out / "prune.ckpt")
    for key, mask in pruned.masks.items():  # the sparsity carried over into the quantised weights
        assert torch.all(resumed.state_dict[key][~mask] == 0)
