"""Per-tensor sparsity globs: one that matches no creditable weight (conv/linear/matmul weights, official_rules.md
§2.2) of any capture path is an error, as a precision config's unmatched layer glob is (``allow_unmatched`` /
``--allow-unmatched`` turns it into a warning note); score(), Scorer.score and the CLI share the check."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from scorer import Scorer, score
from scorer.cli import main
from scorer.errors import ScorerError

SHAPE = (1, 16)
#: Linear(16, 8) at 16 bits: dense (128 + 8) x 16; '0': 0.5 keeps 64 weights at 16 bits, a 128-bit mask and
#: the dense bias (official_rules.md §2.2: a sparse tensor stores its nonzeros plus 1 mask bit per element).
DENSE = (128 + 8) * 16
HALF = 64 * 16 + 128 + 8 * 16


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 8))


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_matching_glob_applies_on_every_capture(capture):
    for sparsity in ({"0": 0.5}, {"0.weight": 0.5}, {"*": 0.5}, "0:0.5", "uniform:0.5", 0.5):
        report = score(_net(), SHAPE, bits=16, sparsity=sparsity, capture=capture)
        assert report.totals["param_bits"] == HALF, sparsity
        assert not any("WARNING" in n for n in report.notes)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
@pytest.mark.parametrize("sparsity", [{"fc": 0.5}, "fc:0.5", {"O": 0.5}, {"0.bias": 0.5}, {"0": 0.5, "fc*": 0.7}])
def test_unmatched_or_bias_only_glob_raises(capture, sparsity):
    # '0.bias' names a real parameter, but a bias is never credited (§2.2): it cannot change the score
    with pytest.raises(ScorerError) as exc:
        score(_net(), SHAPE, bits=16, sparsity=sparsity, capture=capture)
    message = str(exc.value)
    assert "'0'" not in message and "0.weight" in message and "allow_unmatched" in message
    assert any(f"'{g}'" in message for g in ("fc", "O", "0.bias", "fc*"))


def test_allow_unmatched_is_a_note_and_the_rest_applies():
    report = score(_net(), SHAPE, bits=16, sparsity={"0": 0.5, "fc": 0.7}, allow_unmatched=True)
    assert report.totals["param_bits"] == HALF
    warnings = [n for n in report.notes if n.startswith("WARNING: sparsity:")]
    assert len(warnings) == 1 and "'fc'" in warnings[0] and "0.weight" in warnings[0]
    dense = score(_net(), SHAPE, bits=16, sparsity={"fc": 0.5}, allow_unmatched=True)
    assert dense.totals["param_bits"] == DENSE


class _TwoHeads(nn.Module):
    """An early-exit model whose heads are each used by one path only."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 4)
        self.head_exit = nn.Linear(4, 10)
        self.head_final = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_final(self.stem(x))

    def exit_paths(self) -> dict[str, nn.Module]:
        return {"exit": _Path(self, "head_exit"), "final": _Path(self, "head_final")}


class _Path(nn.Module):
    def __init__(self, net: _TwoHeads, head: str) -> None:
        super().__init__()
        self.stem = net.stem
        setattr(self, head, getattr(net, head))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head)(self.stem(x))


def test_a_glob_used_by_any_exit_path_is_matched():
    fractions = {"exit": 0.5, "final": 0.5}
    report = score(_TwoHeads(), SHAPE, sparsity={"head_exit": 0.5}, exit_fractions=fractions)
    # head_exit.weight: 20 of 40 kept at 32 bits + a 40-bit mask; stem 64 + 4, head_final 40 + 10 dense
    assert report.totals["param_bits"] == (20 + 10) * 32 + 40 + (64 + 4 + 40 + 10) * 32
    with pytest.raises(ScorerError, match="'head_none'"):
        score(_TwoHeads(), SHAPE, sparsity={"head_none": 0.5}, exit_fractions=fractions)


def test_scorer_checks_as_score_does():
    sc = Scorer(_net(), SHAPE)
    assert sc.score(bits=16, sparsity={"0": 0.5}).totals == score(_net(), SHAPE, bits=16, sparsity={"0": 0.5}).totals
    with pytest.raises(ScorerError, match="'fc'"):
        sc.score(bits=16, sparsity={"fc": 0.5})
    report = sc.score(bits=16, sparsity={"fc": 0.5}, allow_unmatched=True)
    assert report.totals["param_bits"] == DENSE and any("'fc'" in n for n in report.notes)
    assert sc.sweep([[16]], [[16]], [[0.5]]).loc[0, "param_bits"] == 64 * 16 + 128 + 8 * 32  # the bias at 32


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "sparse_net.py"
    path.write_text("import torch.nn as nn\n\n\ndef build():\n    return nn.Sequential(nn.Linear(16, 8), nn.ReLU())\n")
    return path


