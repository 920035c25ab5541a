"""Capture once, score many: ``Scorer`` holds a model's captured ops and re-runs only annotation and costing.

``Scorer.score(...)`` equals ``score(model, ...)`` (the same post-capture code, ``scorer.api.evaluate``, on a
copy of the held ops). ``sweep`` and ``differentiable`` evaluate per-layer weight bits W, activation bits A and
weight densities D, the configuration ``score()`` is given as

    precision={"default": {"weight": 32, "act": 32, "acc": 32},
               "layers": {name: {"weight": W[i], "act": A[i]}}},  sparsity={name: 1 - D[i]}

with the names of ``layer_names`` (the modules owning a weight whose zeros are credited, official_rules.md
§2.2). Under such a configuration every op's counts are affine in its own layer's density d (a dot product
counts n·d mults), its stored bits are p0 + p1·W + p2·d·W plus its mask (1 bit per element of a tensor with
any zero, §2.2 `counting.py`; the step at d = 1), and its multiplication width is the maximum of a constant
and the bits of the layers feeding it (§3.1: an op runs at the widest of its inputs; a 1-bit weight counts 1
bit). ``_LinearModel`` reads those coefficients off the real pipeline by probing (a few evaluations), checks
them op by op against the pipeline on random configurations (``_LinearModel._verify``), and raises if a rule set
does not fit the form (a rule raising at a probed configuration included).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from scorer.api import Captured, Options, capture_paths, cost_rows, evaluate
from scorer.capture.guard import CAPTURE_LOCK
from scorer.errors import ScorerError, UnknownOpError
from scorer.precision import annotate_bits, tied_widths
from scorer.report import Report, totals_of
from scorer.sparsity import creditable, tensor_key

#: Columns of ``Scorer.sweep``'s table.
SWEEP_COLUMNS = ["param_bits", "params", "mults", "adds", "ops", "score"]
_GLOB_CHARS = set("*?[")


def layer_names(cap: Captured) -> list[str]:
    """The modules whose ops hold a creditable weight (conv/linear/matmul/embedding weights), in execution order."""
    names: dict[str, None] = {}
    for path in cap.paths:
        for op in path.ops:
            if any(creditable(op, w) for w in op.weights):
                names[op.module] = None
    return list(names)


class Scorer:
    """A model captured once (arguments as ``score()``'s that concern capture, plus default ``rules``,
    ``mask_block`` and ``allow_unknown``). Until ``refresh()`` it keeps everything it read at capture (copies of
    the tensors the ops hold, their nonzeros and dtypes, each layer's width attributes: ``Captured.snapshot``),
    so a held Scorer scores the model as it was then, never a mix of then and now."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
        input_dtype: object = None,
        example_inputs: object = None,
        track: str = "cifar100",
        capture: str = "auto",
        path_fractions: Mapping[str, float] | None = None,
        exit_fractions: Mapping[str, float] | None = None,
        tokens: int | None = None,
        rules: object = "micronet2019",
        mask_block: object = None,
        allow_unknown: bool = False,
    ) -> None:
        self.model = model
        self._capture_args = dict(input_shape=input_shape, input_dtype=input_dtype, example_inputs=example_inputs,
                                  track=track, capture=capture, path_fractions=path_fractions,
                                  exit_fractions=exit_fractions, tokens=tokens)
        self.rules = rules
        self.mask_block = mask_block
        self.allow_unknown = allow_unknown
        Options.parse(rules=rules, mask_block=mask_block)  # a bad rule set or block fails here, not later
        self.refresh()

    def refresh(self) -> None:
        """Capture the model again and re-read everything (weights, nonzeros, layer widths) from it now."""
        cap = capture_paths(self.model, **self._capture_args)  # type: ignore[arg-type]
        cap.snapshot()
        names = layer_names(cap)
        odd = [n for n in names if _GLOB_CHARS & set(n)]
        if odd:
            raise ScorerError(f"layer name(s) {odd[:4]} contain glob characters (*?[): they cannot key a precision "
                              "or sparsity mapping")
        self._cap = cap
        self.layer_names = names
        self._linear: dict[tuple, _LinearModel] = {}

    def score(self, rules: object = None, bits: int | None = None, sparsity: object = None,
              precision: object = None, mask_block: object = None, param_bits: int | None = None,
              mul_bits: int | None = None, add_bits: int | None = None, allow_unknown: bool | None = None,
              allow_unmatched: bool = False) -> Report:
        """The Report ``score(model, <capture arguments>, ...)`` gives for the weights read at capture."""
        opts = Options.parse(rules=self.rules if rules is None else rules, bits=bits, sparsity=sparsity,
                             precision=precision, mask_block=self.mask_block if mask_block is None else mask_block,
                             param_bits=param_bits, mul_bits=mul_bits, add_bits=add_bits,
                             allow_unmatched=allow_unmatched)
        unknown_ok = self.allow_unknown if allow_unknown is None else allow_unknown
        with CAPTURE_LOCK:  # as score(): annotation reads module attributes another capture may stand in for
            return evaluate(self._cap.copy(), opts, unknown_ok)

    def _model(self, rules: object, base: Mapping | None = None) -> _LinearModel:
        # a value JSON cannot spell (numpy's int64) keys by type and repr; Options.parse then judges it as score() does.
        # The layer globs keep their order (the later of two matching a layer wins), as a list of pairs
        layers = base.get("layers") if isinstance(base, Mapping) else None
        spelled = {**base, "layers": list(layers.items())} if isinstance(layers, Mapping) else base
        base_key = json.dumps(spelled, sort_keys=True, default=lambda v: f"{type(v).__name__}:{v!r}") if base else None
        key = (self.rules if rules is None else rules, base_key)
        if key not in self._linear:
            with CAPTURE_LOCK:
                self._linear[key] = _LinearModel(self, key[0], base)
        return self._linear[key]

    def sweep(self, weight_bits: object, act_bits: object, density: object, rules: object = None,
              chunk: int = 2048, base: Mapping | None = None) -> pd.DataFrame:
        """Totals (SWEEP_COLUMNS) of K configurations, each row equal to ``score()`` under the configuration
        (module docstring). ``weight_bits``, ``act_bits``: integers 1..64, ``density`` in (0, 1]; each
        [K, len(layer_names)] (or one row). Vectorised over K in chunks of ``chunk`` rows.

        ``chunk``: a positive integer. ``base`` (optional, a precision config): its ``default`` keys replace the
        32-bit defaults and its ``layers`` entries come before the per-layer ones, so a row equals
        ``score(precision={"default": {"weight": 32, "act": 32, "acc": 32, **base["default"]},
        "layers": {**base["layers"], name: {...}}})``
        (e.g. ``{"default": {"weight": 16, "act": 16}}``: the 16-bit freebie outside the swept layers). The
        coefficients are read and verified under that base, and a base they do not fit is an error."""
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ScorerError(f"chunk must be a positive integer (rows per vectorised block), got {chunk!r}")
        chunk = int(chunk)
        lm = self._model(rules, base)
        w, a, d = (_rows(x, len(self.layer_names), name) for x, name in
                   ((weight_bits, "weight_bits"), (act_bits, "act_bits"), (density, "density")))
        if not (w.shape[0] == a.shape[0] == d.shape[0]):
            raise ScorerError(f"weight_bits, act_bits and density have {w.shape[0]}, {a.shape[0]} and "
                              f"{d.shape[0]} rows; give one configuration per row in each")
        _check_bits(w, "weight_bits")
        _check_bits(a, "act_bits")
        w, a, d = (x.astype(np.float64, copy=False) for x in (w, a, d))
        _check_density(d)
        parts = [lm.totals(w[i:i + chunk], a[i:i + chunk], d[i:i + chunk]) for i in range(0, len(w), chunk)]
        cols = {c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0) for c in SWEEP_COLUMNS}
        return pd.DataFrame(cols, columns=SWEEP_COLUMNS)

    def differentiable(self, weight_bits: torch.Tensor, act_bits: torch.Tensor, density: torch.Tensor,
                       rules: object = None, mask_temperature: float = 0.05,
                       base: Mapping | None = None) -> torch.Tensor:
        """The score (a 0-d float64 tensor) of one configuration of tensors [len(layer_names)], equal to
        ``sweep`` at integer bits, differentiable in the bits and the density. Bits must lie in [1, 64] and
        densities in (0, 1] (``sweep``'s ranges; bits need not be whole), else ScorerError.

        Relaxation: bits are continuous; an op's width is the maximum of its sources' bits (the gradient goes
        to the widest; ``torch.maximum`` splits a tie); the 1-bit rule (a ±1 weight counts 1 bit) applies where
        a weight width is exactly 1. The mask term, 1 bit per element once d < 1, keeps its exact step in the
        value; its gradient is that of sigmoid((1 - d) / mask_temperature) (straight-through), so it is felt
        only near d = 1. Counts are affine in d and storage is bilinear in d and W, so those are exact."""
        return self._model(rules, base).differentiable(weight_bits, act_bits, density, mask_temperature)


