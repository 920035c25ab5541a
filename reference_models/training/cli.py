"""``micronet-train RECIPE``: run a training/compression recipe and write scorable checkpoints.

Examples::

    micronet-train osi_ai --data ~/data/cifar-100-python --out runs/osi
    micronet-train kaist_v1 --synthetic 256 --epochs 1 --limit-batches 2 --out /tmp/k1   # smoke run
    torchrun --nproc_per_node 4 -m reference_models.training.cli wavecomp --data DIR --out runs/wc
    micronet-train osi_ai --data DIR --out runs/osi --resume
    micronet-train kaist_v1 --data DIR --with trained_init   # also run the recipe's optional stages

Exit codes: 0 success, 2 bad input (unknown recipe, missing or corrupt data, bad flags), 1 other failures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["build_parser", "main"]

DATA_ENV = "MICRONET_CIFAR100"


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``micronet-train`` argument parser."""
    p = _Parser(
        prog="micronet-train",
        description="Train and compress a MicroNet reference model with a bundled or custom TOML recipe; "
        "every stage writes OUT/<stage>.ckpt and OUT/<stage>.score.json, the last also OUT/final.ckpt.",
    )
    p.add_argument("recipe", nargs="?", help="bundled recipe name (see --list) or path to a .toml recipe")
    p.add_argument("--list", action="store_true", help="list the bundled recipes and exit")
    p.add_argument("--data", metavar="DIR",
                   help=f"CIFAR-100 python-format folder (train, test, meta); default ${DATA_ENV}")
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="write N synthetic training and N test images (CIFAR-100 format) under OUT and use them")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<recipe>)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="run every stage, pruning round and binarisation sub-stage for N epochs")
    p.add_argument("--limit-batches", type=int, metavar="N",
                   help="a quick run: at most N batches per epoch and per evaluation, and a pruning schedule "
                        "fine-tunes after its last step only")
    p.add_argument("--batch-size", type=int, metavar="N", help="global batch size (overrides the recipe)")
    p.add_argument("--arch-kwargs", metavar="JSON", help="extra architecture arguments, e.g. '{\"depth\": 20}'")
    p.add_argument("--with", dest="with_options", action="append", default=[], metavar="OPTION",
                   help="also run the recipe's optional stages marked option = OPTION (repeatable), e.g. "
                   "kaist_v1 --with trained_init")
    p.add_argument("--resume", action="store_true", help="continue after the last completed stage in OUT")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available; under torchrun "
                   "cuda:LOCAL_RANK)")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    p.add_argument("--progress-every", type=int, metavar="N",
                   help="when stderr is not a terminal: one progress line every N batches (default 50) and at "
                        "the end of each epoch")
    p.add_argument("--verbose", action="store_true", help="print one line per epoch")
    return p


def _list_recipes() -> str:
    from reference_models.training.recipes import bundled_recipes, load_recipe

    lines = []
    for name in bundled_recipes():
        recipe = load_recipe(name)
        stages = " -> ".join(s.name for s in recipe.stages)
        options = "".join(f" (--with {o})" for o in recipe.options)
        lines.append(f"{name:14s} {recipe.arch:22s} {stages}{options}")
    return "\n".join(lines)


