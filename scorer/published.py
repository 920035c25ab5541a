"""Leaderboard rows of entries whose model is not public: the score computed from the published arithmetic
(parameter storage and ops, or the two normalised components) and the track baselines (issue 10 item 4).

Every number is quoted from `shared/spec/team_scores.md` (§1 leaderboards; the section and the team's public
repository/file are in each row's ``source``). A row reproduces its published score when the arithmetic,
rounded to the digits the team or the leaderboard printed, gives it; otherwise ``cannot`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scorer.tracks import get_track

M = 1e6


@dataclass(frozen=True)
class PublishedArithmetic:
    """One entry scored from its published components: ``params`` (32-bit-equivalent parameters) and ``ops``
    (32-bit-equivalent math ops) divided by the track baselines, or the normalised ``param_score`` and
    ``ops_score`` where the team printed those instead."""

    key: str
    team: str
    entry: str
    track: str
    rules: str  # the team's counting convention: its rule set where one exists
    published: float  # the number this row reproduces (``published_is`` says whose)
    leaderboard: float | None
    source: str
    params: float | None = None
    ops: float | None = None
    param_score: float | None = None
    ops_score: float | None = None
    published_is: str = "self"  # "self": the team's own number; "LB": the leaderboard's
    note: str = ""  # how the published components were read (units, freebie halving)
    #: (params, ops) under the common rules where the published arithmetic gives them (Woody: adds at 32 bits)
    common_params: float | None = None
    common_ops: float | None = None
    common_why: str = ""
    cannot: str = ""  # why the row does not reproduce its published score (with a source)
    digits: int | None = None  # decimals printed, where a trailing zero was printed (0.38470); else from the float

    def components(self) -> tuple[float, float]:
        """(param score, ops score): the published counts over the track baselines (team_scores.md
        "Conventions": score = params/baseline_params + ops/baseline_ops), or the published scores."""
        track = get_track(self.track)
        p = self.param_score if self.param_score is not None else self.params / track.baseline_params
        o = self.ops_score if self.ops_score is not None else self.ops / track.baseline_ops
        return p, o

    def score(self) -> float:
        """The published arithmetic's score."""
        return sum(self.components())

    def common_score(self) -> float:
        """The score of ``common_params``/``common_ops`` (NaN when the arithmetic gives none)."""
        if self.common_params is None or self.common_ops is None:
            return math.nan
        track = get_track(self.track)
        return self.common_params / track.baseline_params + self.common_ops / track.baseline_ops


def printed_digits(value: float, digits: int | None = None) -> int:
    """Decimals of a published number: ``digits`` when given (a printed trailing zero), else those of the
    shortest repr of the float (0.005798 -> 6)."""
    if digits is not None:
        return digits
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def reproduces(score: float, published: float, digits: int) -> bool:
    """``score`` equals ``published`` to its printed digit: within half a unit of the last printed decimal, or
    within float64 noise (1e-12 relative) for the 16–17-digit notebook prints."""
    return abs(score - published) <= max(0.5 * 10.0 ** -digits, 1e-12 * abs(published))


NOT_PUBLIC = "model not public (team_scores.md §4.2: checkpoints absent): no common-rules recount"


def _row(key: str, team: str, entry: str, track: str, rules: str, published: float, lb: float | None,
         source: str, **kw: object) -> PublishedArithmetic:
    return PublishedArithmetic(key, team, entry, track, rules, published, lb, source, **kw)  # type: ignore[arg-type]


