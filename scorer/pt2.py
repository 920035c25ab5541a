"""Read a ``torch.export`` archive (``.pt2``) without running anything from it.

``torch.export.load`` would unpickle entries of the archive (pickled weights and constants, opaque and
custom objects, and sample inputs, falling back to a full unpickle), evaluate its shape expressions with
``sympy.sympify`` (Python ``eval``), import the modules its pytree specs name, exec its input guards when
the model runs, and write names from the file into the Python source that FX compiles. So the archive is
read here with ``zipfile`` and checked before torch's deserializer sees the program JSON, the raw tensors
and the sample inputs:

* an entry that only a full unpickle can read (a pickled weight or constant that weights-only unpickling
  refuses, an opaque or custom object, sample inputs holding Python objects) is refused unless
  ``trust_pickle``;
* a program part that could run or import Python or touch files (a call to anything but an operator of
  aten, prims, the quantized namespaces or higher_order, an operator with a str argument naming a file
  such as ``aten.from_file`` or ``aten.save``, or one that prints; a shape expression that is not sympy
  arithmetic with numbers of at most 20 digits and small literal powers (``_is_sympy_arithmetic``), a
  name that is not an identifier, a pytree spec naming a module) is refused unless ``trust_code``;
* input guards and node metadata other than ``nn_module_stack`` are dropped unless ``trust_code``: scoring
  needs neither. AOTInductor, ExecuTorch and extra files are never read.

torch's log output is silenced meanwhile (``quiet_torch_logs``); every problem is one ScorerError line.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import pickle
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from scorer.errors import ScorerError
from scorer.unpickle import (
    USER_ERRORS,
    UnsafePickle,
    check_unpack_size,
    one_line,
    trusted_load,
    user_imports,
    weights_only_load,
)

_OLD_PROGRAM = "serialized_exported_program.json"  # the layout written by torch < 2.7

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FQN = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_NAME_KEYS = frozenset({"name", "as_name", "user_input_name"})  # graph values: become Python identifiers
_FQN_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name"})
_NAME_MAPS = frozenset({"tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values",
                        "custom_obj_values"})
_KEPT_METADATA = ("nn_module_stack",)

# Call targets besides torch.ops.*: the verifier's builtins and symbolic-shape helpers.
_OPERATOR_FUNCS = frozenset({"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg",
                             "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_",
                             "invert", "lshift", "rshift"})
_MATH_FUNCS = frozenset({"ceil", "floor", "trunc", "sqrt"})
_TORCH_FUNCS = frozenset({"torch.sym_int", "torch.sym_float", "torch.sym_ite", "torch.sym_max",
                          "torch.sym_min", "torch.sym_not", "torch.sym_sqrt", "torch.sym_sum",
                          "torch._sym_sqrt", "torch._C._set_grad_enabled",
                          "torch.autograd.grad_mode.set_grad_enabled",
                          "torch.amp.autocast_mode._enter_autocast", "torch.amp.autocast_mode._exit_autocast"})

# Operator namespaces a program may call (besides torch.ops.higher_order, whose operators run subgraphs of
# the same program and name any operator they wrap through as_operator, which is checked the same way).
_OPERATOR_NAMESPACES = frozenset({"aten", "prims", "quantized", "quantized_decomposed", "_quantized"})
# A str argument with one of these names makes an operator read or write a file. Enumerated over every
# schema registered in torch 2.13 (dispatcher and TorchScript; see
# tests/test_security_load.py::test_pt2_operator_rule_catches_every_file_naming_schema), this catches
# aten::from_file(str filename, bool? shared, ...) (creates and maps the file), aten::from_file.out and
# aten::save(t item, str filename); no other operator in those namespaces has a str argument naming a file.
_FILE_ARGUMENTS = frozenset({"filename", "path", "file", "fname"})
# Operators that write to stdout or stderr (TorchScript's print and warnings.warn).
_REFUSED_OPERATORS = frozenset({"aten::_print", "aten::warn"})

# Shape expressions are sympy ``srepr`` text, e.g. "Mul(Integer(2), Symbol('s0', positive=True))".
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "floor",
    "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not", "Xor", "ITE", "Piecewise",
    "true", "false", "True", "False", "oo", "zoo", "nan",
    # torch.utils._sympy.functions, as the deserializer names them
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity",
    # keyword arguments
    "positive", "negative", "nonnegative", "nonpositive", "nonzero", "zero", "integer", "real", "finite",
    "infinite", "rational", "even", "odd", "commutative", "extended_real", "precision", "evaluate",
})
_EXPR_SYMBOL = re.compile(r"[a-z]+\d+\Z|OpaqueUnaryFn_[a-z0-9_]+\Z")
_EXPR_NUMBER = re.compile(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?\Z")
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift"})
_MAX_EXPONENT = 8  # a power's literal exponent (of a base without powers)
_MAX_SHIFT = 64  # LShift(x, k): x * 2**k
_MAX_DIGITS = 20  # digits of a number literal
_MAX_PRECISION = 1024  # Float(..., precision=) / dps
_MAX_DEPTH = 100

_TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict",
                             "collections.OrderedDict", "torch.fx.immutable_collections.immutable_list",
                             "torch.fx.immutable_collections.immutable_dict"})

_LOG_LOCK = threading.RLock()


def _layout() -> Any:
    """torch's archive layout constants (imported on use: the package imports torch._dynamo, ~1 s)."""
    from torch.export.pt2_archive import constants

    return constants


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Silence the ``torch`` loggers (torch logs whole tracebacks for archives it cannot read).

    Only torch's loggers change: each is disabled and raised above CRITICAL, so that loggers created
    meanwhile inherit the level, and each one's level and ``disabled`` flag are restored exactly.
    """
    with _LOG_LOCK:
        names = ["torch"] + [n for n in list(logging.Logger.manager.loggerDict) if n.startswith("torch.")]
        loggers = [logging.getLogger(n) for n in names]
        saved = [(lg, lg.level, lg.disabled) for lg in loggers]
        try:
            for lg in loggers:
                lg.setLevel(logging.CRITICAL + 1)
                lg.disabled = True
            yield
        finally:
            for lg, level, disabled in saved:
                lg.setLevel(level)
                lg.disabled = disabled


# --------------------------------------------------------------------------- the archive


class _Archive:
    """The records of a zip archive, by name below its root folder, read with ``zipfile`` only."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
            size = path.stat().st_size
        except (OSError, zipfile.BadZipFile, ValueError):
            raise ScorerError(f"{path} is corrupt or truncated (not a readable torch.export archive)") from None
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise ScorerError(f"{path} is malformed: its zip directory lists an entry twice")
        root = names[0].split("/", 1)[0] + "/" if names else ""
        if not all(n.startswith(root) for n in names):
            root = ""
        self.records = {info.filename[len(root):]: info for info in infos}
        check_unpack_size(infos, size, str(path))

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def has(self, name: str) -> bool:
        return name in self.records

    def read(self, name: str) -> bytes:
        if name not in self.records:
            raise ScorerError(f"{self.path} is not a complete torch.export archive: {name} is missing")
        try:
            return self._zip.read(self.records[name])
        except (OSError, zipfile.BadZipFile, ValueError, RuntimeError, NotImplementedError) as exc:
            raise ScorerError(f"{self.path} is corrupt: cannot read {name} ({one_line(exc)})") from None

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except (ValueError, UnicodeDecodeError):
            raise ScorerError(f"{self.path} is corrupt: {name} is not valid JSON") from None


