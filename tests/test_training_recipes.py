"""Bundled recipes mirror the seeds; bad recipes and bad input are one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reference_models.compression.schedule import parse_schedule
from reference_models.training.cli import main
from reference_models.training.recipes import RecipeError, bundled_recipes, load_recipe


def test_bundled_recipes():
    assert set(bundled_recipes()) == {"osi_ai", "kaist_v1", "kaist_v2", "wavecomp", "bnn_resnet18", "kaist_v1_haq"}


def test_osi_ai_recipe_mirrors_the_seed():
    r = load_recipe("osi_ai")
    assert r.arch == "osi_ai" and [s.kind for s in r.stages] == ["train", "prune", "exit", "exit_prune"]
    train, prune, exit_, exit_prune = r.stages
    t = train.train
    assert (t.epochs, t.lr, t.weight_decay, t.momentum, t.batch_size) == (1200, 0.13, 1e-5, 0.9, 128)
    assert (t.loss, t.smoothing, t.smoothing_spread) == ("label_smoothing", 0.3, "others")
    assert (t.mix, t.mix_alpha, t.period, t.restart) == ("mixup", 1.0, 1200, False)
    assert "autoaugment" in t.augment and t.autoaugment_policy == "osi_cifar100"
    assert r.ghost_batch_size == 128 // 4  # ghost BN with 4 splits of the 128 batch
    assert t.no_decay_bias
    rounds = parse_schedule(prune.params["schedule"])
    assert len(rounds) == 5 + 4 + 2 and rounds[-1] == 0.64  # 10%*5 + 2.5%*4 + 2%*2
    assert prune.params["method"] == "layer_normalized" and prune.train.epochs == 600
    assert exit_.params["threshold"] == 0.85 and exit_.train.epochs == 800
    assert exit_.train.loss == "soft_smoothing" and exit_.train.mix == "none"
    assert "autoaugment" not in exit_.train.augment
    # Config/reproduce.json early_exit.prune: sparsity 50, rounds 5, gradually, norm, 600 epochs
    assert parse_schedule(exit_prune.params["schedule"]) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert (exit_prune.params["head"], exit_prune.params["method"]) == ("_exit", "layer_normalized")
    assert (exit_prune.train.epochs, exit_prune.train.loss) == (600, "soft_smoothing")
    assert (r.score.bits, r.score.rules) == (16, "micronet2019")


@pytest.mark.parametrize("version, batch_wd", [("kaist_v1", False), ("kaist_v2", True)])
def test_kaist_recipes_mirror_the_seed(version, batch_wd):
    r = load_recipe(version)
    assert r.arch == version
    t = r.stages[0].train
    assert (t.epochs, t.lr, t.min_lr, t.weight_decay, t.momentum, t.nesterov) == (600, 0.1, 0.0005, 1e-5, 0.9, True)
    assert (t.scheduler, t.period, t.restart) == ("cosine", 150, True)
    assert (t.srip, t.mix, t.mix_alpha, t.loss) == (0.7, "cutmix", 1.0, "weighted_label_smoothing")
    assert t.no_decay_norm is (not batch_wd)  # ver1 runs with --batch_wd=False
    prunes = r.stages[1:]
    assert [parse_schedule(s.params["schedule"])[-1] for s in prunes] == [0.45, 0.65]
    assert all(s.params["method"] == "global" for s in prunes)


def test_wavecomp_and_bnn_recipes():
    w = load_recipe("wavecomp")
    quant = w.stages[-1]
    assert (quant.kind, quant.params["weight_bits"], quant.params["act_bits"]) == ("quantise", 9, 12)
    assert quant.params["shared_exponent"] is True
    assert parse_schedule(w.stages[2].params["schedule"]) == [0.4531]
    assert w.arch_kwargs == {"depth": 272, "alpha": 200}
    # step 2 before the sparsity: mhariat/MicroNet Pruning/config.json back_ratio 0.25, prune_ratio_limit 0.5,
    # max_iter 20 (10 pruning + 10 bring-back iterations), 200 epochs at lr 0.001, 10x after bringing back
    hess = w.stages[1]
    assert hess.kind == "channel_prune" and len(parse_schedule(hess.params["schedule"])) == 10
    assert (hess.params["back_ratio"], hess.params["limit"], hess.params["fisher"]) == (0.25, 0.5, "true")
    assert (hess.train.epochs, hess.train.lr, hess.params["anneal_lr_scale"]) == (200, 0.001, 10.0)
    assert w.score.rules == "wavecomp2019"
    b = load_recipe("bnn_resnet18")
    stage = b.stages[0]
    s1, s2 = stage.params["stage1"], stage.params["stage2"]
    assert (s1.lr, s1.weight_decay, s2.lr, s2.weight_decay) == (1e-3, 1e-5, 2e-4, 0.0)
    assert (s1.optimizer, s1.milestones, s1.gamma, s1.epochs) == ("adam", [150, 250, 320], 0.2, 350)
    assert b.arch_kwargs["binary_weights"] is False


def test_epoch_override_scales_period_and_milestones():
    b = load_recipe("bnn_resnet18")
    b.override_epochs(35)
    assert b.stages[0].params["stage1"].milestones == [15, 25, 32]
    k = load_recipe("kaist_v1")
    k.override_epochs(60)
    assert (k.stages[0].train.epochs, k.stages[0].train.period) == (60, 15)
    w = load_recipe("wavecomp")
    w.override_epochs(3)
    assert w.stages[-1].train.epochs == 0  # post-training quantisation stays without training


@pytest.mark.parametrize(
    "body, message",
    [
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "train"\nlearning_rate = 1\n', "unknown key 'learning_rate'"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "squash"\n', "kind 'squash'"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "prune"\nschedule = "64"\n', "schedule"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "exit"\nhead = "x"\n', "threshold"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "channel_prune"\n', "needs schedule"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "channel_prune"\nschedule = "50%"\nback_ratio = 1.5\n',
         "back_ratio"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "channel_prune"\nschedule = "50%"\nfisher = "diag"\n',
         "fisher"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "train"\n[[stages]]\nkind = "train"\n', "duplicate"),
        ('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "train"\nlr = "fast"\n', "'lr' must be float"),
        ('[model]\narch = "kaist_v1"\n', "stages"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_recipes_are_refused(tmp_path, body, message):
    path = tmp_path / "r.toml"
    path.write_text(body)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def _fails_with_one_line(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("micronet-train: error:") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    return err


def test_bad_input_exits_2_with_one_line(capsys, tmp_path):
    _fails_with_one_line(capsys, ["no_such_recipe", "--synthetic", "8"], "unknown recipe 'no_such_recipe'")
    _fails_with_one_line(capsys, ["osi_ai", "--data", str(tmp_path / "missing")], "no such directory")
    _fails_with_one_line(capsys, ["osi_ai"], "no data")
    _fails_with_one_line(capsys, ["osi_ai", "--synthetic", "8", "--bogus"], "unrecognized arguments")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("train", "test", "meta"):
        (corrupt / name).write_bytes(b"\x80\x02}q\x00(")  # a truncated pickle
    _fails_with_one_line(capsys, ["osi_ai", "--data", str(corrupt), "--out", str(tmp_path / "o")], "corrupt")


def test_console_script_reports_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "reference_models.training.cli", "nope.toml"], capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "micronet-train: error: nope.toml: no such recipe file"


# --------------------------------------------------------------------------- hostile recipes (issue 7)

_SMOKE = ["--synthetic", "8", "--epochs", "0", "--limit-batches", "1", "--no-progress"]


def _victim(folder):
    """A folder holding the two files a fresh run removes first; returns a check that both survived."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("final.ckpt", "run.json"):
        (folder / name).write_text("precious")
    return lambda: all((folder / n).read_text() == "precious" for n in ("final.ckpt", "run.json"))


