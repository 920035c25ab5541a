"""WikiText token files, measured path fractions and perplexity (scorer/lm.py), and their CLI flags.

Expected values are arithmetic written here: token ids from the vocabulary lines, the line convention of
salesforce/awd-lstm-lm data.py (``line.split() + ['<eos>']`` for every line, empty ones included),
perplexities from the models' known distributions, fractions from counting the token list by hand.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from scorer import score
from scorer.cli import main
from scorer.errors import ScorerError
from scorer.lm import measure_path_fractions, perplexity, quality, read_tokens, read_vocab

VOCAB = ["<eos>", "<unk>", "the", "cat", "sat", "on", "mat"]  # ids 0..6, the line numbers
V = len(VOCAB)
TEXT = " = Cat = \n\n the cat sat on the mat \n the dog sat \n"
# lines: "= Cat =" -> = and Cat are not in the vocabulary -> <unk>, <unk>, <unk>, <eos>
#        ""        -> <eos> (an empty line still ends with <eos>)
#        "the cat sat on the mat" -> 2 3 4 5 2 6 <eos>
#        "the dog sat" -> 2 <unk> 4 <eos>
IDS = [1, 1, 1, 0, 0, 2, 3, 4, 5, 2, 6, 0, 2, 1, 4, 0]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tokens = tmp_path / "wiki.test.tokens"
    tokens.write_text(TEXT)
    return tokens, vocab


# ----------------------------------------------------------------------------- reading files


def test_read_vocab_and_tokens(files: tuple[Path, Path]) -> None:
    tokens, vocab_file = files
    vocab = read_vocab(vocab_file)
    assert vocab == {tok: i for i, tok in enumerate(VOCAB)}
    ids = read_tokens(tokens, vocab)
    assert ids.dtype == torch.long and ids.tolist() == IDS


def test_line_endings_as_python_text_mode(tmp_path: Path) -> None:
    """\\r\\n and a last line without a newline: the lines Python's text mode (the reference readers') sees."""
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    path = tmp_path / "crlf.tokens"
    path.write_bytes(b"the cat\r\n\r\nsat")
    assert read_tokens(path, vocab).tolist() == [2, 3, 0, 0, 4, 0]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("<eos>\n\n<unk>\n", "vocab.txt:2: a vocabulary line holds exactly one token"),
    ("<eos>\nthe cat\n", "vocab.txt:2: a vocabulary line holds exactly one token"),
    ("<eos>\nthe\n<unk>\nthe\n", "vocab.txt:4: token 'the' repeats line 2"),
])
def test_bad_vocab(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text(content)
    with pytest.raises(ScorerError, match=message):
        read_vocab(path)


def test_bad_token_files(tmp_path: Path) -> None:
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    missing = tmp_path / "nope.tokens"
    with pytest.raises(ScorerError, match="cannot read token file .*nope.tokens"):
        read_tokens(missing, vocab)
    empty = tmp_path / "empty.tokens"
    empty.write_text("")
    with pytest.raises(ScorerError, match="empty.tokens is empty"):
        read_tokens(empty, vocab)
    binary = tmp_path / "bin.tokens"
    binary.write_bytes(b"the cat\nsat \xff on\n")
    with pytest.raises(ScorerError, match=r"bin.tokens:2: not UTF-8"):
        read_tokens(binary, vocab)
    text = tmp_path / "t.tokens"
    text.write_text("the cat\nthe dog\n")
    no_unk = {"<eos>": 0, "the": 1, "cat": 2}
    with pytest.raises(ScorerError, match=r"t.tokens:2: token 'dog' is not in the vocabulary, which has no '<unk>'"):
        read_tokens(text, no_unk)
    with pytest.raises(ScorerError, match="has no '<eos>'"):
        read_tokens(text, {"<unk>": 0, "the": 1})


# ----------------------------------------------------------------------------- perplexity


class ConstantLM(nn.Module):
    """Logits that do not depend on the input: every prediction is uniform over V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x):
        return self.bias.expand(x.shape[0], x.shape[1], -1)


def bigram_table(seed: int = 0) -> torch.Tensor:
    """A row-stochastic V x V table P[prev, next] with no zero entry."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(V, V, generator=g, dtype=torch.float64) + 0.05
    return p / p.sum(1, keepdim=True)


class BigramLM(nn.Module):
    """logits[t] = log P[x_t]: predicts x_{t+1} from x_t alone. ``log_probs`` returns log-softmax output."""

    def __init__(self, table: torch.Tensor, log_probs: bool = False):
        super().__init__()
        self.table = nn.Embedding(V, V)
        self.table.weight.data.copy_(table.log().float() + 3.0)  # logits: a constant shift changes nothing
        self.log_probs = log_probs

    def forward(self, x):
        out = self.table(x)
        return torch.log_softmax(out, -1) if self.log_probs else out


class SkipBigramLM(nn.Module):
    """Predicts x_{t+1} from x_{t-1}: logits[t] = log Q[x_{t-1}]; at the stream's first position (no state)
    uniform. Returns (logits, state) with state = the chunk's last token, which the next chunk needs."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Embedding(V, V)
        self.table.weight.data.copy_(table.log().float())

    def forward(self, x, state=None):
        prev = self.table(x[:, :-1])
        first = torch.zeros(1, 1, V) if state is None else self.table(state)
        return torch.cat([first, prev], 1), x[:, -1:]


