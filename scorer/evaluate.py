"""The track's quality metric against its hard threshold, as an exact count (``micronet-score evaluate``).

The challenge counts an entry only if it reaches the track's quality target, "at or above ... without
rounding" (official_rules.md §1.1, site FAQ): 8,000 of the 10,000 CIFAR-100 test images, 37,500 of the 50,000
ImageNet validation images, a WikiText-103 test perplexity of 35 (FAQ "35 or below", overview "below 35":
both readings are reported). Accuracy is compared in integers (``correct >= Threshold.required(total)``),
never through a rounded percentage.

Data:

* CIFAR-100: the python-format folder (``scorer.cifar``, restricted unpickler), ``test`` split, images scaled
  to [0, 1] and normalised with the CIFAR-100 mean and std (``normalize=False``: [0, 1] only).
* ImageNet: a loader the user names, ``file.py:name`` or ``pkg.mod:name`` (imported and called like
  ``--arch file.py:factory``: the user named the code, README "Safety"); a callable is called with no
  arguments, and the result (or a non-callable object itself) is iterated for ``(images, labels)`` batches.
* WikiText-103: a token file and its vocabulary (``scorer.lm``), perplexity fed online, batch of one sequence.

A model's prediction is the argmax of its output (or of the first element of a tuple). A model with an early
exit (``forward_with_exit``) is evaluated with its exit rule when ``exit_threshold`` is given: a sample
leaves at the exit when the exit head's max softmax exceeds it (scorer.exits); the exit counts come back too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scorer.errors import ScorerError
from scorer.quality import THRESHOLDS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

    from scorer.cifar import Cifar100Split

#: Examples (predictions for WikiText-103) of each track's official evaluation split.
OFFICIAL_TOTALS = {
    "cifar100": 10_000,  # official_rules.md §1.1: 10,000 test images
    "imagenet": 50_000,  # official_rules.md §1.1: 50,000 validation images
    "wikitext103": 245_568,  # 245,569 test tokens (scorer.lm), the first has no context: N - 1 predictions
}
DEFAULT_BATCH = 256
DEFAULT_SEQ_LEN = 128
#: OSI AI's exit threshold (team_scores.md §2.1), used for an early-exit model that records none.
DEFAULT_EXIT_THRESHOLD = 0.85


@dataclass(frozen=True)
class QualityResult:
    """A measured quality against the track's threshold.

    Accuracy tracks: ``correct`` of ``total`` examples, ``required`` the correct answers needed out of
    ``total`` (exact integers); ``qualifies`` is ``correct >= required``. WikiText-103: ``perplexity`` over
    ``total`` predictions; ``qualifies`` is the FAQ reading (<= 35), ``qualifies_strict`` the overview's
    (< 35). ``official`` is True when ``total`` is the official split's size.
    """

    track: str
    metric: str
    data: str
    total: int
    official_total: int
    qualifies: bool
    threshold_source: str
    correct: int | None = None
    required: int | None = None
    perplexity: float | None = None
    threshold: float | None = None
    qualifies_strict: bool | None = None
    exit_threshold: float | None = None
    exit_counts: dict[str, int] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def official(self) -> bool:
        return self.total == self.official_total

    @property
    def exit_fractions(self) -> dict[str, float] | None:
        """Share of examples leaving at each path, from ``exit_counts`` (None without an exit rule)."""
        if not self.exit_counts:
            return None
        return {k: v / self.total for k, v in self.exit_counts.items()}

    def verdict(self) -> str:
        """One line: ``"8,012 / 10,000 ≥ 8,000: qualifies"`` (or the perplexity under both readings)."""
        if self.perplexity is not None:
            t = f"{self.threshold:g}"

            def word(ok: bool | None) -> str:
                return "qualifies" if ok else "does not qualify"

            head = f"perplexity {self.perplexity:.4f} over {self.total:,} predictions"
            return (f"{head}: {'≤' if self.qualifies else '>'} {t} (FAQ \"{t} or below\"): {word(self.qualifies)}; "
                    f"{'<' if self.qualifies_strict else '≥'} {t} (overview \"below {t}\"): "
                    f"{word(self.qualifies_strict)}")
        sign = "≥" if self.qualifies else "<"
        word = "qualifies" if self.qualifies else "does not qualify"
        return f"{self.correct:,} / {self.total:,} {sign} {self.required:,}: {word}"

    def describe(self) -> str:
        """The verdict, then what it was measured on and whether that is the official split."""
        lines = [self.verdict(), f"{self.metric} on {self.data}; threshold: {self.threshold_source}"]
        if not self.official:
            unit = "predictions" if self.perplexity is not None else "examples"
            lines.append(f"NOT the official split: {self.total:,} {unit}, the official one has "
                         f"{self.official_total:,}; the verdict holds for this data only")
        if self.exit_counts:
            lines.append(f"early exit at max softmax > {self.exit_threshold:g}: "
                         + ", ".join(f"{k}={v:,}/{self.total:,}" for k, v in self.exit_counts.items()))
        lines.extend(self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every field plus ``official``, ``exit_fractions`` and ``verdict``."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        out.update(official=self.official, exit_fractions=self.exit_fractions, verdict=self.verdict())
        return out


# --------------------------------------------------------------------------- accuracy


def _logits(out: Any, model: Any) -> torch.Tensor:
    import torch

    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = f"{tuple(out.shape)} tensor" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ScorerError(f"{type(model).__name__} must return class scores of shape (N, classes) (or a tuple "
                          f"starting with them), got {got}")
    return out


def _device_of(model: nn.Module) -> torch.device:
    import torch

    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _as_batch(batch: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ScorerError(f"batch {index} is {type(batch).__name__}, not (images, labels)")
    images, labels = batch[0], torch.as_tensor(batch[1])
    if not isinstance(images, torch.Tensor):
        raise ScorerError(f"batch {index}: images are {type(images).__name__}, not a tensor")
    if labels.dim() != 1 or labels.is_floating_point() or labels.numel() != images.shape[0]:
        raise ScorerError(f"batch {index}: labels must be {images.shape[0]} integer class indices (one per image), "
                          f"got {tuple(labels.shape)} {labels.dtype}")
    return images, labels.long()


def count_correct(model: nn.Module, batches: Iterable[Any], limit: int | None = None,
                  exit_threshold: float | None = None) -> tuple[int, int, dict[str, int] | None]:
    """(correct, seen, exit counts) of ``model``'s argmax over ``(images, labels)`` batches, on the model's
    device, in eval mode (each module's flag restored after). ``limit``: the first N examples only.
    ``exit_threshold``: use the model's early-exit rule (``forward_with_exit``); the exit counts are
    ``{exit: n, "final": m}``, else None."""
    import torch

    from scorer.capture import eval_mode

    exit_name = None
    if exit_threshold is not None:
        from scorer.exits import exit_path_names

        if not 0.0 <= exit_threshold <= 1.0:
            raise ScorerError(f"exit threshold must be in [0, 1], got {exit_threshold}")
        exit_name, _ = exit_path_names(model)
    device = _device_of(model)
    correct = seen = exited = 0
    with torch.no_grad(), eval_mode(model):
        for index, batch in enumerate(batches):
            if limit is not None and seen >= limit:
                break
            images, labels = _as_batch(batch, index)
            if limit is not None and seen + len(labels) > limit:
                images, labels = images[: limit - seen], labels[: limit - seen]
            images, labels = images.to(device), labels.to(device)
            if exit_name is None:
                pred = _logits(model(images), model).argmax(dim=1)
            else:
                exit_logits, final_logits = model.forward_with_exit(images)
                conf = torch.softmax(exit_logits.float(), dim=1).amax(dim=1)
                leaves = conf > exit_threshold
                pred = torch.where(leaves, exit_logits.argmax(dim=1), final_logits.argmax(dim=1))
                exited += int(leaves.sum())
            if pred.shape != labels.shape:
                raise ScorerError(f"batch {index}: {pred.numel()} predictions for {labels.numel()} labels")
            correct += int((pred == labels).sum())
            seen += int(labels.numel())
    if seen == 0:
        raise ScorerError("no examples to evaluate")
    exits = None if exit_name is None else {exit_name: exited, "final": seen - exited}
    return correct, seen, exits


def accuracy_result(track: str, correct: int, total: int, data: str, exit_threshold: float | None = None,
                    exit_counts: dict[str, int] | None = None, notes: Sequence[str] = ()) -> QualityResult:
    """``correct`` of ``total`` against ``track``'s threshold, in integers."""
    threshold = THRESHOLDS[track]
    required = threshold.required(total)
    return QualityResult(
        track=track, metric=threshold.metric, data=data, total=total, official_total=OFFICIAL_TOTALS[track],
        qualifies=correct >= required, threshold_source=threshold.source, correct=correct, required=required,
        exit_threshold=exit_threshold if exit_counts else None, exit_counts=exit_counts, notes=tuple(notes),
    )


def evaluate_cifar100(model: nn.Module, data: str | Path | Cifar100Split, *, batch_size: int = DEFAULT_BATCH,
                      limit: int | None = None, normalize: bool = True,
                      exit_threshold: float | None = None) -> QualityResult:
    """Top-1 accuracy on the ``test`` split of a CIFAR-100 python-format folder (or an already read
    ``scorer.cifar.Cifar100Split``, to evaluate several models on one read)."""
    from scorer.cifar import Cifar100Split, DataError, load_cifar100, split_batches, to_unit

    if isinstance(data, Cifar100Split):
        split, data = data, f"a Cifar100Split of {len(data):,} images"
    else:
        try:
            split = load_cifar100(data, "test")
        except DataError as exc:
            raise ScorerError(str(exc)) from None
    if normalize:
        batches: Iterable[Any] = split_batches(split, batch_size, limit)
    else:
        n = len(split) if limit is None else min(len(split), limit)
        batches = ((to_unit(split.images[i:i + batch_size]), split.fine_labels[i:i + batch_size])
                   for i in range(0, n, batch_size))
    correct, total, exits = count_correct(model, batches, limit, exit_threshold)
    pixels = "normalised with the CIFAR-100 mean/std" if normalize else "scaled to [0, 1], not normalised"
    return accuracy_result("cifar100", correct, total, f"{data} (test split, {pixels})", exit_threshold, exits)


def resolve_loader(spec: str) -> Iterable[Any]:
    """The batches named by ``file.py:name`` or ``pkg.mod:name``: ``name()`` if callable, else the object."""
    from scorer.load import _is_file_factory, _is_module_factory, _resolve_factory
    from scorer.unpickle import USER_ERRORS, one_line

    if not (_is_file_factory(spec) or _is_module_factory(spec)):
        raise ScorerError(f"ImageNet data {spec!r}: name a loader as file.py:name or package.module:name "
                          "returning (images, labels) batches")
    obj, _ = _resolve_factory(spec)
    if callable(obj):
        try:
            obj = obj()
        except USER_ERRORS as exc:
            raise ScorerError(f"calling {spec} failed: {one_line(exc)}") from None
    if not isinstance(obj, Iterable):
        raise ScorerError(f"{spec} gave {type(obj).__name__}, not an iterable of (images, labels) batches")
    return obj


def evaluate_imagenet(model: nn.Module, data: str | Iterable[Any], *, limit: int | None = None,
                      exit_threshold: float | None = None) -> QualityResult:
    """Top-1 accuracy over the batches of a loader (``file.py:name`` / ``pkg.mod:name``, or an iterable)."""
    batches = resolve_loader(data) if isinstance(data, str) else data
    where = f"the batches of {data}" if isinstance(data, str) else f"a {type(data).__name__} of batches"
    correct, total, exits = count_correct(model, batches, limit, exit_threshold)
    return accuracy_result("imagenet", correct, total, where, exit_threshold, exits)


# --------------------------------------------------------------------------- perplexity


def evaluate_wikitext103(model: nn.Module, data: str | Path, vocab: str | Path, *, seq_len: int = DEFAULT_SEQ_LEN,
                         limit: int | None = None) -> QualityResult:
    """Perplexity on a WikiText token file (``scorer.lm.perplexity``: batch of one sequence, ``seq_len`` tokens
    per forward) under both readings of the threshold. ``limit``: the first N tokens."""
    from scorer.lm import perplexity, quality, read_tokens, read_vocab

    tokens = read_tokens(data, read_vocab(vocab))
    if limit is not None:
        tokens = tokens[:limit]
    ppl = perplexity(model, tokens, seq_len=seq_len)
    q = quality(ppl)
    threshold = THRESHOLDS["wikitext103"]
    return QualityResult(
        track="wikitext103", metric=threshold.metric,
        data=f"{data} ({tokens.numel():,} tokens, vocabulary {vocab}, {seq_len} tokens per forward, batch 1)",
        total=tokens.numel() - 1, official_total=OFFICIAL_TOTALS["wikitext103"], qualifies=q.passes_faq,
        threshold_source=threshold.source, perplexity=ppl, threshold=q.threshold,
        qualifies_strict=q.passes_overview,
    )


# --------------------------------------------------------------------------- one entry point


def infer_track(data: str, vocab: str | None) -> str:
    """The track a data argument names: a token file with a vocabulary, a loader spec, a CIFAR folder."""
    if vocab is not None:
        return "wikitext103"
    if not Path(data).exists() and ":" in data:
        return "imagenet"
    return "cifar100"


def evaluate(model: nn.Module, track: str, data: Any, *, vocab: str | Path | None = None,
             batch_size: int = DEFAULT_BATCH, seq_len: int = DEFAULT_SEQ_LEN, limit: int | None = None,
             normalize: bool = True, exit_threshold: float | None = None) -> QualityResult:
    """``model``'s quality on ``track`` (cifar100: a python-format folder; imagenet: a loader spec or an
    iterable of batches; wikitext103: a token file plus ``vocab``) against the threshold.

    The model is neither moved nor changed: batches go to its device, and eval mode is restored after.
    """
    if limit is not None and limit <= 0:
        raise ScorerError(f"limit must be positive, got {limit}")
    if track == "cifar100":
        return evaluate_cifar100(model, data, batch_size=batch_size, limit=limit, normalize=normalize,
                                 exit_threshold=exit_threshold)
    if track == "imagenet":
        return evaluate_imagenet(model, data, limit=limit, exit_threshold=exit_threshold)
    if track == "wikitext103":
        if vocab is None:
            raise ScorerError("wikitext103 needs the vocabulary of the token file (vocab=, --vocab)")
        if exit_threshold is not None:
            raise ScorerError("an exit threshold applies to image models with forward_with_exit, not wikitext103")
        return evaluate_wikitext103(model, data, vocab, seq_len=seq_len, limit=limit)
    raise ScorerError(f"unknown track {track!r}; known: {', '.join(THRESHOLDS)}")


def exit_threshold_for(model: Any, given: float | None, meta: dict | None) -> tuple[float | None, str | None]:
    """The exit threshold to evaluate an early-exit model with, and a note saying where it came from: the one
    given, else the checkpoint's ``meta.exit_threshold``, else OSI AI's 0.85. (None, None) for other models."""
    has_exit = callable(getattr(model, "forward_with_exit", None)) and callable(getattr(model, "exit_paths", None))
    if not has_exit:
        if given is not None:
            raise ScorerError(f"{type(model).__name__} has no early exit (forward_with_exit and exit_paths), so "
                              "an exit threshold does not apply")
        return None, None
    if given is not None:
        return given, f"exit threshold {given:g} (given)"
    recorded = (meta or {}).get("exit_threshold")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and math.isfinite(recorded):
        return float(recorded), f"exit threshold {recorded:g} (the checkpoint's meta.exit_threshold)"
    return DEFAULT_EXIT_THRESHOLD, f"exit threshold {DEFAULT_EXIT_THRESHOLD:g} (default, OSI AI's)"


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``micronet-score evaluate``."""
    p = argparse.ArgumentParser(
        prog="micronet-score evaluate",
        description="Measure a model's quality metric on the track's evaluation data and report it against the "
                    "hard threshold as an exact count (\"at or above ... without rounding\").",
        epilog="DATA: cifar100: the cifar-100-python folder (test split); imagenet: file.py:loader or "
               "package.module:loader giving (images, labels) batches (its code runs: you name it); "
               "wikitext103: a token file with --vocab. Exit codes: 0 measured (--fail-below: 1 when the "
               "threshold is not met), 2 usage or input error.",
    )
    p.add_argument("model", metavar="MODEL", help="the model, any form micronet-score accepts")
    p.add_argument("--data", required=True, metavar="DATA", help="the evaluation data (forms below)")
    p.add_argument("--track", choices=tuple(THRESHOLDS),
                   help="default: the model's, else from DATA (--vocab: wikitext103, a :loader: imagenet)")
    p.add_argument("--vocab", metavar="FILE", help="wikitext103: the vocabulary (one token per line)")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, metavar="N",
                   help=f"wikitext103: tokens per forward, batch of one sequence (default {DEFAULT_SEQ_LEN})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N", help="cifar100 batch size")
    p.add_argument("--limit", type=int, metavar="N", help="the first N examples (tokens) only: not official")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="cifar100: feed pixels in [0, 1] (default: normalised with the CIFAR-100 mean/std)")
    p.add_argument("--exit-threshold", type=float, metavar="F",
                   help="early-exit models: exit when the exit head's max softmax exceeds F (default: the "
                        "checkpoint's, else 0.85)")
    p.add_argument("--device", metavar="DEV", help="run the model on DEV (e.g. cuda); default cpu")
    p.add_argument("--arch", metavar="NAME", help="architecture for a state_dict file (as for scoring)")
    p.add_argument("--trust-pickle", action="store_true", help="allow a pickled whole module (runs code)")
    p.add_argument("--trust-code", action="store_true", help="allow code a model file names (see README, Safety)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--fail-below", action="store_true", help="exit 1 when the threshold is not met")
    g = p.add_argument_group("submission report")
    g.add_argument("--report", metavar="FILE.md",
                   help="also score the model (its own rules, bits, precision, exits unless given) and write the "
                        "submission document; for every scoring option use micronet-score MODEL ... --data DATA "
                        "--report FILE.md")
    g.add_argument("--rules", metavar="NAME", help="--report: rule set (default: the model's, else micronet2019)")
    g.add_argument("--bits", type=int, metavar="N", help="--report: bit-width policy (default: the model's)")
    g.add_argument("--depth", type=int, default=2, metavar="N", help="--report: per-module table depth (2)")
    p.add_argument("--debug", action="store_true", help="full tracebacks and warnings")
    return p


def evaluate_loaded(loaded: Any, track: str, args: argparse.Namespace) -> QualityResult:
    """Evaluate a ``scorer.load.LoadedModel`` with the command-line options in ``args`` (attributes
    ``data``, ``vocab``, ``seq_len``, ``exit_threshold``; optional ``batch_size``, ``limit``, ``normalize``)."""
    meta = (loaded.extra or {}).get("meta")
    threshold, note = (None, None) if track == "wikitext103" else exit_threshold_for(
        loaded.model, getattr(args, "exit_threshold", None), meta)
    result = evaluate(loaded.model, track, args.data, vocab=args.vocab,
                      batch_size=getattr(args, "batch_size", None) or DEFAULT_BATCH,
                      seq_len=getattr(args, "seq_len", None) or DEFAULT_SEQ_LEN,
                      limit=getattr(args, "limit", None), normalize=getattr(args, "normalize", True),
                      exit_threshold=threshold)
    if note:
        result = QualityResult(**{**asdict(result), "notes": (*result.notes, note)})
    return result


def evaluate_main(argv: Sequence[str]) -> int:
    """CLI: ``micronet-score evaluate MODEL --data PATH [options]``."""
    args = build_parser().parse_args(list(argv))
    if args.debug:
        return _evaluate_cli(args, list(argv))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _evaluate_cli(args, list(argv))


def _evaluate_cli(args: argparse.Namespace, argv: list[str]) -> int:
    from scorer.load import load_model

    if args.vocab is not None and args.track not in (None, "wikitext103"):
        raise ScorerError("--vocab is for wikitext103 token files")
    for flag, value in (("--batch-size", args.batch_size), ("--seq-len", args.seq_len), ("--limit", args.limit)):
        if value is not None and value <= 0:
            raise ScorerError(f"{flag} must be positive, got {value}")
    if args.report is not None:
        from scorer.submission import check_report_path

        check_report_path(args.report)
    loaded = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle, trust_code=args.trust_code)
    if args.device:
        try:
            loaded.model.to(args.device)
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise ScorerError(f"cannot move the model to {args.device!r}: {exc}") from None
    track = args.track or loaded.track or infer_track(args.data, args.vocab)
    result = evaluate_loaded(loaded, track, args)
    if args.format == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(result.describe() + "\n")
    if args.report is not None:
        from scorer.submission import score_loaded, write_submission

        if args.device:
            loaded.model.to("cpu")
        report = score_loaded(loaded, track=track, rules=args.rules, bits=args.bits,
                              exit_fractions=result.exit_fractions)
        if result.exit_counts:
            report.notes.append("path fractions measured by this evaluation (its exit rule, same data): "
                                + ", ".join(f"{k}={v:,}/{result.total:,}" for k, v in result.exit_counts.items()))
        write_submission(args.report, report, quality=result, argv=["evaluate", *argv],
                         title=loaded.description or args.model, depth=args.depth)
        sys.stderr.write(f"wrote {args.report}\n")
    return 1 if args.fail_below and not result.qualifies else 0
