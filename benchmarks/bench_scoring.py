"""Benchmark: full ``score()`` versus the peer counters, interleaved, side by side in one run.

Usage: ``python benchmarks/bench_scoring.py [--rounds N] [--threads T] [--json out.json] [--no-resolution]``

Tools: ``scorer.score`` (micronet2019 rules, bits 16; the report's totals read, as the peers return theirs),
``torch.utils.flop_counter.FlopCounterMode`` counting one real forward pass, and, where they import (optional,
never a dependency: ``pip install --no-deps ptflops ultralytics-thop``), ptflops with its aten backend and
ultralytics-thop's ``profile``. A peer that does not import is left out silently.

Each round runs every (model, tool) pair once, in a freshly shuffled order, so machine load falls on every
tool alike; ``gc.collect()`` runs between calls, outside the timing, and the collector is off during a timed
call. The time per pair is the median over the rounds (default 11). Reported: ``score()``'s median over each
peer's per model, over the fastest peer's (lowest median) per model, and the geometric means over the models;
and, paired, the median over the rounds of ``score()``'s time over the fastest peer's in the same round. The
machine's load drifts within a run (calls alternate between a fast and a slow state on a shared virtual CPU);
the two calls of a round share it, so the paired ratio moves less from run to run. Then the
resolution check: EfficientNet-B0 scored at 896² versus 224², also interleaved (the scorer never computes on
real data, so the ratio should stay near 1).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import random
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from reference_models import build_reference
from scorer import score

CASES = [
    ("wrn28_10", (1, 3, 32, 32), "cifar100"),
    ("resnet18", (1, 3, 224, 224), "imagenet"),
    ("mobilenet_v2_1.4", (1, 3, 224, 224), "imagenet"),
    ("mobilenet_v2", (1, 3, 32, 32), "cifar100"),
    ("efficientnet_b0", (1, 3, 224, 224), "imagenet"),
]

Runner = Callable[[torch.nn.Module, tuple[int, ...], str], object]


def _score(model: torch.nn.Module, shape: tuple[int, ...], track: str) -> object:
    return score(model, input_shape=shape, bits=16, track=track).totals  # the totals, as the peers return theirs


def _flop_counter(model: torch.nn.Module, shape: tuple[int, ...], track: str) -> object:
    x = torch.randn(shape)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops()


def _peers() -> dict[str, Runner]:
    """The peer counters that import here: name -> runner."""
    peers: dict[str, Runner] = {"FlopCounterMode": _flop_counter}
    try:
        from ptflops import get_model_complexity_info
    except Exception:  # noqa: BLE001 - optional peer
        pass
    else:
        def _ptflops(model: torch.nn.Module, shape: tuple[int, ...], track: str) -> object:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return get_model_complexity_info(model, tuple(shape[1:]), print_per_layer_stat=False,
                                                 as_strings=False, backend="aten", verbose=False)

        peers["ptflops-aten"] = _ptflops
    try:
        from thop import profile
    except Exception:  # noqa: BLE001 - optional peer
        pass
    else:
        def _thop(model: torch.nn.Module, shape: tuple[int, ...], track: str) -> object:
            x = torch.randn(shape)
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                return profile(model, inputs=(x,), verbose=False)

        peers["ultralytics-thop"] = _thop
    return peers


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def interleaved(jobs: dict[tuple[str, str], Callable[[], object]], rounds: int, seed: int = 0) -> dict:
    """Seconds per job key, one per round (``rounds`` rounds); each round runs every job once in shuffled order
    (after one untimed warm-up call of each)."""
    for fn in jobs.values():
        fn()
    rng = random.Random(seed)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in jobs}
    keys = list(jobs)
    for _ in range(rounds):
        rng.shuffle(keys)
        for k in keys:
            times[k].append(_timed(jobs[k]))
    return times


def _geo(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main() -> None:
    """Run the benchmark and print a table (and JSON when asked)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", "--repeats", type=int, default=11, dest="rounds")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-resolution", action="store_true", help="skip the EfficientNet-B0 896² check")
    ap.add_argument("--models", default=None, help="comma-separated subset of the models")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads for every tool (default: torch's own); on a CPU shared with other "
                         "work the peers' multithreaded forward passes slow down far more than score()")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in CASES if args.models is None or c[0] in args.models.split(",")]
    tools: dict[str, Runner] = {"score()": _score, **_peers()}
    peers = [t for t in tools if t != "score()"]
    models = {name: build_reference(name) for name, _, _ in cases}
    jobs = {}
    for name, shape, track in cases:
        for tool, run in tools.items():
            jobs[(name, tool)] = lambda r=run, m=models[name], s=shape, t=track: r(m, s, t)
    if not args.no_resolution:
        eff = models.get("efficientnet_b0") or build_reference("efficientnet_b0")
        jobs[("efficientnet_b0@896", "score()")] = lambda: _score(eff, (1, 3, 896, 896), "imagenet")
        jobs[("efficientnet_b0@224", "score()")] = lambda: _score(eff, (1, 3, 224, 224), "imagenet")
    times = interleaved(jobs, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}

    rows = []
    for name, shape, _ in cases:
        ms = {tool: med[(name, tool)] * 1e3 for tool in tools}
        fastest = min(peers, key=lambda p: ms[p])
        paired = {p: statistics.median(s / t for s, t in zip(times[(name, "score()")], times[(name, p)], strict=True))
                  for p in peers}
        rows.append({"model": name, "input": "x".join(map(str, shape)), "ms": ms, "fastest_peer": fastest,
                     "ratio": {p: ms["score()"] / ms[p] for p in peers},
                     "ratio_fastest": ms["score()"] / ms[fastest],
                     "paired_ratio": paired, "paired_ratio_fastest": paired[fastest]})
    geo = {p: _geo([r["ratio"][p] for r in rows]) for p in peers}
    geo_fastest = _geo([r["ratio_fastest"] for r in rows])
    geo_paired = _geo([r["paired_ratio_fastest"] for r in rows])

    head = f"{'model':<18}{'input':<13}" + "".join(f"{t + ' ms':>22}" for t in tools)
    head += "".join(f"{'/' + p:>20}" for p in peers) + f"{'/fastest':>10}"
    print(f"median of {args.rounds} interleaved rounds; torch threads {torch.get_num_threads()}")
    print(head)
    for r in rows:
        line = f"{r['model']:<18}{r['input']:<13}" + "".join(f"{r['ms'][t]:>22.1f}" for t in tools)
        line += "".join(f"{r['ratio'][p]:>20.2f}" for p in peers) + f"{r['ratio_fastest']:>10.2f}"
        print(line)
    print(f"{'geo-mean':<31}" + " " * 22 * len(tools) + "".join(f"{geo[p]:>20.2f}" for p in peers)
          + f"{geo_fastest:>10.2f}")
    print(f"geo-mean score()/fastest peer: {geo_fastest:.3f} ratio of medians, {geo_paired:.3f} paired (target <= 0.5)")
    mb = next((r for r in rows if r["model"] == "mobilenet_v2"), None)
    if mb:
        print(f"mobilenet_v2@32 score()/fastest peer ({mb['fastest_peer']}): {mb['ratio_fastest']:.2f} ratio of medians, "
              f"{mb['paired_ratio_fastest']:.2f} paired (target <= 1.0)")
    out = {"rounds": args.rounds, "threads": torch.get_num_threads(), "rows": rows, "geo_mean_ratio": geo,
           "geo_mean_ratio_fastest": geo_fastest, "geo_mean_paired_ratio_fastest": geo_paired}
    if not args.no_resolution:
        t896, t224 = med[("efficientnet_b0@896", "score()")], med[("efficientnet_b0@224", "score()")]
        out["effnet_896_over_224"] = t896 / t224
        print(f"EfficientNet-B0 score(): 224² {t224 * 1e3:.1f} ms, 896² {t896 * 1e3:.1f} ms, "
              f"ratio {t896 / t224:.2f} (target <= 1.2)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