def test_constant_logits_give_perplexity_v(files: tuple[Path, Path]) -> None:
    tokens, vocab = files
    ids = read_tokens(tokens, read_vocab(vocab))
    for seq_len in (1, 4, 100):
        assert perplexity(ConstantLM(V), ids, seq_len=seq_len) == pytest.approx(V, rel=1e-12)


@pytest.mark.parametrize("log_probs", [False, True])
def test_bigram_perplexity_is_the_hand_sum(log_probs: bool) -> None:
    p = bigram_table()
    # exp(-(1/(N-1)) * sum_i log P[t_i, t_{i+1}]): each token predicts the next; N tokens, N-1 predictions
    nll = -sum(math.log(float(p[a, b])) for a, b in zip(IDS[:-1], IDS[1:], strict=True))
    expected = math.exp(nll / (len(IDS) - 1))
    ids = torch.tensor(IDS)
    for seq_len in (1, 3, 5, 15, 16, 1000):
        got = perplexity(BigramLM(p, log_probs), ids, seq_len=seq_len)
        assert got == pytest.approx(expected, rel=1e-6), seq_len
    # the first 5 tokens only: 4 predictions
    first = math.exp(-sum(math.log(float(p[a, b])) for a, b in zip(IDS[:4], IDS[1:5], strict=True)) / 4)
    assert perplexity(BigramLM(p), ids, seq_len=2, max_tokens=5) == pytest.approx(first, rel=1e-6)


def test_state_is_carried_between_chunks() -> None:
    q = bigram_table(seed=1)
    # prediction of IDS[1] has no x_{-1}: uniform (log V); prediction of IDS[i+1] uses Q[IDS[i-1]]
    nll = math.log(V) - sum(math.log(float(q[IDS[i - 1], IDS[i + 1]])) for i in range(1, len(IDS) - 1))
    expected = math.exp(nll / (len(IDS) - 1))
    for seq_len in (2, 3, 7, 100):
        assert perplexity(SkipBigramLM(q), torch.tensor(IDS), seq_len=seq_len) == pytest.approx(expected, rel=1e-6)


class LSTMLM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(V, 5)
        self.rnn = nn.LSTM(5, 6, batch_first=True)
        self.out = nn.Linear(6, V)

    def forward(self, x, state=None):
        h, state = self.rnn(self.emb(x), state)
        return self.out(h), state


def test_lstm_chunks_equal_one_pass() -> None:
    model = LSTMLM()
    ids = torch.tensor(IDS)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[:-1].view(1, -1))[0][0].double(), -1)
        expected = math.exp(-float(logp.gather(1, ids[1:].view(-1, 1)).sum()) / (len(IDS) - 1))
    for seq_len in (1, 4, 15):
        assert perplexity(model, ids, seq_len=seq_len) == pytest.approx(expected, rel=1e-5)
    assert model.training  # eval mode during the measurement only


def test_perplexity_errors() -> None:
    ids = torch.tensor(IDS)
    with pytest.raises(ScorerError, match="at least 2 tokens"):
        perplexity(ConstantLM(V), ids[:1])
    with pytest.raises(ScorerError, match="outside the model's 4 outputs"):
        perplexity(ConstantLM(4), ids)


class Flat(nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[1], V)


class ZeroProb(nn.Module):
    def forward(self, x):
        out = torch.zeros(1, x.shape[1], V)
        out[..., 6] = -math.inf  # "mat" (id 6) impossible
        return out


def test_perplexity_shape_and_zero_probability_errors() -> None:
    ids = torch.tensor(IDS)
    with pytest.raises(ScorerError, match=r"Flat.forward on input \(1, 3\) must give \(1, 3, V\).*got \(3, 7\)"):
        perplexity(Flat(), ids, seq_len=3)
    # IDS[10] = 6 ("mat"): the prediction made at stream position 9
    with pytest.raises(ScorerError, match="gives token 6 at stream position 10 log-probability -inf"):
        perplexity(ZeroProb(), ids, seq_len=4)


