"""``micronet-score leaderboard``: every reference team model scored under its own rule set and under one
common rule set, next to the number it published, with where and why the two differ.

Team settings (bit-widths, sparsity mode, exit fractions) and published numbers come from
`shared/spec/team_scores.md`; the section is named in each entry's ``source``. Entries whose model is not
public are rows of their published arithmetic (``scorer.published``). Every row says whether its own-rules
score ``reproduces`` the published one to the printed digit, and if not, why (``cannot``). The rendering
cites each entry's public repository and files (:data:`PUBLIC_SOURCES`), the section second.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from rules import get_ruleset
from scorer.api import score
from scorer.errors import ScorerError
from scorer.published import NOT_PUBLIC, PUBLISHED_ROWS, PublishedArithmetic, printed_digits, reproduces
from scorer.report import Report


@dataclass(frozen=True)
class TeamEntry:
    """One published entry whose architecture is a reference model."""

    key: str
    team: str
    entry: str
    model: str
    rules: str
    bits: int | None
    published: float
    leaderboard: float | None
    source: str
    sparsity: object = None  # the team's counting mode; None = the real (measured) masks
    nonzeros: str | None = None  # nonzero table applied to the weights (the real masks)
    exit_fractions: dict[str, float] = field(default_factory=dict)
    caveat: str = ""
    track: str = "cifar100"
    model_kwargs: dict = field(default_factory=dict)  # factory arguments of the reference (e.g. its bit-width)
    #: the published score sums its two components rounded to this many decimals first (OSI README, §2.1.2)
    round_components: int | None = None
    digits: int | None = None  # decimals the published score is compared to (default: those printed)
    cannot: str = ""  # why the own-rules score does not reproduce the published one (with a source)
    published_is: str = "self"  # whose number ``published`` is: "self" (the team's) or "LB" (the leaderboard's)


ENTRIES: list[TeamEntry] = [
    TeamEntry(
        "osi_ai", "OSI AI", "final (64% + EE 50%, exit 29.29%)", "osi_ai", "osi_ai2019", 16, 0.005798, 0.0058,
        "team_scores.md §2.1.2", sparsity={"*": 0.64, "_exit*": 0.5}, nonzeros="osi_ai",
        exit_fractions={"exit4": 0.2929}, round_components=6,
    ),
    TeamEntry(
        "kaist_v1", "KAIST AI", "ver1 (60% pruned)", "kaist_v1", "kaist2019", 16, 0.0054454020554474585, 0.0054,
        "team_scores.md §1.1, §2.2", nonzeros="kaist_v1", digits=8,  # §1.1 notes: float32 noise below 7 digits
    ),
    TeamEntry(
        "kaist_v2", "KAIST AI", "ver2 (60% pruned)", "kaist_v2", "kaist2019", 16, 0.00562152585, 0.0056,
        "team_scores.md §1.1 (recount from the checkpoint), §2.2", nonzeros="kaist_v2", digits=9,
    ),
    TeamEntry(
        "brain", "BrAIn", "DenseNet-BC-196, k=8", "brain_densenet_bc196", "brain2019", 16, 0.07761115541219948,
        0.0780, "team_scores.md §2.3", sparsity="uniform:0",
    ),
    TeamEntry(
        "wavecomp", "WaveComp", "sub 3 (architecture only)", "wavecomp_pyramidnet", "micronet2019", 16, 0.04558,
        0.0456, "team_scores.md §1.1", sparsity="uniform:0",
        caveat="pruned widths, 9-bit weights and the shared exponent live only in a checkpoint that is not "
        "public: the reference is the unpruned PyramidNet, so its score is far above the published one",
        cannot="the pruned per-layer widths exist only in FinalWeights/checkpoint_sparsity.pth, not retrievable "
        "(team_scores.md §2.8); the row 'sub 3 (published arithmetic)' reproduces 0.04558 from its totals",
    ),
    TeamEntry(
        "jnlp", "JNLP", "QRNN (4 layers, emsize 300, nhid 1800, tied)", "jnlp_qrnn", "jnlp2019", 16, 0.8232, 0.8232,
        "team_scores.md §1.3, §2.8", track="wikitext103",
        published_is="LB",  # §1.3: self "—", the arithmetic gives 0.82315
    ),
    *(TeamEntry(
        f"mit_han_sub{sub}", "MIT-HAN-Lab", f"sub {sub} ({bits}-bit, dense op count)", "mit_han_transformer_xl",
        "mit_han2019", bits, published, lb, "team_scores.md §1.3, §2.5", nonzeros=f"mit_han_sub{sub}",
        track="wikitext103", model_kwargs={"bits": bits},
    ) for sub, bits, published, lb in (
        (1, 9, 0.04824737751078976, 0.0482), (2, 9, 0.04852899189758221, 0.0485), (3, 8, 0.04751574891870061, 0.0475),
    )),
    # published-arithmetic rows (issue 10): entries whose model is not public, scored from their published
    # components (scorer/published.py)
    *PUBLISHED_ROWS,
    # reference-model rows (issue 10)
    TeamEntry(
        "sisyphus_fp16", "Sisyphus", "OneShot-S+ float16", "sisyphus_oneshot_s_plus", "sisyphus2019", 16, 0.640,
        0.6425, "team_scores.md §1.2 #14 (self 0.640), §2.7; CanyonWind/MXNet-Single-Path-One-Shot-NAS "
        "MicroNetChallenge/README.md", track="imagenet",
        caveat="LB 0.6425 is the organisers' recount, whose breakdown was not published (team_scores.md §1.2 "
        "row notes); own rules give the team's 0.640 (3.652M/2/6.9 + (301.4/2 + 288.3)/1170)",
    ),
    TeamEntry(
        "sisyphus_fp32", "Sisyphus", "OneShot-S+ fp32", "sisyphus_oneshot_s_plus", "sisyphus2019", None, 1.03, 1.0315,
        "team_scores.md §1.2 #18 (self 1.03), §2.7", track="imagenet",
        caveat="the team's fp32 row reuses its 16-bit parameter count (3.652M = bits/16, so each shuffle "
        "matrix's C² mask bits count 1/16 instead of 1/32): with that, 3.652/6.9 + 589.6/1170 = 1.033 (printed "
        "1.03); counted at 32 bits the masks weigh 1/32 and the score is 1.024; LB 1.0315 is the organisers' "
        "unpublished recount",
        cannot="the team's fp32 arithmetic counts the shuffle masks at 1/16 (team_scores.md §2.7; "
        "CanyonWind/MXNet-Single-Path-One-Shot-NAS MicroNetChallenge/README.md): at 32 bits the model scores 1.024",
    ),
    TeamEntry(
        "rocker", "Rocker", "ProfitableNet (W6/A8, FP16 accumulation)", "rocker_profitablenet", "rocker2019", 8,
        0.188706, 0.1887, "team_scores.md §1.2 #2, §2.6; Zeitzmz/nips-micronet submission/log/score.log",
        sparsity="reference", track="imagenet",
        caveat="the LB lists 0.1887 and 0.2053 for Rocker without saying which is which; 0.1887 is the README's "
        "0.188706 (team_scores.md §2.6); the earlier submission.pdf version (0.178852) is another model state",
    ),
    TeamEntry(
        "msunet_v3", "MSUNet", "v3 (architecture only)", "msunet_v3", "msunet2019", 16, 0.01083, 0.0108,
        "team_scores.md §1.1 #5, §2.8", sparsity="uniform:0",
        caveat="the ternary weights' zeros and the SE/depthwise pruning live only in the team's checkpoint "
        "(git LFS, not retrievable here, §2.8): the reference is dense, so its score is far above the published one",
        cannot="the ternary and pruning sparsity live only in the team's checkpoint (team_scores.md §2.8: git LFS, "
        "not retrievable): the dense architecture cannot reproduce 0.01083",
    ),
]


def _build(entry: TeamEntry):
    from reference_models import build_reference
    from reference_models.teams.nonzeros import apply_nonzero_counts, nonzero_counts

    model = build_reference(entry.model, **entry.model_kwargs)
    if entry.nonzeros:
        apply_nonzero_counts(model, nonzero_counts(entry.nonzeros))
    return model


def _resolve_sparsity(entry: TeamEntry, info) -> TeamEntry:
    """An entry whose ``sparsity`` is ``"reference"`` with its reference's counting sparsity
    (``ReferenceInfo.sparsity``, e.g. Rocker's per-layer table); others unchanged."""
    if entry.sparsity == "reference":
        from dataclasses import replace

        return replace(entry, sparsity=info.sparsity())
    return entry


def _first_doc_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def explain(own: Report, common: Report, entry: TeamEntry, common_rules: str, limit: int = 4) -> list[str]:
    """Where the two reports differ (per op kind, ops and storage) and why (the overriding rule's docstring)."""
    own_rs, common_rs = get_ruleset(own.rules), get_ruleset(common_rules)
    reasons: list[str] = []
    if entry.sparsity not in (None, "uniform:0") and entry.nonzeros:
        reasons.append(f"sparsity: the team counted {entry.sparsity} (team mode); the common column uses the real "
                       "per-layer masks")
    if entry.caveat:
        reasons.append(entry.caveat)
    deltas = []
    for column, unit in (("ops", "ops"), ("param_bits", "param bits")):
        a = own.layers.groupby("kind")[column].sum()
        b = common.layers.groupby("kind")[column].sum()
        for kind, delta in a.sub(b, fill_value=0).items():
            if abs(delta) >= 0.5:
                deltas.append((abs(delta), kind, delta, unit))
    deltas, moved = _merge_offsetting(deltas)
    reasons.extend(moved)
    for _, kind, delta, unit in sorted(deltas, reverse=True)[:limit]:
        method = "cost_" + kind.replace(":", "_")
        mine = getattr(type(own_rs), method, None)
        theirs = getattr(type(common_rs), method, None)
        if mine is not None and mine is not theirs:
            why = _first_doc_line(mine)
        elif kind in getattr(own_rs, "activations", {}) and own_rs.activations.get(kind) != common_rs.activations.get(kind):
            why = f"activation table: {own_rs.activations.get(kind)} vs {common_rs.activations.get(kind)} (mults, adds)"
        else:
            why = "same formula; different sparsity, bit-widths or mask policy"
        reasons.append(f"{kind}: {delta:+,.0f} {unit} — {why}")
    return reasons


def _merge_offsetting(deltas: list[tuple]) -> tuple[list[tuple], list[str]]:
    """Pairs of kinds whose differences cancel exactly (a cost booked on another op) become one line."""
    left = list(deltas)
    lines = []
    for d in deltas:
        if d not in left:
            continue
        twin = next((e for e in left if e is not d and e[3] == d[3] and e[2] == -d[2]), None)
        if twin is not None:
            left.remove(d)
            left.remove(twin)
            src, dst = (d, twin) if d[2] < 0 else (twin, d)
            lines.append(f"{abs(d[2]):,.0f} {d[3]} booked on {dst[1]} instead of {src[1]} (no net change)")
    return left, lines


def leaderboard(common_rules: str = "micronet2019", common_bits: int | None = 16,
                keys: Sequence[str] | None = None, track: str | None = None) -> pd.DataFrame:
    """One row per entry (of ``track`` when given): published, own-rules and common-rules scores, whether the
    own-rules score reproduces the published one to its printed digit, and the reasons they differ."""
    rows = []
    for entry in ENTRIES:
        if (keys and entry.key not in keys) or (track and entry.track != track):
            continue
        row = _arithmetic_row(entry, common_rules) if isinstance(entry, PublishedArithmetic) else \
            _model_row(entry, common_rules, common_bits)
        digits = printed_digits(entry.published, entry.digits)
        row["reproduces"] = reproduces(row["own_score"], entry.published, digits)
        row["digits"] = digits
        row["cannot"] = "" if row["reproduces"] else entry.cannot or "not explained (a bug: every row that does " \
            "not reproduce must say why)"
        rows.append(row)
    return pd.DataFrame(rows)


def _model_row(entry: TeamEntry, common_rules: str, common_bits: int | None) -> dict:
    """A reference model scored under the team's rule set and under the common one."""
    from reference_models.registry import get_reference

    model = _build(entry)
    info = get_reference(entry.model)  # the model's example input: an image, or one token id (per token)
    entry = _resolve_sparsity(entry, info)  # a reference's own counting sparsity, when the entry asks for it
    inputs = {"input_shape": info.default_input_shape, "input_dtype": info.default_input_dtype}
    fractions = entry.exit_fractions or info.path_fractions or None  # the entry's, else the registered ones
    own = score(model, **inputs, rules=entry.rules, bits=entry.bits, sparsity=entry.sparsity,
                exit_fractions=fractions, track=entry.track)
    common_sparsity = None if entry.nonzeros else entry.sparsity
    common = score(model, **inputs, rules=common_rules, bits=common_bits, sparsity=common_sparsity,
                   exit_fractions=fractions, track=entry.track)
    own_exact = own.totals["score"]
    own_score = own_exact
    if entry.round_components is not None:  # OSI README: "the components are rounded first, then summed"
        k = entry.round_components
        own_score = round(own.totals["param_score"], k) + round(own.totals["ops_score"], k)
    return {
        "team": entry.team,
        "track": entry.track,
        "entry": entry.entry,
        "model": f"reference:{entry.model}",
        "published": entry.published,
        "leaderboard": entry.leaderboard,
        "own_rules": entry.rules,
        "own_score": own_score,
        "own_exact": own_exact,
        "own_vs_published": own_score - entry.published,
        "common_rules": common_rules,
        "common_score": common.totals["score"],
        "common_vs_own": common.totals["score"] - own_score,
        "why": explain(own, common, entry, common_rules),
        "source": entry.source,
        "key": entry.key,
        "published_is": entry.published_is,
    }


def _arithmetic_row(entry: PublishedArithmetic, common_rules: str) -> dict:
    """An entry without a public model: its score from the published components (``scorer.published``); the
    common column only where the published arithmetic gives the official (``micronet2019``) recount, else NaN."""
    param_score, ops_score = entry.components()
    own = param_score + ops_score
    common = entry.common_score() if common_rules == "micronet2019" else math.nan
    why = [f"published arithmetic: {entry.note} (param score {param_score:.6f} + ops score {ops_score:.6f})"]
    why.append(entry.common_why if not math.isnan(common) else NOT_PUBLIC)
    return {
        "team": entry.team,
        "track": entry.track,
        "entry": entry.entry,
        "model": "published arithmetic",
        "published": entry.published,
        "leaderboard": entry.leaderboard,
        "own_rules": entry.rules,
        "own_score": own,
        "own_exact": own,
        "own_vs_published": own - entry.published,
        "common_rules": common_rules,
        "common_score": common,
        "common_vs_own": common - own,
        "why": why,
        "source": entry.source,
        "key": entry.key,
        "published_is": entry.published_is,
    }


#: Where each team published its model and its count: the public repository and the files (team_scores.md
#: names them per entry, §1 "Source" columns and §2). Matched on the start of the team name (letters and
#: digits only, case ignored); an entry of a team not listed here cites its team_scores.md section alone.
PUBLIC_SOURCES: dict[str, str] = {
    "OSI AI": "github.com/Lee-Gihun/MicroNet_OSI-AI: README.md §3 (count table), main.py (_count_params_flops), "
              "counting/counting.py",
    "KAIST AI": "github.com/Kthyeon/micronet_neurips_challenge: (revised)Score_MicroNet.ipynb, "
                "Counting/count_hooks.py, Checkpoint_ver1/ and Checkpoint_ver2/",
    "BrAIn": "github.com/cadurosar/Micronet: README.md, Final/profile.py, Final/models/densenet.py",
    "WaveComp": "github.com/mhariat/MicroNet: README.md, Reports/micronet_submissions.pdf",
    "JNLP": "github.com/binhdt95/Jaist-MicroNet-Challenge: README.md (counter table)",
    "MIT-HAN-Lab": "github.com/mit-han-lab/neurips-micronet at 9668d5b~1: "
                   "micronet_challenge-wikitext_103-{1,2,3}.ipynb, report.pdf",
    "Rocker": "github.com/Zeitzmz/nips-micronet: submission/model/ProfitableNet.prototxt, "
              "submission/model/sparsity.txt, submission/log/score.log",
    "Sisyphus": "github.com/CanyonWind/MXNet-Single-Path-One-Shot-NAS: MicroNetChallenge/README.md, "
                "MicroNetChallenge/detailed_profiling.md",
    "MSUNet": "github.com/MSU-MLSys-Lab/MSUNet: README.md, counting.py",
    "RIAIR": "github.com/wps712/MicroNetChallenge (branch cifar100): README.md, Score.md",
    "QualcommAI": "github.com/yashbhalgat (QualcommAI-MicroNet-submission-*): the report PDF, Table 1",
    "HHI-MAL": "github.com/d-becking/neurips-2019-micronet-challenge: README.md",
    "dISTillers": "github.com/IST-DASLab/dISTiller-micronet: README.md",
    "Xilinx": "github.com/volcacius/micronet_competition: README.md",
    "DNW": "github.com/mitchellnw/micro-net-dnw: README.md",
}
#: Where the leaderboard numbers (the "LB" column) come from.
LEADERBOARD_SOURCE = "github.com/micronet-challenge/micronet-challenge.github.io: leaderboard.md"


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def public_source(team: str, section: str) -> str:
    """The entry's public repository and files, with its team_scores.md section second."""
    found = next((src for name, src in PUBLIC_SOURCES.items() if _key(team).startswith(_key(name))), None)
    return f"{found} (spec: {section})" if found else f"{section} (no public repository recorded)"


def _sources(df: pd.DataFrame) -> list[str]:
    return [public_source(r.team, r.source) for r in df.itertuples(index=False)]


def _markdown(df: pd.DataFrame) -> str:
    from tabulate import tabulate

    cols = ["team", "track", "entry", "published", "leaderboard", "own_rules", "own_score", "reproduces",
            "common_rules", "common_score"]
    table = tabulate(
        [[_score_cell(v) if isinstance(v, float) else _yes_no(v) if isinstance(v, bool) else v for v in r]
         for r in df[cols].itertuples(index=False)],
        headers=cols, tablefmt="pipe",
    )
    notes = []
    for r, source in zip(df.itertuples(index=False), _sources(df), strict=True):
        notes.append(f"\n**{r.team} {r.entry}** (own {r.own_score:.6f} vs published {r.published:.6f}; "
                     f"common {_score_cell(r.common_score)}). Source: {source}.")
        if not r.reproduces:
            notes.append(f"- does not reproduce: {r.cannot}")
        notes.extend(f"- {why}" for why in r.why)
    return table + "\n" + "\n".join(notes) + f"\n\nLeaderboard numbers: {LEADERBOARD_SOURCE}.\n"


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _score_cell(value: object, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{float(value):+.6f}" if signed else f"{float(value):.6f}"


def render_table(df: pd.DataFrame, common_rules: str, bits: int | None, width: int) -> str:
    """The terminal leaderboard: one row per entry fitted to ``width`` (scores never cut; text abbreviated,
    low-value columns dropped first), and under each row why its scores differ, as a wrapped list, and its
    public source."""
    from scorer.summary import Column, fit_columns, header_rule, row_lines, wrap

    rows = list(df.itertuples(index=False))
    columns = [
        Column("team", [r.team for r in rows], 0, "abbrev", 12),
        Column("track", [r.track for r in rows], 4, "abbrev", 8),
        Column("entry", [r.entry for r in rows], 1, "wrap", 18),
        Column("published", [_score_cell(r.published) for r in rows]),
        Column("own rules", [r.own_rules for r in rows], 2, "abbrev", 10),
        Column("own score", [_score_cell(r.own_score) for r in rows]),
        Column("repro", [_yes_no(r.reproduces) for r in rows]),
        Column(common_rules, [_score_cell(r.common_score) for r in rows]),
        Column("own-published", [_score_cell(r.own_vs_published, True) for r in rows], 5),
        Column("common-own", [_score_cell(r.common_vs_own, True) for r in rows], 3),
    ]
    shown, widths = fit_columns(columns, width)
    lines = wrap(f"MicroNet entries re-scored: each team's own rules vs {common_rules} (bits {bits}); "
                 f"published = the team's number, leaderboard numbers from {LEADERBOARD_SOURCE}", width, "  ")
    lines += [""] + header_rule(shown, widths, width)
    for i, (r, source) in enumerate(zip(rows, _sources(df), strict=True)):
        if i:
            lines.append("")
        lines += row_lines(shown, widths, i)
        if not r.reproduces:
            lines += wrap(f"    does not reproduce the published score: {r.cannot}", width, "      ")
        if r.why:
            lines.append("    why the scores differ:")
        for why in r.why:
            lines += wrap(f"    - {why}", width, "      ")
        lines += wrap(f"    source: {source}", width, "      ")
    dropped = [c.header for c in columns if c not in shown]
    if dropped:
        lines += [""] + wrap(f"Not shown at {width} columns: {', '.join(dropped)} (--format csv has them).", width)
    return "\n".join(lines) + "\n"


def leaderboard_main(argv: Sequence[str]) -> int:
    """CLI: ``micronet-score leaderboard [--rules R] [--bits N] [--track T] [--format table|markdown|csv|json]``."""
    ap = argparse.ArgumentParser(prog="micronet-score leaderboard",
                                 description="Published MicroNet entries re-scored under one common rule set.")
    ap.add_argument("--rules", default="micronet2019", help="the common rule set (default micronet2019)")
    ap.add_argument("--bits", type=int, default=16, help="common bit-width policy (default 16, the freebie)")
    ap.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    ap.add_argument("--only", nargs="+", metavar="KEY", choices=[e.key for e in ENTRIES],
                    help="score only these entries")
    ap.add_argument("--track", choices=["imagenet", "cifar100", "wikitext103"], help="only this track's entries")
    args = ap.parse_args(list(argv))
    try:
        get_ruleset(args.rules)
    except ValueError as exc:
        raise ScorerError(str(exc)) from None
    df = leaderboard(args.rules, args.bits, args.only, args.track)
    if args.format == "json":
        out = df.assign(public_source=_sources(df))
        records = out.astype(object).where(out.notna(), None).to_dict(orient="records")  # NaN -> null
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    elif args.format == "csv":
        out = df.assign(public_source=_sources(df))
        out["why"] = out["why"].map(" | ".join)
        sys.stdout.write(out.to_csv(index=False))
    elif args.format == "markdown":
        sys.stdout.write(_markdown(df))
    else:
        from scorer.formatting import output_width

        sys.stdout.write(render_table(df, args.rules, args.bits, output_width()))
    return 0
