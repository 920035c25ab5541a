"""The submission workflow: ``micronet-score evaluate`` (quality against the hard threshold, as an exact count)
and ``--report`` (the submission document), on synthetic data written in the standard formats.

Thresholds (official_rules.md §1.1): "at or above ... without rounding"; CIFAR-100 8,000 / 10,000 test images,
ImageNet 37,500 / 50,000, WikiText-103 perplexity 35 (FAQ "35 or below", overview "below 35").
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from scorer.cli import main
from scorer.evaluate import QualityResult, evaluate
from scorer.quality import THRESHOLDS

N_TEST = 10_000  # official_rules.md §1.1: the CIFAR-100 test split
MEAN0, STD0 = 0.5071, 0.2673  # channel 0 of scorer.cifar's normalisation (CIFAR-100 training statistics)


def write_cifar(folder: Path, data: np.ndarray, labels: list[int]) -> Path:
    """A cifar-100-python folder (``train``, ``test``, ``meta`` pickles, protocol 2, as the official archive)."""
    folder.mkdir(parents=True, exist_ok=True)
    split = {b"data": data, b"fine_labels": labels, b"coarse_labels": [v // 5 for v in labels],
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))], b"batch_label": b"test"}
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}
    for name, obj in (("test", split), ("train", split), ("meta", meta)):
        with (folder / name).open("wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    return folder


@pytest.fixture(scope="module")
def indexed_cifar(tmp_path_factory) -> Path:
    """10,000 test images; image i holds i // 256 and i % 256 in its first two channel-0 pixels, its label
    i % 100 in the third."""
    n = np.arange(N_TEST)
    data = np.zeros((N_TEST, 3072), dtype=np.uint8)
    data[:, 0], data[:, 1], data[:, 2] = n // 256, n % 256, n % 100
    return write_cifar(tmp_path_factory.mktemp("cifar") / "cifar-100-python", data, [int(i % 100) for i in n])


class IndexOracle(nn.Module):
    """Reads the image index and label off the pixels: right on the first ``k`` images, wrong on the rest."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.bn = nn.BatchNorm1d(1)  # a flag eval mode must restore

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = torch.round((x[:, 0, 0, :3] * STD0 + MEAN0) * 255).long()  # undo the normalisation
        index, label = pixels[:, 0] * 256 + pixels[:, 1], pixels[:, 2]
        pred = torch.where(index < self.k, label, (label + 1) % 100)
        return nn.functional.one_hot(pred, 100).float()


@pytest.fixture(scope="module")
def indexed_split(indexed_cifar):
    from scorer.cifar import load_cifar100

    return load_cifar100(indexed_cifar, "test")


@pytest.mark.parametrize("k", [7_999, 8_000, 8_001])
def test_threshold_is_an_exact_count(indexed_split, k):
    model = IndexOracle(k).train()
    result = evaluate(model, "cifar100", indexed_split)
    assert (result.correct, result.total, result.required) == (k, 10_000, 8_000)
    assert result.qualifies is (k >= 8_000) and result.official
    expected = f"{k:,} / 10,000 ≥ 8,000: qualifies" if k >= 8_000 else f"{k:,} / 10,000 < 8,000: does not qualify"
    assert result.verdict() == expected
    assert model.training and model.bn.training  # eval mode was restored


class ExitOracle(IndexOracle):
    """An early-exit model: the exit head is sure and right on images 0..29, unsure (uniform) on the rest; the
    final head is right on images 0..79 only."""

    def forward_with_exit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.round((x[:, 0, 0, :3] * STD0 + MEAN0) * 255).long()
        index, label = pixels[:, 0] * 256 + pixels[:, 1], pixels[:, 2]
        sure = nn.functional.one_hot(label, 100).float() * 20 * (index < 30).float().unsqueeze(1)
        final = nn.functional.one_hot(torch.where(index < 80, label, (label + 1) % 100), 100).float()
        return sure, final

    def exit_paths(self) -> dict[str, nn.Module]:
        return {"exit1": self, "final": self}