def _refuse_pickle(path: Path, what: str, found: str) -> ScorerError:
    return ScorerError(f"{path} holds {what} as {found}; unpickling it could run arbitrary code: pass "
                       "--trust-pickle if you trust the file")


def _unpickled(archive: _Archive, name: str, what: str, trust_pickle: bool) -> Any:
    """A pickled entry: weights-only, or with ``trust_pickle`` a full unpickle when that is refused."""
    data = archive.read(name)
    if not data:
        return {}
    try:
        return weights_only_load(data, f"{archive.path}: {what} ({name})")
    except UnsafePickle as unsafe:
        if not trust_pickle:
            raise _refuse_pickle(archive.path, f"{what} ({name})", f"a pickled Python object ({unsafe.what})") from None
        return trusted_load(data, f"{archive.path}: {what} ({name})")


def _trusted_object(data: bytes, custom: bool, where: str) -> Any:
    try:
        with user_imports(Path.cwd()):
            return torch._C._pickle_load_obj(data) if custom else pickle.loads(data)
    except USER_ERRORS as exc:
        raise ScorerError(f"{where}: cannot unpickle it ({one_line(exc)})") from None


def _dense(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether strides lay ``size`` out densely, in some order of the dimensions (no element is reached twice,
    none skipped): then numel x itemsize bytes of the record back the tensor, so a stride-0 weight cannot
    make capture allocate far more than the file holds."""
    if 0 in size:
        return True
    expected = 1
    for n, st in sorted(((n, st) for n, st in zip(size, stride, strict=True) if n != 1), key=lambda p: p[1]):
        if st != expected:
            return False
        expected *= n
    return True


def _raw_tensor(archive: _Archive, record: str, meta: dict, flat: dict[str, torch.Tensor], what: str) -> Any:
    """A tensor stored as raw bytes (aliases of one record share its storage, as torch does)."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        _dict_to_dataclass,
        deserialize_scalar_type,
        deserialize_size,
        deserialize_storage_offset,
        deserialize_stride,
    )

    try:
        tm = _dict_to_dataclass(schema.TensorMeta, meta["tensor_meta"])
        dtype = deserialize_scalar_type(tm.dtype)
        size = tuple(deserialize_size(tm.sizes))
        stride = tuple(deserialize_stride(tm.strides))
        offset = deserialize_storage_offset(tm.storage_offset)
        if not all(type(v) is int and v >= 0 for v in (*size, *stride, offset)) or len(size) != len(stride):
            raise ScorerError(f"{archive.path}: {what} has a malformed layout (sizes {size}, strides {stride}, "
                              f"offset {offset})")
        if not _dense(size, stride):
            raise ScorerError(f"{archive.path}: {what} has an overlapping or gapped layout (sizes {list(size)}, "
                              f"strides {list(stride)}): weights must be stored dense")
        # The bytes the layout reaches; the record (the whole storage, which aliases share) must hold them:
        # nothing is made up from the metadata alone.
        itemsize = dtype.itemsize
        extent = 0 if 0 in size else offset + 1 + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
        needed = extent * itemsize
        if record not in flat:
            data = archive.read(record)
            if len(data) < needed or len(data) % itemsize:
                raise ScorerError(f"{archive.path}: {what} is malformed: its record holds {len(data):,} bytes, "
                                  f"its layout needs {needed:,}")
            flat[record] = torch.frombuffer(bytearray(data), dtype=dtype) if data else torch.empty(0, dtype=dtype)
        elif flat[record].numel() < extent:
            raise ScorerError(f"{archive.path}: {what} is malformed: its record holds "
                              f"{flat[record].numel() * itemsize:,} bytes, its layout needs {needed:,}")
        tensor = torch.as_strided(flat[record], size, stride, offset)
        if meta.get("is_param"):
            return torch.nn.Parameter(tensor, requires_grad=bool(tm.requires_grad))
        return tensor
    except ScorerError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed metadata or bytes
        raise ScorerError(f"{archive.path}: {what} is malformed ({one_line(exc)})") from None