def _rows(x: object, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise ScorerError(f"{name} must be numbers, got {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ScorerError(f"{name} must be [K, {n}] (one column per layer name), got shape {np.shape(x)}")
    return arr


def _check_density(d: np.ndarray) -> None:
    """Density in (0, 1] as score() receives it: sparsity 1 - d must be below 1, so a d under about 1.1e-16
    (for which 1 - d rounds to 1.0) is refused as score() refuses it."""
    if not (np.all(d > 0) and np.all(d <= 1) and np.all(1.0 - (1.0 - d) > 0)):
        raise ScorerError("density must be in (0, 1], with sparsity 1 - density below 1.0 in float64 "
                          "(density above about 1.1e-16)")


def _check_bits(x: np.ndarray, name: str) -> None:
    whole = x.dtype.kind in "iu" or bool(np.all(x == np.floor(x)))
    if not (whole and x.size == 0 or whole and x.min() >= 1 and x.max() <= 64):
        raise ScorerError(f"{name} must be integers between 1 and 64 (precision configs take whole bits)")


class _LinearModel:
    """Per-op coefficients of one rule set under the sweep's configurations, read off the pipeline."""

    def __init__(self, scorer: Scorer, rules: object, base: Mapping | None = None) -> None:
        self.scorer = scorer
        self.rules = rules
        base = dict(base or {})
        unknown = set(base) - {"default", "layers"}
        if unknown:
            raise ScorerError(f"base precision: unknown section(s) {sorted(unknown)} (use default, layers)")
        self.base_default = {"weight": 32, "act": 32, "acc": 32, **dict(base.get("default") or {})}
        self.base_layers = dict(base.get("layers") or {})
        self.track = scorer._cap.track
        self._rule_fixed: np.ndarray | None = None
        self._rule_width = np.zeros(0)
        self._work: Captured | None = None
        names = scorer.layer_names
        replaced = [name for name in self.base_layers if name in names]
        if replaced:  # {**base["layers"], name: {...}} would drop it without a word
            raise ScorerError(f"base precision: layers entry {replaced[0]!r} is a swept layer's own name, so the "
                              "sweep's entry for that layer replaces it; give its other keys (acc) under a glob "
                              "that matches the layer, or under default")
        n = len(names)
        self.n = n
        base = self._probe([32] * n, [32] * n, [1.0] * n)
        modules = [r["module"] for r in base]
        index = {m: i for i, m in enumerate(names)}
        # n: a dummy column (no layer), fixed values; an op holding a tensor several layers read (a tied table)
        # follows the last of them, whose density and weight width score() gives the tensor (scorer.sparsity,
        # scorer.precision)
        layer = _tensor_layers(scorer._cap, index, np.array([index.get(m, n) for m in modules]))
        self.layer = layer
        half_w = self._probe([32] * n, [16] * n, [1.0] * n)
        half_d = self._probe([32] * n, [32] * n, [0.5] * n)
        col = _columns
        m1, m2, m3 = col(base, "mults"), col(half_w, "mults"), col(half_d, "mults")
        a1, a3 = col(base, "adds"), col(half_d, "adds")
        mask1, mask3 = col(base, "mask_bits"), col(half_d, "mask_bits")
        f1, f2, f3 = (col(r, "param_bits") - col(r, "mask_bits") for r in (base, half_w, half_d))
        if not np.array_equal(m1, m2):
            raise self._unfit("mults depend on the weight bits")
        # counts affine in d: x(d) = x0 + x1·d from d = 1 and d = 0.5
        mult_d = (m1 - m3) / 0.5
        mult_0 = m1 - mult_d
        add_d = (a1 - a3) / 0.5
        add_0 = a1 - add_d
        # stored bits p0 + p1·W + p2·d·W from (d, W) = (1, 32), (1, 16), (0.5, 32); masks mc + mk·[d < 1]
        p2 = (f1 - f3) / 16
        p1 = (f1 - f2) / 16 - p2
        p0 = f1 - 32 * (p1 + p2)
        mask_c, mask_k = mask1, mask3 - mask1
        add_bits = col(base, "add_bits")
        # multiplication widths: max(c, A of the layers feeding it, W of its own layer), 1 for a 1-bit weight
        ones, twos, big = [1] * n, [2] * n, [64] * n
        mb_c = col(self._probe(ones, ones, [1.0] * n), "mul_bits")
        mb_2 = col(self._probe(ones, twos, [1.0] * n), "mul_bits")
        own_w = (col(self._probe(ones, big, [1.0] * n), "mul_bits") == 64) & (layer < n)
        binary = own_w & (col(self._probe(big, ones, [1.0] * n), "mul_bits") == 1)
        c = np.where(binary, mb_2, mb_c)
        sources: list[list[int]] = [[] for _ in modules]
        for i in range(n):
            probe = list(ones)
            probe[i] = 64
            hit = self._widths(probe, twos) == 64
            for j in np.flatnonzero(hit):
                sources[j].append(i)
        self._work = None
        # ops of a constant width are linear in d; the others are grouped by their width expression (sources in
        # X = [A, W, 1]: A_i at column i, W_i at n + i, 1 at 2n) and their layer (whose d scales their mults)
        srcs_of = [tuple(sorted(sources[j])) + ((n + int(layer[j]),) if own_w[j] else ()) for j in range(len(c))]
        fixed = np.array([not srcs_of[j] and not binary[j] for j in range(len(c))], dtype=bool)
        ops_0 = mult_0 * np.where(fixed, c, 0.0) + add_0 * add_bits
        ops_d = mult_d * np.where(fixed, c, 0.0) + add_d * add_bits
        groups: dict[tuple, int] = {}
        members: list[int] = []
        group_of = []
        for j in np.flatnonzero(~fixed):
            key = (float(c[j]), srcs_of[j], int(layer[j]), bool(binary[j]))
            group_of.append(groups.setdefault(key, len(groups)))
            members.append(j)
        g = len(groups)
        row_group = np.full(len(c), g, dtype=np.int64)  # g: a fixed-width row (no group)
        row_group[members] = group_of
        # each op's own coefficients, for _verify's op-by-op check
        self._op = dict(mult_0=mult_0, mult_d=mult_d, add_0=add_0, add_d=add_d, p0=p0, p1=p1, p2=p2,
                        mask_c=mask_c, mask_k=mask_k, add_bits=add_bits, c=c, fixed=fixed, group=row_group)
        width = max([len(k[1]) for k in groups] + [1])
        self.idx = np.full((g, width), 2 * n, dtype=np.int64)
        self.const = np.empty(g)
        self.group_layer = np.empty(g, dtype=np.int64)  # n: no layer (d = 1)
        self.group_binary = np.zeros(g, dtype=bool)
        for (const, srcs, lay, is_binary), gi in groups.items():
            self.idx[gi, :len(srcs)] = srcs
            self.const[gi], self.group_layer[gi], self.group_binary[gi] = const, lay, is_binary
        self.has_binary = bool(self.group_binary.any())
        self.group_m0 = np.bincount(group_of, weights=mult_0[members], minlength=g)
        self.group_md = np.bincount(group_of, weights=mult_d[members], minlength=g)
        # a group without a layer has d = 1: its d-term joins the constant
        free = self.group_layer == n
        self.group_m0[free] += self.group_md[free]
        self.group_md[free] = 0.0
        self.group_layer[free] = 0

        def per_layer(v: np.ndarray) -> tuple[float, np.ndarray]:
            """Sum of v over the ops of each layer; the ops of no layer (d = 1, W = 32) as a constant."""
            sums = np.bincount(layer, weights=v, minlength=n + 1)
            return float(sums[n]), sums[:n]

        c_md, self.mults_d = per_layer(mult_d)
        self.mults0 = float(mult_0.sum()) + c_md
        c_ad, self.adds_d = per_layer(add_d)
        self.adds0 = float(add_0.sum()) + c_ad
        c_od, self.ops_d = per_layer(ops_d / 32)
        self.ops0 = float(ops_0.sum()) / 32 + c_od
        c_w, self.param_w = per_layer(p1)
        c_dw, self.param_dw = per_layer(p2)
        _, self.mask_k = per_layer(mask_k)  # no mask outside the layers (their weights are never given d < 1)
        self.param0 = float((p0 + mask_c).sum()) + 32 * (c_w + c_dw)
        self._torch: dict | None = None
        self._verify()

    def _unfit(self, why: str) -> ScorerError:
        return ScorerError(f"rules {self.rules!r}: the sweep's cost model does not fit this rule set ({why}); "
                           "use Scorer.score() per configuration")

    def _options(self, act: Sequence[float], weight: Sequence[float], dens: Sequence[float]) -> Options:
        """score()'s options for one configuration (the contract's spelling)."""
        sc = self.scorer
        layers = {name: {"weight": int(weight[i]), "act": int(act[i])} for i, name in enumerate(sc.layer_names)}
        return Options.parse(rules=self.rules, mask_block=sc.mask_block,
                             precision={"default": self.base_default, "layers": {**self.base_layers, **layers}},
                             sparsity={name: 1 - float(dens[i]) for i, name in enumerate(sc.layer_names)})

    def _probe(self, act: Sequence[float], weight: Sequence[float], dens: Sequence[float]) -> list[dict]:
        """Rows of the pipeline (``scorer.api.cost_rows``) under one configuration. Where a row's width is not
        the one annotation gave its op, the rule set fixes it (``Cost.mul_bits``): remembered for ``_widths``."""
        sc = self.scorer
        cap = sc._cap.copy()
        opts = self._options(act, weight, dens)  # a base score() refuses fails here, as in score()
        try:
            rows, unknown, _ = cost_rows(cap, opts)
        except (ValueError, ArithmeticError) as e:  # a rule refusing a configuration the model tries
            raise self._unfit(f"at a configuration it probes, {type(e).__name__}: {e}") from e
        if unknown and not sc.allow_unknown:
            raise UnknownOpError([(u["name"], u["module"], u["target"]) for u in unknown])
        annotated = np.array([op.mul_bits for path in cap.paths for op in path.ops], dtype=np.float64)
        widths = _columns(rows, "mul_bits")
        if self._rule_fixed is None:
            self._rule_fixed = np.zeros(len(rows), dtype=bool)
        self._rule_fixed |= annotated != widths
        self._rule_width = widths
        return rows

    def _widths(self, act: Sequence[float], weight: Sequence[float]) -> np.ndarray:
        """The rows' multiplication widths under a configuration: annotation only (``annotate_bits``), on one
        working copy, the widths a rule fixes taken from the last ``_probe``."""
        if self._work is None:
            self._work = self.scorer._cap.copy()
        policy = self._options(act, weight, [1.0] * self.n).policy()
        tied = tied_widths([(path.ops, path.modules) for path in self._work.paths], policy)
        for path in self._work.paths:
            annotate_bits(path.ops, policy, path.modules, tied)
        got = np.array([op.mul_bits for path in self._work.paths for op in path.ops], dtype=np.float64)
        return np.where(self._rule_fixed, self._rule_width, got)

    def _verify(self) -> None:
        """The coefficients against the pipeline, op by op and in total, on three random configurations.

        Every layer gets its own random bits (1..16; 1-bit weights in the last two) and, in the first two, its
        own random density strictly inside (0, 1) (not a round value; the third sets about 30% to 1). Each op's
        mults, adds, stored and mask bits, width (where it multiplies) and ops are compared with ``_op_rows``:
        as no op's error can hide in a total or in a layer left at d = 1, an op whose cost is not of the form
        (e.g. ⌊n·d⌋ products, an adder tree's width growing with d, a cost depending on another layer's d) is
        found unless its departure vanishes at every drawn point. With the probes the coefficients were read
        from (d = 1 and 0.5), each op is thus seen at its own d = 1, 0.5 and two or three random densities.
        Not guaranteed: a departure confined to densities or bit combinations never drawn."""
        rng = np.random.default_rng(0)
        n = self.n
        for t in range(3):
            w = rng.integers(2 if t == 0 else 1, 17, n).astype(float)
            a = rng.integers(1, 17, n).astype(float)
            d = rng.uniform(0.05, 0.95, n)
            if t == 2:
                d[rng.random(n) < 0.3] = 1.0
            rows = self._probe(a, w, d)
            want = {k: _columns(rows, k) for k in ("mults", "adds", "param_bits", "mask_bits", "mul_bits", "ops")}
            got = self._op_rows(w, a, d)
            for k, v in want.items():
                ok = np.isclose(got[k], v, rtol=1e-10, atol=1e-6)
                if k == "mul_bits":
                    ok |= want["mults"] == 0  # a width counts only where the op multiplies
                bad = np.flatnonzero(~ok)
                if bad.size:
                    j = bad[0]
                    raise self._unfit(f"op {rows[j]['name']} ({rows[j]['module'] or 'top level'}) {k}: "
                                      f"{float(got[k][j])!r} by the model, {float(v[j])!r} by score()")
            want_t = totals_of(*(float(want[k].sum()) for k in ("param_bits", "mults", "adds", "ops")), self.track)
            got_t = self.totals(w[None], a[None], d[None])
            for k in SWEEP_COLUMNS:
                if not np.isclose(got_t[k][0], want_t[k], rtol=1e-12, atol=1e-9):
                    raise self._unfit(f"{k}: {float(got_t[k][0])!r} by the model, {float(want_t[k])!r} by score()")

    def _op_rows(self, w: np.ndarray, a: np.ndarray, d: np.ndarray) -> dict:
        """The model's value of each op's row columns for one configuration (W, A, D arrays [n])."""
        o = self._op
        dens = np.append(1.0 - (1.0 - d), 1.0)[self.layer]  # an op of no layer: d = 1, W = 32
        bits = np.append(w, 32.0)[self.layer]
        mults = o["mult_0"] + o["mult_d"] * dens
        adds = o["add_0"] + o["add_d"] * dens
        mask = o["mask_c"] + o["mask_k"] * (dens < 1)
        group_widths = np.append(self._group_widths(np.concatenate([a, w, [1.0]])[None])[0], 0.0)
        width = np.where(o["fixed"], o["c"], group_widths[o["group"]])
        return {"mults": mults, "adds": adds, "param_bits": o["p0"] + o["p1"] * bits + o["p2"] * dens * bits + mask,
                "mask_bits": mask, "mul_bits": width, "ops": (mults * width + adds * o["add_bits"]) / 32}

    def _group_widths(self, x: np.ndarray) -> np.ndarray:
        """Each group's multiplication width [K, g] for X = [A, W, 1] rows [K, 2n + 1]."""
        widths = x[:, self.idx[:, 0]] if self.idx.shape[1] == 1 else x[:, self.idx].max(axis=2)
        widths = np.maximum(widths, self.const)
        if self.has_binary:
            one = self.group_binary & (x[:, self.n + self.group_layer] == 1)
            widths = np.where(one, 1.0, widths)
        return widths

    def totals(self, w: np.ndarray, a: np.ndarray, d: np.ndarray) -> dict:
        """SWEEP_COLUMNS arrays [K] for W, A, D arrays [K, n]."""
        dens = 1.0 - (1.0 - d)  # the density score() derives from the sparsity 1 - d
        param_bits = self.param0 + w @ self.param_w + (dens * w) @ self.param_dw + (dens < 1) @ self.mask_k
        mults = self.mults0 + dens @ self.mults_d
        adds = self.adds0 + dens @ self.adds_d
        widths = self._group_widths(np.concatenate([a, w, np.ones((len(w), 1))], axis=1))
        group_mults = self.group_m0 + dens[:, self.group_layer] * self.group_md
        ops = self.ops0 + dens @ self.ops_d + (group_mults * widths).sum(axis=1) / 32
        return totals_of(param_bits, mults, adds, ops, self.track)

    def differentiable(self, w: torch.Tensor, a: torch.Tensor, d: torch.Tensor, temperature: float) -> torch.Tensor:
        if self._torch is None:
            self._torch = {k: torch.as_tensor(getattr(self, k)) for k in
                           ("param_w", "param_dw", "mask_k", "ops_d", "const", "group_m0", "group_md", "idx",
                            "group_layer", "group_binary")}
        t = self._torch
        n = self.n
        for v, name in ((w, "weight_bits"), (a, "act_bits"), (d, "density")):
            if not isinstance(v, torch.Tensor) or v.shape != (n,):
                raise ScorerError(f"{name} must be a tensor of shape ({n},), one value per layer name")
        w, a, d = (v.to(torch.float64) for v in (w, a, d))
        with torch.no_grad():  # the ranges sweep checks; bits may be fractional (the relaxation)
            for v, name in ((w, "weight_bits"), (a, "act_bits")):
                if not bool(((v >= 1) & (v <= 64)).all()):
                    raise ScorerError(f"{name} must be between 1 and 64, got {v.min().item()}..{v.max().item()}")
            _check_density(d.detach().cpu().numpy())
        dens = 1.0 - (1.0 - d)
        step = (dens < 1).to(torch.float64)
        soft = torch.sigmoid((1.0 - dens) / temperature)
        mask = step + (soft - soft.detach())  # the exact step, a sigmoid's gradient (straight-through)
        param_bits = self.param0 + w @ t["param_w"] + (dens * w) @ t["param_dw"] + mask @ t["mask_k"]
        x = torch.cat([a, w, torch.ones(1, dtype=torch.float64)])
        widths = torch.maximum(x[t["idx"]].amax(dim=1), t["const"])
        if self.has_binary:
            one = t["group_binary"] & (x[n + t["group_layer"]] == 1)
            widths = torch.where(one, torch.ones_like(widths), widths)
        group_mults = t["group_m0"] + dens[t["group_layer"]] * t["group_md"]
        ops = self.ops0 + dens @ t["ops_d"] + (group_mults * widths).sum() / 32
        return totals_of(param_bits, None, None, ops, self.track)["score"]


def _tensor_layers(cap: Captured, index: Mapping[str, int], layer: np.ndarray) -> np.ndarray:
    """Per op (rows order), the index of the layer whose density and weight width its counts follow: for an op
    holding a creditable tensor that several layers read, the last of them in ``index`` order (the entry
    ``score()`` applies to the tensor); else its own ``layer``."""
    last: dict = {}  # tensor key -> the last layer reading it
    ops = [op for path in cap.paths for op in path.ops]
    keys = [[tensor_key(w) for w in op.weights if creditable(op, w)] for op in ops]
    for op, held in zip(ops, keys, strict=True):
        i = index.get(op.module)
        for key in held:
            if i is not None:
                last[key] = max(last.get(key, i), i)
    out = layer.copy()
    for j, held in enumerate(keys):
        found = [last[k] for k in held if k in last]
        if found:
            out[j] = max(found)
    return out


def _columns(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=np.float64)