def test_early_exit_rule(indexed_split):
    # first 100 images: 30 leave at the exit (softmax of 20 over 99 zeros ≈ 1 > 0.85) and are right; of the
    # 70 that stay (exit softmax 1/100), the final head is right on images 30..79: 50. Correct: 30 + 50 = 80.
    result = evaluate(ExitOracle(0), "cifar100", indexed_split, limit=100, exit_threshold=0.85)
    assert (result.correct, result.total, result.required) == (80, 100, 80) and result.qualifies
    assert result.exit_counts == {"exit1": 30, "final": 70}
    from scorer.errors import ScorerError

    with pytest.raises(ScorerError, match="no early exit"):
        evaluate(IndexOracle(0), "cifar100", indexed_split, limit=10, exit_threshold=0.85)


def test_required_counts_in_integers():
    cifar, imagenet = THRESHOLDS["cifar100"], THRESHOLDS["imagenet"]
    assert cifar.required(10_000) == 8_000 and imagenet.required(50_000) == 37_500  # §1.1 exact counts
    assert cifar.required(200) == 160 and cifar.required(3) == 3  # ceil(0.8 · 3) = ceil(2.4)
    assert imagenet.required(4) == 3 and imagenet.required(5) == 4  # ceil(3.75)


def _model_file(tmp_path: Path) -> Path:
    path = tmp_path / "oracle.py"
    path.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_submission import IndexOracle

        def build_8000():
            return IndexOracle(8_000)

        def build_799():
            return IndexOracle(799)
    """))
    return path


def test_cli_evaluate_cifar(indexed_cifar, tmp_path, capsys):
    model = _model_file(tmp_path)
    assert main(["evaluate", f"{model}:build_8000", "--data", str(indexed_cifar)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "8,000 / 10,000 ≥ 8,000: qualifies"
    # the first 1,000 images: 0.8 · 1,000 = 800 needed, 799 right
    assert main(["evaluate", f"{model}:build_799", "--data", str(indexed_cifar), "--limit", "1000",
                 "--fail-below", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["correct"], doc["total"], doc["required"], doc["qualifies"]) == (799, 1_000, 800, False)
    assert doc["verdict"] == "799 / 1,000 < 800: does not qualify" and doc["official"] is False


def test_limit_is_not_official(indexed_cifar, capsys, tmp_path):
    model = _model_file(tmp_path)
    assert main(["evaluate", f"{model}:build_8000", "--data", str(indexed_cifar), "--limit", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "300 / 300 ≥ 240: qualifies"  # 0.8 · 300 = 240
    assert any(line.startswith("NOT the official split") for line in lines)


# --------------------------------------------------------------------------- ImageNet: a user loader


def test_imagenet_loader_file(tmp_path, capsys):
    (tmp_path / "loader.py").write_text(textwrap.dedent("""
        import torch

        def val_batches():
            # labels 0..3; the model below predicts the class in pixel [0, 0, 0]
            x = torch.zeros(4, 3, 8, 8)
            x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 0.0])
            return [(x[:2], torch.tensor([0, 1])), (x[2:], torch.tensor([2, 3]))]
    """))
    (tmp_path / "net.py").write_text(textwrap.dedent("""
        import torch

        class PixelClass(torch.nn.Module):
            def forward(self, x):
                return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 1000).float()

        def build():
            return PixelClass()
    """))
    argv = ["evaluate", f"{tmp_path / 'net.py'}:build", "--data", f"{tmp_path / 'loader.py'}:val_batches"]
    assert main(argv) == 0  # the track is inferred from the loader spec
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3 / 4 ≥ 3: qualifies"  # 37,500 / 50,000 · 4 = 3 needed
    assert "top-1 accuracy" in lines[1] and "NOT the official split" in lines[2] and "50,000" in lines[2]


def test_imagenet_loader_must_name_a_loader(tmp_path, capsys):
    (tmp_path / "net.py").write_text("import torch\ndef build():\n    return torch.nn.Flatten()\n")
    assert main(["evaluate", f"{tmp_path / 'net.py'}:build", "--data", "nowhere:loader", "--track",
                 "imagenet"]) == 2
    assert "cannot import module 'nowhere'" in capsys.readouterr().err


# --------------------------------------------------------------------------- WikiText-103: perplexity


class Uniform(nn.Module):
    """Equal logits over ``v`` tokens: every prediction has probability 1/v, so the perplexity is v."""

    def __init__(self, v: int):
        super().__init__()
        self.v = v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape, self.v)


def _token_files(tmp_path: Path, v: int) -> tuple[Path, Path]:
    words = [f"w{i}" for i in range(v - 2)]
    (tmp_path / "vocab.txt").write_text("\n".join(["<eos>", "<unk>", *words]) + "\n")
    lines = [" ".join(words[(i * 7) % len(words):][:5]) for i in range(40)]
    (tmp_path / "test.tokens").write_text("\n".join(lines) + "\n")
    return tmp_path / "test.tokens", tmp_path / "vocab.txt"


@pytest.mark.parametrize(("v", "faq", "overview"), [(34, True, True), (36, False, False)])
def test_perplexity_both_readings(tmp_path, v, faq, overview):
    tokens, vocab = _token_files(tmp_path, v)
    n_tokens = sum(len(line.split()) + 1 for line in tokens.read_text().splitlines())  # + <eos> per line
    result = evaluate(Uniform(v), "wikitext103", tokens, vocab=vocab, seq_len=16)
    assert math.isclose(result.perplexity, v, rel_tol=1e-12)
    assert result.total == n_tokens - 1  # the first token has no context
    assert (result.qualifies, result.qualifies_strict) == (faq, overview)


def test_perplexity_35_splits_the_readings():
    r = QualityResult(track="wikitext103", metric="perplexity", data="x", total=10, official_total=245_568,
                      qualifies=True, threshold_source="s", perplexity=35.0, threshold=35.0, qualifies_strict=False)
    assert r.verdict() == ('perplexity 35.0000 over 10 predictions: ≤ 35 (FAQ "35 or below"): qualifies; '
                           '≥ 35 (overview "below 35"): does not qualify')


def test_cli_perplexity(tmp_path, capsys):
    tokens, vocab = _token_files(tmp_path, 34)
    (tmp_path / "lm.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_submission import Uniform

        def build():
            return Uniform(34)
    """))
    assert main(["evaluate", f"{tmp_path / 'lm.py'}:build", "--data", str(tokens), "--vocab", str(vocab)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("perplexity 34.0000 over ") and first.endswith("(overview \"below 35\"): qualifies")


# --------------------------------------------------------------------------- the submission document


def _sections(text: str) -> dict[str, str]:
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:]
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


SMALL_NET = """
import torch.nn as nn

def build():
    # conv 3->4, 3x3, bias: 4·3·9 + 4 = 112 params; linear 4->100, bias: 400 + 100 = 500 params
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 100))
"""


def test_report_document(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(50, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 100, size=50)]
    cifar = write_cifar(tmp_path / "cifar", data, labels)
    (tmp_path / "net.py").write_text(SMALL_NET)
    out = tmp_path / "submission.md"
    argv = [f"{tmp_path / 'net.py'}:build", "--input-shape", "1,3,32,32", "--rules", "kaist2019",
            "--data", str(cifar), "--report", str(out), "--format", "json"]
    torch.manual_seed(0)  # the factory's weights: the CLI builds the model first thing
    assert main(argv) == 0
    capsys.readouterr()
    # the correct count, recomputed here: the same seeded model, the images normalised as scorer.cifar does
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("net_for_test", tmp_path / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build().eval()
    mean = torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1)
    std = torch.tensor([0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)
    x = (torch.from_numpy(data).view(50, 3, 32, 32).float() / 255 - mean) / std
    with torch.no_grad():
        correct = int((model(x).argmax(1) == torch.tensor(labels)).sum())
    needed = -(-8_000 * 50 // 10_000)  # 40
    text = out.read_text()
    assert text.startswith("# MicroNet Challenge submission:")
    sections = _sections(text)
    names = list(sections)
    assert names[:2] == ["Quality threshold", "Score"] and names[2].startswith("Per-module table (depth 2)")
    assert names[3:] == ["Per-op table", "Settings", "Rule set", "Reproduce"]

    sign, word = ("≥", "qualifies") if correct >= needed else ("<", "does not qualify")
    assert f"**{correct:,} / 50 {sign} {needed:,}: {word}**" in sections["Quality threshold"]
    assert "NOT the official split" in sections["Quality threshold"]

    score = sections["Score"]
    # kaist2019 (rules/teams.py, Kaist2019): the conv's bias is its C_out = 4 values, and mask_policy "always"
    # charges 1 bit per element of every weight tensor of ndim > 1: (112 + 500) · 32 + 108 + 400 = 20,092 bits,
    # 627.875 parameters, shown exactly
    assert re.search(r"\| param_bits\s+\|\s+20,092 \|", score) and re.search(r"\| params\s+\|\s+627\.875 \|", score)
    assert "36,500,000" in score and "10,490,000,000" in score  # the CIFAR-100 baselines, §1.2

    modules = sections[names[2]]
    assert "| 0 " in modules and "| 4 " in modules  # the conv and the linear, by their Sequential index
    per_op = sections["Per-op table"]
    assert "conv" in per_op and "linear" in per_op

    assert "- rules: kaist2019" in sections["Settings"] and "- track: cifar100" in sections["Settings"]

    rules = sections["Rule set"]
    assert "### Kaist2019 (`rules.teams`)" in rules and "### Micronet2019 (`rules.micronet2019`)" in rules
    assert "team_scores.md §2.2" in rules  # the class docstring's citation
    assert "- `cost_conv`: adds = N·(K·d − 1) + N" in rules  # an override with its docstring
    assert "- `mask_policy` = `'always'`: \"bitmask(net)\" charges numel/32" in rules  # attribute + comment

    reproduce = sections["Reproduce"]
    import scorer

    assert f"micronet-score {scorer.__version__}" in reproduce
    assert "micronet-score " + " ".join(argv) in reproduce
    digest = hashlib.sha256((tmp_path / "net.py").read_bytes()).hexdigest()
    assert f"`{tmp_path / 'net.py'}`: `{digest}`" in reproduce
    assert hashlib.sha256((cifar / "test").read_bytes()).hexdigest() in reproduce


def test_report_without_data_says_not_evaluated(tmp_path, capsys):
    (tmp_path / "net.py").write_text(SMALL_NET)
    out = tmp_path / "sub.md"
    assert main([f"{tmp_path / 'net.py'}:build", "--report", str(out), "--format", "json"]) == 0
    sections = _sections(out.read_text())
    assert sections["Quality threshold"].strip().startswith("Not evaluated.")
    # micronet2019, 32-bit, dense: 112 + 500 parameters (arithmetic in SMALL_NET), no masks (no zeros)
    assert re.search(r"\| params\s+\|\s+612 \|", sections["Score"])
    assert "= 612 / 36,500,000 + " in sections["Score"]


def test_evaluate_report(indexed_cifar, tmp_path, capsys):
    """``evaluate --report``: the measured threshold and the score with the model's defaults in one file."""
    (tmp_path / "net.py").write_text(SMALL_NET)
    out = tmp_path / "eval.md"
    assert main(["evaluate", f"{tmp_path / 'net.py'}:build", "--data", str(indexed_cifar), "--limit", "100",
                 "--report", str(out), "--depth", "1"]) == 0
    sections = _sections(out.read_text())
    assert " / 100 " in sections["Quality threshold"]
    assert "Per-module table (depth 1)" in sections
    assert "micronet-score evaluate " in sections["Reproduce"]


def test_data_needs_report(tmp_path, capsys):
    (tmp_path / "net.py").write_text(SMALL_NET)
    assert main([f"{tmp_path / 'net.py'}:build", "--data", "somewhere"]) == 2
    assert "--data is used with --report" in capsys.readouterr().err
