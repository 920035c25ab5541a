"""Hostile model files: nothing in them runs unless the command line says so.

Every payload would create ``MARKER`` in the test's temporary directory if it ran. Each test runs the real
CLI (``scorer.cli.main`` in-process, or a subprocess where torch's own log output matters) and checks that
the marker does not exist, the exit code is 2 and stderr is exactly one line that says what was found.
"""

from __future__ import annotations

import builtins
import io
import json
import os
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

MODEL_SRC = textwrap.dedent(
    """
    import sys

    import torch
    import torch.nn as nn


    class Tiny(nn.Module):
        def __init__(self, width=2):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
            self.fc = nn.Linear(width * 16 * 16, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))


    def build(width=2):
        return Tiny(width)


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
