"""Language-model inputs and per-token accounting on the WikiText-103 track (issue 9 items 1–3).

official_rules.md §1.1: on WikiText-103 "counts are per token", batch size 1 sequence, online inference.
Expected numbers are arithmetic on the models below (E embedding width, H LSTM hidden, V vocabulary):
  under ``flops`` (2 per multiply-accumulate, peers.md), one token through Embedding → LSTM(E, H) → Linear(H, V)
  costs 2·(4H·E + 4H·H + H·V): the gate matmuls W_ih x and W_hh h run at every step, the decoder once per
  token; the lookup costs nothing. Parameters: V·E (tied table, once) + 4H·E + 4H·H + 2·4H (b_ih, b_hh) + V.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn as nn

from scorer import score
from scorer.cli import main
from scorer.errors import ScorerError
from scorer.inputs import make_inputs, parse_dtype, token_count

V, E = 50, 16  # vocabulary, embedding = hidden (tied)

LM_SRC = textwrap.dedent(
    f"""
    import torch.nn as nn


    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding({V}, {E})
            self.rnn = nn.LSTM({E}, {E}, batch_first=True)
            self.decoder = nn.Linear({E}, {V})
            self.decoder.weight = self.embed.weight  # tied

        def forward(self, tokens):
            out, _ = self.rnn(self.embed(tokens))
            return self.decoder(out)


    def build():
        return LM()
    """
)


def _lm() -> nn.Module:
    ns: dict = {}
    exec(LM_SRC, ns)  # noqa: S102 - the test's own source
    return ns["build"]()


FLOPS_PER_TOKEN = 2 * (4 * E * E + 4 * E * E + E * V)
PARAMS = V * E + 4 * E * E + 4 * E * E + 2 * 4 * E + V


@pytest.mark.parametrize("seq", [1, 8, 16])
def test_lstm_lm_ops_per_token_do_not_depend_on_the_sequence_length(seq: int) -> None:
    rep = score(_lm(), input_shape=(1, seq), input_dtype="long", track="wikitext103", rules="flops")
    assert rep.settings["tokens"] == seq
    assert rep.totals["ops"] == pytest.approx(FLOPS_PER_TOKEN, rel=1e-12)
    assert rep.totals["params"] == PARAMS  # the tied table once
    assert rep.excluded == []


def test_batch_of_sequences_divides_by_every_token() -> None:
    rep = score(_lm(), input_shape=(3, 5), input_dtype="long", track="wikitext103", rules="flops")
    assert rep.settings["tokens"] == 15
    assert rep.totals["ops"] == pytest.approx(FLOPS_PER_TOKEN, rel=1e-12)


def test_cli_scores_an_lstm_lm_file_per_token(tmp_path, capsys) -> None:
    path = tmp_path / "lm.py"
    path.write_text(LM_SRC)
    totals = {}
    for seq in (8, 16):
        code = main([f"{path}:build", "--track", "wikitext103", "--input-shape", f"1,{seq}", "--input-dtype",
                     "long", "--rules", "flops", "--format", "json"])
        assert code == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["settings"]["tokens"] == seq
        assert doc["settings"]["input_dtypes"] == ["int64"]
        totals[seq] = doc["totals"]
    assert totals[8]["ops"] == pytest.approx(totals[16]["ops"], rel=1e-12)
    assert totals[8]["ops"] == pytest.approx(FLOPS_PER_TOKEN, rel=1e-12)
    assert totals[8]["params"] == PARAMS


def test_cli_long_dtype_without_shape_takes_the_track_default(tmp_path, capsys) -> None:
    path = tmp_path / "lm.py"
    path.write_text(LM_SRC)
    assert main([f"{path}:build", "--track", "wikitext103", "--input-dtype", "long", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["input_shapes"] == [[1, 1]]
    assert doc["settings"]["tokens"] == 1
    # and without --input-dtype too: wikitext103's default input is one token id
    assert main([f"{path}:build", "--track", "wikitext103", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["input_dtypes"] == ["int64"]


def test_cli_rejects_more_dtypes_than_shapes(tmp_path, capsys) -> None:
    path = tmp_path / "lm.py"
    path.write_text(LM_SRC)
    code = main([f"{path}:build", "--input-shape", "1,4", "--input-dtype", "long", "--input-dtype", "long"])
    assert code == 2
    assert "one shape per input" in capsys.readouterr().err


class StepLM(nn.Module):
    """One new token plus the recurrent state as inputs (a step model): one token per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.cell = nn.LSTMCell(E, E)
        self.decoder = nn.Linear(E, V)

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h, c = self.cell(self.embed(token).squeeze(1), (h, c))
        return self.decoder(h)


def test_step_model_with_state_inputs_counts_one_token() -> None:
    rep = score(StepLM(), input_shape=[(1, 1), (1, E), (1, E)], input_dtype=["long", "float32", "float32"],
                track="wikitext103", rules="flops")
    assert rep.settings["tokens"] == 1
    assert rep.settings["input_dtypes"] == ["int64", "float32", "float32"]
    assert rep.totals["ops"] == pytest.approx(FLOPS_PER_TOKEN, rel=1e-12)
    # one token per forward, as the full-sequence LSTM LM above (same equations, same counts per token)
    seq = score(_lm(), input_shape=(1, 8), input_dtype="long", track="wikitext103", rules="micronet2019")
    step = score(StepLM(), input_shape=[(1, 1), (1, E), (1, E)], input_dtype="long", track="wikitext103")
    assert step.totals["mults"] == pytest.approx(seq.totals["mults"], rel=1e-12)
    assert step.totals["adds"] == pytest.approx(seq.totals["adds"], rel=1e-12)


