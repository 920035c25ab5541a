"""scorer.load: every MODEL form, and one-line ScorerErrors naming the file for every bad input."""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from reference_models import registry
from scorer.checkpoint import Checkpoint, save_checkpoint
from scorer.errors import ScorerError
from scorer.load import LoadedModel, load_model
from tests.conftest import TINY_MODEL_SRC

MODEL_SRC = TINY_MODEL_SRC + textwrap.dedent(
    """
    def not_a_model():
        return 42


    def broken():
        raise RuntimeError("factory exploded")
    """
)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_models.py"
    path.write_text(MODEL_SRC)
    return path


def _tiny(model_file: Path) -> nn.Module:
    return load_model(f"{model_file}:build").model


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)


# ----------------------------------------------------------------------------- factories and references


def test_file_factory(model_file: Path) -> None:
    loaded = load_model(f"{model_file}:build")
    assert isinstance(loaded, LoadedModel)
    assert type(loaded.model).__name__ == "Tiny"
    assert loaded.source == "factory"
    assert (loaded.input_shape, loaded.track, loaded.rules, loaded.bits) == (None, None, None, None)
    # importing the user's file writes no bytecode next to it
    assert not (model_file.parent / "__pycache__").exists()


def test_module_factory(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(model_file.parent))
    monkeypatch.delitem(sys.modules, "tiny_models", raising=False)
    loaded = load_model("tiny_models:build")
    assert type(loaded.model).__name__ == "Tiny"
    sys.modules.pop("tiny_models", None)


@pytest.mark.parametrize(
    ("suffix", "needle"),
    [(":not_a_model", "returned int"), (":broken", "factory exploded"), (":missing", "no attribute 'missing'")],
)
def test_bad_factories(model_file: Path, suffix: str, needle: str) -> None:
    with pytest.raises(ScorerError) as exc:
        load_model(f"{model_file}{suffix}")
    _assert_one_line(exc, needle)


def test_python_file_needs_a_factory(model_file: Path) -> None:
    with pytest.raises(ScorerError) as exc:
        load_model(str(model_file))
    _assert_one_line(exc, str(model_file), ":build_model")


def test_unknown_module_factory() -> None:
    with pytest.raises(ScorerError) as exc:
        load_model("no_such_package_xyz.models:build")
    _assert_one_line(exc, "no_such_package_xyz")


def test_reference_carries_its_defaults() -> None:
    names = {r.name for r in registry.list_references()}
    if "wrn28_10" not in names:
        pytest.skip("reference model wrn28_10 is not registered yet")
    info = registry.get_reference("wrn28_10")
    loaded = load_model("reference:wrn28_10")
    assert loaded.source == "reference"
    assert loaded.track == info.track == "cifar100"
    assert loaded.input_shape == (1, 3, 32, 32)
    assert (loaded.rules, loaded.bits) == (info.rules, info.bits)


def test_unknown_reference() -> None:
    with pytest.raises(ScorerError) as exc:
        load_model("reference:no_such_model")
    _assert_one_line(exc, "no_such_model")


# ----------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.pt"
    with pytest.raises(ScorerError) as exc:
        load_model(str(path))
    _assert_one_line(exc, str(path), "no such file")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ScorerError) as exc:
        load_model(str(tmp_path))
    _assert_one_line(exc, str(tmp_path), "directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ScorerError) as exc:
        load_model(str(path))
    _assert_one_line(exc, str(path), "empty")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ScorerError) as exc:
        load_model(str(path), trust_pickle=True)  # corrupt stays corrupt even when pickles are trusted
    _assert_one_line(exc, str(path), "corrupt")


def test_truncated_file(tmp_path: Path, model_file: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save(_tiny(model_file).state_dict(), full)
    data = full.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScorerError) as exc:
        load_model(str(path), arch=f"{model_file}:build")
    _assert_one_line(exc, str(path), "corrupt")


def test_truncated_pt2(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt2"
    path.write_bytes(b"PK\x03\x04" + os.urandom(100))
    with pytest.raises(ScorerError) as exc:
        load_model(str(path))
    _assert_one_line(exc, str(path))


def test_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ScorerError) as exc:
        load_model(str(path))
    _assert_one_line(exc, str(path), "not a model")


# ----------------------------------------------------------------------------- pickles


def test_pickled_module_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(4, 3)), path)
    before = _digest(path)
    with pytest.raises(ScorerError) as exc:
        load_model(str(path))
    _assert_one_line(exc, str(path), "pickled", "arbitrary code", "--trust-pickle")
    loaded = load_model(str(path), trust_pickle=True)
    assert isinstance(loaded.model, nn.Sequential)
    assert loaded.source == "pickle"
    assert _digest(path) == before


