"""Language-model data for the WikiText-103 track: token files, measured path fractions, perplexity.

Token files (``wiki.test.tokens``): every line, empty ones included, is its whitespace-separated tokens
followed by ``<eos>``. This is the convention of the AWD-LSTM reader (salesforce/awd-lstm-lm, ``data.py``
``Corpus.tokenize``: ``words = line.split() + ['<eos>']`` for every line) and of Transformer-XL
(kimiyoung/transformer-xl, ``pytorch/utils/vocabulary.py``: ``encode_file(..., add_eos=True)`` tokenises each
line as ``line.strip().split() + ['<eos>']``). The WikiText-103 test split has 245,569 tokens (Merity et al.
2016, Table 1), the total of MIT-HAN-Lab's bin counts (team_scores.md §2.5); that both count one ``<eos>`` per
line, as this reader does, is our inference [INF], not checked against the file (not on this machine).

Vocabulary files: one token per line, the (0-based) line number is its id. A token of the text that is not
in the vocabulary reads as ``<unk>``; without ``<unk>`` in the vocabulary that is an error.

Online inference (official_rules.md §1.1: batch of one sequence, the next token predicted before it is
received): ``perplexity`` feeds the stream in chunks of shape (1, T) and scores each position's prediction of
the token that follows it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scorer.errors import ScorerError
from scorer.quality import THRESHOLDS

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

EOS = "<eos>"
UNK = "<unk>"


# --------------------------------------------------------------------------- files


def _lines(path: str | Path, what: str) -> list[str]:
    """The lines of ``path`` as Python's text mode reads them (UTF-8, universal newlines, as the AWD-LSTM and
    Transformer-XL readers open the file); ScorerError naming the file (and line) otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ScorerError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise ScorerError(f"{what} file {path} is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = data[: exc.start].count(b"\n") + 1
        raise ScorerError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return list(io.StringIO(text, newline=None))


def read_vocab(path: str | Path) -> dict[str, int]:
    """``{token: id}`` from a vocabulary file: one token per line, the 0-based line number is the id."""
    vocab: dict[str, int] = {}
    for number, line in enumerate(_lines(path, "vocabulary"), 1):
        fields = line.split()
        if len(fields) != 1:
            got = "an empty line" if not fields else f"{len(fields)} whitespace-separated fields"
            raise ScorerError(f"{path}:{number}: a vocabulary line holds exactly one token (its line number is "
                              f"its id), got {got}")
        token = fields[0]
        if token in vocab:
            raise ScorerError(f"{path}:{number}: token {token!r} repeats line {vocab[token] + 1}")
        vocab[token] = number - 1
    return vocab


def read_tokens(path: str | Path, vocab: dict[str, int]) -> torch.Tensor:
    """The token ids of a WikiText token file as a 1-D LongTensor (each line's tokens, then ``<eos>``)."""
    import torch

    if EOS not in vocab:
        raise ScorerError(f"the vocabulary has no {EOS!r}, which ends every line of {path}")
    eos, unk = vocab[EOS], vocab.get(UNK)
    ids: list[int] = []
    words = 0
    for number, line in enumerate(_lines(path, "token"), 1):
        for token in line.split():
            idx = vocab.get(token, unk)
            if idx is None:
                raise ScorerError(f"{path}:{number}: token {token!r} is not in the vocabulary, which has no "
                                  f"{UNK!r} to stand for it")
            ids.append(idx)
            words += 1
        ids.append(eos)
    if words == 0:
        raise ScorerError(f"token file {path} has only empty lines")
    return torch.tensor(ids, dtype=torch.long)


def _stream(tokens: Any) -> torch.Tensor:
    """``tokens`` as a 1-D long tensor (a (1, N) batch of one sequence is flattened)."""
    import torch

    t = torch.as_tensor(tokens)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1 or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ScorerError(f"tokens must be a 1-D integer tensor (or one sequence of shape (1, N)), got "
                          f"{tuple(t.shape)} {t.dtype}")
    if t.numel() and int(t.min()) < 0:
        raise ScorerError("token ids must be non-negative")
    return t.long()


# --------------------------------------------------------------------------- path fractions


class PathFractions(dict):
    """``{path: share of tokens}`` (a dict, usable as ``path_fractions=``) with the integer ``counts``."""

    def __init__(self, counts: dict[str, int]):
        self.counts = dict(counts)
        self.total = sum(self.counts.values())
        super().__init__({name: c / self.total for name, c in self.counts.items()})

    def describe(self) -> str:
        """``"head=198232/245569 (0.8072), ..."``."""
        return ", ".join(f"{k}={c}/{self.total} ({self[k]:.4f})" for k, c in self.counts.items())


def path_names(model: nn.Module) -> list[str]:
    """``list(model.paths())`` (``exit_paths()`` is the early-exit spelling): scorer.api.model_paths."""
    from scorer.api import model_paths

    return list(model_paths(model))


def measure_path_fractions(model: nn.Module, tokens: Any, batch: int = 8192) -> PathFractions:
    """Share of tokens taking each path: ``model.route(chunk)`` over the stream in (1, ``batch``) chunks.

    ``route`` returns, per token of the chunk, the index into ``list(model.paths())`` of the path it takes.
    The result maps path names to fractions; ``.counts`` holds the integer counts and ``.total`` their sum.
    """
    import torch

    from scorer.capture import eval_mode

    names = path_names(model)
    route = getattr(model, "route", None)
    if not callable(route):
        raise ScorerError(f"{type(model).__name__} has no route(tokens) -> path index per token, so path "
                          "fractions cannot be measured over data: pass them by hand")
    if batch <= 0:
        raise ScorerError(f"batch must be positive, got {batch}")
    stream = _stream(tokens)
    if stream.numel() == 0:
        raise ScorerError("no tokens to measure path fractions on")
    counts = torch.zeros(len(names), dtype=torch.long)
    with torch.no_grad(), eval_mode(model):
        for start in range(0, stream.numel(), batch):
            chunk = stream[start:start + batch].view(1, -1)
            idx = torch.as_tensor(route(chunk))
            if idx.numel() != chunk.numel() or idx.is_floating_point() or idx.is_complex():
                raise ScorerError(f"{type(model).__name__}.route() must give one integer path index per token: "
                                  f"got {tuple(idx.shape)} {idx.dtype} for {chunk.numel()} tokens")
            idx = idx.reshape(-1).long()
            bad = (idx < 0) | (idx >= len(names))
            if bool(bad.any()):
                raise ScorerError(f"{type(model).__name__}.route() gave path index {int(idx[bad][0])}; "
                                  f"paths() has {len(names)}: {names}")
            counts += torch.bincount(idx, minlength=len(names))
    return PathFractions({name: int(c) for name, c in zip(names, counts.tolist(), strict=True)})


# --------------------------------------------------------------------------- perplexity


def _logits_and_state(out: Any, model: nn.Module) -> tuple[torch.Tensor, Any]:
    import torch

    if isinstance(out, (tuple, list)):
        if not out:
            raise ScorerError(f"{type(model).__name__}.forward returned an empty {type(out).__name__}")
        logits, state = out[0], (out[1] if len(out) > 1 else None)
    else:
        logits, state = out, None
    if not isinstance(logits, torch.Tensor):
        raise ScorerError(f"{type(model).__name__}.forward must return logits or log-probabilities (1, T, V) "
                          f"(or a tuple starting with them), got {type(logits).__name__}")
    return logits, state


def perplexity(model: nn.Module, tokens: Any, seq_len: int = 128, max_tokens: int | None = None) -> float:
    """exp(mean negative log-likelihood) of ``model`` on a token stream, batch of one sequence.

    The stream is fed in chunks ``x = tokens[i:i+T]`` of shape (1, T), T <= ``seq_len``; position t of a chunk
    is scored on the token that follows it, so N tokens give N - 1 predictions (the first token has no
    context). Contract of ``model.forward``:
      - it returns logits or log-probabilities of shape (1, T, V) (log-softmax is applied either way: it leaves
        log-probabilities unchanged), or a tuple whose first element is that;
      - if the tuple has a second element that is not None, it is state (an LSTM's (h, c), a memory) and the
        next chunk is called as ``model(x, state)``; the first chunk is called as ``model(x)``.
    ``max_tokens`` limits the stream to its first N tokens. A prediction of probability 0 (or NaN) is an error.
    """
    import torch

    from scorer.capture import eval_mode

    if seq_len <= 0:
        raise ScorerError(f"seq_len must be positive, got {seq_len}")
    stream = _stream(tokens)
    if max_tokens is not None:
        stream = stream[:max_tokens]
    n = stream.numel()
    if n < 2:
        raise ScorerError(f"perplexity needs at least 2 tokens (one prediction), got {n}")
    nll = torch.zeros((), dtype=torch.float64)
    state = None
    name = type(model).__name__
    with torch.no_grad(), eval_mode(model):
        for start in range(0, n - 1, seq_len):
            end = min(start + seq_len, n - 1)
            x = stream[start:end].view(1, -1)
            target = stream[start + 1:end + 1]
            logits, state = _logits_and_state(model(x) if state is None else model(x, state), model)
            t = end - start
            if logits.dim() != 3 or tuple(logits.shape[:2]) != (1, t):
                raise ScorerError(f"{name}.forward on input (1, {t}) must give (1, {t}, V) logits or "
                                  f"log-probabilities, got {tuple(logits.shape)}")
            vocab = logits.shape[-1]
            if int(target.max()) >= vocab:
                raise ScorerError(f"token id {int(target.max())} is outside the model's {vocab} outputs")
            logp = torch.log_softmax(logits[0].double(), dim=-1).gather(1, target.view(-1, 1)).view(-1)
            if not bool(torch.isfinite(logp).all()):
                bad = int((~torch.isfinite(logp)).nonzero()[0, 0])
                raise ScorerError(f"{name} gives token {int(target[bad])} at stream position {start + bad + 1} "
                                  f"log-probability {float(logp[bad])}: perplexity would be infinite or NaN")
            nll -= logp.sum()
    return math.exp(float(nll) / (n - 1))


# --------------------------------------------------------------------------- quality


@dataclass(frozen=True)
class LMQuality:
    """A perplexity against the WikiText-103 threshold under both official wordings (official_rules.md §1.1)."""

    perplexity: float
    threshold: float
    passes_faq: bool  # FAQ: "35 or below"
    passes_overview: bool  # overview (index.md): "below 35"

    def describe(self) -> str:
        def verdict(ok: bool) -> str:
            return "passes" if ok else "fails"

        t = f"{self.threshold:g}"
        return (f"perplexity {self.perplexity:.4f}: {verdict(self.passes_faq)} the FAQ reading (<= {t}), "
                f"{verdict(self.passes_overview)} the overview reading (< {t}) (official_rules.md §1.1)")


def quality(ppl: float) -> LMQuality:
    """``ppl`` against the WikiText-103 threshold: FAQ ``ppl <= 35``, overview ``ppl < 35``, no rounding."""
    limit = THRESHOLDS["wikitext103"].value
    if math.isnan(ppl):
        raise ScorerError("perplexity is NaN")
    return LMQuality(ppl, limit, passes_faq=ppl <= limit, passes_overview=ppl < limit)