#: CIFAR-100 (team_scores.md §1.1; baselines 36.5M / 10.49B)
CIFAR100: list[PublishedArithmetic] = [
    _row("riair_cifar", "RIAIR", "DenseNet-100 k=12, score-type 4", "cifar100", "riair2019", 0.004375, 0.0044,
         "team_scores.md §1.1 (row 1, notes), §2.8; wps712/MicroNetChallenge@cifar100 Score.md",
         param_score=0.001365, ops_score=0.003010,
         note="param score 0.001365 + op score 0.003010 (adder tree + FP32 avgpool & bias); the LB 0.0044 is "
         "this score-type 4, not the headline score-type 0 (0.004169 = 0.001365 + 0.002805)"),
    *(_row(key, "Woody", entry, "cifar100", "woody2019", self_score, lb,
           f"team_scores.md §1.1 (row {n}, Woody notes), §2.8; LinLabNEU/{repo} README.md",
           params=params * M, ops=61.25 * M if n != 11 else 116.19 * M,
           note=note, common_params=params * M if n != 11 else None,
           common_ops=(19.75 + 76.7) * M if n != 11 else None,
           common_why="LB = the same params with all 76.7M adds at 32 bits (78.99M mults at 8 bits = 19.75M) "
           "instead of the binary-tree widths (team_scores.md §1.1 Woody notes: our inference)" if n != 11 else "")
      for key, entry, n, repo, params, self_score, lb, note in (
          ("woody_prune4", "prune4 (mixed 6/8/9-bit)", 8, "reweighted_prune4", 0.3510, 0.0155, 0.0188,
           "0.3510M params + 61.25M ops with binary-tree adds (self)"),
          ("woody_pruning3", "pruning3 (8-bit)", 9, "reweight_pruning3", 0.3671, 0.0159, 0.0193,
           "0.3671M params + 61.25M ops with binary-tree adds (self)"),
          ("woody_pruning5", "pruning5 (freebie 16-bit)", 11, "reweighted_pruning5", 0.5668, 0.0266, 0.0266,
           "0.5668M params + 116.19M ops"),
      )),
    _row("hhi_cifar", "HHI-MAL", "EC2T ternary MicroNet", "cifar100", "published arithmetic", 0.0242, 0.0242,
         "team_scores.md §1.1 (row 10); d-becking/neurips-2019-micronet-challenge README.md",
         params=0.43 * M, ops=129.83 * M, note="0.43M params + 129.83M ops (adds FP32, mults FP16)"),
    _row("mbpm_plus", "MB-PM", "QuantBinSimpNet+", "cifar100", "mbpm2019", 0.0384, 0.0384,
         "team_scores.md §1.1 (row 12), §3; mb-pm/micronet-cifar100-submissions README.md",
         param_score=0.0058, ops_score=0.0326, note="param score 0.0058 + FLOPS score 0.0326"),
    _row("mbpm", "MB-PM", "QuantBinSimpNet", "cifar100", "mbpm2019", 0.0653, 0.0653,
         "team_scores.md §1.1 (row 17), §3; mb-pm/micronet-cifar100-submissions README.md",
         param_score=0.0058, ops_score=0.0595, note="param score 0.0058 + FLOPS score 0.0595"),
    *(_row(f"wavecomp_sub{sub}", "WaveComp", f"sub {sub} (published arithmetic)", "cifar100", "wavecomp2019",
           self_score, lb, f"team_scores.md §1.1 (row {n}, WaveComp notes), §2.8; mhariat/MicroNet README.md",
           params=params * M, ops=ops * M, note=f"{params}M params + {ops}M ops")
      for sub, n, params, ops, self_score, lb in (
          (3, 13, 0.32467, 384.8, 0.04558, 0.0456), (2, 14, 0.3558, 384.8, 0.0464, 0.0464),
          (1, 15, 0.3445, 391.2, 0.0467, 0.0467),
      )),
    _row("qualcomm_nanowrn", "QualcommAI", "nanoWRN", "cifar100", "qualcomm2019", 0.0721, 0.0721,
         "team_scores.md §1.1 (row 18); yashbhalgat/QualcommAI-MicroNet-submission-nanoWRN Report_nanoWRN.pdf "
         "Table 1", params=0.5470 * M, ops=0.5987e9, published_is="LB",
         note="0.5470M params + 0.5987G ops = 0.07206; the report prints 0.0720 (truncated), the LB 0.0721"),
    _row("autoprune_cifar", "AutoPrune (A*STAR)", "WRN-28-10, RL per-layer pruning", "cifar100",
         "published arithmetic", 0.1118, 0.1118,
         "team_scores.md §1.1 (row 21); manasgupta-1/MicroNet-Submission-A-STAR README.md",
         param_score=0.0618, ops_score=0.0500, note="param score 0.0618 + flop score 0.0500"),
    _row("frenzy", "Frenzy (ARM)", "pruned WRN", "cifar100", "published arithmetic", 0.1368, 0.1368,
         "team_scores.md §1.1 (row 22); ifed-ucsd/arm_micronet arm_micronet.pdf", params=8.43 / 4 * M,
         ops=828.928 * M, published_is="LB",
         note="model size 8.43 MB = 2.1075M 32-bit params + 828.928M ops; the paper says 'a score of 0.2'"),
    _row("proxyless_ttq", "ProxylessNAS-TTQ", "TTQ 2-bit", "cifar100", "published arithmetic", 0.1433, 0.1433,
         "team_scores.md §1.1 (row 23); jeffreyzpan/micronet-submission README.md", params=1.01 * M,
         ops=1.213e9, note="1.01M 32-bit-equivalent params + 1.213B ops"),
    _row("micro_machines", "micro-machines", "freebie 16-bit", "cifar100", "published arithmetic", 0.1659, 0.1659,
         "team_scores.md §1.1 (row 24); jason-osajima/micronet_challenge_2019 README.md",
         param_score=0.07153, ops_score=0.09441, published_is="LB",
         note="param score 0.07153 + op score 0.09441 = 0.16594; the README's 0.16594283 needs the unrounded "
         "components, which it gives only as ~5.2M params and ~662M + ~659M ops"),
    _row("punynet", "PunyNet", "vector-quantised ResNet-18 (53.39%, below threshold)", "cifar100",
         "published arithmetic", 0.1906, 0.1906,
         "team_scores.md §1.1 (row 25); GopiKishan14/PunyNet README.md", params=0.624 * M, ops=1.82e9,
         note="0.624M params + 1.82B ops"),
    _row("id56", "ID56", "GoogLeNet, iterative pruning", "cifar100", "published arithmetic", 0.2057170217506562,
         0.2056, "team_scores.md §1.1 (row 26); ID56/MicroNet-CIFAR README.md, SubmissionWriteup.pdf",
         params=1845672.0, ops=1627530482.0,
         note="1,845,672 params (freebie) + 1,627,530,482 ops; the LB prints 0.2056"),
    _row("soft_binary_mask", "Soft Binary Mask", "WRN-34-9, 8-bit", "cifar100", "published arithmetic", 0.38470,
         0.3847, digits=5, source="team_scores.md §1.1 (row 27); tsauri/soft-binary-mask README.md", params=5174199.0,
         ops=2548422969.0, note="5,174,199 params + 2,548,422,969 ops"),
    _row("shinichi", "IamShinichiYamamoto", "—", "cifar100", "published arithmetic", 0.4635, 0.4635,
         "team_scores.md §1.1 (row 28); divyanshj16/micronet Micronet-Writeup.pdf", params=9693108.0,
         ops=2075976028.0, published_is="LB", note="9,693,108 params + 2,075,976,028 ops"),
]

