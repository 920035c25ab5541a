"""Hostile model files: nothing in them runs unless the command line says so.

Every payload would create ``MARKER`` in the test's temporary directory if it ran. Each test runs the real
CLI (``scorer.cli.main`` in-process, or a subprocess where torch's own log output matters) and checks that
the marker does not exist, the exit code is 2 and stderr is exactly one line that says what was found.
"""

from __future__ import annotations

import builtins
import copy
import functools
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from scorer.checkpoint import Checkpoint, save_checkpoint
from scorer.cli import main
from scorer.errors import ScorerError
from scorer.load import load_model
from tests.conftest import TINY_MODEL_SRC

MODEL_SRC = TINY_MODEL_SRC + textwrap.dedent(
    """
    import sys


    def exits():
        sys.exit(0)


    def exits_with_text():
        sys.exit("factory said goodbye")


    def interrupted():
        raise KeyboardInterrupt
    """
)
# Tiny on 1x3x32x32 (see tests/test_cli.py): 54 + 5,130 parameters, 18,944 mults, 18,432 adds.
PARAMS, MULTS, ADDS = 5184, 18944, 18432


# ----------------------------------------------------------------------------- payloads


class _Call:
    """Pickles as ``func(*args)``: unpickling it calls ``func``."""

    def __init__(self, func: Callable, *args: object):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _exec_payload(marker: Path) -> _Call:
    return _Call(builtins.exec, _touch_code(marker))


def _stealth_payload(marker: Path, shape: tuple[int, ...]) -> _Call:
    """Creates the marker, then returns a valid tensor, so that a loader that runs it sees nothing wrong."""
    return _Call(builtins.eval, f"({_touch_code(marker)}, __import__('torch').ones({shape!r}))[1]")


