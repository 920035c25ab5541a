"""Mixed-precision search (reference_models/compression/mixed_precision.py, the ``mixed_precision`` stage).

Expected scores come from ``score()`` on the model in front of it (the sweep's contract: a row equals score()
under the configuration); the allocation properties are stated in the tests and follow from the greedy rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from reference_models.compression.mixed_precision import (
    BudgetError,
    Sensitivity,
    allocate,
    measure_sensitivity,
    quantised_density,
)
from reference_models.compression.quantize import fake_quantize
from reference_models.training.cli import main
from reference_models.training.pipeline import score_checkpoint
from reference_models.training.recipes import RecipeError, load_recipe
from reference_models.training.state import restore_state
from scorer import Scorer, score
from scorer.checkpoint import load_checkpoint
from tests.conftest import single_thread

SHAPE = (1, 3, 8, 8)
BASE = {"default": {"weight": 16, "act": 8, "acc": 32}}  # the 16-bit freebie, activations at 8 bits


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


def chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()


class TwoBranches(nn.Module):
    """A stem, two identical parallel convolutions added together, a classifier: ``a`` and ``b`` cost the same
    at every pair of widths."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        return self.fc((self.a(h) + self.b(h)).mean(dim=(2, 3)))


def quantised_copy(model: nn.Module, weight_bits: dict[str, int]) -> nn.Module:
    """The model with each layer's weight on its grid, as the QAT stores it (signed, range max |w|)."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, bits in weight_bits.items():
            w = out.get_submodule(name).weight
            w.copy_(fake_quantize(w, bits, w.abs().max(), signed=True))
    return out


def test_sweep_with_a_base_equals_score():
    model = chain()
    sc = Scorer(model, input_shape=SHAPE)
    names = sc.layer_names
    rng = np.random.default_rng(3)
    w, a = rng.integers(2, 17, (3, len(names))), rng.integers(2, 17, (3, len(names)))
    d = np.where(rng.random((3, len(names))) < 0.5, 1.0, rng.uniform(0.1, 1.0, (3, len(names))))
    table = sc.sweep(w, a, d, base=BASE)
    for k in range(3):
        precision = {"default": BASE["default"],
                     "layers": {n: {"weight": int(w[k, i]), "act": int(a[k, i])} for i, n in enumerate(names)}}
        want = score(model, input_shape=SHAPE, precision=precision,
                     sparsity={n: 1 - float(d[k, i]) for i, n in enumerate(names)}).totals
        assert table["score"][k] == pytest.approx(want["score"], rel=1e-12)
    # the 16-bit freebie as a base is score(bits=16) when every layer is at 16 bits
    n = len(names)
    freebie = sc.sweep(np.full(n, 16), np.full(n, 16), np.ones(n), base={"default": {"weight": 16, "act": 16}})
    assert freebie["score"][0] == pytest.approx(score(model, input_shape=SHAPE, bits=16).totals["score"], rel=1e-12)


@pytest.fixture(scope="module")
def measured():
    model = chain()
    sc = Scorer(model, input_shape=SHAPE)
    torch.manual_seed(1)
    batches = [torch.randn(8, 3, 8, 8) for _ in range(2)]
    sens = measure_sensitivity(model, batches, sc.layer_names, [2, 3, 4, 6, 8], [4, 6, 8], default_act=8)
    return model, sc, sens


def test_measured_sensitivity_falls_with_width(measured):
    _, _, sens = measured
    assert sens.batches == 2
    assert np.all(np.diff(sens.weight, axis=1) < 0)  # each extra bit halves the grid step: a smaller error
    assert np.all(np.diff(sens.act[:, :2], axis=1) < 0)
    assert np.all(sens.act[:, -1] == 0)  # the default width: no quantiser
    assert np.all(np.diff(sens.density, axis=1) >= 0)  # a narrower grid rounds more weights to zero


def test_allocation_meets_the_budget_per_the_scorer(measured):
    model, sc, sens = measured
    n = len(sc.layer_names)
    widest = score(model, input_shape=SHAPE, precision={"default": BASE["default"], "layers": {
        name: {"weight": 8} for name in sc.layer_names}}).totals["score"]
    lowest = allocate(sc, 1e9, sens, BASE).minimum
    budget = lowest + 0.4 * (widest - lowest)
    plan = allocate(sc, budget, sens, BASE)
    assert plan.score <= budget
    # the score of the model storing those quantised weights, with the bits a checkpoint stores
    stored = quantised_copy(model, {k: v for k, v in plan.weight_bits.items() if k in sens.layers})
    precision = {"default": BASE["default"],
                 "layers": {k: {"weight": plan.weight_bits[k], "act": plan.act_bits[k]} for k in sc.layer_names}}
    exact = score(stored, input_shape=SHAPE, precision=precision).totals["score"]
    assert exact == pytest.approx(plan.score, rel=1e-12)
    assert exact <= budget
    assert len(set(plan.weight_bits.values())) > 1  # mixed: not one width for every layer
    assert n == len(plan.weight_bits)
    # the widening pass leaves no single step that fits the budget and lowers the sensitivity
    for i, name in enumerate(sens.layers):
        k = sens.weight_candidates.index(plan.weight_bits[name])
        if k + 1 < len(sens.weight_candidates):
            w = np.array([[plan.weight_bits[m] for m in sc.layer_names]], dtype=float)
            a = np.array([[plan.act_bits[m] for m in sc.layer_names]], dtype=float)
            d = np.array([[sens.density[j, sens.weight_candidates.index(plan.weight_bits[m])]
                           for j, m in enumerate(sc.layer_names)]])
            w[0, i] = sens.weight_candidates[k + 1]
            d[0, i] = sens.density[i, k + 1]
            assert sc.sweep(w, a, d, base=BASE)["score"][0] > budget


def test_budget_below_the_minimum_is_an_error(measured):
    _, sc, sens = measured
    lowest = allocate(sc, 1e9, sens, BASE).minimum
    # the minimum: every layer at 2-bit weights and 4-bit outputs, as score() counts it
    stored = quantised_copy(sc.model, dict.fromkeys(sc.layer_names, 2))
    precision = {"default": BASE["default"], "layers": {k: {"weight": 2, "act": 4} for k in sc.layer_names}}
    assert lowest == pytest.approx(score(stored, input_shape=SHAPE, precision=precision).totals["score"], rel=1e-12)
    assert allocate(sc, lowest, sens, BASE).score <= lowest
    with pytest.raises(BudgetError, match="below the minimum achievable score"):
        allocate(sc, lowest * 0.999, sens, BASE)


def test_more_sensitive_layer_never_gets_fewer_bits():
    """Layers a and b cost the same at every width; b's sensitivity is 3x a's at every width, so each step of
    b adds 3x what the same step of a adds: the greedy narrows a first and widens b first, hence
    weight_bits[b] >= weight_bits[a] at every budget (and > at some)."""
    model = TwoBranches().eval()
    sc = Scorer(model, input_shape=SHAPE)
    names = sc.layer_names
    assert names == ["stem", "a", "b", "fc"]
    wc = [2, 3, 4, 6, 8]
    base_err = np.array([4.0 ** -b for b in wc])
    scale = {"stem": 2.0, "a": 1.0, "b": 3.0, "fc": 0.5}
    sens = Sensitivity(names, wc, [8], np.array([scale[n] * base_err for n in names]), np.zeros((4, 1)),
                       np.ones((4, len(wc))))
    low, high = allocate(sc, 1e9, sens, BASE).minimum, allocate(sc, 1e9, sens, BASE).score
    gaps = []
    for fraction in np.linspace(0, 1, 21):
        plan = allocate(sc, low + fraction * (high - low), sens, BASE)
        gaps.append(plan.weight_bits["b"] - plan.weight_bits["a"])
    assert min(gaps) >= 0 and max(gaps) > 0


def test_quantised_density_counts_zeros_on_the_grid():
    w = torch.tensor([1.0, 0.1, -0.2, 0.6])
    # 2-bit signed grid: qmax 1, step 1.0; |w| < 0.5 rounds to 0 -> 2 of 4 survive
    assert quantised_density(w, 2) == 0.5
    # 4-bit: qmax 7, step 1/7; 0.1 < 0.5/7? no (0.0714): all four survive
    assert quantised_density(w, 4) == 1.0


RECIPE = """
name = "tiny_haq"
[model]
arch = "wavecomp_pyramidnet"
kwargs = {{depth = 11, alpha = 12}}
[score]
bits = 16
[[stages]]
kind = "train"
epochs = 1
[[stages]]
name = "haq"
kind = "mixed_precision"
{budget}
weight_candidates = [2, 3, 4, 8]
act_candidates = [4, 8]
act_bits = 8
exclude = ["conv1"]
sensitivity_batches = 1
calibrate_batches = 1
epochs = 1
"""


def test_recipe_stage_end_to_end(tmp_path):
    path = tmp_path / "tiny_haq.toml"
    path.write_text(RECIPE.format(budget="budget_fraction = 0.4"))
    out = tmp_path / "run"
    args = ["--synthetic", "32", "--epochs", "1", "--limit-batches", "1", "--batch-size", "16", "--no-progress"]
    assert main([str(path), *args, "--out", str(out)]) == 0
    before = json.loads((out / "train.score.json").read_text())["totals"]["score"]
    after = json.loads((out / "haq.score.json").read_text())["totals"]["score"]
    ckpt = load_checkpoint(out / "final.ckpt")
    results = ckpt.meta["stage_results"]
    assert results["budget"] == pytest.approx(0.4 * before, rel=1e-12)  # the fraction of the entering score
    assert after <= 0.4 * before  # as micronet-score scores the checkpoint
    assert score_checkpoint(out / "final.ckpt").totals["score"] == after == results["score"]
    weights = {k: v["weight"] for k, v in ckpt.bits["layers"].items() if "weight" in v}
    assert weights == results["weight_bits"] and len(set(weights.values())) > 1
    assert "conv1" not in weights  # excluded: left in floating point, scored at the 16-bit default
    assert ckpt.bits["default"] == {"act": 8}
    # --resume rebuilds the quantised network from the recorded transform
    state = restore_state(load_recipe(path), ckpt)
    assert {k: state.model.get_submodule(k).weight_bits for k in weights} == weights


@pytest.mark.parametrize("budget, message", [
    ("budget_score = 1e-9", "below the minimum achievable score"),
    ("", "exactly one of budget_score"),
    ("budget_score = 0.1\nbudget_fraction = 0.5", "exactly one of budget_score"),
])
def test_bad_budgets_are_refused(tmp_path, capsys, budget, message):
    path = tmp_path / "tiny_haq.toml"
    path.write_text(RECIPE.format(budget=budget).replace('kind = "train"\nepochs = 1', 'kind = "train"\nepochs = 0'))
    if "1e-9" not in budget:  # refused when the recipe is read
        with pytest.raises(RecipeError, match=message):
            load_recipe(path)
        return
    args = ["--synthetic", "16", "--limit-batches", "1", "--batch-size", "16", "--no-progress"]
    assert main([str(path), *args, "--out", str(tmp_path / "run")]) != 0  # refused when the stage runs
    assert message in capsys.readouterr().err


def test_bundled_recipe():
    recipe = load_recipe("kaist_v1_haq")
    assert [s.kind for s in recipe.stages] == ["train", "prune", "prune", "mixed_precision"]
    haq = recipe.stages[-1]
    assert haq.params["budget_fraction"] == 0.6 and haq.params["score"] is recipe.score


def test_checkpoint_over_budget_after_training_is_narrowed(tmp_path):
    """Training can move weights off zero (fewer credited zeros than the allocation counted): the stage scores
    the checkpoint as micronet-score does and narrows weights until it fits."""
    from reference_models.registry import build_reference
    from reference_models.training.precision_search import _meet_budget, _plain_model, exact_checkpoint_score
    from reference_models.training.recipes import ScoreSpec
    from reference_models.training.state import PipelineState, apply_quantise

    kwargs = {"depth": 11, "alpha": 12}
    state = PipelineState(model=build_reference("wavecomp_pyramidnet", **kwargs).eval(), arch="wavecomp_pyramidnet",
                          arch_kwargs=kwargs)
    spec = ScoreSpec(bits=16)
    sc = Scorer(_plain_model(state), input_shape=tuple(spec.input_shape))
    names = sc.layer_names
    wc = [2, 4, 8]
    sens = Sensitivity(names, wc, [16], np.tile([4.0 ** -b for b in wc], (len(names), 1)), np.zeros((len(names), 1)),
                       np.ones((len(names), len(wc))))
    transform = {"op": "quantise", "weight_bits": 32, "act_bits": None, "per_layer": {n: {"weight": 8} for n in names}}
    apply_quantise(state.model, transform)
    state.transforms.append(transform)
    at_8 = exact_checkpoint_score(state, spec)
    budget = 0.8 * at_8
    base = {"default": {"weight": 16, "act": 16, "acc": 32}}
    exact, narrowed = _meet_budget(state, spec, sc, sens, base, {}, budget, transform, "test")
    assert exact <= budget and narrowed
    assert exact == exact_checkpoint_score(state, spec)
    assert {transform["per_layer"][n]["weight"] for n in narrowed} <= {2, 4}
    assert all(state.model.get_submodule(n).weight_bits == transform["per_layer"][n]["weight"] for n in names)


def test_quantize_model_out_key_quantises_a_layers_output():
    from reference_models.compression.quantize import QuantConv2d, bits_of, quantize_model

    model = quantize_model(chain(), weight_bits=32, act_bits=None, per_layer={"2": {"weight": 4, "out": 6}})
    assert isinstance(model[2], QuantConv2d) and (model[2].weight_bits, model[2].act_bits) == (4, 6)
    assert type(model[0]) is nn.Conv2d  # 32 bits: left in floating point
    assert bits_of(model) == {"2": {"weight": 4, "act": 6}}


def test_checkpoint_with_quantised_outputs_scores_as_the_sweep(tmp_path):
    """Weights on mixed grids and some layers' outputs quantised: the checkpoint the pipeline writes scores
    (as micronet-score scores it) exactly what the sweep row of those widths and zeros says, and resumes."""
    from reference_models.registry import build_reference
    from reference_models.training.export import checkpoint_bits, dropped_state, make_checkpoint
    from reference_models.training.precision_search import _plain_model
    from reference_models.training.state import PipelineState, apply_quantise
    from scorer.checkpoint import save_checkpoint

    kwargs = {"depth": 11, "alpha": 12}
    state = PipelineState(model=build_reference("wavecomp_pyramidnet", **kwargs), arch="wavecomp_pyramidnet",
                          arch_kwargs=kwargs)
    sc = Scorer(_plain_model(state), input_shape=SHAPE[:2] + (32, 32))
    names = sc.layer_names
    widths = {n: (2, 3, 5, 8)[i % 4] for i, n in enumerate(names)}
    outs = {n: 6 for n in names[1::3]}
    per_layer = {n: {"weight": widths[n], **({"out": outs[n]} if n in outs else {})} for n in names}
    transform = {"op": "quantise", "weight_bits": 32, "act_bits": 8, "per_layer": per_layer}
    apply_quantise(state.model, transform)
    state.transforms.append(transform)
    state.model.train()
    state.model(torch.randn(4, 3, 32, 32))  # output ranges and activation ranges from one batch
    meta = {"input_shape": [1, 3, 32, 32], "track": "cifar100", "rules": "micronet2019", "bits": 16,
            "pipeline": state.transforms, "quantiser_state": dropped_state(state.model)}
    ckpt = make_checkpoint(state.model, state.arch, kwargs, {}, checkpoint_bits(state.model, state.act_bits), {}, meta)
    assert all(ckpt.bits["layers"][n] == {"weight": widths[n], **({"act": outs[n]} if n in outs else {})}
               for n in names)
    path = save_checkpoint(ckpt, tmp_path / "mixed.ckpt")
    got = score_checkpoint(path).totals["score"]
    w = np.array([[widths[n] for n in names]])
    a = np.array([[outs.get(n, 8) for n in names]])
    d = np.array([[quantised_density(state.model.get_submodule(n).weight, widths[n]) for n in names]])
    want = sc.sweep(w, a, d, base={"default": {"weight": 16, "act": 8, "acc": 32}})["score"][0]
    assert got == pytest.approx(want, rel=1e-12)
    resumed = restore_state(load_recipe("wavecomp"), load_checkpoint(path))
    assert {n: resumed.model.get_submodule(n).act_bits for n in outs} == outs
