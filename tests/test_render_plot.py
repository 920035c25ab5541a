"""The report's figure (issue 11 item 3): per module at the report's depth, labelled axes, a readable size,
and a second view of each top-level module's share of storage and ops."""

from __future__ import annotations

import pytest
import torch.nn as nn

from scorer import score
from scorer.plots import MAX_BARS, bars, figure, shares

matplotlib = pytest.importorskip("matplotlib")


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Net(nn.Module):
    """stem conv 3->8, four blocks of conv 8->8 at 8x8, a classifier 512->10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(*[Block(8) for _ in range(4)])
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).flatten(1))


@pytest.fixture(scope="module")
def report():
    return score(Net().eval(), input_shape=(1, 3, 8, 8))


def test_bars_are_modules_at_the_depth(report) -> None:
    labels, params, _ = bars(report.view(2))
    assert labels == ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "head"]
    # official_rules.md §2: 32-bit parameters; the stem 3*8*9 conv weights, the head 512*10 weights + 10 biases
    assert params[0] == 3 * 8 * 9 and params[-1] == 512 * 10 + 10
    labels1, _, _ = bars(report.view(1))
    assert labels1 == ["stem", "blocks", "head"]
    assert bars(report.view())[0] == labels  # no depth: the default, 2


def test_shares_add_up_to_100(report) -> None:
    names, storage, ops = shares(report.view())
    assert names == ["stem", "blocks", "head"]
    assert sum(storage) == pytest.approx(100) and sum(ops) == pytest.approx(100)


def test_many_modules_are_capped() -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(MAX_BARS + 10)])
    labels, params, _ = bars(score(model, input_shape=(1, 4)).view(1))
    assert len(labels) == MAX_BARS and labels[-1] == "other (11 modules)"
    assert params[-1] == 11 * (16 + 4)  # eleven Linear(4, 4): 16 weights + 4 biases each


def test_figure_labels_and_size(report, tmp_path) -> None:
    import matplotlib.image
    import matplotlib.pyplot as plt

    fig = figure(report.view(), plt)
    try:
        ax_p, ax_o, ax_s = fig.axes
        assert "parameters" in ax_p.get_xlabel() and "ops" in ax_o.get_xlabel()
        assert ax_p.get_ylabel().startswith("module (depth 2")
        assert [t.get_text() for t in ax_p.get_yticklabels()] == bars(report.view())[0]
        assert [t.get_text() for t in ax_s.get_yticklabels()] == ["storage", "ops"]
        assert "%" in ax_s.get_xlabel() and "score" in fig.get_suptitle()
    finally:
        plt.close(fig)
    out = report.plot(tmp_path / "modules.png")
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width == 1200 and 400 <= height <= 1200  # 12 in at 100 dpi; six bars and the share view


def test_height_stays_readable_for_a_large_model(tmp_path) -> None:
    import matplotlib.image

    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(200)])
    out = score(model, input_shape=(1, 4)).plot(tmp_path / "big.png", depth=1)
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width == 1200 and height <= 100 * (0.32 * MAX_BARS + 1.0 + 2.6) + 1