def _payloads(archive: _Archive, kind: str, trust_pickle: bool) -> dict[str, Any]:
    """The weights (``kind="weights"``) or constants of model "model", by fully qualified name."""
    layout = _layout()
    directory = layout.WEIGHTS_DIR if kind == "weights" else layout.CONSTANTS_DIR
    legacy = f"{directory}model.pt"  # one torch.save of the whole dict
    if archive.has(legacy):
        return _unpickled(archive, legacy, f"its {kind}", trust_pickle)
    config_name = (layout.WEIGHTS_CONFIG_FILENAME_FORMAT if kind == "weights"
                   else layout.CONSTANTS_CONFIG_FILENAME_FORMAT).format("model")
    config = archive.json(config_name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ScorerError(f"{archive.path} is corrupt: {config_name} has no config")
    flat: dict[str, torch.Tensor] = {}
    out: dict[str, Any] = {}
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise ScorerError(f"{archive.path} is corrupt: {config_name} entry {fqn!r} names no file")
        record = directory + meta["path_name"]
        what = f"{kind[:-1]} {fqn!r} ({record})"
        custom = meta["path_name"].startswith(layout.CUSTOM_OBJ_FILENAME_PREFIX)
        if kind == "constants" and (custom or meta["path_name"].startswith(layout.OPAQUE_OBJ_FILENAME_PREFIX)):
            if not trust_pickle:
                raise _refuse_pickle(archive.path, what, f"a pickled {'TorchBind' if custom else 'Python'} object")
            out[fqn] = _trusted_object(archive.read(record), custom, f"{archive.path}: {what}")
        elif meta.get("use_pickle") is not False:
            out[fqn] = _unpickled(archive, record, f"{kind[:-1]} {fqn!r}", trust_pickle)
        else:
            out[fqn] = _raw_tensor(archive, record, meta, flat, what)
    return out


# --------------------------------------------------------------------------- the program


def _is_torch_operator(target: str) -> bool:
    parts = target.split(".")
    if not all(_IDENT.match(p) and not p.startswith("__") for p in parts):
        return False
    if target in _TORCH_FUNCS:
        return True
    if len(parts) == 2 and parts[0] in ("_operator", "math"):
        return parts[1] in (_OPERATOR_FUNCS if parts[0] == "_operator" else _MATH_FUNCS)
    if len(parts) < 4 or parts[:2] != ["torch", "ops"]:
        return False
    if parts[2] not in _OPERATOR_NAMESPACES and parts[2] != "higher_order":
        return False
    obj: Any = torch.ops
    try:
        for part in parts[2:]:
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - an unknown namespace or operator
        return False
    if isinstance(obj, torch._ops.HigherOrderOperator):
        return parts[2] == "higher_order"
    if not isinstance(obj, torch._ops.OpOverload) or parts[2] == "higher_order":
        return False
    schema = obj._schema
    if schema.name in _REFUSED_OPERATORS:
        return False
    return not any(arg.name in _FILE_ARGUMENTS and "str" in str(arg.type) for arg in schema.arguments)


def _is_sympy_arithmetic(text: str) -> bool:
    """Whether ``text`` is a shape expression that ``sympy.sympify`` reads without running Python and
    evaluates quickly: Python syntax (parsed, never evaluated, here) made of the sympy and torch names in
    ``_EXPR_NAMES``, symbols, numbers of at most ``_MAX_DIGITS`` digits and arithmetic. A power (``**``, ``^``
    which sympify reads as ``**``, ``Pow``, ``PowByNatural``, ``FloatPow``) needs a literal exponent
    ``0..8`` and no power inside it, ``LShift`` a literal shift ``0..64``: ``2**2**32`` would take minutes
    and gigabytes."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return _expr_ok(tree.body, text, 0)


def _literal_int(node: ast.expr, limit: int) -> bool:
    """``node`` is ``k`` or ``Integer(k)`` for a literal int ``0 <= k <= limit``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" \
            and len(node.args) == 1 and not node.keywords:
        node = node.args[0]
    return isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value <= limit


def _has_power(node: ast.expr) -> bool:
    return any((isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Pow, ast.BitXor)))
               or (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _POWERS)
               for n in ast.walk(node))