def test_tokens_override_and_its_errors() -> None:
    rep = score(_lm(), input_shape=(1, 8), input_dtype="long", track="wikitext103", rules="flops", tokens=4)
    assert rep.totals["ops"] == pytest.approx(2 * FLOPS_PER_TOKEN, rel=1e-12)  # 8 tokens' work over 4
    with pytest.raises(ScorerError, match="per-token track"):
        score(_lm(), input_shape=(1, 8), input_dtype="long", tokens=4)
    with pytest.raises(ScorerError, match="positive integer"):
        score(_lm(), input_shape=(1, 8), input_dtype="long", track="wikitext103", tokens=0)


def test_token_ids_are_drawn_inside_the_smallest_vocabulary() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Embedding(1000, 4)
            self.b = nn.Embedding(7, 4)

    (ids,) = make_inputs(Two(), [(4, 256)], [torch.long])
    assert ids.dtype == torch.int64 and ids.device.type == "cpu"
    assert int(ids.min()) >= 0 and int(ids.max()) < 7
    assert len(set(ids.flatten().tolist())) == 7  # every id of the vocabulary appears in 1024 draws
    again = make_inputs(Two(), [(4, 256)], [torch.long])[0]
    assert torch.equal(ids, again)  # a fixed seed: the same ids on every run


def test_dtype_names_and_errors() -> None:
    assert parse_dtype("long") is torch.int64 and parse_dtype("torch.int32") is torch.int32
    assert parse_dtype("BFLOAT16") is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16
    with pytest.raises(ScorerError, match="unknown input dtype"):
        parse_dtype("complex64")
    with pytest.raises(ScorerError, match="input dtypes for"):
        score(_lm(), input_shape=(1, 4), input_dtype=["long", "long"], track="wikitext103")
    with pytest.raises(ScorerError, match="not with example_inputs"):
        score(_lm(), example_inputs=torch.zeros(1, 4, dtype=torch.long), input_dtype="long")


def test_token_count_without_integer_inputs_reads_batch_and_sequence() -> None:
    assert token_count((torch.empty(2, 5, 16, device="meta"),)) == 10
    assert token_count((torch.empty(5, 16, device="meta"),)) == 5
    assert token_count((torch.empty(16, device="meta"),)) == 1
    assert token_count((torch.empty(1, 3, device="meta"), torch.zeros(2, 6, dtype=torch.long))) == 12


class Bins(nn.Module):
    """A two-bin adaptive input: ids below 10 read a 16-wide table, the rest a 4-wide one projected to 16.
    Each path computes the model for tokens of one bin; ``route`` says which bin a token takes."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Embedding(10, 16)
        self.tail = nn.Embedding(40, 4)
        self.proj = nn.Linear(4, 16, bias=False)
        self.out = nn.Linear(16, 50)

    def paths(self) -> dict[str, nn.Module]:
        return {"bin0": _Path(self, 0), "bin1": _Path(self, 1)}

    def route(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens >= 10).long()


class _Path(nn.Module):
    def __init__(self, model: Bins, bin_: int) -> None:
        super().__init__()
        self.model, self.bin = model, bin_

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.head(tokens.clamp(max=9)) if self.bin == 0 else m.proj(m.tail((tokens - 10).clamp(min=0)))
        return m.out(x)


def test_weighted_paths_give_each_bin_its_share_and_store_every_table_once() -> None:
    # flops per token: out 2·16·50 on every path; bin1 adds the projection 2·4·16; the clamps cost nothing
    # under flops. Fractions 0.75 / 0.25: 1600 + 0.25·128 = 1632.
    rep = score(Bins(), track="wikitext103", rules="flops", path_fractions={"bin0": 0.75, "bin1": 0.25})
    assert rep.totals["ops"] == pytest.approx(2 * 16 * 50 + 0.25 * 2 * 4 * 16, rel=1e-12)
    assert rep.totals["params"] == 10 * 16 + 40 * 4 + 4 * 16 + 16 * 50 + 50  # both bins' tables, once
    assert rep.excluded == []
    assert rep.settings["path_fractions"] == {"bin0": 0.75, "bin1": 0.25}
    # one path left out takes the rest
    rest = score(Bins(), track="wikitext103", rules="flops", path_fractions={"bin1": 0.25})
    assert rest.totals["ops"] == rep.totals["ops"]


def test_path_fraction_errors_name_the_paths() -> None:
    with pytest.raises(ScorerError, match=r"unknown path\(s\) \['bin9'\]"):
        score(Bins(), track="wikitext103", path_fractions={"bin9": 1.0})
    with pytest.raises(ScorerError, match="not both"):
        score(Bins(), track="wikitext103", path_fractions={"bin0": 1.0}, exit_fractions={"bin0": 1.0})
    with pytest.raises(ScorerError, match="no paths"):
        score(_lm(), track="wikitext103", path_fractions={"a": 1.0})