def _run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.list:
        print(_list_recipes())
        return 0
    if not args.recipe:
        raise UsageError("RECIPE is required (a bundled name, see --list, or a .toml path)")
    for flag in ("epochs", "limit_batches", "batch_size", "synthetic", "progress_every"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "epochs" else 1):
            raise UsageError(f"--{flag.replace('_', '-')} must be {'>= 0' if flag == 'epochs' else 'positive'}")
    if args.data and args.synthetic:
        raise UsageError("give --data or --synthetic, not both")

    import torch

    from reference_models.training.data import Cifar100Dataset, load_cifar100, write_synthetic_cifar100
    from reference_models.training.distributed import broadcast_object, init_distributed, shutdown
    from reference_models.training.pipeline import run_pipeline
    from reference_models.training.progress import DEFAULT_EVERY, ProgressReporter
    from reference_models.training.recipes import load_recipe
    from reference_models.training.state import build_model
    from reference_models.training.trainer import RunContext

    recipe = load_recipe(args.recipe)
    recipe.enable(args.with_options)
    if args.arch_kwargs:
        try:
            extra = json.loads(args.arch_kwargs)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--arch-kwargs is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise UsageError("--arch-kwargs must be a JSON object")
        recipe.arch_kwargs.update(extra)
    if args.epochs is not None:
        recipe.override_epochs(args.epochs)
    if args.batch_size is not None:
        recipe.override_batch_size(args.batch_size)

    out = Path(args.out or Path("runs") / recipe.name)  # recipe names are safe identifiers (check_name)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    data_dir = args.data or os.environ.get(DATA_ENV)
    if not args.synthetic and not data_dir:
        raise UsageError(f"no data: pass --data DIR (the cifar-100-python folder), set ${DATA_ENV}, or --synthetic N")

    env = init_distributed(args.device)
    try:
        torch.manual_seed(args.seed)
        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # Everything is checked before the first write: the data (unless it is to be synthesised) and the
        # model (architecture arguments), so that bad input leaves OUT as it was.
        splits = None if args.synthetic else (load_cifar100(data_dir, "train"), load_cifar100(data_dir, "test"))
        model = build_model(recipe, dict(recipe.arch_kwargs))
        if args.synthetic:
            data_dir = str(out / "synthetic-cifar100")
        # Only rank 0 writes; its outcome is broadcast so that a failure stops every rank with the same
        # one-line error instead of leaving the others waiting at a barrier.
        setup_error = None
        if env.is_main:
            try:
                out.mkdir(parents=True, exist_ok=True)
                if not args.resume:
                    for stale in ("final.ckpt", "run.json"):
                        (out / stale).unlink(missing_ok=True)
                if args.synthetic:
                    write_synthetic_cifar100(data_dir, args.synthetic, args.synthetic, seed=args.seed)
            except OSError as exc:
                setup_error = f"--out {out}: cannot create the output folder ({exc.strerror or exc})"
        setup_error = broadcast_object(env, setup_error)
        if setup_error:
            raise UsageError(setup_error)
        train, test = splits or (load_cifar100(data_dir, "train"), load_cifar100(data_dir, "test"))
        say = (lambda msg: print(msg, flush=True)) if env.is_main else (lambda msg: None)
        log = say if args.verbose else (lambda msg: None)
        run_info = {
            "world_size": env.world_size,
            "device": str(env.device),
            "data": "synthetic" if args.synthetic else str(data_dir),
            "epochs_override": args.epochs,
            "limit_batches": args.limit_batches,
            "seed": args.seed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        every = args.progress_every or DEFAULT_EVERY
        with ProgressReporter(env.is_main and not args.no_progress, every=every) as progress:
            ctx = RunContext(
                env=env,
                train_set=Cifar100Dataset.from_split(train, normalize=False),
                test_set=Cifar100Dataset.from_split(test, normalize=True),
                progress=progress,
                limit_batches=args.limit_batches,
                seed=args.seed,
                log=log,
                say=say,
            )
            say(f"{recipe.name}: {recipe.arch} on {len(train)} training images, {env.world_size} process(es) "
                f"on {env.device}; stages {' -> '.join(s.name for s in recipe.stages)}")
            final = run_pipeline(ctx, recipe, out, args.resume, run_info, model)
        say(f"final checkpoint: {final} (score it with: micronet-score {final})")
    finally:
        shutdown(env)
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``micronet-train``; returns the exit code (2 for bad input, with one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        build_parser().print_help()
        return 0
    from reference_models.training.data import DataError
    from reference_models.training.distributed import DeviceError
    from reference_models.training.recipes import RecipeError
    from scorer.errors import ScorerError

    try:
        return _run(argv)
    except (UsageError, RecipeError, DataError, DeviceError) as exc:
        sys.stderr.write(f"micronet-train: error: {_one_line(exc)}\n")
        return 2
    except ScorerError as exc:
        sys.stderr.write(f"micronet-train: scoring failed: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("micronet-train: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