@pytest.mark.parametrize("name", ["../../victim", "..", ".", "a/b", "a\\\\b", "", "x..y", "-rf", "runs dir"])
def test_recipe_name_must_be_a_safe_identifier(tmp_path, monkeypatch, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    intact = _victim(tmp_path / "victim")
    also = _victim(work / "runs")  # name "." or ".." would aim at runs/ itself or its parent
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "{name}"\n[model]\narch = "kaist_v1"\n[[stages]]\nkind = "train"\n')
    _fails_with_one_line(capsys, [str(recipe), *_SMOKE], "name")
    assert intact() and also() and sorted(p.name for p in work.iterdir()) == ["runs"]


def test_recipe_file_stem_is_checked_like_a_name(tmp_path):
    recipe = tmp_path / "my recipe.toml"
    recipe.write_text('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "train"\n')
    with pytest.raises(RecipeError, match="recipe name 'my recipe'"):
        load_recipe(recipe)


def test_stage_names_are_safe_identifiers(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "train"\nname = ".."\n')
    with pytest.raises(RecipeError, match="stage name"):
        load_recipe(recipe)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--data", "MISSING"], "no such directory"),
        (["--synthetic", "8", "--arch-kwargs", '{"depth": 7}'], "depth"),
        (["--synthetic", "8", "--arch-kwargs", '{"no_such_argument": 1}'], "no_such_argument"),
    ],
)
def test_bad_input_deletes_nothing(tmp_path, capsys, flags, words):
    out = tmp_path / "out"
    intact = _victim(out)
    flags = [str(tmp_path / "missing") if f == "MISSING" else f for f in flags]
    arch = "wavecomp" if "depth" in str(flags) else "kaist_v1"
    _fails_with_one_line(capsys, [arch, *flags, "--epochs", "0", "--no-progress", "--out", str(out)], words)
    assert intact() and sorted(p.name for p in out.iterdir()) == ["final.ckpt", "run.json"]


