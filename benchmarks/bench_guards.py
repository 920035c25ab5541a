"""Benchmark: the capture guards on their own, entered and left with nothing in between.

Usage: ``python benchmarks/bench_guards.py [--models mobilenet_v2,efficientnet_b0] [--rounds N] [--before DIR]``

Times ``preserved(model)``, ``eval_mode(model)``, ``substituted(model, meta_like)`` and
all three nested as ``capture_model`` and the fx capture nest them, on reference models in eval mode (as
built) and in train mode (``eval_mode`` then switches every flag). Every round runs each case once in a
shuffled order (interleaved), with the garbage collector off while timing; the table gives medians in ms.
``--before DIR`` also times the guards of another checkout (e.g. ``git archive`` of an older commit): its
``scorer/capture/guard.py`` and ``scorer/capture/__init__.py`` are loaded beside this tree's, in the same
rounds, and the table adds their times and the ratio before/after. One thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cases(guard: ModuleType, capture: ModuleType, model) -> dict:
    """Label -> a function that enters and leaves the guard(s) once."""

    def preserved() -> None:
        with guard.preserved(model):
            pass

    def eval_mode() -> None:
        with capture.eval_mode(model):
            pass

    def substituted() -> None:
        with guard.substituted(model, guard.meta_like):
            pass

    def nested() -> None:
        with guard.preserved(model) as mods, capture.eval_mode(model, mods), guard.substituted(model, guard.meta_like):
            pass

    return {"preserved": preserved, "eval_mode": eval_mode, "substituted": substituted, "all": nested}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--before", type=Path, help="another checkout whose guards to time alongside")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from reference_models import build_reference
    from scorer import capture
    from scorer.capture import guard

    torch.set_num_threads(1)
    random.seed(args.seed)
    trees = {"after": (guard, capture)}
    if args.before:
        trees["before"] = (_load("before_guard", args.before / "scorer/capture/guard.py"),
                           _load("before_capture", args.before / "scorer/capture/__init__.py"))
    print("| model | mode | guard | " + " | ".join(f"{t} ms" for t in trees) + (" | before/after |" if args.before else ""))
    print("|---" * (3 + len(trees) + bool(args.before)) + "|")
    for name in args.models.split(","):
        model = build_reference(name)
        for mode in ("eval", "train"):
            model.train(mode == "train")
            fns = {(t, label): f for t, (g, c) in trees.items() for label, f in cases(g, c, model).items()}
            times: dict = {key: [] for key in fns}
            for f in fns.values():  # warm-up
                f()
            keys = list(fns)
            for _ in range(args.rounds):
                random.shuffle(keys)
                for key in keys:
                    gc.disable()
                    start = time.perf_counter()
                    fns[key]()
                    times[key].append(time.perf_counter() - start)
                    gc.enable()
            for label in ("preserved", "eval_mode", "substituted", "all"):
                med = {t: statistics.median(times[t, label]) * 1e3 for t in trees}
                cells = " | ".join(f"{med[t]:.3f}" for t in trees)
                ratio = f" | {med['before'] / med['after']:.2f}x |" if args.before else " |"
                print(f"| {name} | {mode} | {label} | {cells}{ratio}", flush=True)
        model.eval()


if __name__ == "__main__":
    main()
