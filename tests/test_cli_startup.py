"""CLI start-up and parity (issue 11 items 2, 5, 6): ``--version``; ``--help``, ``--version`` and the listings
without torch or pandas; listings that never cut a description; the static reference catalogue equal to the
live registry; ``--sparsity`` globs as the API's mapping; ``.pt2`` errors that name their cause.

Behaviour only: nothing here is timed (``benchmarks/bench_startup.py`` measures the start-up).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

import scorer
from reference_models.catalog import entries, live_entries, render_data
from rules import available_rulesets, get_ruleset
from scorer.cli import main
from scorer.errors import ScorerError
from scorer.listing import first_paragraph, render_rows
from scorer.sparsity import SparsitySpec
from tests.conftest import TINY_MODEL_SRC

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "numpy", "sympy")


def run(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _words(text: str) -> str:
    return " ".join(text.split())


def _chars(text: str) -> str:
    """``text`` without whitespace: a word too long for its column is split, never dropped."""
    return "".join(text.split())


# ----------------------------------------------------------------------------- what the fast paths import


@pytest.mark.parametrize("flag", ["--help", "--version", "--list-rules", "--list-references",
                                  "--list-rules=jnlp2019"])
def test_fast_flags_import_neither_torch_nor_pandas(flag: str) -> None:
    code = ("import sys\nfrom scorer.cli import main\nrc = main([" + repr(flag) + "])\n"
            f"print('MODULES', sorted(m for m in {HEAVY!r} if m in sys.modules), rc, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "MODULES [] 0", last


# ----------------------------------------------------------------------------- --version


def test_version_flag_and_attribute(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.startswith(f"micronet-score {scorer.__version__} (torch {torch.__version__.split('+')[0]}")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert scorer.__version__ == declared


def test_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert scorer._version() == declared


# ----------------------------------------------------------------------------- --list-rules, --list-references


@pytest.mark.parametrize("columns", [60, 80, 150])
def test_list_rules_wraps_and_never_cuts(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                         columns: int) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, _ = run(capsys, "--list-rules")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= columns
    flat = _chars(out)
    ellipses = 0  # "..." written in the docstrings themselves (e.g. ``score(..., sparsity=...)``)
    for name in available_rulesets():
        paragraph = first_paragraph(type(get_ruleset(name)).__doc__)
        ellipses += paragraph.count("...")
        assert len(paragraph) > 60 and _chars(paragraph) in flat, name  # the whole paragraph
    assert out.count("...") == ellipses  # no cut marker of our own


def test_list_rules_name_prints_the_whole_docstring(capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "--list-rules", "jnlp2019")
    assert code == 0
    doc = inspect.cleandoc(type(get_ruleset("jnlp2019")).__doc__)
    assert out.startswith("jnlp2019 (rules.teams.Jnlp2019)")
    assert _chars(doc) in _chars(out)  # every paragraph, not only the first
    code, _, err = run(capsys, "--list-rules", "nonesuch")
    assert code == 2 and "nonesuch" in err and "micronet2019" in err


def test_list_references_from_the_catalogue(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "--list-references", "--format", "json")
    assert code == 0 and json.loads(out) == live_entries()
    code, out, _ = run(capsys, "--list-references")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    for row in live_entries():
        assert row["name"] in out and _chars(str(row["description"])) in _chars(out)


def test_reference_catalogue_equals_the_registry() -> None:
    """The static catalogue (read without torch) is what the registry says: regenerate it with
    ``python -m reference_models.catalog`` when this fails."""
    assert entries() == live_entries()
    assert (ROOT / "reference_models" / "catalog_data.py").read_text() == render_data(live_entries())


def test_listing_formats() -> None:
    rows = [{"name": "a|b", "bits": 16, "description": "x, y"}]
    assert render_rows(rows, "csv") == 'name,bits,description\na|b,16,"x, y"\n'
    assert render_rows(rows, "markdown").splitlines()[2] == "| a\\|b | 16 | x, y |"
    assert json.loads(render_rows(rows, "json")) == rows
    narrow = render_rows([{"name": "n" * 30, "description": "word " * 20}], "table", width=40)
    assert max(len(line) for line in narrow.splitlines()) <= 40 and _words(narrow).endswith("word " * 19 + "word")


# ----------------------------------------------------------------------------- --sparsity globs


def test_sparsity_text_is_the_api_mapping() -> None:
    assert SparsitySpec.parse("conv*:0.5, fc:0.7").per_tensor == {"conv*": 0.5, "fc": 0.7}
    assert SparsitySpec.parse("uniform:0.25").uniform == 0.25 and SparsitySpec.parse("0.25").uniform == 0.25
    # a repeated glob takes its last place: later entries win (as in a mapping's order)
    assert list(SparsitySpec.parse("a*:0.1,b:0.2,a*:0.3").per_tensor.items()) == [("b", 0.2), ("a*", 0.3)]
    for bad, named in (("conv*:1.5", "conv*:1.5"), ("conv*:x", "'x'"), (":0.5", ":0.5"), ("conv*", "GLOB:S")):
        with pytest.raises(ScorerError, match=named.replace("*", r"\*").replace(".", r"\.")):
            SparsitySpec.parse(bad)


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_startup.py"
    path.write_text(TINY_MODEL_SRC)
    return path


def test_cli_sparsity_globs(capsys: pytest.CaptureFixture, tiny_file: Path) -> None:
    from scorer import score
    from scorer.load import load_model

    # Tiny: conv 2x3x3x3 (54 weights, 512 outputs, n = 27), fc 512 -> 10 with bias, at 32 bits.
    # official_rules.md §2.2/§4: a sparse tensor stores its nonzeros at 32 bits plus a 1-bit mask per
    # element, and a conv output costs n*(1-s) mults and n*(1-s) - 1 adds.
    code, out, err = run(capsys, f"{tiny_file}:build", "--format", "json", "--sparsity", "conv*:0.5")
    assert code == 0, err
    t = json.loads(out)["totals"]
    fc_bits = (512 * 10 + 10) * 32
    assert t["param_bits"] == 27 * 32 + 54 + fc_bits
    assert t["mults"] == 13.5 * 512 + 512 * 10
    assert t["adds"] == 12.5 * 512 + 511 * 10 + 10
    # the same glob text as the API's mapping, on tensor names and on layer names
    model = load_model(f"{tiny_file}:build").model
    for text, mapping in (("conv*:0.5,fc:0.75", {"conv*": 0.5, "fc": 0.75}),
                          ("conv.weight:0.5,fc.weight:0.75", {"conv.weight": 0.5, "fc.weight": 0.75})):
        code, out, err = run(capsys, f"{tiny_file}:build", "--format", "json", "--sparsity", text)
        assert code == 0, err
        api = score(model, input_shape=(1, 3, 32, 32), sparsity=mapping).totals
        assert json.loads(out)["totals"] == pytest.approx(api)
    assert api["param_bits"] == 27 * 32 + 54 + 1280 * 32 + 5120 + 10 * 32  # fc: 5,120 x 0.25 kept + mask
    code, _, err = run(capsys, f"{tiny_file}:build", "--sparsity", "conv*:2")
    assert code == 2 and "conv*:2" in err
    # a glob matching no parameter or layer changes nothing: an error (a typo), a warning when allowed
    code, _, err = run(capsys, f"{tiny_file}:build", "--sparsity", "cnov*:0.5")
    assert code == 2 and "'cnov*'" in err and "--allow-unmatched" in err
    code, out, err = run(capsys, f"{tiny_file}:build", "--format", "json", "--sparsity", "cnov*:0.5,fc:0.75",
                         "--allow-unmatched")
    assert code == 0 and "warning: sparsity: glob 'cnov*'" in err
    assert json.loads(out)["totals"] == pytest.approx(score(model, input_shape=(1, 3, 32, 32),
                                                            sparsity={"fc": 0.75}).totals)


# ----------------------------------------------------------------------------- .pt2 errors name their cause


def _rewritten(src: Path, dst: Path, name_suffix: str, data: bytes | None) -> Path:
    """``src`` with the entry ending in ``name_suffix`` replaced by ``data`` (None: left out)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename.endswith(name_suffix):
                if data is not None:
                    zout.writestr(info, data)
            else:
                zout.writestr(info, zin.read(info))
    return dst


