"""Benchmark: ``Scorer.sweep`` configurations per second on EfficientNet-B0 (1x3x224x224, micronet2019).

Usage: ``python benchmarks/bench_sweep.py [--configs K] [--repeats N] [--chunk C] [--json out.json]``

Reports the one-off costs (capture; the cost model's probes and self-check, paid at the first sweep), the
median wall time of one sweep of K random per-layer configurations (weight and activation bits 1..16, density
in (0.05, 1] with a third of the layers dense), the configurations per second, the time of one full
``score()`` for comparison, and a spot check of a few rows against ``score()``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from reference_models import build_reference
from scorer import Scorer, score

SHAPE = (1, 3, 224, 224)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=None, help="rows per vectorised block (default: Scorer's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    model = build_reference("efficientnet_b0")
    t0 = time.perf_counter()
    sc = Scorer(model, input_shape=SHAPE, track="imagenet")
    capture_s = time.perf_counter() - t0
    names = sc.layer_names
    n, k = len(names), args.configs
    rng = np.random.default_rng(0)
    w = rng.integers(1, 17, (k, n))
    a = rng.integers(1, 17, (k, n))
    d = np.where(rng.random((k, n)) < 1 / 3, 1.0, rng.uniform(0.05, 1.0, (k, n)))
    kw = {} if args.chunk is None else {"chunk": args.chunk}
    t0 = time.perf_counter()
    sc.sweep(weight_bits=w[:1], act_bits=a[:1], density=d[:1])  # builds the cost model
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        table = sc.sweep(weight_bits=w, act_bits=a, density=d, **kw)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    score_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        score(model, input_shape=SHAPE, track="imagenet")
        score_times.append(time.perf_counter() - t0)
    score_s = statistics.median(score_times)
    worst = 0.0
    for i in (0, k // 2, k - 1):
        cfg = {"precision": {"default": {"weight": 32, "act": 32, "acc": 32},
                             "layers": {nm: {"weight": int(w[i, j]), "act": int(a[i, j])}
                                        for j, nm in enumerate(names)}},
               "sparsity": {nm: 1 - float(d[i, j]) for j, nm in enumerate(names)}}
        want = score(model, input_shape=SHAPE, track="imagenet", **cfg).totals
        worst = max(worst, max(abs(table[c][i] - want[c]) / abs(want[c]) for c in table.columns))
    out = {
        "model": "efficientnet_b0", "layers": n, "configs": k, "capture_s": capture_s, "cost_model_s": build_s,
        "sweep_s_median": median, "sweep_s_all": times, "configs_per_s": k / median,
        "score_s": score_s, "max_rel_diff_vs_score": worst,
    }
    print(f"EfficientNet-B0, {n} layers: capture {capture_s:.2f} s, cost model {build_s:.2f} s")
    print(f"sweep of {k} configurations: median {median:.3f} s over {args.repeats} -> {k / median:,.0f} configs/s "
          f"(one score(), median of 3: {score_s * 1e3:.1f} ms); max relative difference vs score(): {worst:.1e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