_MARKER_MODULE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\nclass X: pass\ndef f(*a, **k): pass\n"


@pytest.mark.parametrize(
    "table, payload",
    [
        ("model", 'arch = "{mod}:f"'),
        ("model", 'arch = "os:system"'),
        ("score", 'rules = "{mod}:X"'),
        ("score", 'rules = "{mod}.X"'),
        ("score", 'track = "{mod}:X"'),
    ],
)
def test_recipe_fields_never_import_or_call(tmp_path, monkeypatch, capsys, table, payload):
    """A recipe names registered things only: no field reaches an import, so the payload module never runs."""
    marker = tmp_path / "marker"
    mod = "evil_recipe_payload"
    (tmp_path / f"{mod}.py").write_text(_MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = 'arch = "kaist_v1"'
    body = payload.format(mod=mod)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'name = "r"\n[model]\n' + (body if table == "model" else model) + "\n"
        + (f"[score]\n{body}\n" if table == "score" else "") + '[[stages]]\nkind = "train"\n'
    )
    out = tmp_path / "out"
    intact = _victim(out)
    _fails_with_one_line(capsys, [str(recipe), *_SMOKE, "--out", str(out)], "r.toml")
    assert not marker.exists() and intact()
    sys.modules.pop(mod, None)


@pytest.mark.parametrize(
    "body, message",
    [
        ("bits = 0", "bits"),
        ('bits = "16"', "bits"),
        ("input_shape = [1, 3, 0, 32]", "input_shape"),
        ('input_shape = "1,3,32,32"', "input_shape"),
        ('rules = "no_such_rules"', "rules"),
    ],
)
def test_score_table_values_are_checked(tmp_path, body, message):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\narch = "kaist_v1"\n[score]\n{body}\n[[stages]]\nkind = "train"\n')
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)
