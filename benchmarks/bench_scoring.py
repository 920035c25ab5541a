"""Benchmark: full ``score()`` versus torch.utils.flop_counter.FlopCounterMode, side by side in one run.

Usage: ``python benchmarks/bench_scoring.py [--repeats N] [--json out.json]``

For each model it reports the median wall time of (a) ``scorer.score`` with the micronet2019 rules and the
freebie, (b) FlopCounterMode counting one real forward pass; then the geometric mean of the ratios, and the
resolution check: EfficientNet-B0 scored at 896² versus 224² (the scorer never computes on real data, so
the ratio should stay near 1).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from reference_models import build_reference
from scorer import score

CASES = [
    ("wrn28_10", {}, (1, 3, 32, 32), "cifar100"),
    ("resnet18", {}, (1, 3, 224, 224), "imagenet"),
    ("mobilenet_v2_1.4", {}, (1, 3, 224, 224), "imagenet"),
    ("mobilenet_v2", {}, (1, 3, 32, 32), "cifar100"),
    ("efficientnet_b0", {}, (1, 3, 224, 224), "imagenet"),
]


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _flop_counter(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    with torch.no_grad(), FlopCounterMode(display=False):
        model(x)


def main() -> None:
    """Run the benchmark and print a table (and JSON when asked)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for name, kw, shape, track in CASES:
        model = build_reference(name, **kw)
        t_score = _median_time(lambda m=model, s=shape, t=track: score(m, input_shape=s, bits=16, track=t), args.repeats)
        t_peer = _median_time(lambda m=model, s=shape: _flop_counter(m, s), args.repeats)
        rows.append({"model": name, "input": "x".join(map(str, shape)), "score_ms": t_score * 1e3,
                     "flopcounter_ms": t_peer * 1e3, "ratio": t_score / t_peer})
    geo = math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows))
    eff = build_reference("efficientnet_b0")
    t224 = _median_time(lambda: score(eff, input_shape=(1, 3, 224, 224), bits=16, track="imagenet"), args.repeats)
    t896 = _median_time(lambda: score(eff, input_shape=(1, 3, 896, 896), bits=16, track="imagenet"), args.repeats)
    print(f"{'model':<18}{'input':<14}{'score() ms':>12}{'FlopCounter ms':>16}{'ratio':>8}")
    for r in rows:
        print(f"{r['model']:<18}{r['input']:<14}{r['score_ms']:>12.1f}{r['flopcounter_ms']:>16.1f}{r['ratio']:>8.2f}")
    print(f"geo-mean ratio score()/FlopCounterMode: {geo:.3f} (target <= 1)")
    print(f"EfficientNet-B0 score(): 224² {t224 * 1e3:.1f} ms, 896² {t896 * 1e3:.1f} ms, "
          f"ratio {t896 / t224:.2f} (target <= 1.2)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "geo_mean_ratio": geo, "effnet_896_over_224": t896 / t224}, fh, indent=2)


if __name__ == "__main__":
    main()