def test_pt2_errors_name_the_cause(capsys: pytest.CaptureFixture, tiny_file: Path, tmp_path: Path) -> None:
    from scorer.load import load_model

    model = load_model(f"{tiny_file}:build").model.eval()
    src = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), str(src))
    with zipfile.ZipFile(src) as zf:
        program_name = next(n for n in zf.namelist() if n.endswith("models/model.json"))
        program = json.loads(zf.read(program_name))
    del program["graph_module"]["graph"]["nodes"][0]["target"]  # a node the deserializer cannot read
    cases = {
        "not-json.pt2": ("models/model.json", b"{", "not valid JSON", ()),
        "no-program.pt2": ("models/model.json", None, "models/model.json is missing", ()),
        # --trust-code: past the scorer's own checks, torch's deserializer fails (torch.export.load would
        # have said "check the warnings above" with its log silenced)
        "bad-node.pt2": ("models/model.json", json.dumps(program).encode(),
                         "cannot load the torch.export program (TypeError: Node.__init__() missing 1 required positional argument: 'target')", ("--trust-code",)),
        "truncated.pt2": (None, None, "corrupt or truncated", ()),
    }
    for name, (entry, data, cause, flags) in cases.items():
        path = tmp_path / name
        if entry is None:
            path.write_bytes(src.read_bytes()[:200])
        else:
            _rewritten(src, path, entry, data)
        code, out, err = run(capsys, path, *flags)
        assert code == 2 and out == "", (name, err)
        assert err.count("\n") == 1 and cause in err and name in err, (name, err)
        assert "warnings above" not in err
