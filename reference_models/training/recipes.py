"""Training recipes: TOML files describing a model, its data pipeline, and an ordered list of stages.

Layout (see the bundled ``reference_models/recipes/*.toml``)::

    name = "osi_ai"
    description = "..."
    sources = ["seeds/osi-ai-micronet.txt §2-0", ...]

    [model]
    arch = "osi_ai"                 # a reference model name (reference_models.registry)
    kwargs = {}                     # JSON-able factory arguments
    ghost_batch_size = 32           # optional: Ghost BN with virtual batches of this size
    # ghost_splits = 4              # ... or this many virtual batches

    [data]                          # training defaults for every stage (any training key below)
    batch_size = 128                # the global batch (split over the processes of a torchrun job)
    augment = ["crop", "flip", "autoaugment"]

    [train]                         # more training defaults (same keys; these win over [data])
    lr = 0.13

    [score]                         # how each stage's checkpoint is scored
    rules = "micronet2019"
    bits = 16

    [[stages]]                      # in order; each may override any training key
    kind = "train"                  # train | prune | channel_prune | quantise | binarise | exit | exit_prune
                                    # | reinit | mixed_precision
    epochs = 1200
    # option = "trained_init"       # optional stage: runs only with ``micronet-train --with trained_init``

Training keys are the fields of :class:`TrainConfig`. Stage-specific keys are listed in
:data:`STAGE_KEYS`. Unknown keys are errors (a typo must not silently change a recipe).

A recipe only *names* things: ``arch`` must be a registered reference model, ``[score] rules`` a built-in
rule set and ``track`` a known track, so no field reaches an import. Recipe and stage names become folder
and file names, so they are safe identifiers (:func:`check_name`).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "RECIPES_DIR",
    "Recipe",
    "RecipeError",
    "ScoreSpec",
    "StageSpec",
    "TrainConfig",
    "bundled_recipes",
    "check_name",
    "load_recipe",
    "resolve_recipe",
]

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

STAGE_KINDS = (
    "train", "prune", "channel_prune", "quantise", "binarise", "exit", "exit_prune", "reinit", "mixed_precision",
)
_KIND_ALIASES = {"quantize": "quantise", "binarize": "binarise", "early_exit": "exit", "haq": "mixed_precision"}

LOSSES = ("ce", "label_smoothing", "weighted_label_smoothing", "soft_smoothing")
AUGMENTS = ("crop", "flip", "rotation", "autoaugment", "cutout")
MIXES = ("none", "mixup", "cutmix")

#: Keys a stage of each kind may set besides the training keys.
STAGE_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "train": {},
    "prune": {"schedule": str, "method": str, "include": list, "exclude": list, "rewind": bool},
    "channel_prune": {
        "schedule": str, "back_ratio": float, "limit": float, "fisher": str, "fisher_batches": int,
        "anneal_epochs_fraction": float, "anneal_lr_scale": float,
    },
    "quantise": {
        "weight_bits": int, "act_bits": int, "shared_exponent": bool, "exclude": list, "act_mode": str,
        "per_layer": dict, "calibrate_batches": int,
    },
    "binarise": {"stage1": dict, "stage2": dict},
    "exit": {
        "head": str, "block": str, "exit_name": str, "threshold": float, "target_accuracy": float,
        "target_fraction": float,
        "update_backbone_bn": bool,
    },
    "exit_prune": {
        "head": str, "block": str, "schedule": str, "method": str, "exclude": list, "update_backbone_bn": bool,
    },
    "reinit": {"mode": str, "include": list, "exclude": list},
    "mixed_precision": {
        "budget_score": float, "budget_fraction": float, "weight_candidates": list, "act_candidates": list,
        "act_bits": int, "act_mode": str, "exclude": list, "sensitivity_batches": int, "calibrate_batches": int,
    },
}
_COMMON_STAGE_KEYS = {"kind", "name", "description", "option"}


class RecipeError(ValueError):
    """An unusable recipe (the message is one line naming the file and the key)."""


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: object, what: str) -> str:
    """``name`` if it is a safe file or folder name (letters, digits, ``_ . -``, not starting with ``.`` or
    ``-``, no ``..``); RecipeError naming ``what`` otherwise."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise RecipeError(f"{what} {name!r} is not a safe name (letters, digits, '_', '.', '-'; "
                          "not starting with '.' or '-', no '..')")
    return name


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (a stage, a pruning round, a binarisation sub-stage)."""

    epochs: int = 1
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    min_lr: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    no_decay_bias: bool = True
    no_decay_norm: bool = True
    scheduler: str = "cosine"
    period: int | None = None
    restart: bool = False
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    loss: str = "ce"
    smoothing: float = 0.0
    smoothing_spread: str = "all"
    classifier: str | None = None
    srip: float = 0.0
    srip_iters: int = 2
    augment: list[str] = field(default_factory=lambda: ["crop", "flip"])
    crop_padding: int = 4
    rotation: float = 15.0
    autoaugment_policy: str = "cifar10"
    cutout_size: int = 16
    mix: str = "none"
    mix_alpha: float = 1.0
    mix_prob: float = 1.0
    distill_alpha: float = 0.0
    distill_temperature: float = 4.0

    def validate(self, where: str) -> None:
        """Raise RecipeError for values outside their domain."""
        checks = [
            (self.epochs >= 0, "epochs must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.optimizer in ("sgd", "adam"), f"optimizer {self.optimizer!r} is not 'sgd' or 'adam'"),
            (self.lr > 0, "lr must be > 0"),
            (self.scheduler in ("cosine", "step", "constant"), f"scheduler {self.scheduler!r} is not cosine/step/constant"),
            (self.period is None or self.period >= 1, "period must be >= 1"),
            (self.loss in LOSSES, f"loss {self.loss!r} is not one of {LOSSES}"),
            (0 <= self.smoothing < 1, "smoothing must be in [0, 1)"),
            (self.smoothing_spread in ("all", "others"), "smoothing_spread must be 'all' or 'others'"),
            (all(a in AUGMENTS for a in self.augment), f"augment entries must be among {AUGMENTS}"),
            (self.mix in MIXES, f"mix {self.mix!r} is not one of {MIXES}"),
            (self.mix_alpha >= 0 and 0 <= self.mix_prob <= 1, "mix_alpha >= 0 and mix_prob in [0, 1] required"),
            (0 <= self.distill_alpha <= 1, "distill_alpha must be in [0, 1]"),
            (self.distill_temperature > 0, "distill_temperature must be > 0"),
            (self.srip >= 0, "srip must be >= 0"),
            (len(self.betas) == 2, "betas must have two values"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecipeError(f"{where}: {message}")
        if "autoaugment" in self.augment:
            from reference_models.training.augment import AUTOAUGMENT_POLICIES

            if self.autoaugment_policy not in AUTOAUGMENT_POLICIES:
                raise RecipeError(
                    f"{where}: autoaugment_policy {self.autoaugment_policy!r} is not one of "
                    f"{sorted(AUTOAUGMENT_POLICIES)}"
                )

    def scaled_to(self, epochs: int) -> TrainConfig:
        """A copy running ``epochs`` epochs, with the cosine period and step milestones scaled alike.

        A run of 0 epochs (e.g. post-training quantisation) stays at 0.
        """
        if self.epochs == 0:
            return dataclasses.replace(self)
        new = dataclasses.replace(self, epochs=epochs)
        if self.epochs > 0 and epochs != self.epochs:
            ratio = epochs / self.epochs
            if self.period is not None:
                new.period = max(1, round(self.period * ratio))
            new.milestones = sorted({max(1, round(m * ratio)) for m in self.milestones})
        return new


_TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}


@dataclass
class ScoreSpec:
    """How stage checkpoints are scored (recorded in their ``meta`` too)."""

    rules: str = "micronet2019"
    bits: int | None = 16
    track: str = "cifar100"
    input_shape: list[int] = field(default_factory=lambda: [1, 3, 32, 32])


@dataclass
class StageSpec:
    """One pipeline stage: its kind, unique name, training config and kind-specific parameters."""

    kind: str
    name: str
    train: TrainConfig
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    option: str | None = None


@dataclass
class Recipe:
    """A parsed recipe."""

    name: str
    path: Path
    arch: str
    arch_kwargs: dict[str, Any]
    stages: list[StageSpec]
    score: ScoreSpec = field(default_factory=ScoreSpec)
    ghost_batch_size: int | None = None
    ghost_splits: int | None = None
    description: str = ""
    sources: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    all_stages: list[StageSpec] = field(default_factory=list)

    @property
    def options(self) -> list[str]:
        """Names of the optional stage groups (``option = ...``), in order of first use."""
        return list(dict.fromkeys(s.option for s in self.all_stages if s.option is not None))

    def enable(self, options: list[str]) -> None:
        """Run the stages of ``options`` too (``--with``); RecipeError for an option the recipe lacks."""
        if not options:
            return
        unknown = [o for o in options if o not in self.options]
        if unknown:
            raise RecipeError(f"{self.path}: no optional stages {unknown} (options: {', '.join(self.options) or 'none'})")
        self.stages = [s for s in self.all_stages if s.option is None or s.option in options]

    def override_epochs(self, epochs: int) -> None:
        """Run every stage (and every pruning round / binarisation sub-stage) for ``epochs`` epochs."""
        for stage in self.stages:
            stage.train = stage.train.scaled_to(epochs)
            for sub in ("stage1", "stage2"):
                if isinstance(stage.params.get(sub), TrainConfig):
                    stage.params[sub] = stage.params[sub].scaled_to(epochs)

    def override_batch_size(self, batch_size: int) -> None:
        """Use a global batch of ``batch_size`` in every stage."""
        for stage in self.stages:
            stage.train.batch_size = batch_size
            for sub in ("stage1", "stage2"):
                if isinstance(stage.params.get(sub), TrainConfig):
                    stage.params[sub].batch_size = batch_size


# --------------------------------------------------------------------------- parsing


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    if expected is float or (isinstance(expected, tuple) and float in expected):
        if isinstance(value, int) and not isinstance(value, bool):
            return True
    if expected is int and isinstance(value, bool):
        return False
    return isinstance(value, expected)


def _field_type(name: str) -> type | tuple[type, ...]:
    ann = _TRAIN_FIELDS[name].type
    mapping: dict[str, type | tuple[type, ...]] = {
        "int": int, "float": float, "bool": bool, "str": str, "list[float]": list, "list[int]": list,
        "list[str]": list, "int | None": int, "str | None": str,
    }
    return mapping[str(ann)]


def _train_updates(table: dict[str, Any], where: str, allowed_extra: set[str]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for key, value in table.items():
        if key in _TRAIN_FIELDS:
            expected = _field_type(key)
            if not _type_ok(value, expected):
                raise RecipeError(f"{where}: {key!r} must be {getattr(expected, '__name__', expected)}, got {value!r}")
            updates[key] = float(value) if expected is float else value
        elif key not in allowed_extra:
            raise RecipeError(f"{where}: unknown key {key!r}")
    return updates


def _table(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: [{key}] must be a table")
    return value


def _parse_stage(raw: Any, index: int, defaults: dict[str, Any], path: Path, seen: set[str]) -> StageSpec:
    where = f"{path}: stage {index + 1}"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: must be a table")
    kind = _KIND_ALIASES.get(str(raw.get("kind", "")), raw.get("kind"))
    if kind not in STAGE_KINDS:
        raise RecipeError(f"{where}: kind {raw.get('kind')!r} is not one of {STAGE_KINDS}")
    name = check_name(raw.get("name", kind), f"{where}: stage name")
    if name == "final":
        raise RecipeError(f"{where}: stage name 'final' is reserved (OUT/final.ckpt)")
    if name in seen:
        raise RecipeError(f"{where}: duplicate stage name {name!r} (give repeated kinds distinct names)")
    seen.add(name)
    extra = STAGE_KEYS[kind]
    updates = _train_updates(raw, f"{where} ({name})", set(extra) | _COMMON_STAGE_KEYS)
    cfg = TrainConfig(**{**defaults, **updates})
    cfg.validate(f"{where} ({name})")
    params: dict[str, Any] = {}
    for key, expected in extra.items():
        if key in raw:
            value = raw[key]
            if not _type_ok(value, expected):
                raise RecipeError(f"{where} ({name}): {key!r} has the wrong type ({value!r})")
            params[key] = float(value) if expected is float else value
    if kind == "prune":
        _check_prune(params, f"{where} ({name})")
    elif kind == "channel_prune":
        _check_channel_prune(params, f"{where} ({name})")
    elif kind == "reinit":
        if params.get("mode", "empirical") not in ("empirical", "normal"):
            raise RecipeError(f"{where} ({name}): mode {params['mode']!r} is not empirical or normal")
    elif kind == "exit_prune":
        if "head" not in params:
            raise RecipeError(f"{where} ({name}): exit_prune needs head (the exit head module's name)")
        _check_prune(params, f"{where} ({name})")
    elif kind == "quantise":
        if "weight_bits" not in params:
            raise RecipeError(f"{where} ({name}): quantise needs weight_bits")
        if params["weight_bits"] < 2:
            raise RecipeError(f"{where} ({name}): weight_bits must be >= 2 (a signed grid; binarise for 1 bit)")
        if params.get("act_bits", 1) < 1:
            raise RecipeError(f"{where} ({name}): act_bits must be >= 1")
        if params.get("act_mode", "running_max") not in ("running_max", "learned"):
            raise RecipeError(f"{where} ({name}): act_mode {params['act_mode']!r} is not running_max or learned")
    elif kind == "binarise":
        for sub in ("stage1", "stage2"):
            sub_updates = _train_updates(params.get(sub, {}), f"{where} ({name}).{sub}", set())
            sub_cfg = dataclasses.replace(cfg, **sub_updates)
            sub_cfg.validate(f"{where} ({name}).{sub}")
            params[sub] = sub_cfg
    elif kind == "exit":
        if "head" not in params:
            raise RecipeError(f"{where} ({name}): exit needs head (the exit head module's name)")
        rules = [k for k in ("threshold", "target_accuracy", "target_fraction") if k in params]
        if len(rules) != 1:
            raise RecipeError(f"{where} ({name}): exit needs exactly one of threshold, target_accuracy, target_fraction")
    elif kind == "mixed_precision":
        _check_mixed_precision(params, f"{where} ({name})")
    option = raw.get("option")
    if option is not None:
        check_name(option, f"{where} ({name}): option")
    return StageSpec(
        kind=kind, name=name, train=cfg, params=params, description=str(raw.get("description", "")), option=option
    )


def _check_schedule(params: dict[str, Any], where: str, needs: str) -> None:
    """The stage's ``schedule`` is present (else ``{where}: {needs}``) and parses."""
    from reference_models.compression.schedule import parse_schedule

    if "schedule" not in params:
        raise RecipeError(f"{where}: {needs}")
    try:
        parse_schedule(params["schedule"])
    except ValueError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def _check_prune(params: dict[str, Any], where: str) -> None:
    _check_schedule(params, where, "prune needs schedule (e.g. '10%*5+2.5%*4+2%*2' or 'linear:0.5:4')")
    method = params.get("method", "layer_normalized")
    if method not in ("global", "layer_normalized", "uniform"):
        raise RecipeError(f"{where}: method {method!r} is not global, layer_normalized or uniform")