# ----------------------------------------------------------------------------- state_dicts


def test_state_dict_needs_arch(tmp_path: Path, model_file: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_tiny(model_file).state_dict(), path)
    with pytest.raises(ScorerError) as exc:
        load_model(str(path))
    _assert_one_line(exc, str(path), "state_dict", "--arch")


def test_state_dict_with_arch(tmp_path: Path, model_file: Path) -> None:
    src = _tiny(model_file)
    path = tmp_path / "weights.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    loaded = load_model(str(path), arch=f"{model_file}:build")
    assert loaded.source == "state_dict"
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


def test_state_dict_that_does_not_fit(tmp_path: Path, model_file: Path) -> None:
    sd = _tiny(model_file).state_dict()
    sd["extra.weight"] = torch.zeros(2)
    del sd["fc.bias"]
    sd["conv.weight"] = torch.zeros(5, 3, 3, 3)
    path = tmp_path / "weights.pt"
    torch.save(sd, path)
    with pytest.raises(ScorerError) as exc:
        load_model(str(path), arch=f"{model_file}:build")
    _assert_one_line(exc, str(path), "1 missing key(s): fc.bias", "1 unexpected key(s): extra.weight",
                     "conv.weight (file 5x3x3x3, model 2x3x3x3)")


def test_pruned_state_dict_folds_masks(tmp_path: Path, model_file: Path) -> None:
    model = _tiny(model_file)
    prune.l1_unstructured(model.conv, "weight", amount=0.5)  # 27 of 54 weights masked
    path = tmp_path / "pruned.pt"
    torch.save(model.state_dict(), path)  # holds conv.weight_orig and conv.weight_mask
    loaded = load_model(str(path), arch=f"{model_file}:build")
    assert loaded.masks_applied == 1
    assert int((loaded.model.conv.weight == 0).sum()) == 27


# ----------------------------------------------------------------------------- checkpoint


def test_checkpoint_applies_masks_bits_meta(tmp_path: Path, model_file: Path) -> None:
    model = _tiny(model_file)
    sd = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    mask = torch.ones(2, 3, 3, 3, dtype=torch.bool)
    mask.view(-1)[:27] = False
    ckpt = Checkpoint(
        arch=f"{model_file}:build", arch_kwargs={"width": 2}, state_dict=sd, masks={"conv.weight": mask},
        bits={"fc": {"weight": 8}}, exit_fractions={"exit1": 0.25, "final": 0.75},
        meta={"input_shape": [1, 3, 32, 32], "track": "imagenet", "rules": "micronet2019"},
    )
    path = save_checkpoint(ckpt, tmp_path / "final.ckpt")
    before = _digest(path)
    loaded = load_model(str(path), trust_code=True)  # its arch names a file: trusted explicitly
    assert loaded.source == "checkpoint"
    assert loaded.masks_applied == 1
    w = loaded.model.conv.weight.detach().view(-1)
    assert int((w == 0).sum()) == 27 and bool((w[27:] == 1).all())
    assert loaded.precision == {"layers": {"fc": {"weight": 8}}}
    assert loaded.exit_fractions == {"exit1": 0.25, "final": 0.75}
    assert (loaded.input_shape, loaded.track, loaded.rules) == ((1, 3, 32, 32), "imagenet", "micronet2019")
    assert _digest(path) == before


def test_checkpoint_with_bad_mask(tmp_path: Path, model_file: Path) -> None:
    model = _tiny(model_file)
    ckpt = Checkpoint(arch=f"{model_file}:build", state_dict=model.state_dict(),
                      masks={"nope.weight": torch.ones(3, dtype=torch.bool)})
    path = save_checkpoint(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(ScorerError) as exc:
        load_model(str(path), trust_code=True)
    _assert_one_line(exc, str(path), "nope.weight")


# ----------------------------------------------------------------------------- export and TorchScript


def test_export_pt2(tmp_path: Path, model_file: Path) -> None:
    model = _tiny(model_file).eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), str(path))
    before = _digest(path)
    loaded = load_model(str(path))
    assert loaded.source == "export"
    assert loaded.input_shape == (1, 3, 32, 32)
    loaded.model.eval()  # the loader restores the ordinary train()/eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(loaded.model(x), model(x))
    assert _digest(path) == before


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still loadable
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript(tmp_path: Path, model_file: Path, how: str) -> None:
    model = _tiny(model_file).eval()
    x = torch.randn(1, 3, 32, 32)
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x)
    path = tmp_path / f"tiny_{how}.pt"
    scripted.save(str(path))
    before = _digest(path)
    loaded = load_model(str(path), trust_code=True)
    assert loaded.source == "torchscript"
    assert torch.allclose(loaded.model(x), model(x))
    assert _digest(path) == before
