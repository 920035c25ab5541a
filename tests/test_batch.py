"""The batch the counts are divided by: defined once (``scorer.capture.batch_of``) and stated in the report."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from scorer import score

CAPTURES = ["fx", "export", "dispatch"]
LINEAR = (32, 4 * 8 - 8 + 8)  # Linear(4, 8) per example: 32 mults; 8 x 3 adds + 8 bias adds


@pytest.mark.parametrize("capture", CAPTURES)
def test_a_rank_1_input_is_one_unbatched_example(capture) -> None:
    rep = score(nn.Linear(4, 8), input_shape=(4,), capture=capture)
    assert (rep.totals["mults"], rep.totals["adds"]) == LINEAR
    assert rep.settings["batch"] == 1
    assert "batch: 1 (counts per example)" in rep.to_markdown()


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize(("shape", "batch", "rows"), [((3, 4), 3, 1), ((2, 5, 4), 2, 5)])
def test_dim_0_of_a_rank_2_or_more_input_is_the_batch(capture, shape, batch, rows) -> None:
    rep = score(nn.Linear(4, 8), input_shape=shape, capture=capture)
    assert (rep.totals["mults"], rep.totals["adds"]) == (rows * LINEAR[0], rows * LINEAR[1])
    assert rep.settings["batch"] == batch


class LengthsFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)

    def forward(self, lengths, x):
        return self.fc(x) * lengths.float().unsqueeze(-1)


@pytest.mark.parametrize("capture", CAPTURES)
def test_the_first_input_of_rank_2_or_more_sets_the_batch(capture) -> None:
    rep = score(LengthsFirst(), example_inputs=(torch.tensor([1, 2, 3]), torch.ones(3, 4)), capture=capture)
    assert rep.settings["batch"] == 3
    assert (rep.totals["mults"], rep.totals["adds"]) == (LINEAR[0] + 8, LINEAR[1])