def _check_channel_prune(params: dict[str, Any], where: str) -> None:
    _check_schedule(params, where,
                    "channel_prune needs schedule (fractions of the channels removed, e.g. 'linear:0.5:4')")
    checks = [
        (0 <= params.get("back_ratio", 0.25) < 1, "back_ratio must be in [0, 1)"),
        (0 < params.get("limit", 0.5) <= 1, "limit must be in (0, 1]"),
        (params.get("fisher", "true") in ("true", "empirical"), "fisher must be 'true' or 'empirical'"),
        (params.get("fisher_batches", 10) >= 1, "fisher_batches must be >= 1"),
        (params.get("anneal_epochs_fraction", 0.25) >= 0, "anneal_epochs_fraction must be >= 0"),
        (params.get("anneal_lr_scale", 10.0) > 0, "anneal_lr_scale must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{where}: {message}")


def _check_mixed_precision(params: dict[str, Any], where: str) -> None:
    if ("budget_score" in params) == ("budget_fraction" in params):
        raise RecipeError(f"{where}: mixed_precision needs exactly one of budget_score (a MicroNet score) and "
                          "budget_fraction (of the score of the model entering the stage)")
    if params.get("budget_score", 1.0) <= 0 or not 0 < params.get("budget_fraction", 1.0) <= 1:
        raise RecipeError(f"{where}: budget_score must be > 0 and budget_fraction in (0, 1]")
    for key in ("weight_candidates", "act_candidates"):
        values = params.get(key, [2])
        if not values or not all(_type_ok(b, int) and 2 <= b <= 32 for b in values):
            raise RecipeError(f"{where}: {key} must be a non-empty list of integers between 2 and 32")
    if not 2 <= params.get("act_bits", 2) <= 32:
        raise RecipeError(f"{where}: act_bits must be between 2 and 32")
    if params.get("act_mode", "running_max") not in ("running_max", "learned"):
        raise RecipeError(f"{where}: act_mode {params['act_mode']!r} is not running_max or learned")
    if params.get("sensitivity_batches", 1) < 1 or params.get("calibrate_batches", 0) < 0:
        raise RecipeError(f"{where}: sensitivity_batches must be >= 1 and calibrate_batches >= 0")


def _check_arch(arch: object, path: Path) -> str:
    from reference_models.registry import get_reference

    if not isinstance(arch, str) or not arch:
        raise RecipeError(f"{path}: [model] needs arch (a reference model name)")
    try:
        get_reference(arch)
    except KeyError as exc:
        raise RecipeError(f"{path}: [model] arch: {exc.args[0]}") from None
    return arch


def _parse_score(raw: dict[str, Any], path: Path) -> ScoreSpec:
    from rules import available_rulesets
    from scorer.tracks import TRACKS

    score = ScoreSpec()
    for key, value in raw.items():
        where = f"{path}: [score] {key}"
        if key == "rules":
            known = available_rulesets()
            if value not in known:
                raise RecipeError(f"{where} {value!r} is not a built-in rule set ({', '.join(known)})")
        elif key == "track":
            if value not in TRACKS:
                raise RecipeError(f"{where} {value!r} is not a track ({', '.join(TRACKS)})")
        elif key == "bits":
            if not _type_ok(value, int) or not 1 <= value <= 64:
                raise RecipeError(f"{where} must be an integer between 1 and 64, got {value!r}")
        elif key == "input_shape":
            if not isinstance(value, list) or not value or not all(_type_ok(d, int) and d > 0 for d in value):
                raise RecipeError(f"{where} must be a list of positive integers, got {value!r}")
        else:
            raise RecipeError(f"{path}: [score] unknown key {key!r}")
        setattr(score, key, value)
    return score


def parse_recipe(doc: dict[str, Any], path: Path) -> Recipe:
    """Validate a TOML document and build the :class:`Recipe`."""
    known = {"name", "description", "sources", "model", "data", "train", "score", "stages"}
    for key in doc:
        if key not in known:
            raise RecipeError(f"{path}: unknown top-level key {key!r}")
    name = check_name(doc.get("name", path.stem), f"{path}: recipe name")
    model = _table(doc, "model", str(path))
    arch = _check_arch(model.get("arch"), path)
    for key in model:
        if key not in {"arch", "kwargs", "ghost_batch_size", "ghost_splits"}:
            raise RecipeError(f"{path}: [model] unknown key {key!r}")
    kwargs = model.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise RecipeError(f"{path}: [model] kwargs must be a table")
    defaults = {
        **_train_updates(_table(doc, "data", str(path)), f"{path}: [data]", set()),
        **_train_updates(_table(doc, "train", str(path)), f"{path}: [train]", set()),
    }
    score = _parse_score(_table(doc, "score", str(path)), path)
    stages_raw = doc.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise RecipeError(f"{path}: needs at least one [[stages]] entry")
    seen: set[str] = set()
    all_stages = [_parse_stage(raw, i, defaults, path, seen) for i, raw in enumerate(stages_raw)]
    stages = [s for s in all_stages if s.option is None]
    if not stages:
        raise RecipeError(f"{path}: every stage is optional; at least one must run by default")
    sources = doc.get("sources", [])
    recipe = Recipe(
        name=name,
        path=path,
        arch=arch,
        arch_kwargs=dict(kwargs),
        stages=stages,
        score=score,
        ghost_batch_size=model.get("ghost_batch_size"),
        ghost_splits=model.get("ghost_splits"),
        description=str(doc.get("description", "")),
        sources=[str(s) for s in sources] if isinstance(sources, list) else [str(sources)],
        raw=doc,
        all_stages=all_stages,
    )
    for stage in all_stages:
        if stage.kind == "mixed_precision":
            stage.params["score"] = score  # the cost model scores as the checkpoints are scored
    if recipe.ghost_batch_size is not None and recipe.ghost_splits is not None:
        raise RecipeError(f"{path}: [model] give ghost_batch_size or ghost_splits, not both")
    return recipe


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe names and files."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.toml"))}


def resolve_recipe(spec: str) -> Path:
    """A bundled recipe's file for a name, else ``spec`` as a path; RecipeError when neither exists."""
    bundled = bundled_recipes()
    if spec in bundled:
        return bundled[spec]
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix == ".toml" or "/" in spec:
        raise RecipeError(f"{spec}: no such recipe file")
    raise RecipeError(f"unknown recipe {spec!r}; bundled: {', '.join(bundled) or 'none'} (or give a .toml path)")


def load_recipe(spec: str | Path) -> Recipe:
    """Load and validate a recipe by bundled name or path."""
    path = resolve_recipe(str(spec))
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read it ({exc})") from None
    return parse_recipe(doc, path)
