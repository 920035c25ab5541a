"""The ``micronet-score`` command line.

``micronet-score MODEL [options]`` loads MODEL (see ``scorer.load``), scores it and prints the report.
Exit codes: 0 success, 2 usage or input error, 3 ops without a counting rule. Every error is one line
on stderr (``micronet-score: error: ...``), never a traceback (``--debug`` shows one).

Subcommands are dispatched on the first word: ``micronet-score leaderboard ...`` calls
``scorer.leaderboard.leaderboard_main(argv)``; add more in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

PROG = "micronet-score"

#: First-word subcommands: name -> "module:function" taking the remaining argv and returning an exit code.
SUBCOMMANDS: dict[str, str] = {
    "leaderboard": "scorer.leaderboard:leaderboard_main",
    "evaluate": "scorer.evaluate:evaluate_main",
}

DEFAULT_TRACK = "cifar100"
DEFAULT_RULES = "micronet2019"


class UsageError(Exception):
    """A command-line usage problem (exit code 2)."""

    exit_code = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, printed by ``main``)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def formats() -> tuple[str, ...]:
    """The ``--format`` choices: the renderers of ``scorer.render.RENDERERS``."""
    from scorer.render import RENDERERS

    return tuple(RENDERERS)


def captures() -> tuple[str, ...]:
    """The ``--capture`` choices: ``auto`` and the methods of ``scorer.capture.METHODS``."""
    from scorer.capture import METHODS

    return ("auto", *METHODS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``micronet-score MODEL``."""
    p = _Parser(
        prog=PROG,
        description="Score a PyTorch model under the MicroNet Challenge 2019 rules, layer by layer.",
        epilog="MODEL: reference:NAME | file.py:factory | package.module:factory | model.pt2 (torch.export) | "
        "TorchScript file (with --trust-code) | micronet checkpoint | state_dict file with --arch | pickled module with "
        "--trust-pickle. Subcommands: " + ", ".join(SUBCOMMANDS) + ". Exit codes: 0 ok, 2 usage/input "
        "error, 3 ops without a counting rule.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="the model to score (forms below)")
    g = p.add_argument_group("precision")
    g.add_argument("--bits", type=int, metavar="N",
                   help="parameters and multiplications at N bits, additions at 32 (16 = the freebie)")
    g.add_argument("--param-bits", type=int, metavar="N", help="parameter storage width")
    g.add_argument("--mul-bits", type=int, metavar="N", help="multiplication width for every op")
    g.add_argument("--add-bits", type=int, metavar="N", help="addition width for every op")
    g.add_argument("--precision", metavar="FILE", help="per-layer bits config (TOML or JSON)")
    g.add_argument("--allow-unmatched", action="store_true",
                   help="a --precision layer glob matching no layer, or a --sparsity glob matching no conv/linear/"
                        "matmul weight (by tensor or layer name), is a warning, not an error")
    g = p.add_argument_group("scoring")
    g.add_argument("--rules", metavar="NAME", help="rule set name or package.module:Class (see --list-rules)")
    g.add_argument("--track", choices=("cifar100", "imagenet", "wikitext103"),
                   help="normalisation baselines and default input (default: the model's, else cifar100)")
    g.add_argument("--input-shape", metavar="SHAPE", action="append",
                   help="example input shape, e.g. 1,3,32,32; repeat for several inputs, in order "
                        "(default: the track's; wikitext103: 1,1 token ids)")
    g.add_argument("--input-dtype", metavar="DTYPE", action="append",
                   help="dtype of the input of the same position: float32 (default), float16, bfloat16, "
                        "long/int64, int32, bool; integer inputs are token ids inside the vocabulary")
    g.add_argument("--tokens", type=int, metavar="N",
                   help="wikitext103: divide the counts by N tokens (default: the token ids of the first "
                        "integer input)")
    g.add_argument("--sparsity", metavar="SPEC",
                   help="measured (default), uniform:S, or GLOB:S[,GLOB:S...] per tensor or layer name "
                        "(e.g. 'conv*:0.5,fc:0.7'; later items win), as score(sparsity={glob: S})")
    g.add_argument("--mask-block", metavar="RxC", help="block-sparse mask size, e.g. 4x4")
    g.add_argument("--path-fraction", "--exit-fraction", dest="exit_fraction", action="extend", nargs="+",
                   metavar="NAME=F", default=None,
                   help="share of examples (tokens) taking each of the model's paths(): early exits, "
                        "adaptive input bins")
    g.add_argument("--measure-exits", metavar="DIR", default=None,
                   help="measure the exit fractions on the CIFAR-100 test split in DIR (python format)")
    g.add_argument("--exit-threshold", type=float, default=0.85,
                   help="exit when the max softmax exceeds this (default 0.85, OSI AI)")
    g.add_argument("--measure-limit", type=int, default=None, metavar="N",
                   help="measure on the first N test images only")
    g.add_argument("--measure-paths", metavar="TOKENS", default=None,
                   help="measure the path fractions with the model's route() over a WikiText token file "
                        "(needs --vocab)")
    g.add_argument("--vocab", metavar="FILE", default=None,
                   help="vocabulary of the token files: one token per line, the line number is its id")
    g.add_argument("--perplexity", metavar="TOKENS", default=None,
                   help="also measure the LM's perplexity on a WikiText token file (needs --vocab) against "
                        "the track threshold, both readings")
    g.add_argument("--seq-len", type=int, default=None, metavar="N",
                   help="--perplexity: tokens fed per forward call, batch of one sequence (default 128)")
    g.add_argument("--allow-unknown", action="store_true",
                   help="count ops without a rule as zero (with a warning) instead of failing with exit 3")
    g.add_argument("--capture", choices=captures(), default="auto", help="graph capture method (default: auto)")
    g = p.add_argument_group("loading")
    g.add_argument("--arch", metavar="NAME",
                   help="architecture for a state_dict file: reference name or package.module:factory")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a pickled whole module (unpickling can run arbitrary code)")
    g.add_argument("--trust-code", action="store_true",
                   help="allow code a model file holds or names: a TorchScript program, a checkpoint arch "
                        "pkg.mod:factory or rule set, code-bearing parts of a .pt2 (see README, Safety)")
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=formats(), default="table", help="output format (default: table)")
    g.add_argument("--depth", type=int, metavar="N",
                   help="table: levels of the module tree (default 2); other formats: group rows by the first N "
                        "levels of the module path")
    g.add_argument("--per-op", action="store_true", help="table format: also print every op (the full table)")
    g.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    g.add_argument("--plot", metavar="FILE.png",
                   help="bar plots of params and ops per module at --depth (default 2) and their shares, as png, "
                        "pdf, svg, ... (needs matplotlib)")
    g.add_argument("--show-free", action="store_true", help="table format: also show ops that cost nothing")
    g.add_argument("--report", metavar="FILE.md",
                   help="also write the submission document (scorer.submission): threshold result (with "
                        "--data), totals, per-module and per-op tables, settings, rule set, how to reproduce")
    g.add_argument("--data", metavar="DATA",
                   help="--report: evaluate the quality threshold on DATA, as `micronet-score evaluate` does "
                        "(cifar-100-python folder, file.py:loader, or a token file with --vocab)")
    g.add_argument("--list-references", action="store_true", help="list the registered reference models")
    g.add_argument("--list-rules", nargs="?", const="", default=None, metavar="NAME",
                   help="list the built-in rule sets; with NAME, print that rule set's whole description")
    g.add_argument("--version", action="version", version=version_line(),
                   help="print the version of micronet-score (and of torch and Python) and exit")
    g.add_argument("--debug", action="store_true", help="show full tracebacks and warnings on error")
    return p