def test_quality_both_readings() -> None:
    # official_rules.md §1.1: FAQ "35 or below", overview "below 35"
    at = quality(35.0)
    assert at.passes_faq and not at.passes_overview
    assert quality(34.999).passes_faq and quality(34.999).passes_overview
    above = quality(35.0001)
    assert not above.passes_faq and not above.passes_overview
    assert "passes the FAQ reading (<= 35), fails the overview reading (< 35)" in at.describe()


def test_thresholds_in_one_place() -> None:
    from scorer.quality import THRESHOLDS

    # official_rules.md §5.1: "ImageNet 37,500/50,000; CIFAR-100 8,000/10,000; WikiText-103 perplexity <= 35"
    assert THRESHOLDS["imagenet"].value * 50_000 == 37_500 and THRESHOLDS["imagenet"].higher_is_better
    assert THRESHOLDS["cifar100"].value * 10_000 == 8_000 and THRESHOLDS["cifar100"].higher_is_better
    wt = THRESHOLDS["wikitext103"]
    assert (wt.metric, wt.value, wt.higher_is_better, wt.strict_reading) == ("perplexity", 35.0, False, True)


# ----------------------------------------------------------------------------- path fractions

CUTOFF = 3  # ids < 3 (<eos>, <unk>, the) take the head bin, the others the tail bin
D_HEAD, D_TAIL = 4, 2


class HeadPath(nn.Module):
    def __init__(self, owner):
        super().__init__()
        self.emb, self.out = owner.emb_head, owner.out

    def forward(self, x):
        return self.out(self.emb(x))


class TailPath(nn.Module):
    def __init__(self, owner):
        super().__init__()
        self.emb, self.proj, self.out = owner.emb_tail, owner.proj, owner.out

    def forward(self, x):
        return self.out(self.proj(self.emb(x)))


class TwoBinLM(nn.Module):
    """A two-bin adaptive input: frequent ids embed at D_HEAD, rare ones at D_TAIL and are projected up."""

    def __init__(self):
        super().__init__()
        self.emb_head = nn.Embedding(V, D_HEAD)
        self.emb_tail = nn.Embedding(V, D_TAIL)
        self.proj = nn.Linear(D_TAIL, D_HEAD, bias=False)
        self.out = nn.Linear(D_HEAD, V, bias=False)

    def forward(self, x):
        rare = (x >= CUTOFF).unsqueeze(-1)
        return self.out(torch.where(rare, self.proj(self.emb_tail(x)), self.emb_head(x)))

    def route(self, tokens):
        return (tokens >= CUTOFF).long()

    def paths(self):
        return {"head": HeadPath(self), "tail": TailPath(self)}


def test_measured_fractions_are_the_counts() -> None:
    head = sum(1 for t in IDS if t < CUTOFF)  # 11 of 16: <unk> x4, <eos> x4, the x3
    tail = len(IDS) - head
    assert (head, tail) == (11, 5)
    for batch in (1, 5, 16, 1000):
        fr = measure_path_fractions(TwoBinLM(), torch.tensor(IDS), batch=batch)
        assert fr.counts == {"head": head, "tail": tail} and fr.total == len(IDS)
        assert fr == {"head": head / len(IDS), "tail": tail / len(IDS)}
    assert fr.describe() == "head=11/16 (0.6875), tail=5/16 (0.3125)"


def test_scored_with_measured_fractions() -> None:
    fr = measure_path_fractions(TwoBinLM(), torch.tensor(IDS))
    rep = score(TwoBinLM(), example_inputs=(torch.zeros(1, 1, dtype=torch.long),), track="wikitext103",
                path_fractions=fr)
    # per token: head out 4->V (4V mults, 3V adds); tail proj 2->4 (8 mults, 4 adds) then out
    assert rep.totals["mults"] == pytest.approx(11 / 16 * 4 * V + 5 / 16 * (8 + 4 * V))
    assert rep.totals["adds"] == pytest.approx(11 / 16 * 3 * V + 5 / 16 * (4 + 3 * V))


class NoRoute(nn.Module):
    def paths(self):
        return {"a": nn.Identity()}


class BadRoute(TwoBinLM):
    def route(self, tokens):
        return tokens  # ids up to 6, but only 2 paths


def test_fraction_errors() -> None:
    ids = torch.tensor(IDS)
    with pytest.raises(ScorerError, match="Linear has no paths()"):
        measure_path_fractions(nn.Linear(2, 2), ids)
    with pytest.raises(ScorerError, match="NoRoute has no route"):
        measure_path_fractions(NoRoute(), ids)
    with pytest.raises(ScorerError, match="BadRoute.route\\(\\) gave path index 2; paths\\(\\) has 2"):
        measure_path_fractions(BadRoute(), ids)
    with pytest.raises(ScorerError, match="no tokens"):
        measure_path_fractions(TwoBinLM(), torch.zeros(0, dtype=torch.long))


