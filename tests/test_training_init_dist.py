"""Initialisation from a trained weight distribution (KAIST contribution 2) and optional recipe stages."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reference_models.training.init_dist import init_from_distributions, sample_like, weight_distributions
from reference_models.training.recipes import RecipeError, load_recipe


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def test_empirical_draws_come_from_the_trained_values() -> None:
    values = torch.tensor([-1.0] * 50 + [1.0] * 50)
    draws = sample_like(values, torch.Size([100, 100]), "empirical", torch.Generator().manual_seed(0))
    assert draws.shape == (100, 100) and set(draws.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((draws > 0).double().mean()) - 0.5) < 0.02  # 10,000 fair draws: sd 0.005


def test_normal_draws_match_the_trained_mean_and_std() -> None:
    values = torch.tensor([0.0, 1.0, 2.0, 3.0])  # mean 1.5, population variance (2.25+0.25+0.25+2.25)/4 = 1.25
    draws = sample_like(values, torch.Size([200_000]), "normal", torch.Generator().manual_seed(0)).double()
    assert abs(float(draws.mean()) - 1.5) < 0.01
    assert abs(float(draws.std()) - math.sqrt(1.25)) < 0.01
    with pytest.raises(ValueError, match="mode"):
        sample_like(values, torch.Size([2]), "uniform")


def test_weight_distributions_select_conv_and_linear_weights() -> None:
    net = _net()
    assert set(weight_distributions(net)) == {"0.weight", "4.weight"}
    assert set(weight_distributions(net, exclude=["4.*"])) == {"0.weight"}


@pytest.mark.parametrize("mode", ["empirical", "normal"])
def test_reinit_resets_the_rest_and_redraws_the_weights(mode: str) -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight.fill_(0.5)  # a constant trained tensor: both modes redraw exactly 0.5
        net[4].weight.copy_(torch.arange(net[4].weight.numel()).view_as(net[4].weight) % 3)  # values 0, 1, 2
        net[1].weight.fill_(3.0)
        net[1].running_mean.fill_(7.0)
        net[4].bias.fill_(9.0)
    trained = weight_distributions(net)
    names = init_from_distributions(net, trained, mode, seed=1)
    assert names == ["0.weight", "4.weight"]
    assert torch.all(net[0].weight == 0.5)
    if mode == "empirical":
        assert set(net[4].weight.unique().tolist()) <= {0.0, 1.0, 2.0}
    # BN back at weight 1, bias 0, running mean 0; linear bias back inside PyTorch's U(-1/sqrt(fan_in), ...)
    assert torch.all(net[1].weight == 1) and torch.all(net[1].running_mean == 0)
    assert torch.all(net[4].bias.abs() <= 1 / math.sqrt(64))
    with pytest.raises(KeyError, match="unknown"):
        init_from_distributions(net, {"9.weight": torch.zeros(3)})


def test_kaist_recipes_offer_the_trained_distribution_init_as_an_option() -> None:
    for version in ("kaist_v1", "kaist_v2", "kaist_v1_haq"):
        r = load_recipe(version)
        assert [s.name for s in r.stages][:3] == ["train", "prune45", "prune65"] and r.options == ["trained_init"]
        r.enable(["trained_init"])
        assert [(s.name, s.kind) for s in r.stages][:3] == [("probe", "train"), ("reinit", "reinit"), ("train", "train")]
        assert r.stages[1].params["mode"] == "empirical"
        with pytest.raises(RecipeError, match="no optional stages"):
            r.enable(["mixed_precision"])


def test_a_recipe_needs_one_default_stage(tmp_path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "train"\noption = "x"\n')
    with pytest.raises(RecipeError, match="optional"):
        load_recipe(path)
    path.write_text('[model]\narch = "kaist_v1"\n[[stages]]\nkind = "reinit"\nmode = "uniform"\n')
    with pytest.raises(RecipeError, match="mode"):
        load_recipe(path)


def test_unknown_option_is_one_line_exit_2(tmp_path, capsys) -> None:
    from reference_models.training.cli import main

    assert main(["kaist_v1", "--with", "nope", "--synthetic", "8", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no optional stages ['nope']" in err and "trained_init" in err
    assert not (tmp_path / "out").exists()  # refused before anything is written