@pytest.mark.parametrize("glob", ["0.bias", "1"])
def test_cli_names_the_capture_uses(net_file, capsys, glob):
    # '0.bias' is a parameter and '1' (the ReLU) a module of the model, but neither holds a creditable weight
    assert main([f"{net_file}:build", "--input-shape", "1,16", "--sparsity", f"{glob}:0.5"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"'{glob}'" in err and "--allow-unmatched" in err


def test_cli_allow_unmatched_warns_on_stderr_and_in_the_report(net_file, capsys):
    assert main([f"{net_file}:build", "--input-shape", "1,16", "--bits", "16", "--sparsity", "0:0.5,fc:0.7",
                 "--allow-unmatched", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if "'fc'" in ln]
    assert len(lines) == 1 and lines[0].startswith("micronet-score: warning: sparsity:")
    report = json.loads(out)
    assert report["totals"]["param_bits"] == HALF and any("'fc'" in n for n in report["notes"])


def test_named_layers():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), relu=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(16, 2)))
    with pytest.raises(ScorerError, match=r"'cnov\*'.*conv\.weight, fc\.weight"):
        score(net, (1, 3, 4, 4), sparsity={"cnov*": 0.5})


class TiedLM(nn.Module):
    """A 100 x 16 embedding table tied to the 16 -> 100 output layer, with a 16 -> 16 layer between."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder, self.fc, self.decoder = nn.Embedding(100, 16), nn.Linear(16, 16), nn.Linear(16, 100, bias=False)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens):
        return self.decoder(self.fc(self.encoder(tokens)))


#: per token at s = 0.5 on the table: 800 values x 16 bits + a 1600-bit mask, and fc dense (272 x 16); the decoder
#: multiplies the 800 nonzeros, fc 256 products
TIED_HALF = (800 * 16 + 1600 + 272 * 16, 800 + 256)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_glob_sets_a_tied_tensors_sparsity_at_every_use(capture):
    """One tensor, one sparsity (official_rules.md §4.2: the same s for its storage and its products), whichever
    name or layer the glob names: the decoder's layer or second name once halved the products while the table was
    stored dense with no mask, the encoder's once stored it sparse while the decoder multiplied it dense."""
    for sparsity in ({"decoder": 0.5}, {"encoder": 0.5}, {"decoder.weight": 0.5}, {"encoder.weight": 0.5}):
        t = score(TiedLM(), (1, 1), input_dtype="long", track="wikitext103", bits=16, sparsity=sparsity,
                  capture=capture).totals
        assert (t["param_bits"], t["mults"]) == TIED_HALF, sparsity


class ReadFirstBySum(nn.Module):
    """A 16 -> 8 weight with half its entries zero, read first by a sum (which credits no zeros), then by its layer."""

    def __init__(self, sum_first: bool):
        super().__init__()
        self.fc, self.sum_first = nn.Linear(16, 8, bias=False), sum_first
        with torch.no_grad():
            self.fc.weight[:, :8] = 0

    def forward(self, x):
        if self.sum_first:
            return self.fc.weight.sum() + self.fc(x)
        return self.fc(x) + self.fc.weight.sum()


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_sparse_tensor_is_stored_sparse_whichever_op_reads_it_first(capture):
    """64 nonzeros x 16 bits + a 128-bit mask in either order (the sum read first once stored it dense)."""
    for sum_first in (True, False):
        t = score(ReadFirstBySum(sum_first), SHAPE, bits=16, capture=capture).totals
        assert t["param_bits"] == 64 * 16 + 128, sum_first


def test_the_sweep_of_a_tied_model_equals_score():
    """Scorer.sweep on the tied table: the later layer's density is the tensor's, as score() gives it."""
    sc = Scorer(TiedLM(), (1, 1), input_dtype="long", track="wikitext103")
    assert sc.layer_names == ["encoder", "fc", "decoder"]
    w, a, d = [[8, 32, 4], [32, 8, 8]], [[8, 8, 32], [32, 16, 8]], [[0.3, 1.0, 0.5], [1.0, 0.25, 0.75]]
    table = sc.sweep(weight_bits=w, act_bits=a, density=d)
    for k in range(2):
        layers = {n: {"weight": w[k][i], "act": a[k][i]} for i, n in enumerate(sc.layer_names)}
        want = score(TiedLM(), (1, 1), input_dtype="long", track="wikitext103",
                     precision={"default": {"weight": 32, "act": 32, "acc": 32}, "layers": layers},
                     sparsity={n: 1 - d[k][i] for i, n in enumerate(sc.layer_names)}).totals
        for col in ("param_bits", "mults", "adds", "ops"):
            assert table.iloc[k][col] == pytest.approx(want[col], rel=1e-12), (k, col)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_a_tied_tensor_has_one_width(capture):
    """A width set on either layer reading the tied table is the table's: stored at 8 bits (1600 x 8) and
    multiplied at max(8, the 8-bit activations) by the decoder, whichever layer the config names (the decoder's
    entry once left the table stored at 32 bits while multiplying it at 8, the encoder's the reverse)."""
    for layer in ("encoder", "decoder"):
        precision = {"default": {"weight": 32, "act": 8, "acc": 32}, "layers": {layer: {"weight": 8}}}
        rep = score(TiedLM(), (1, 1), input_dtype="long", track="wikitext103", precision=precision, capture=capture)
        rows = rep.layers.set_index("module")
        assert rows.loc["encoder", "param_bits"] == 1600 * 8, layer
        assert rows.loc["decoder", "mul_bits"] == 8, layer


