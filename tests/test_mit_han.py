"""MIT-HAN-Lab's WikiText-103 entry: the step model ``mit_han_transformer_xl`` under ``mit_han2019`` reproduces
team_scores.md §2.5 (published notebook totals), and ``micronet2019`` counts the faithful computation.

Expected numbers are quoted from team_scores.md §2.5 / §1.3 or written as the notebook's arithmetic
(`mit-han-lab/neurips-micronet` @ 9668d5b~1 `micronet_challenge-wikitext_103-1.ipynb` cell 4).
"""

from __future__ import annotations

import json

import pytest
import torch

from reference_models.registry import build_reference, get_reference
from reference_models.teams.mit_han_transformer_xl import (
    BIN_FRACTIONS,
    BIN_STARTS,
    STEP_INPUT_DTYPES,
    STEP_INPUT_SHAPES,
    TOKEN_BIN_COUNTS,
)
from reference_models.teams.nonzeros import apply_nonzero_counts, load_nonzero_table
from scorer.api import score

DOT_KINDS = ("linear", "matmul")
OTHER_KINDS = ("layernorm", "act:softmax", "act:relu")  # the notebook's FP32 "others"
TOTAL_PARAMS = 8_296_023  # §2.5 "8,296,023 counted parameters"


def build(bits: int = 9):
    """The registered model (seeded weights), with no exact zero in any counted tensor."""
    model = build_reference("mit_han_transformer_xl", bits=bits)
    assert all(bool((p != 0).all()) for n, p in model.named_parameters() if ".ln" not in n)
    return model


@pytest.fixture(scope="module")
def model():
    return build()


def run(model, rules="mit_han2019", bits=9, capture="fx"):
    return score(model, input_shape=STEP_INPUT_SHAPES, input_dtype=STEP_INPUT_DTYPES, track="wikitext103",
                 bits=bits, rules=rules, path_fractions=BIN_FRACTIONS, capture=capture)


def notebook_counts() -> tuple[float, float, float]:
    """(matmuls, adds, others) per token, the notebook's cell 4 written out (dense: densities all 1)."""
    f = [c / sum(TOKEN_BIN_COUNTS) for c in TOKEN_BIN_COUNTS]
    mm = f[1] * 64 * 256 + f[2] * 4 * 256
    ad = f[1] * 63 * 256 + f[2] * 3 * 256
    n, c = 256, 97
    layer_mm = n * 576 + 24 * 8 * c + 24 * c + c * 24 * 8 + 192 * n + n * 768 + 768 * n
    layer_ad = ((n - 1) * 576 + 576 + 23 * 8 * c + 23 * c + c + (c - 1) * 24 * 8 + 191 * n + n
                + (n - 1) * 768 + 768 + 767 * n + n + n)
    ln = n + 2 * n + (n - 1) + 1 + n + n
    layer_other = 2 * ln + (3 * c - 1) + 768
    mm += 8 * layer_mm + n * 2 + n * 64 + n * 4 + 3500 * 256 + 21500 * 64 + 242735 * 4 + n * 2000
    ad += (8 * layer_ad + 255 * 2 + 2 + 255 * 64 + 255 * 4 + 255 * 3500 + 3500 + 63 * 21500 + 21500
           + 3 * 242735 + 242735 + 255 * 2000)
    other = 8 * layer_other + sum(3 * x - 1 for x in (3502, 21500, 242735)) + 3 * 2000 - 1
    return mm, ad, other


def split(report) -> tuple[float, float, float]:
    df = report.layers
    dot, other = df["kind"].isin(DOT_KINDS), df["kind"].isin(OTHER_KINDS)
    return (float(df.loc[dot, "mults"].sum()), float(df.loc[~other, "adds"].sum()),
            float(df.loc[other, "mults"].sum() + df.loc[other, "adds"].sum()))


def test_dense_counts_per_token(model):
    # §2.5: "matmuls 8,810,476.55309913 and adds 8,802,663.205372013 for every submission"; "others" 842,247
    mm, ad, other = split(run(model))
    assert mm == pytest.approx(8_810_476.55309913, rel=1e-12)
    assert ad == pytest.approx(8_802_663.205372013, rel=1e-12)
    assert other == pytest.approx(842_247, rel=1e-12)
    assert (mm, ad, other) == pytest.approx(notebook_counts(), rel=1e-12)
    assert run(model).settings["tokens"] == 1


def test_parameter_count_and_fixed_terms(model):
    masked = [p for n, p in model.named_parameters() if ".ln" not in n and "cache_" not in n]
    assert sum(p.numel() for p in masked) + 2 == TOTAL_PARAMS  # §2.5: cache scalars are the 2 unmasked
    t = run(model).layers
    # §2.5: "The mask size is 259,250.65625 in all three"; "quantisation size is 97.96875 (9-bit)"
    assert t["mask_bits"].sum() / 32 == 259_250.65625
    assert t.loc[t["kind"] == "quant", "param_bits"].sum() / 32 == 97.96875 == 57 * (1 + 23 / 32)
    # dense weights: every parameter's value at 9 bits
    values = (t["param_bits"].sum() - t["mask_bits"].sum() - t.loc[t["kind"] == "quant", "param_bits"].sum())
    assert values == TOTAL_PARAMS * 9