# --------------------------------------------------------------------------- helpers


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " ".join(lines)


def _error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,32,32"`` (or ``1x3x32x32``) as a tuple of positive integers; ScorerError otherwise."""
    from scorer.errors import ScorerError

    cleaned = text.strip().strip("()[]").replace("x", ",").replace(" ", "")
    try:
        shape = tuple(int(p) for p in cleaned.split(",") if p != "")
    except ValueError:
        raise ScorerError(f"bad --input-shape {text!r}: use comma-separated integers, e.g. 1,3,32,32") from None
    if not shape or any(d <= 0 for d in shape):
        raise ScorerError(f"bad --input-shape {text!r}: dimensions must be positive integers")
    return shape


def parse_exit_fractions(items: Sequence[str]) -> dict[str, float]:
    """``["exit4=0.3", "final=0.7"]`` as a dict; ScorerError on a malformed item."""
    from scorer.errors import ScorerError

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ScorerError(f"bad --exit-fraction {item!r}: use NAME=F, e.g. exit4=0.29")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ScorerError(f"bad --exit-fraction {item!r}: {value!r} is not a number") from None
    return out


def _write(text: str, output: str | None) -> None:
    from scorer.errors import ScorerError

    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        Path(output).write_text(text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        raise ScorerError(f"cannot write {output}: {exc.strerror or exc}") from None


def version_line() -> str:
    """``micronet-score X.Y.Z (torch A.B.C, Python D.E.F)``, read without importing torch."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from scorer import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"{PROG} {__version__} (torch {torch_version}, Python {platform.python_version()})"


def _list(args: argparse.Namespace) -> None:
    """``--list-references`` and ``--list-rules [NAME]`` (scorer.listing: no torch, no pandas)."""
    from scorer.listing import reference_rows, render_rows, rule_doc, rule_rows

    output = args.output
    if args.list_references:
        _write(render_rows(reference_rows(), args.format), output)
        output = None  # both listings: the second goes to stdout
    if args.list_rules:
        _write(rule_doc(args.list_rules), output)
    elif args.list_rules is not None:
        _write(render_rows(rule_rows(), args.format), output)


def _unknown_warning(report: Any) -> str:
    from tabulate import tabulate

    rows = [[u.get("target", ""), u.get("module") or "<top>", u.get("name", ""), u.get("path", "")]
            for u in report.unknown]
    head = (f"WARNING: {len(rows)} op(s) have NO counting rule and were counted as ZERO "
            "(--allow-unknown); the totals are too low:")
    return head + "\n" + tabulate(rows, headers=["op", "layer", "node", "path"], tablefmt="simple") + "\n"


def _is_unmatched_warning(note: str) -> bool:
    """A note for a precision or sparsity glob that matched nothing (``--allow-unmatched``): a warning."""
    from scorer.precision import UNMATCHED_NOTE
    from scorer.sparsity import UNMATCHED_NOTE as SPARSITY_UNMATCHED

    return note.startswith((UNMATCHED_NOTE, SPARSITY_UNMATCHED))


def _render(report: Any, args: argparse.Namespace, title: str) -> None:
    from scorer.formatting import output_width
    from scorer.render import RenderOptions, render

    view = report.view(args.depth)
    width = output_width(sys.stdout if args.output is None else io.StringIO())  # a file: COLUMNS or 100
    options = RenderOptions(show_free=args.show_free, title=title, per_op=args.per_op, width=width)
    _write(render(args.format, view, options), args.output)
    if args.format == "csv":
        for note in report.notes:
            # the unknown-op table and the unmatched-glob warnings are printed louder, after the report
            if not (report.unknown and note.startswith("WARNING:")) and not _is_unmatched_warning(note):
                print(f"{PROG}: note: {note}", file=sys.stderr)


def _score(args: argparse.Namespace) -> int:
    from scorer.api import score
    from scorer.errors import ScorerError
    from scorer.load import load_model

    if args.plot:
        from scorer.render import check_plot_path

        check_plot_path(args.plot)  # fail before loading, scoring and printing anything
    if args.report:
        from scorer.submission import check_report_path

        check_report_path(args.report)
    if args.depth is not None and args.depth < 0:
        raise ScorerError(f"--depth must be >= 0, got {args.depth}")
    input_shapes = [parse_shape(text) for text in args.input_shape] if args.input_shape else None
    exit_fractions = parse_exit_fractions(args.exit_fraction) if args.exit_fraction else None

    _check_lm_args(args)
    if args.sparsity:
        from scorer.sparsity import SparsitySpec

        SparsitySpec.parse(args.sparsity)  # a malformed --sparsity fails before the model is loaded
    loaded = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle, trust_code=args.trust_code)
    if args.measure_paths:
        exit_fractions = _measure_paths(loaded.model, args)
    if args.measure_exits:
        if exit_fractions is not None:
            raise UsageError("give --exit-fraction or --measure-exits, not both")
        exit_fractions = _measure_exits(loaded.model, args)
        sys.stderr.write("measured exit fractions: "
                         + ", ".join(f"{k}={v:.4f}" for k, v in exit_fractions.items()) + "\n")
    track = args.track or loaded.track or DEFAULT_TRACK
    rules = args.rules or loaded.rules or DEFAULT_RULES
    bits = args.bits if args.bits is not None else loaded.bits
    precision: Any = args.precision if args.precision else loaded.precision
    example_inputs = None
    input_dtypes = args.input_dtype
    if input_shapes is not None and input_dtypes is not None and len(input_dtypes) > len(input_shapes):
        raise UsageError(f"{len(input_dtypes)} --input-dtype for {len(input_shapes)} --input-shape: "
                         "give one shape per input")
    if input_shapes is None and loaded.example_inputs is not None and input_dtypes is None:
        example_inputs = loaded.example_inputs
    elif input_shapes is None and loaded.input_shape is not None and (args.track is None or args.track == loaded.track):
        from scorer.inputs import shapes_of

        input_shapes = shapes_of(loaded.input_shape)  # one shape, or one per input (a step model's state)
        if input_dtypes is None and loaded.input_dtype is not None:
            given = loaded.input_dtype
            input_dtypes = list(given) if isinstance(given, (list, tuple)) else [given]
    report = score(
        loaded.model,
        input_shape=input_shapes,
        input_dtype=input_dtypes,
        tokens=args.tokens,
        example_inputs=example_inputs,
        rules=rules,
        bits=bits,
        track=track,
        sparsity=args.sparsity if args.sparsity is not None else loaded.sparsity,
        precision=precision,
        exit_fractions=exit_fractions if exit_fractions is not None else loaded.exit_fractions,
        mask_block=args.mask_block,
        allow_unknown=args.allow_unknown,
        param_bits=args.param_bits,
        mul_bits=args.mul_bits,
        add_bits=args.add_bits,
        capture=args.capture,
        allow_unmatched=args.allow_unmatched,
    )
    report.notes.extend(_lm_notes(loaded.model, args, exit_fractions))
    if args.report:
        _write_submission(report, loaded, track, args)
    _render(report, args, title=loaded.description or str(args.model))
    if args.plot:
        report.plot(args.plot, args.depth)
    if report.unknown:
        sys.stderr.write(_unknown_warning(report))
    for note in filter(_is_unmatched_warning, report.notes):
        print(f"{PROG}: warning: {note.removeprefix('WARNING: ')}", file=sys.stderr)
    return 0


def _write_submission(report: Any, loaded: Any, track: str, args: argparse.Namespace) -> None:
    """``--report``: the submission document, with the threshold result when ``--data`` is given."""
    from scorer.submission import write_submission

    quality = None
    if args.data is not None:
        from scorer.evaluate import evaluate_loaded

        has_exit = callable(getattr(loaded.model, "forward_with_exit", None))
        options = argparse.Namespace(data=args.data, vocab=args.vocab, seq_len=args.seq_len,
                                     # the parser's default 0.85 leaves a checkpoint's own threshold in force
                                     exit_threshold=args.exit_threshold if has_exit and args.exit_threshold != 0.85
                                     else None,
                                     limit=args.measure_limit)
        quality = evaluate_loaded(loaded, track, options)
        sys.stderr.write(f"quality: {quality.verdict()}\n")
    write_submission(args.report, report, quality=quality, argv=getattr(args, "argv", None),
                     title=loaded.description or str(args.model), depth=args.depth if args.depth is not None else 2)
    sys.stderr.write(f"wrote {args.report}\n")


def _measure_exits(model: Any, args: argparse.Namespace) -> dict[str, float]:
    """Exit fractions measured over the CIFAR-100 test split (scorer.exits)."""
    from scorer.cifar import DataError, load_cifar100, split_batches
    from scorer.errors import ScorerError
    from scorer.exits import measure_exit_fractions

    try:
        split = load_cifar100(args.measure_exits, "test")
    except DataError as exc:
        raise ScorerError(str(exc)) from None
    n = len(split) if args.measure_limit is None else max(0, min(len(split), args.measure_limit))
    batch = 256
    return measure_exit_fractions(model, split_batches(split, batch, n), args.exit_threshold,
                                  progress=sys.stderr.isatty(), total=(n + batch - 1) // batch)


DEFAULT_SEQ_LEN = 128


def _check_lm_args(args: argparse.Namespace) -> None:
    """The token-file flags' combinations (before the model is loaded)."""
    for flag, value in (("--measure-paths", args.measure_paths), ("--perplexity", args.perplexity)):
        if value is not None and args.vocab is None:
            raise UsageError(f"{flag} needs --vocab (the vocabulary file of the token file)")
    if args.data is not None and args.report is None:
        raise UsageError("--data is used with --report (or use `micronet-score evaluate MODEL --data DATA`)")
    if args.vocab is not None and args.measure_paths is None and args.perplexity is None and args.data is None:
        raise UsageError("--vocab is used with --measure-paths or --perplexity (or --data with --report)")
    if args.seq_len is not None and args.perplexity is None and args.data is None:
        raise UsageError("--seq-len is used with --perplexity (or --data with --report)")
    if args.seq_len is not None and args.seq_len <= 0:
        raise UsageError(f"--seq-len must be positive, got {args.seq_len}")
    if args.measure_paths is not None and (args.exit_fraction or args.measure_exits):
        raise UsageError("give --path-fraction, --measure-exits or --measure-paths, not two")


def _read_token_file(path: str, vocab_path: str) -> Any:
    from scorer.lm import read_tokens, read_vocab

    return read_tokens(path, read_vocab(vocab_path))


def _measure_paths(model: Any, args: argparse.Namespace) -> Any:
    """Path fractions measured with the model's route() over the token file (scorer.lm)."""
    from scorer.lm import measure_path_fractions, path_names

    path_names(model)  # a model without paths() fails before the file is read
    fractions = measure_path_fractions(model, _read_token_file(args.measure_paths, args.vocab))
    sys.stderr.write(f"measured path fractions over {args.measure_paths}: {fractions.describe()}\n")
    return fractions


def _lm_notes(model: Any, args: argparse.Namespace, fractions: Any) -> list[str]:
    """Report notes: the measured path counts, the perplexity against the WikiText-103 threshold."""
    notes: list[str] = []
    if fractions is None and args.perplexity is None:
        return notes  # not a language-model run: scorer.lm is not imported
    from scorer.lm import PathFractions, perplexity, quality

    if isinstance(fractions, PathFractions):
        notes.append(f"path fractions measured over {args.measure_paths} ({fractions.total} tokens): "
                     f"{fractions.describe()}")
    if args.perplexity is not None:
        tokens = _read_token_file(args.perplexity, args.vocab)
        seq_len = args.seq_len or DEFAULT_SEQ_LEN
        ppl = perplexity(model, tokens, seq_len=seq_len)
        notes.append(f"{quality(ppl).describe()}; over {tokens.numel()} tokens of {args.perplexity} "
                     f"({tokens.numel() - 1} predictions, {seq_len} tokens per forward, batch 1)")
    return notes


def _subcommand(name: str, argv: list[str]) -> int:
    target = SUBCOMMANDS[name]
    mod_name, func_name = target.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name == mod_name:
            _error(f"the {name!r} subcommand is not available in this installation ({mod_name} is missing)")
            return 2
        raise
    func = getattr(module, func_name, None)
    if func is None:
        _error(f"the {name!r} subcommand is not available ({mod_name} has no {func_name})")
        return 2
    return int(func(argv) or 0)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    return code if isinstance(code, int) else (0 if code is None else 2)


def _run(argv: list[str]) -> int:
    # Only argparse (--help) and a subcommand may end the run through SystemExit; one raised by the
    # model's code reaches main() and is an error.
    if argv and argv[0] in SUBCOMMANDS:
        try:
            return _subcommand(argv[0], argv[1:])
        except SystemExit as exc:
            return _exit_code(exc)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return _exit_code(exc)
    args.argv = list(argv)  # the command line, for --report
    if args.list_references or args.list_rules is not None:
        _list(args)
        return 0
    if not args.model:
        raise UsageError("MODEL is required (or --list-references / --list-rules); see --help")
    if args.debug:
        return _score_frozen(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _score_frozen(args)


def _score_frozen(args: argparse.Namespace) -> int:
    """``_score`` with the objects alive once torch is imported (~170,000) left out of the garbage collector's
    full scans (``gc.freeze``) for the run, then given back: the scans cost ~0.05 s of a score."""
    import scorer.api  # noqa: F401 - imports torch, whose objects are the ones frozen

    gc.freeze()
    try:
        return _score(args)
    finally:
        gc.unfreeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``micronet-score`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        from scorer.errors import ScorerError
    except Exception as exc:  # noqa: BLE001
        _error(f"cannot import the scorer: {type(exc).__name__}: {exc}")
        return 2
    try:
        return _run(argv)
    except UsageError as exc:
        _error(str(exc))
        return UsageError.exit_code
    except ScorerError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        return exc.exit_code
    except SystemExit as exc:  # from the model's code (--help and subcommands return in _run)
        _error(f"the model's code raised SystemExit({exc.code!r}) (run with --debug for the traceback)")
        if debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the user's model code may raise anything; one line, exit 2
        if debug:
            traceback.print_exc()
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        _error(f"{type(exc).__name__}: {lines[0] if lines else ''} (run with --debug for the traceback)")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
