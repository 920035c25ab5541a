"""``--plot PATH`` is checked before anything is loaded or scored: a bad path is one line on stderr, exit 2,
and nothing on stdout."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("matplotlib")

from scorer.cli import main  # noqa: E402
from scorer.errors import ScorerError  # noqa: E402


def _fails(capsys, argv, *words):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("micronet-score: error:"), (out, err)
    for word in words:
        assert word in err
    return err


def test_plot_into_an_existing_directory_is_refused(tmp_path, capsys):
    target = tmp_path / "adir"
    target.mkdir()
    _fails(capsys, ["reference:kaist_v1", "--plot", str(target)], str(target), "directory")
    assert not (tmp_path / "adir.png").exists()


@pytest.mark.parametrize("name", ["out.txt", "out", "out.png.bak"])
def test_plot_extension_matplotlib_cannot_write_is_refused(tmp_path, capsys, name):
    err = _fails(capsys, ["reference:kaist_v1", "--plot", str(tmp_path / name)], name, "png")
    assert "pdf" in err and "svg" in err
    assert os.listdir(tmp_path) == []


def test_plot_parent_must_exist(tmp_path, capsys):
    _fails(capsys, ["reference:kaist_v1", "--plot", str(tmp_path / "missing" / "p.png")], "missing")


def test_plot_parent_must_be_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        _fails(capsys, ["reference:kaist_v1", "--plot", str(locked / "p.png")], "writ")
    finally:
        locked.chmod(0o700)


def test_check_plot_path_accepts_matplotlib_formats(tmp_path):
    from scorer.render import check_plot_path

    for name in ("a.png", "b.PDF", "c.svg", "d.jpg"):
        assert check_plot_path(tmp_path / name) == tmp_path / name
    with pytest.raises(ScorerError, match="directory"):
        check_plot_path(tmp_path)


def test_plot_is_written_where_asked(tmp_path, capsys):
    target = tmp_path / "layers.svg"
    assert main(["reference:kaist_v1", "--format", "csv", "--plot", str(target)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("name,") and target.read_text().lstrip().startswith("<?xml")
    assert sorted(os.listdir(tmp_path)) == ["layers.svg"]