# §2.5 "Published totals per submission": bits, nonzero params, param size, ops total, score
SUBMISSIONS = [
    (1, 9, 4_801_977, 1_609_904.65625, 12_122_856.735931143, 0.04824737751078976),
    (2, 9, 4_961_183, 1_654_681.34375, 12_122_856.735931143, 0.04852899189758221),
    (3, 8, 5_487_556, 1_631_239.40625, 11_847_529.343646795, 0.04751574891870061),
]


@pytest.mark.parametrize(("sub", "bits", "nonzeros", "size", "ops", "final"), SUBMISSIONS)
def test_published_submission(sub, bits, nonzeros, size, ops, final):
    model = build(bits)
    # per-tensor nonzeros printed by the submission's notebook (cell 3), adjusted to its printed total
    table = load_nonzero_table(f"mit_han_sub{sub}")
    assert sum(row.nonzero for row in table) + 2 == nonzeros  # + the two cache scalars
    apply_nonzero_counts(model, {row.tensor: row.nonzero for row in table})
    totals = run(model, bits=bits).totals
    assert totals["params"] == pytest.approx(size, rel=1e-12)
    assert totals["ops"] == pytest.approx(ops, rel=1e-12)
    assert totals["score"] == pytest.approx(final, rel=1e-12)
    # arithmetic of cell 3: nonzero·bits/32 + mask + quantisation params
    assert size == nonzeros * bits / 32 + (TOTAL_PARAMS - 2) / 32 + 57 * (1 + (32 - bits) / 32)


def test_captures_agree(model):
    cols = ["kind", "module", "path", "weight_numel", "param_bits", "mask_bits", "mults", "adds", "ops"]
    tables = {cap: run(model, capture=cap).layers for cap in ("fx", "export", "dispatch")}
    counted = {cap: t[(t["mults"] + t["adds"] + t["param_bits"]) > 0][cols].reset_index(drop=True)
               for cap, t in tables.items()}
    for cap in ("export", "dispatch"):
        assert counted[cap]["kind"].tolist() == counted["fx"]["kind"].tolist(), cap
        for col in cols[3:]:
            assert counted[cap][col].to_numpy() == pytest.approx(counted["fx"][col].to_numpy(), rel=1e-12), (cap, col)


def test_micronet2019_counts_the_faithful_model(model):
    """The official rules count what the model computes; the notebook's count leaves out (per layer) 7 of the
    8 heads' positional products and qk + qe adds, 7 of 8 attention softmax rows, the 24^-0.5 scale, LN's
    2 extra mults and n extra adds, and once: the √d embedding scale, θ·scores, softplus, sigmoid and the
    token-id offset of bins 1 and 2."""
    mh, off = run(model).layers, run(model, rules="micronet2019").layers
    n, c = 256, 97
    extra_mults = 8 * (7 * 24 * c + 8 * c + 7 * 2 * c + 2 * 2) + n + 2000 + 3 + 2
    extra_adds = 8 * (7 * 23 * c + 7 * c + 7 * (c - 1) + 2 * n) + 1 + 1 + BIN_FRACTIONS["bin1"] + BIN_FRACTIONS["bin2"]
    assert off["mults"].sum() - mh["mults"].sum() == pytest.approx(extra_mults, rel=1e-12)
    assert off["adds"].sum() - mh["adds"].sum() == pytest.approx(extra_adds, rel=1e-12)
    # softmax: one row per head under the official rules
    sm = off[(off["kind"] == "act:softmax") & off["module"].str.startswith("layers.")]
    assert sm["mults"].sum() + sm["adds"].sum() == pytest.approx(8 * 8 * (3 * c - 1))


def test_route_and_paths(model):
    tokens = torch.tensor([0, 3499, 3500, 24999, 25000, 267734])
    assert model.route(tokens).tolist() == [0, 0, 1, 1, 2, 2]
    assert list(model.paths()) == ["bin0", "bin1", "bin2"] == list(BIN_FRACTIONS)
    assert BIN_STARTS == (0, 3500, 25000)
    # §2.5: token-bin counts [198232, 35479, 11858]
    assert BIN_FRACTIONS["bin1"] == 35479 / (198232 + 35479 + 11858)
    # a step of the full model routes its token: same outputs as the path of its bin
    with torch.no_grad():
        for tok in (7, 4000, 30000):
            out = model(torch.tensor([[tok]]))
            path = model.paths()[f"bin{int(model.route(torch.tensor(tok)))}"]
            assert torch.equal(out[0], path(torch.tensor([[tok]]))[0])


def test_registry_defaults():
    info = get_reference("mit_han_transformer_xl")
    assert (info.track, info.rules, info.bits) == ("wikitext103", "mit_han2019", 9)
    assert info.path_fractions == BIN_FRACTIONS
    report = score(info.build(), input_shape=info.input_shape, input_dtype=info.input_dtype, track=info.track,
                   rules=info.rules, bits=info.bits, path_fractions=info.path_fractions)
    assert report.totals["ops"] == pytest.approx(12_122_856.735931143, rel=1e-12)  # §2.5, dense ops (9-bit)


def test_cli_reference_uses_its_defaults(capsys: pytest.CaptureFixture) -> None:
    from scorer.cli import main

    code = main(["reference:mit_han_transformer_xl", "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["rules"] == "mit_han2019" and data["settings"]["input_shapes"] == [list(s) for s in STEP_INPUT_SHAPES]
    assert data["totals"]["ops"] == pytest.approx(12_122_856.735931143, rel=1e-12)  # §2.5, dense ops (9-bit)