#: ImageNet (team_scores.md §1.2; baselines 6.9M / 1170M)
IMAGENET: list[PublishedArithmetic] = [
    _row("riair_imagenet", "RIAIR", "MixNet-S", "imagenet", "riair2019", 0.125144, 0.1295,
         "team_scores.md §1.2 (row 1), §4.2; wps712/MicroNetChallenge Score.md", param_score=0.049394,
         ops_score=0.075749, note="param score 0.049394 + op score 0.075749 (adder tree)",
         cannot="the printed components (6 decimals) sum to 0.125143, the self-reported total is 0.125144 (its "
         "unrounded components are not published); the LB 0.1295 is an organisers' recount without a published "
         "breakdown (team_scores.md §4.2)"),
    _row("qualcomm_mixnet", "QualcommAI", "MixNet", "imagenet", "qualcomm2019", 0.2968, 0.2968,
         "team_scores.md §1.2 (row 3); yashbhalgat/QualcommAI-MicroNet-submission-MixNet Report_MixNet.pdf Table 1",
         params=0.6465 * M, ops=0.2376e9, note="0.6465M params + 0.2376G ops"),
    _row("distillers", "dISTillers", "EfficientNet-B0, 4-bit", "imagenet", "published arithmetic", 0.3492, 0.3772,
         "team_scores.md §1.2 (row 4), official_rules.md §3.3; IST-DASLab/dISTiller-micronet README.md",
         params=611808.0, ops=304833216.0,
         note="611,808 params + 304,833,216 ops = the first self score 0.3492; the updated 0.3772 (= LB) counts "
         "the swish at full precision and its components are not published"),
    _row("qualcomm_effnet", "QualcommAI", "EfficientNet", "imagenet", "qualcomm2019", 0.3789, 0.3789,
         "team_scores.md §1.2 (row 5); ...-EfficientNet Report_EfficientNet.pdf Table 1", params=0.6568 * M,
         ops=0.3320e9, note="0.6568M params + 0.3320G ops"),
    _row("expasoft_effnet", "Expasoft", "effnet-vector", "imagenet", "published arithmetic", 0.3975, 0.3975,
         "team_scores.md §1.2 (row 6); denisov-expasoft/effnet-vector README.md", params=0.88 * M, ops=315.9 * M,
         published_is="LB", note="0.88M params + 315.9M ops = 0.39754; the README prints 0.3974"),
    _row("dqstarter_star", "DQStarter", "Lv (74.962%, below threshold)", "imagenet", "dqstarter2019", 0.5067, 0.5067,
         "team_scores.md §1.2 (row 8), §3; zhoudaquan/MicroNet-ImageNet-Track-Lv README.md", params=1.55 * M,
         ops=440 * 0.75 * M, published_is="LB",
         note="1.55M params (3.11M raw, freebie) + 440M × 0.75 ops (16-bit mults); the README prints 0.507"),
    _row("qualcomm_m0", "QualcommAI", "M0", "imagenet", "qualcomm2019", 0.5477, 0.5477,
         "team_scores.md §1.2 (row 9); ...-Micronet-submission-M0 Report.pdf Table 1", params=1025740.75,
         ops=466856173.0, published_is="LB",
         note="1025740.75 params + 466856173.0 ops = 0.54768 (the report's other op count 183040314.5 gives 0.3051)"),
    _row("dqstarter", "DQStarter", "Lv_DQ", "imagenet", "dqstarter2019", 0.5789, 0.5789,
         "team_scores.md §1.2 (row 11), §3; zhoudaquan/MicroNet_ImageNet_Lv_DQ README.md", params=1.96 * M,
         ops=345 * M, published_is="LB",
         note="1.96M params (3.92M raw, freebie) + 460M × 0.75 = 345M ops; the README prints 0.578"),
    _row("hhi_imagenet", "HHI-MAL", "EfficientNet-B1 ternary", "imagenet", "published arithmetic", 0.5818, 0.5818,
         "team_scores.md §1.2 (row 12); d-becking/neurips-2019-micronet-challenge README.md", params=1.33 * M,
         ops=455.19 * M, published_is="LB", note="1.33M params + 455.19M ops; the README prints 0.5821"),
    _row("mbpm_imagenet", "MB-PM", "QuantEfficientNet_b3", "imagenet", "mbpm2019", 0.62, 0.6200,
         "team_scores.md §1.2 (row 13), §3; mb-pm/micronet-imagenet-submission efficientnet/README.md",
         param_score=0.1, ops_score=0.52, note="param score 0.1 + FLOPS score 0.52"),
    _row("autoprune_imagenet", "AutoPrune (A*STAR)", "EfficientNet-B2", "imagenet", "published arithmetic", 0.8281,
         0.8281, "team_scores.md §1.2 (row 16); manasgupta-1/MicroNet-Submission-A-STAR README.md",
         param_score=0.3097, ops_score=0.5184, note="param score 0.3097 + flop score 0.5184"),
    _row("dnw", "DNW", "ResNet-50 v1.5", "imagenet", "dnw2019", 0.8460, 0.8460,
         "team_scores.md §1.2 (row 17), §2.8, §3; mitchellnw/micro-net-dnw README.md", digits=4, params=2558732 / 2,
         ops=772846965.0,
         note="2,558,732 params / 2 (freebie) + 772,846,965 ops (mults/2 + adds of 515,231,310 multiply-adds)"),
]

PUBLISHED_ROWS: list[PublishedArithmetic] = [*CIFAR100, *IMAGENET]