def _expr_ok(node: ast.expr, text: str, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    deeper = depth + 1
    if isinstance(node, ast.Constant):
        value = node.value
        if type(value) is bool:
            return True
        literal = ast.get_source_segment(text, node) or ""
        if type(value) in (int, float):
            return len(re.sub(r"[^0-9]", "", literal)) <= _MAX_DIGITS
        if type(value) is str:
            return bool(_EXPR_SYMBOL.match(value) or _IDENT.match(value) and len(value) <= 64
                        or _EXPR_NUMBER.match(value) and len(re.sub(r"[^0-9]", "", value)) <= _MAX_DIGITS)
        return False
    if isinstance(node, ast.Name):
        return node.id in _EXPR_NAMES or bool(_EXPR_SYMBOL.match(node.id))
    if isinstance(node, ast.Tuple):
        return all(_expr_ok(e, text, deeper) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, (ast.USub, ast.UAdd, ast.Invert, ast.Not)) and _expr_ok(node.operand, text, deeper)
    if isinstance(node, ast.BoolOp):
        return all(_expr_ok(v, text, deeper) for v in node.values)
    if isinstance(node, ast.Compare):
        return (all(isinstance(op, (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops)
                and all(_expr_ok(v, text, deeper) for v in (node.left, *node.comparators)))
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, (ast.Pow, ast.BitXor)):
            return (_literal_int(node.right, _MAX_EXPONENT) and not _has_power(node.left)
                    and _expr_ok(node.left, text, deeper))
        return (isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.BitAnd,
                                     ast.BitOr))
                and _expr_ok(node.left, text, deeper) and _expr_ok(node.right, text, deeper))
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in _EXPR_NAMES):
            return False
        name = node.func.id
        for kw in node.keywords:
            if kw.arg not in _EXPR_NAMES or not _expr_ok(kw.value, text, deeper):
                return False
            if kw.arg in ("precision", "dps") and not _literal_int(kw.value, _MAX_PRECISION):
                return False
        if name in _POWERS:
            limit = _MAX_SHIFT if name == "LShift" else _MAX_EXPONENT
            return (len(node.args) == 2 and _literal_int(node.args[1], limit) and not _has_power(node.args[0])
                    and _expr_ok(node.args[0], text, deeper))
        if name == "Float" and not all(_literal_int(a, _MAX_PRECISION) for a in node.args[1:]):
            return False  # Float(text, dps)
        return all(_expr_ok(a, text, deeper) for a in node.args)
    return False