def _torch_saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory, made the current directory, holding the harmless model file."""
    (tmp_path / "tiny_models.py").write_text(MODEL_SRC)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def marker(work: Path) -> Path:
    path = work / "MARKER"
    yield path
    assert not path.exists(), "a payload from the model file ran"


def run(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(result: tuple[int, str, str], *needles: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr containing every needle; returns the line."""
    code, out, err = result
    lines = err.strip("\n").split("\n")
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("micronet-score: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _tiny() -> nn.Module:
    return load_model("tiny_models.py:build").model.eval()


@pytest.fixture
def pt2(work: Path) -> Path:
    """A genuine torch.export archive of Tiny."""
    path = work / "tiny.pt2"
    torch.export.save(torch.export.export(_tiny(), (torch.randn(1, 3, 32, 32),)), str(path))
    return path


def rewrite_pt2(src: Path, dst: Path, files: dict[str, bytes] | None = None,
                edit: dict[str, Callable[[dict], None]] | None = None) -> Path:
    """Copy the archive ``src`` to ``dst``, replacing or adding ``files`` and editing JSON records in place
    (names relative to the archive's root folder)."""
    files = dict(files or {})
    edit = edit or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            rel = info.filename[len(root) + 1:]
            data = files.pop(rel) if rel in files else zin.read(info)
            if rel in edit:
                doc = json.loads(data)
                edit[rel](doc)
                data = json.dumps(doc).encode()
            zout.writestr(info.filename, data)
        for rel, data in files.items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
MODEL_JSON = "models/model.json"


def _pickled_weight(doc: dict) -> None:
    doc["config"]["conv.weight"]["use_pickle"] = True


def _add_constant(path_name: str) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        doc["config"]["evil"] = {"path_name": path_name, "is_param": False, "use_pickle": True,
                                 "tensor_meta": None}
    return edit


# ----------------------------------------------------------------------------- .pt / .pth pickles


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_reduce_payload_refused(capsys, marker: Path, work: Path, suffix: str) -> None:
    path = work / f"evil{suffix}"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": _exec_payload(marker)}, path)
    refused(run(capsys, path), str(path), "exec", "--trust-pickle")


def test_pickled_module_with_payload_refused(capsys, marker: Path, work: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    model.hook = _exec_payload(marker)
    path = work / "evil.pth"
    torch.save(model, path)
    refused(run(capsys, path), "pickled", "--trust-pickle")


def test_os_system_pickle_is_named_not_corrupt(capsys, marker: Path, work: Path) -> None:
    path = work / "evil.pt"
    torch.save(_Call(os.system, f"touch {marker}"), path)
    line = refused(run(capsys, path), str(path), "system", "pickled", "--trust-pickle")
    assert "corrupt" not in line


def test_trusted_pickle_of_os_global_is_not_called_corrupt(capsys, work: Path) -> None:
    """With --trust-pickle the file is unpickled (it WILL run): a harmless os payload, judged by what it holds."""
    path = work / "cwd.pt"
    torch.save(_Call(os.getcwd), path)
    line = refused(run(capsys, path, "--trust-pickle"), str(path), "not a model", "str")
    assert "corrupt" not in line
    missing = rewrite_pt2(path, work / "missing.pt",  # the same pickle naming posix.nocwdx, which does not exist
                          files={"data.pkl": zipfile.ZipFile(path).read("cwd/data.pkl").replace(b"getcwd", b"nocwdx")})
    line = refused(run(capsys, missing), "posix.nocwdx", "--trust-pickle")
    line = refused(run(capsys, missing, "--trust-pickle"), str(missing), "nocwdx", "not importable")
    assert "corrupt" not in line


# ----------------------------------------------------------------------------- .pt2


def test_pt2_pickled_weight_refused(capsys, marker: Path, pt2: Path) -> None:
    path = rewrite_pt2(pt2, pt2.with_name("evil.pt2"),
                       files={"data/weights/weight_0": _torch_saved(_exec_payload(marker))},
                       edit={WEIGHTS_CONFIG: _pickled_weight})
    refused(run(capsys, path), str(path), "conv.weight", "pickle", "--trust-pickle")


def test_pt2_stealth_weight_refused(capsys, marker: Path, pt2: Path) -> None:
    """The payload returns a correctly shaped tensor: running it would give exit 0 and a normal report."""
    path = rewrite_pt2(pt2, pt2.with_name("stealth.pt2"),
                       files={"data/weights/weight_0": _torch_saved(_stealth_payload(marker, (2, 3, 3, 3)))},
                       edit={WEIGHTS_CONFIG: _pickled_weight})
    refused(run(capsys, path), str(path), "--trust-pickle")


def test_pt2_pickled_constant_refused(capsys, marker: Path, pt2: Path) -> None:
    path = rewrite_pt2(pt2, pt2.with_name("const.pt2"),
                       files={"data/constants/tensor_0": _torch_saved(_exec_payload(marker))},
                       edit={CONSTANTS_CONFIG: _add_constant("tensor_0")})
    refused(run(capsys, path), str(path), "evil", "--trust-pickle")


@pytest.mark.parametrize("kind", ["opaque_obj_0", "custom_obj_0"])
def test_pt2_opaque_and_custom_objects_refused(capsys, marker: Path, pt2: Path, kind: str) -> None:
    path = rewrite_pt2(pt2, pt2.with_name("obj.pt2"),
                       files={f"data/constants/{kind}": pickle.dumps(_exec_payload(marker))},
                       edit={CONSTANTS_CONFIG: _add_constant(kind)})
    refused(run(capsys, path), str(path), "evil", "--trust-pickle")


def test_pt2_pickled_sample_inputs_refused(capsys, marker: Path, pt2: Path) -> None:
    payload = _Call(builtins.eval, f"({_touch_code(marker)}, ((__import__('torch').ones(1, 3, 32, 32),), {{}}))[1]")
    path = rewrite_pt2(pt2, pt2.with_name("inputs.pt2"), files={"data/sample_inputs/model.pt": _torch_saved(payload)})
    refused(run(capsys, path), str(path), "sample inputs", "--trust-pickle")


def _dynamic_pt2(work: Path) -> Path:
    path = work / "dyn.pt2"
    ep = torch.export.export(nn.Linear(4, 2), (torch.randn(3, 4),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, str(path))
    return path


def test_pt2_symbolic_expression_code_refused(capsys, marker: Path, work: Path) -> None:
    """torch parses shape expressions with sympy.sympify, which evaluates Python: no pickle needed."""
    src = _dynamic_pt2(work)
    inject = f" + 0*len(str(__import__('builtins').exec({_touch_code(marker)!r})))"

    def edit(doc: dict) -> None:
        text = json.dumps(doc)
        doc.update(json.loads(text.replace('integer=True)"', 'integer=True)' + json.dumps(inject)[1:-1] + '"', 1)))

    path = rewrite_pt2(src, work / "sym.pt2", edit={MODEL_JSON: edit})
    refused(run(capsys, path, "--input-shape", "3,4"), str(path), "--trust-code")


def test_pt2_placeholder_name_code_refused(capsys, marker: Path, pt2: Path) -> None:
    """FX writes input names into generated Python source."""
    evil_name = "x=__import__('builtins').exec(" + repr(_touch_code(marker)) + ")"

    def edit(doc: dict) -> None:
        doc.update(json.loads(json.dumps(doc).replace('"x"', json.dumps(evil_name))))

    path = rewrite_pt2(pt2, pt2.with_name("names.pt2"), edit={MODEL_JSON: edit})
    refused(run(capsys, path), str(path), "--trust-code")


def test_pt2_treespec_import_refused(capsys, marker: Path, pt2: Path, work: Path) -> None:
    """pytree imports the module named by an ``__enum__`` context: here a module in the current directory."""
    (work / "evil_enum.py").write_text(f"{_touch_code(marker)}\nimport enum\nclass E(enum.Enum):\n    A = 1\n")

    def edit(doc: dict) -> None:
        sig = doc["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["in_spec"])
        spec[1]["context"] = json.dumps({"__enum__": True, "fqn": "evil_enum:E", "name": "A"})
        sig["in_spec"] = json.dumps(spec)

    path = rewrite_pt2(pt2, pt2.with_name("spec.pt2"), edit={MODEL_JSON: edit})
    refused(run(capsys, path), str(path), "evil_enum", "--trust-code")


def test_pt2_operator_outside_torch_ops_refused(capsys, marker: Path, pt2: Path) -> None:
    def edit(doc: dict) -> None:
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    path = rewrite_pt2(pt2, pt2.with_name("target.pt2"), edit={MODEL_JSON: edit})
    refused(run(capsys, path), str(path), "torch.os.system")


class _MakesOnes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.ones(8, dtype=torch.uint8)[:4].float() * 0


def _file_op_pt2(work: Path, marker: Path, target: str) -> Path:
    """A program whose ``aten.ones`` node is rewritten into ``target`` writing ``marker``."""
    src = work / "ones.pt2"
    torch.export.save(torch.export.export(_MakesOnes(), (torch.ones(1, 4),)), str(src))

    def edit(doc: dict) -> None:
        nodes = [n for n in doc["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.ones.default"]
        assert nodes
        nodes[0]["target"] = target
        if "from_file" in target:
            nodes[0]["inputs"] = [
                {"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
                {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                {"name": "size", "arg": {"as_int": 8}, "kind": 1},
                {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2},
            ]
        else:  # aten::save(t item, str filename)
            nodes[0]["inputs"] = [{"name": "item", "arg": {"as_tensor": {"name": "x"}}, "kind": 1},
                                  {"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1}]

    return rewrite_pt2(src, work / "file_op.pt2", edit={MODEL_JSON: edit})


@pytest.mark.parametrize("target", ["torch.ops.aten.from_file.default", "torch.ops.aten.save.default"])
def test_pt2_operator_writing_a_file_refused(capsys, marker: Path, work: Path, target: str) -> None:
    """aten.from_file creates (with shared=True) and maps a file; factory ops run on the CPU even when the
    inputs are meta tensors, so capture would create it."""
    path = _file_op_pt2(work, marker, target)
    refused(run(capsys, path, "--input-shape", "1,4"), str(path), target, "--trust-code")


def test_pt2_operator_rule_catches_every_file_naming_schema() -> None:
    """Every registered operator (dispatcher and TorchScript) with a str argument naming a file or path, or
    outside the allowed namespaces, is refused; ordinary operators with str arguments are not."""
    from scorer.pt2 import _is_torch_operator

    file_words = ("file", "path", "fname", "dir")
    schemas = list(torch._C._jit_get_all_schemas())
    for name in torch._C._dispatch_get_all_op_names():
        qualified, _, overload = name.partition(".")
        try:
            schemas.append(torch._C._get_schema(qualified, overload))
        except RuntimeError:
            continue
    checked = 0
    for schema in schemas:
        ns, _, op = schema.name.partition("::")
        if any("str" in str(a.type) and any(w in a.name.lower() for w in file_words) for a in schema.arguments):
            target = f"torch.ops.{ns}.{op}.{schema.overload_name or 'default'}"
            assert not _is_torch_operator(target), target
            checked += 1
    assert checked >= 3  # aten::from_file, aten::from_file.out, aten::save at least
    assert _is_torch_operator("torch.ops.aten.div.Tensor_mode")  # rounding_mode: str
    assert _is_torch_operator("torch.ops.aten.convolution.default")
    assert _is_torch_operator("torch.ops.higher_order.cond")
    for target in ("torch.ops.aten._print.default", "torch.ops.aten.warn.default",
                   "torch.ops.profiler._record_function_enter_new.default", "torch.ops.c10d.barrier.default"):
        assert not _is_torch_operator(target), target


def test_pt2_guards_code_never_runs(capsys, marker: Path, pt2: Path) -> None:
    """Input guards are Python source that torch would exec when the model runs; the scorer drops them."""
    def edit(doc: dict) -> None:
        doc["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    path = rewrite_pt2(pt2, pt2.with_name("guards.pt2"), edit={MODEL_JSON: edit})
    code, out, err = run(capsys, path, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS


def test_pt2_genuine_scores_like_the_module(capsys, pt2: Path) -> None:
    code, out, err = run(capsys, "tiny_models.py:build", "--format", "json")
    assert code == 0, err
    live = json.loads(out)["totals"]
    code, out, err = run(capsys, pt2, "--format", "json")
    assert code == 0, err
    exported = json.loads(out)["totals"]
    assert exported == live
    assert (exported["params"], exported["mults"], exported["adds"]) == (PARAMS, MULTS, ADDS)


def test_pt2_pickled_weights_weights_only_or_trusted(capsys, pt2: Path) -> None:
    """A pickled weight that weights-only unpickling reads needs no flag; one that needs a full unpickle
    (here a harmless call of copy.deepcopy) loads with --trust-pickle only."""
    weight = _tiny().conv.weight
    path = rewrite_pt2(pt2, pt2.with_name("pickled.pt2"), files={"data/weights/weight_0": _torch_saved(weight)},
                       edit={WEIGHTS_CONFIG: _pickled_weight})
    code, out, err = run(capsys, path, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS
    call = _Call(copy.deepcopy, weight)
    path = rewrite_pt2(pt2, pt2.with_name("call.pt2"), files={"data/weights/weight_0": _torch_saved(call)},
                       edit={WEIGHTS_CONFIG: _pickled_weight})
    refused(run(capsys, path), "conv.weight", "deepcopy", "--trust-pickle")
    code, out, err = run(capsys, path, "--format", "json", "--trust-pickle")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS


def _old_format_pt2(src: Path, dst: Path, state_dict: bytes | None = None) -> Path:
    """The layout torch < 2.7 wrote: top-level JSON program plus torch.save'd state, constants, inputs."""
    ep = torch.export.load(str(src))
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        zout.writestr("version", ".".join(map(str, torch._export.serde.schema.SCHEMA_VERSION)))
        zout.writestr("serialized_exported_program.json", zin.read(f"{root}/{MODEL_JSON}"))
        zout.writestr("serialized_state_dict.pt", state_dict or _torch_saved(ep.state_dict))
        zout.writestr("serialized_constants.pt", _torch_saved(ep.constants))
        zout.writestr("serialized_example_inputs.pt", _torch_saved(ep.example_inputs))
    return dst


def test_pt2_old_layout_loads_and_refuses_payloads(capsys, marker: Path, pt2: Path, work: Path) -> None:
    code, out, err = run(capsys, _old_format_pt2(pt2, work / "old.pt2"), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS
    path = _old_format_pt2(pt2, work / "old_evil.pt2", state_dict=_torch_saved(_exec_payload(marker)))
    refused(run(capsys, path), str(path), "weights", "--trust-pickle")


def test_quiet_torch_logs_restores_each_logger_exactly() -> None:
    import logging

    from scorer.pt2 import quiet_torch_logs

    special = logging.getLogger("torch._scorer_test")
    special.setLevel(logging.INFO)
    before = {n: (lg.level, lg.disabled) for n, lg in logging.Logger.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    root_level = logging.getLogger().level
    with quiet_torch_logs():
        assert not special.isEnabledFor(logging.CRITICAL)
        assert not logging.getLogger("torch._scorer_test.created_meanwhile").isEnabledFor(logging.CRITICAL)
        assert logging.getLogger("not_torch").isEnabledFor(logging.WARNING)
    after = {n: (lg.level, lg.disabled) for n, lg in logging.Logger.manager.loggerDict.items()
             if isinstance(lg, logging.Logger) and n in before}
    assert after == before and logging.getLogger().level == root_level
    assert special.isEnabledFor(logging.INFO)


@pytest.mark.parametrize("kind", ["weight", "expr"])
def test_pt2_hostile_prints_one_line_in_a_subprocess(marker: Path, pt2: Path, work: Path, kind: str) -> None:
    """torch logs a long traceback for archives it cannot read; the CLI prints one line."""
    if kind == "weight":
        path = rewrite_pt2(pt2, work / "evil.pt2", files={"data/weights/weight_0": _torch_saved(_exec_payload(marker))},
                           edit={WEIGHTS_CONFIG: _pickled_weight})
    else:
        path = rewrite_pt2(pt2, work / "evil.pt2", files={MODEL_JSON: b'{"graph_module": 1}'})
    proc = subprocess.run([sys.executable, "-m", "scorer", str(path)], capture_output=True, text=True,
                          timeout=300, cwd=work)
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert len(proc.stderr.strip("\n").split("\n")) == 1, proc.stderr
    assert str(path) in proc.stderr


# ----------------------------------------------------------------------------- TorchScript


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still loadable
def test_torchscript_reduce_payload_in_data_pkl_does_not_run(capsys, marker: Path, work: Path) -> None:
    src = work / "tiny.ts"
    torch.jit.script(_tiny()).save(str(src))
    path = rewrite_pt2(src, work / "evil.ts", files={"data.pkl": pickle.dumps(_exec_payload(marker), protocol=2)})
    refused(run(capsys, path), str(path), "TorchScript", "--trust-code")
    refused(run(capsys, path, "--trust-code"), str(path))  # torch's own unpickler refuses the global


class _WritesFiles(nn.Module):
    """A TorchScript program that creates files: at load (``__setstate__``) and when run (``forward``)."""

    def __init__(self, marker: str):
        super().__init__()
        self.path = marker
        self.w = torch.ones(4, 4)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return self.path, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path, self.training = state
        torch.from_file(self.path, True, 8, dtype=torch.uint8).fill_(65)
        self.w = torch.ones(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, True, 8, dtype=torch.uint8).fill_(66)
        return x @ self.w + t.float().sum() * 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_is_a_program_needing_trust_code(capsys, marker: Path, work: Path) -> None:
    """TorchScript can call any torch operator, torch.from_file included: it is code, not data."""
    path = work / "writes.pt"
    torch.jit.script(_WritesFiles(str(marker))).save(str(path))
    assert not marker.exists()
    line = refused(run(capsys, path, "--input-shape", "1,4"), str(path), "TorchScript", "--trust-code")
    assert "program" in line
    with pytest.raises(ScorerError, match="--trust-code"):
        load_model(str(path))


# ----------------------------------------------------------------------------- .ckpt metadata


def _ckpt(work: Path, arch: str, arch_kwargs: dict | None = None, name: str = "evil.ckpt") -> Path:
    sd = load_model("tiny_models.py:build").model.state_dict()
    return save_checkpoint(Checkpoint(arch=arch, arch_kwargs=arch_kwargs or {}, state_dict=sd), work / name)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("os:system", {"command": "touch MARKER"}),
        ("subprocess:getoutput", {"cmd": "touch MARKER"}),
        ("builtins:open", {"file": "MARKER", "mode": "w"}),
        ("reference:os:system", {"command": "touch MARKER"}),
    ],
)
def test_ckpt_arch_naming_code_refused(capsys, marker: Path, work: Path, arch: str, kwargs: dict) -> None:
    path = _ckpt(work, arch, kwargs)
    refused(run(capsys, path), str(path), arch.removeprefix("reference:"), "--trust-code")


@pytest.mark.parametrize("arch", ["evil.py:build", "evil:build"])
def test_ckpt_arch_naming_a_file_in_cwd_refused(capsys, marker: Path, work: Path, arch: str) -> None:
    (work / "evil.py").write_text(f"{_touch_code(marker)}\ndef build():\n    return None\n")
    path = _ckpt(work, arch)
    refused(run(capsys, path), str(path), arch, "--trust-code")
    assert "evil" not in sys.modules


def test_ckpt_arch_kwargs_must_be_json(capsys, work: Path) -> None:
    sd = load_model("tiny_models.py:build").model.state_dict()
    path = work / "kwargs.ckpt"
    for bad in ({"width": torch.tensor(2)}, {1: 2}, {"width": {"deep": torch.zeros(1)}}):
        torch.save({"micronet_checkpoint": 1, "arch": "tiny_models.py:build", "arch_kwargs": bad,
                    "state_dict": sd}, path)
        refused(run(capsys, path, "--trust-code"), str(path), "arch_kwargs")


def test_ckpt_with_trust_code_builds(capsys, work: Path) -> None:
    path = _ckpt(work, "tiny_models.py:build", {"width": 2}, name="tiny.ckpt")
    refused(run(capsys, path, "--input-shape", "1,3,32,32"), "tiny_models.py:build", "--trust-code")
    code, out, err = run(capsys, path, "--trust-code", "--input-shape", "1,3,32,32", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS
    assert load_model(str(path), trust_code=True).source == "checkpoint"
    with pytest.raises(ScorerError, match="--trust-code"):
        load_model(str(path))
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--trust-code" in out


def test_arch_on_the_command_line_still_works(capsys, marker: Path, work: Path) -> None:
    path = _ckpt(work, "os:system", {})
    code, out, err = run(capsys, path, "--arch", "tiny_models.py:build", "--input-shape", "1,3,32,32",
                         "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS
    sd_path = work / "weights.pt"
    torch.save(load_model("tiny_models.py:build").model.state_dict(), sd_path)
    code, out, err = run(capsys, sd_path, "--arch", "tiny_models.py:build", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS


# ----------------------------------------------------------------------------- user code exiting


@pytest.mark.parametrize(("factory", "needle"), [("exits", "SystemExit"), ("exits_with_text", "factory said goodbye"),
                                                 ("interrupted", "KeyboardInterrupt")])
def test_factory_exit_is_an_error(capsys, work: Path, factory: str, needle: str) -> None:
    refused(run(capsys, f"tiny_models.py:{factory}"), "tiny_models.py", needle)


def test_module_exiting_on_import_is_an_error(capsys, work: Path) -> None:
    (work / "quits.py").write_text("raise SystemExit(0)\n")
    refused(run(capsys, "quits.py:build"), "quits.py", "SystemExit")


def test_help_still_exits_zero(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and out.startswith("usage:")


# ----------------------------------------------------------------------------- trusted pickles import like --arch


def test_trust_pickle_imports_classes_from_cwd(capsys, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = str(work)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", cwd)])
    sys.path.insert(0, cwd)
    try:
        import tiny_models  # the pickle must reference tiny_models.Tiny by module name
        torch.save(tiny_models.build(), work / "whole.pt")
    finally:
        sys.path.remove(cwd)
        sys.modules.pop("tiny_models", None)
    before = list(sys.path)
    code, out, err = run(capsys, work / "whole.pt", "--trust-pickle", "--input-shape", "1,3,32,32",
                         "--format", "json")
    sys.modules.pop("tiny_models", None)
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS
    assert sys.path == before


def _ref_ckpt(work: Path, meta: dict) -> Path:
    """A genuine checkpoint of a reference architecture whose metadata names a rule set."""
    from reference_models.registry import build_reference

    sd = build_reference("mobilenet_v2").state_dict()
    return save_checkpoint(Checkpoint(arch="mobilenet_v2", state_dict=sd, meta=meta), work / "rules.ckpt")


@pytest.mark.parametrize("rules", ["evil_rules:Rules", "evil_rules.Rules"])
def test_ckpt_rules_naming_code_refused(capsys, marker: Path, work: Path, rules: str) -> None:
    # a checkpoint's recorded rule set reaches get_ruleset, which imports pkg.mod:Class
    (work / "evil_rules.py").write_text(f"{_touch_code(marker)}\nclass Rules:\n    pass\n")
    path = _ref_ckpt(work, {"rules": rules})
    refused(run(capsys, path), str(path), rules, "--trust-code")
    assert "evil_rules" not in sys.modules


def test_ckpt_builtin_rules_and_command_line_rules_still_work(capsys, work: Path) -> None:
    path = _ref_ckpt(work, {"rules": "flops"})
    code, out, err = run(capsys, path, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["rules"] == "flops"
    # a rule set named on the command line is the user's own choice, whatever the file says
    code, out, err = run(capsys, path, "--rules", "macs", "--format", "json")
    assert code == 0 and json.loads(out)["rules"] == "macs", err


# ----------------------------------------------------------------------------- memory from small files


@functools.lru_cache(maxsize=1)
def _deflate_bomb(unpacked: int = 256 << 20) -> bytes:
    """A zip-format torch file whose one storage record is ``unpacked`` zero bytes, deflated (~1/1000)."""
    with zipfile.ZipFile(io.BytesIO(_torch_saved({"w": torch.zeros(16, dtype=torch.uint8)}))) as zin:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zout:
            for info in zin.infolist():
                if not info.filename.endswith("/data/0"):
                    zout.writestr(info.filename, zin.read(info))
                    continue
                record = zipfile.ZipInfo(info.filename)
                record.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(record, "w", force_zip64=True) as f:
                    chunk = bytes(1 << 20)
                    for _ in range(unpacked >> 20):
                        f.write(chunk)
    return out.getvalue()


@pytest.mark.parametrize("flags", [(), ("--trust-pickle",)])
def test_deflate_bomb_pt_refused_before_inflating(capsys, work: Path, flags: tuple[str, ...]) -> None:
    """torch.load (weights-only too) inflates whole records: a ~256 KB file would take 256 MiB and more."""
    path = work / "bomb.pt"
    path.write_bytes(_deflate_bomb())
    assert path.stat().st_size < (2 << 20)
    refused(run(capsys, path, "--arch", "tiny_models.py:build", *flags), str(path), "zip bomb")


def test_deflate_bomb_nested_in_pt2_refused(capsys, pt2: Path) -> None:
    """The same as a pickled weight of a .pt2: the outer archive stores it packed, so only a check of the
    inner zip sees it."""
    path = rewrite_pt2(pt2, pt2.with_name("bomb.pt2"), files={"data/weights/weight_0": _deflate_bomb()},
                       edit={WEIGHTS_CONFIG: _pickled_weight})
    refused(run(capsys, path), str(path), "conv.weight", "zip bomb")


def _weight_record(pt2: Path, fqn: str) -> str:
    with zipfile.ZipFile(pt2) as zf:
        root = zf.namelist()[0].split("/")[0]
        config = json.loads(zf.read(f"{root}/{WEIGHTS_CONFIG}"))
    return "data/weights/" + config["config"][fqn]["path_name"]


def test_pt2_raw_weight_with_a_short_record_refused(capsys, pt2: Path) -> None:
    """An empty record made torch.zeros(sizes) from the metadata: an 11 KB file could ask for gigabytes."""
    record = _weight_record(pt2, "fc.weight")
    path = rewrite_pt2(pt2, pt2.with_name("empty.pt2"), files={record: b""})
    refused(run(capsys, path), str(path), "fc.weight", "0 bytes", "20,480")
    path = rewrite_pt2(pt2, pt2.with_name("short.pt2"), files={record: bytes(400)})
    refused(run(capsys, path), str(path), "fc.weight", "400 bytes")


@pytest.mark.parametrize("strides", [[0, 0], [1, 1], [512, 0]])
def test_pt2_raw_weight_with_an_overlapping_layout_refused(capsys, pt2: Path, strides: list[int]) -> None:
    """Strides that reuse storage (stride 0: 16 bytes could be a 32768x32768 weight) make capture and
    scoring allocate numel x itemsize however small the file: weights must be non-overlapping and dense."""
    def edit(doc: dict) -> None:
        doc["config"]["fc.weight"]["tensor_meta"]["strides"] = [{"as_int": s} for s in strides]

    path = rewrite_pt2(pt2, pt2.with_name("overlap.pt2"), edit={WEIGHTS_CONFIG: edit})
    refused(run(capsys, path), str(path), "fc.weight", "overlapping")


def test_pt2_raw_weight_transposed_layout_still_loads(capsys, pt2: Path) -> None:
    """A permuted dense layout (a transposed weight) is fine."""
    def edit(doc: dict) -> None:
        doc["config"]["fc.weight"]["tensor_meta"]["strides"] = [{"as_int": 1}, {"as_int": 10}]

    path = rewrite_pt2(pt2, pt2.with_name("transposed.pt2"), edit={WEIGHTS_CONFIG: edit})
    code, out, err = run(capsys, path, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["params"] == PARAMS


def _run_measured(work: Path, *args: object) -> tuple[int, str, str, int]:
    """The CLI in a fresh process: (exit code, stdout, stderr, its peak RSS growth in MB over importing it)."""
    code = textwrap.dedent(
        """
        import resource, sys
        from scorer.cli import main
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        code = main(sys.argv[1:])
        sys.stdout.flush()
        print("PEAK_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024, file=sys.stderr)
        sys.exit(code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=work)
    err, _, peak = proc.stderr.rpartition("PEAK_MB ")
    return proc.returncode, proc.stdout, err, int(peak)


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_ckpt_arch_kwargs_build_nothing_before_the_shapes_fit(work: Path) -> None:
    """A 1.3 KB checkpoint asking wrn28_10 for 400,000 classes built 1.7 GB of weights before comparing."""
    path = _save({"micronet_checkpoint": 1, "arch": "wrn28_10", "arch_kwargs": {"num_classes": 400000},
                  "state_dict": {}}, work / "huge.ckpt")
    code, out, err, peak = _run_measured(work, path)
    assert code == 2 and out == "" and err.count("\n") == 1 and "missing key" in err, (code, out, err)
    assert peak < 300, peak


def test_prune_fold_does_not_broadcast(work: Path) -> None:
    """X_orig 1xN times X_mask Nx1 broadcast to NxN (1.9 KB -> 1.5 GB) before any shape check."""
    n = 20000
    sd = {k: v for k, v in _tiny().state_dict().items() if k != "fc.weight"}
    sd["fc.weight_orig"] = torch.ones(1, n)
    sd["fc.weight_mask"] = torch.ones(n, 1)
    path = _save(sd, work / "fold.pt")
    code, out, err, peak = _run_measured(work, path, "--arch", "tiny_models.py:build")
    assert code == 2 and out == "" and err.count("\n") == 1 and "fc.weight" in err, (code, out, err)
    assert peak < 300, peak


@pytest.mark.parametrize("kind", ["state_dict", "checkpoint", "mask"])
def test_expanded_tensor_from_the_file_refused(capsys, work: Path, kind: str) -> None:
    """A stored tensor whose strides reuse its storage (stride 0) has more elements than the file holds."""
    sd = _tiny().state_dict()
    expanded = torch.zeros(1).expand(*sd["fc.weight"].shape)
    if kind == "mask":
        path = save_checkpoint(Checkpoint(arch="x", state_dict=sd, masks={"fc.weight": expanded.bool()}),
                               work / "expanded.ckpt")
        torch.save(dict(torch.load(path), masks={"fc.weight": torch.ones(1, dtype=torch.bool).expand(10, 512)}),
                   path)
    else:
        sd["fc.weight"] = expanded
        payload = sd if kind == "state_dict" else {"micronet_checkpoint": 1, "arch": "x", "state_dict": sd}
        path = _save(payload, work / "expanded.pt")
    refused(run(capsys, path, "--arch", "tiny_models.py:build"), str(path), "fc.weight", "expanded")


_SLOW_EXPRS = [
    "2**2**32",
    "Symbol('s0', positive=True, integer=True)**(2**40)",
    "Pow(Integer(2), Pow(Integer(2), Integer(32)))",
    "PowByNatural(Integer(10), Integer(100000000))",
    "2^2^32",  # sympify reads ^ as **
    "LShift(Integer(1), Integer(10000000000))",
    "Integer(" + "9" * 30 + ")",
    "Integer('" + "9" * 30 + "')",
    "Float('1.5', precision=1000000000)",
    "(s0**2)**8",
]


@pytest.mark.parametrize("expr", _SLOW_EXPRS)
def test_pt2_shape_expression_that_computes_for_long_refused(capsys, work: Path, expr: str) -> None:
    """sympify evaluates powers of literals: 2**2**32 took 52 s of CPU and 2 GB."""
    src = _dynamic_pt2(work)

    def edit(doc: dict) -> None:
        values = doc["graph_module"]["graph"]["tensor_values"]
        values[next(iter(values))]["sizes"][0] = {"as_expr": {"expr_str": expr, "hint": {"as_int": 3}}}

    path = rewrite_pt2(src, work / "pow.pt2", edit={MODEL_JSON: edit})
    refused(run(capsys, path, "--input-shape", "3,4"), str(path), "shape expression", "--trust-code")


def test_pt2_small_powers_of_symbols_are_arithmetic() -> None:
    from scorer.pt2 import _is_sympy_arithmetic

    s = "Symbol('s77', positive=True, integer=True)"
    for expr in (s, f"Mul(Integer(4), {s})", f"Pow({s}, Integer(2))", f"PowByNatural(Add({s}, Integer(-1)), Integer(8))",
                 f"({s} + 1)**2", "s0**8", f"Eq(Mod({s}, Integer(2)), Integer(0))", "Float('1.5', precision=53)",
                 f"Piecewise((Integer(1), StrictGreaterThan({s}, Integer(3))), (Integer(0), True))",
                 f"LShift({s}, Integer(3))", "Integer(9223372036854775807)"):
        assert _is_sympy_arithmetic(expr), expr


@pytest.mark.parametrize("track", [{"a": 1}, ["cifar100"], "mnist"])
def test_ckpt_meta_track_must_name_a_track(capsys, work: Path, track: object) -> None:
    path = _ref_ckpt(work, {"track": track})
    refused(run(capsys, path), str(path), "meta track")
