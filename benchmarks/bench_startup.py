"""Benchmark: whole-process start-up of ``micronet-score``, as ratios to ``python -c "import torch"``.

Usage: ``python benchmarks/bench_startup.py [--rounds N] [--model SPEC ...] [--root DIR] [--json out.json]``

Each command runs as a fresh process (``python -m scorer ...`` from this checkout, the same code the
``micronet-score`` console script runs) with its output discarded: ``--help``, ``--version``,
``--list-rules``, ``--list-references`` and full scores of each ``--model`` (default: the README's first
command, ``reference:wrn28_10 --bits 16``, and ``reference:resnet18``). Every round runs each command once,
in a shuffled order (interleaved, so that a slow spell of a shared machine hits every command alike); the
table gives each command's median wall time and its ratio to the median of ``python -c "import torch"``.
Targets (issue 11 item 5): ``--help``, ``--version`` and the listings at most 0.3x, a full score at most
1.5x. As after a pip install, modules run from bytecode (the untimed warm-up run writes it, whatever
PYTHONDONTWRITEBYTECODE says). ``--root`` times another checkout (e.g. ``git archive`` of an older commit,
for before/after numbers); a command that fails there (no ``--version`` yet) is left out of the table.
``--before DIR`` times DIR's commands too, in the same shuffled rounds (rows ``before: ...``), so that both
columns of a before/after table share one ``import torch`` median and one spell of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "import torch"


def commands(models: list[str]) -> dict[str, list[str]]:
    """Label -> argv of every timed command."""
    cli = [sys.executable, "-m", "scorer"]
    return {
        BASELINE: [sys.executable, "-c", "import torch"],
        "--help": [*cli, "--help"],
        "--version": [*cli, "--version"],
        "--list-rules": [*cli, "--list-rules"],
        "--list-references": [*cli, "--list-references"],
        **{f"score {model}": [*cli, *model.split()] for model in models},
    }


def run_once(argv: list[str], root: Path, env: dict[str, str]) -> float | None:
    """Wall seconds of one run of ``argv`` in ``root``; None when it fails (a crash's time means nothing)."""
    began = time.perf_counter()
    proc = subprocess.run(argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        print(f"{' '.join(argv[1:])} exited {proc.returncode}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return elapsed


def environment(root: Path) -> dict[str, str]:
    """The environment of a timed process: ``root`` first on the path, bytecode written and read."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: the untimed first run leaves the .pyc files
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="runs of every command (default 7)")
    ap.add_argument("--model", action="append", default=None,
                    help="MODEL and flags of a full score, repeatable (default: the README's first command, "
                         "reference:wrn28_10 --bits 16, and reference:resnet18)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to time (default: this one)")
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout timed in the same rounds (rows 'before: ...')")
    ap.add_argument("--json", default=None, help="also write the medians and ratios here")
    args = ap.parse_args()

    root = args.root.resolve()
    models = args.model or ["reference:wrn28_10 --bits 16", "reference:resnet18"]
    # label -> (argv, checkout it runs in)
    cmds = {label: (argv, root) for label, argv in commands(models).items()}
    if args.before is not None:
        cmds.update({f"before: {label}": (argv, args.before.resolve())
                     for label, argv in commands(models).items() if label != BASELINE})
    for label, (argv, where) in list(cmds.items()):  # warm the file cache and the bytecode; not timed
        if run_once(argv, where, environment(where)) is None:
            del cmds[label]
    times: dict[str, list[float]] = {label: [] for label in cmds}
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        order = list(cmds)
        rng.shuffle(order)
        for label in order:
            argv, where = cmds[label]
            elapsed = run_once(argv, where, environment(where))
            if elapsed is None:
                raise SystemExit(f"{label} failed in a timed round")
            times[label].append(elapsed)
    base = statistics.median(times[BASELINE])
    rows = [{"command": label, "median_s": statistics.median(ts), "ratio": statistics.median(ts) / base,
             "min_s": min(ts), "max_s": max(ts)} for label, ts in times.items()]
    print(f"{root}: {args.rounds} interleaved rounds, median wall time per process; ratio = median / median "
          f"of `python -c \"import torch\"`\n")
    print("| command | median s | ratio | min s | max s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['command']}` | {r['median_s']:.2f} | {r['ratio']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