def _enum_import(value: Any) -> str | None:
    """The ``module:Class`` an ``__enum__`` object in a pytree context would import, if any."""
    if isinstance(value, dict):
        if "__enum__" in value:
            return str(value.get("fqn"))
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _enum_import(item)
            if found is not None:
                return found
    return None


def _treespec_problem(text: str) -> str | None:
    """What in a serialized pytree spec could import or inject code (None: nothing)."""
    try:
        _version, spec = json.loads(text)
    except (ValueError, TypeError):
        return "has an unreadable pytree spec"
    stack = [spec]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("children_spec", []), list):
            return "has an unreadable pytree spec"
        if node.get("type") not in _TREESPEC_TYPES:
            return f"uses pytree type {node.get('type')!r}"
        context = node.get("context")
        if context is not None:
            try:
                keys = json.loads(context)
            except (ValueError, TypeError):
                return "has an unreadable pytree spec"
            imported = _enum_import(keys)
            if imported is not None:
                return f"has a pytree key that imports {imported!r}"
            if keys is not None and not (isinstance(keys, list) and all(
                    (type(k) is int) or (type(k) is str and not re.search(r"['\"\\]", k) and not _CONTROL.search(k))
                    for k in keys)):
                return f"has a pytree context {context[:60]!r}"
        stack.extend(node.get("children_spec", []))
    return None