class TwoPathTied(nn.Module):
    """A 32 x 8 table tied to the output layer; path "a" reads it through the embedding only, path "b" both."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = nn.Embedding(32, 8), nn.Linear(8, 32, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(self.emb(ids))

    def paths(self):
        return {"a": _EmbeddingOnly(self.emb), "b": self}


class _EmbeddingOnly(nn.Module):
    def __init__(self, emb):
        super().__init__()
        self.emb = emb

    def forward(self, ids):
        return self.emb(ids).sum(-1)


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_one_sparsity_and_width_per_tensor_over_every_path(capture):
    """The decision is per tensor over all paths, not per path: 'out' (path b only) sets the table's sparsity where
    path a stores it (128 values x 32 bits + a 256-bit mask), and path b multiplies half of it (0.5 x 0.5 x 256
    products per token); 'out': weight 8 stores it at 8 bits (256 x 8) though path a never reads 'out'."""
    ids = torch.randint(0, 32, (1, 4))
    kw = dict(example_inputs=(ids,), track="wikitext103", path_fractions={"a": 0.5, "b": 0.5}, capture=capture)
    t = score(TwoPathTied(), sparsity={"out": 0.5}, **kw).totals
    assert (t["param_bits"], t["mults"]) == (128 * 32 + 256, 0.5 * 128)
    t = score(TwoPathTied(), precision={"default": {"weight": 32, "act": 32, "acc": 32},
                                        "layers": {"out": {"weight": 8}}}, **kw).totals
    assert t["param_bits"] == 256 * 8


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_the_last_layer_setting_a_tied_width_wins(capture):
    """Two layers set the table's width: the one that runs last (the decoder) gives it, whatever the config's order
    (README: in the order the layers first run): 1600 x 4 stored, the decoder multiplying at max(4, 32-bit act)."""
    for layers in ({"encoder": {"weight": 8}, "decoder": {"weight": 4}},
                   {"decoder": {"weight": 4}, "encoder": {"weight": 8}}):
        rep = score(TiedLM(), (1, 1), input_dtype="long", track="wikitext103", capture=capture,
                    precision={"default": {"weight": 32, "act": 32, "acc": 32}, "layers": layers})
        assert rep.layers.set_index("module").loc["encoder", "param_bits"] == 1600 * 4


class TiedWithRootProduct(TiedLM):
    """The tied LM whose root also multiplies by a 16 x 16 matrix of its own (a layer named '')."""

    def __init__(self):
        super().__init__()
        self.P = nn.Parameter(torch.randn(100, 16))

    def forward(self, tokens):
        return super().forward(tokens) @ self.P


def test_a_root_glob_does_not_reach_a_tied_tables_aliases():
    """'' names the root layer (its own product with P), not the tied table's second name: P half sparse (800 of
    1600), the table dense."""
    rep = score(TiedWithRootProduct(), (1, 1), input_dtype="long", track="wikitext103", sparsity={"": 0.5})
    rows = rep.layers[rep.layers.weight_numel > 0].set_index("module")
    assert rows.loc["", "nonzeros"] == 800 and rows.loc["encoder", "nonzeros"] == 1600


class TiedThrice(nn.Module):
    """A 32 x 8 table read by emb, out1 and out2; path "short" runs emb -> out1, path "full" emb -> out1 -> out2."""

    def __init__(self):
        super().__init__()
        self.emb, self.out1, self.out2 = nn.Embedding(32, 8), nn.Linear(8, 32, bias=False), nn.Linear(8, 32, bias=False)
        self.out1.weight = self.out2.weight = self.emb.weight

    def forward(self, ids):
        return self.out2(self.out1(self.emb(ids))[..., :8])

    def paths(self):
        return {"full": self, "short": _Short(self)}


class _Short(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.emb, self.out1 = net.emb, net.out1

    def forward(self, ids):
        return self.out1(self.emb(ids))


def test_a_tied_width_follows_the_run_order_whatever_the_paths():
    """out2 runs last (README: in the order the layers first run), so its 4 bits are the table's (256 x 4), with one
    path or two; a layer running again in a later path does not move it (it gave out1's 8)."""
    precision = {"default": {"weight": 32, "act": 32, "acc": 32},
                 "layers": {"out1": {"weight": 8}, "out2": {"weight": 4}}}
    ids = torch.randint(0, 32, (1, 4))
    for fractions in (None, {"full": 0.5, "short": 0.5}):
        t = score(TiedThrice(), example_inputs=(ids,), track="wikitext103", precision=precision,
                  path_fractions=fractions).totals
        assert t["param_bits"] == 256 * 4, fractions