# ----------------------------------------------------------------------------- CLI

class Uniform(nn.Module):
    """Logits that do not depend on the input (zero weights): a uniform prediction over V."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(1, V)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(torch.zeros_like(x, dtype=torch.float).unsqueeze(-1))


# the model file the CLI loads: this module's classes, written out with their constants and factories
MODEL_SRC = "\n\n\n".join([
    f"import torch\nimport torch.nn as nn\n\nV, CUTOFF, D_HEAD, D_TAIL = {V}, {CUTOFF}, {D_HEAD}, {D_TAIL}",
    *(inspect.getsource(cls) for cls in (HeadPath, TailPath, TwoBinLM, Uniform)),
    "def two_bin():\n    return TwoBinLM()",
    "def uniform():\n    return Uniform()\n",
])


@pytest.fixture
def lm_file(tmp_path: Path) -> Path:
    path = tmp_path / "lm_models.py"
    path.write_text(MODEL_SRC)
    return path


def run(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("micronet-score: error: "), err
    return lines[0]


def test_cli_measure_paths(capsys: pytest.CaptureFixture, lm_file: Path, files: tuple[Path, Path]) -> None:
    tokens, vocab = files
    code, out, err = run(capsys, f"{lm_file}:two_bin", "--track", "wikitext103", "--input-dtype", "long",
                         "--measure-paths", tokens, "--vocab", vocab, "--format", "json")
    assert code == 0, err
    assert "head=11/16 (0.6875), tail=5/16 (0.3125)" in err
    totals = json.loads(out)["totals"]
    assert totals["mults"] == pytest.approx(11 / 16 * 4 * V + 5 / 16 * (8 + 4 * V))


def test_cli_perplexity(capsys: pytest.CaptureFixture, lm_file: Path, files: tuple[Path, Path]) -> None:
    tokens, vocab = files
    code, out, err = run(capsys, f"{lm_file}:uniform", "--track", "wikitext103", "--input-dtype", "long",
                         "--perplexity", tokens, "--vocab", vocab, "--seq-len", "4", "--format", "json")
    assert code == 0, err
    # uniform over V = 7 outputs: perplexity 7, below 35 under both readings (official_rules.md §1.1)
    notes = json.loads(out)["notes"]
    assert any("perplexity 7.0000: passes the FAQ reading (<= 35), passes the overview reading (< 35)" in n
               and "16 tokens" in n for n in notes), notes


@pytest.mark.parametrize("extra, message", [
    (["--measure-paths", "TOKENS"], "--measure-paths needs --vocab"),
    (["--perplexity", "TOKENS"], "--perplexity needs --vocab"),
    (["--vocab", "VOCAB"], "--vocab is used with --measure-paths or --perplexity"),
    (["--seq-len", "4"], "--seq-len is used with --perplexity"),
    (["--perplexity", "TOKENS", "--vocab", "VOCAB", "--seq-len", "0"], "--seq-len must be positive"),
    (["--measure-paths", "TOKENS", "--vocab", "VOCAB", "--path-fraction", "head=0.5"],
     "give --path-fraction, --measure-exits or --measure-paths, not two"),
    (["--measure-paths", "TOKENS", "--vocab", "VOCAB", "--measure-exits", "DIR"],
     "give --path-fraction, --measure-exits or --measure-paths, not two"),
    (["--measure-paths", "NOPE", "--vocab", "VOCAB"], "cannot read token file .*NOPE"),
    (["--perplexity", "TOKENS", "--vocab", "NOPE"], "cannot read vocabulary file .*NOPE"),
])
def test_cli_errors(capsys: pytest.CaptureFixture, lm_file: Path, files: tuple[Path, Path], tmp_path: Path,
                    extra: list[str], message: str) -> None:
    tokens, vocab = files
    subst = {"TOKENS": tokens, "VOCAB": vocab, "DIR": tmp_path, "NOPE": tmp_path / "NOPE"}
    code, _, err = run(capsys, f"{lm_file}:two_bin", "--track", "wikitext103", "--input-dtype", "long", *[subst.get(a, a) for a in extra])
    assert code == 2
    assert re.search(message, one_line_error(err)), err


def test_cli_model_without_route(capsys: pytest.CaptureFixture, lm_file: Path, files: tuple[Path, Path]) -> None:
    tokens, vocab = files
    code, _, err = run(capsys, f"{lm_file}:uniform", "--track", "wikitext103", "--input-dtype", "long", "--measure-paths", tokens,
                       "--vocab", vocab)
    assert code == 2
    assert "Uniform has no paths()" in one_line_error(err)