def _field_problem(key: str, value: Any, in_node: bool) -> str | None:
    """What is wrong with ``key: value`` of the program JSON (None: nothing)."""
    if key in _NAME_KEYS and not isinstance(value, dict):
        if value is not None and not (isinstance(value, str) and _IDENT.match(value)):
            return f"names a value {value!r}, which is not a Python identifier"
    elif key in _FQN_KEYS or key == "fqn":
        if not (isinstance(value, str) and (_FQN.match(value) or (key == "fqn" and value == ""))):
            return f"names a module attribute {value!r}"
    elif key in _NAME_MAPS:
        bad = [k for k in value if not _IDENT.match(k)] if isinstance(value, dict) else [value]
        if bad:
            return f"names a value {bad[0]!r}, which is not a Python identifier"
    elif key == "forward_arg_names" and value is not None:
        if not (isinstance(value, list) and all(isinstance(v, str) and _IDENT.match(v) for v in value)):
            return f"has argument names {value!r}"
    elif (key == "target" and in_node) or key == "as_operator":
        if not (isinstance(value, str) and _is_torch_operator(value)):
            return f"calls {value!r}, which is not an allowed torch operator"
    elif key == "expr_str":
        if not (isinstance(value, str) and _is_sympy_arithmetic(value)):
            return (f"has a shape expression {str(value)[:80]!r} that is not sympy arithmetic (or is a power "
                    "that takes long to evaluate)")
    elif key in ("in_spec", "out_spec"):
        return _treespec_problem(value) if isinstance(value, str) else "has an unreadable pytree spec"
    return None


def _check(value: Any, path: Path, parent: str | None = None) -> None:
    """Refuse what in ``value`` could run code; drop node metadata but ``nn_module_stack`` (in place)."""
    if isinstance(value, dict):
        in_node = "target" in value and "inputs" in value
        if in_node:
            meta = value.get("metadata")
            value["metadata"] = ({k: v for k, v in meta.items() if k in _KEPT_METADATA}
                                 if isinstance(meta, dict) else {})
        for key, item in value.items():
            _check(key, path)
            problem = None if parent == "as_string_to_argument" else _field_problem(key, item, in_node)
            if problem is not None:
                raise ScorerError(f"{path}: its program {problem}; loading it could run code: pass "
                                  "--trust-code if you trust the file")
            _check(item, path, key)
    elif isinstance(value, list):
        for item in value:
            _check(item, path, parent)
    elif isinstance(value, str) and _CONTROL.search(value):
        raise ScorerError(f"{path}: its program holds a string with control characters ({value[:60]!r}); "
                          "loading it could run code: pass --trust-code if you trust the file")


def _checked_program(program: Any, path: Path) -> dict:
    if not isinstance(program, dict):
        raise ScorerError(f"{path} is corrupt: its program is not a JSON object")
    program = dict(program, guards_code=[])  # Python source torch would exec when the model runs
    _check(program, path)
    return program


# --------------------------------------------------------------------------- entry point


def load_exported_program(path: Path, *, trust_pickle: bool = False,
                          trust_code: bool = False) -> torch.export.ExportedProgram:
    """The program of the archive ``path``, read as the module docstring says; ScorerError otherwise."""
    layout = _layout()
    with _Archive(path) as archive:
        if archive.has(_OLD_PROGRAM):
            program = archive.json(_OLD_PROGRAM)
            sample_inputs = "serialized_example_inputs.pt"
        else:
            fmt = layout.ARCHIVE_FORMAT_PATH
            if not archive.has(fmt) or archive.read(fmt) != layout.ARCHIVE_FORMAT_VALUE.encode():
                raise ScorerError(f"{path} is not a torch.export archive (no archive_format 'pt2')")
            program = archive.json(layout.MODELS_FILENAME_FORMAT.format("model"))
            sample_inputs = layout.SAMPLE_INPUTS_FILENAME_FORMAT.format("model")
        if not trust_code:
            program = _checked_program(program, path)
        if archive.has(_OLD_PROGRAM):
            state = _unpickled(archive, "serialized_state_dict.pt", "its weights", trust_pickle)
            constants = _unpickled(archive, "serialized_constants.pt", "its constants", trust_pickle)
        else:
            state = _payloads(archive, "weights", trust_pickle)
            constants = _payloads(archive, "constants", trust_pickle)
        example = (_unpickled(archive, sample_inputs, "its sample inputs", trust_pickle)
                   if archive.has(sample_inputs) else None)
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    with quiet_torch_logs():
        try:
            serialized = _dict_to_dataclass(schema.ExportedProgram, program)
            return ExportedProgramDeserializer().deserialize(serialized, state, constants, example or None)
        except USER_ERRORS as exc:
            raise ScorerError(f"{path}: cannot load the torch.export program ({one_line(exc)})") from None
