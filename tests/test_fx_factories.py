"""Tensors a forward creates (torch.zeros, ones, full, arange, ...) under the fx capture: made on the meta
device (never allocated), free, and never stored as if they were parameters of the model."""

from __future__ import annotations

import resource

import pytest
import torch
import torch.nn as nn

from scorer import score


class MakesZeros(nn.Module):
    def __init__(self, n: int = 16):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.n = n

    def forward(self, x):
        z = torch.zeros(self.n)
        return self.fc(x) + z[:4]


class MakesFromShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        ones = torch.ones(x.shape[0], 4)  # size from the input
        return self.fc(x) * ones


@pytest.mark.parametrize("capture", ["fx", "export", "dispatch"])
def test_created_tensor_is_not_a_parameter(capture: str) -> None:
    # Linear(4, 4): 16 weights + 4 biases = 20 parameters; the zeros are data the forward makes, not storage
    rep = score(MakesZeros(), input_shape=(1, 4), capture=capture)
    assert rep.capture == capture
    assert rep.totals["params"] == 20
    # 16 mults + 12 adds + 4 bias adds for the linear, 4 adds for + z[:4]
    assert (rep.totals["mults"], rep.totals["adds"]) == (16, 20)


@pytest.mark.parametrize("capture", ["auto", "export", "dispatch"])  # fx cannot trace torch.ones(proxy, 4)
def test_created_tensor_with_input_size(capture: str) -> None:
    rep = score(MakesFromShape(), input_shape=(3, 4), capture=capture)
    assert rep.totals["params"] == 20
    assert rep.totals["mults"] == 16 + 4  # per example: the linear's 16, the elementwise 4


def test_huge_created_tensor_is_never_allocated() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rep = score(MakesZeros(1 << 31), input_shape=(1, 4), capture="fx")  # 8 GiB if it were real
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert rep.capture == "fx" and rep.totals["params"] == 20
    assert grown_mb < 500


class WritesIntoMade(nn.Module):
    """y (1x4x8) written into a tensor made from fixed sizes, four ways, then that tensor scaled and added to y."""

    def __init__(self, how: str):
        super().__init__()
        self.fc, self.how = nn.Linear(8, 8), how

    def forward(self, x):
        y = self.fc(x)
        z = torch.zeros(1, 4, 8)
        if self.how == "setitem":
            z[:] = y
        elif self.how == "add_":
            z.add_(y)
        elif self.how == "out":
            torch.mul(y, 1, out=z)
        else:  # copy_, then a call on z alone, which fx would run untraced
            z.copy_(y)
            z.relu_()
        return z * 2 + y


@pytest.mark.parametrize("how", ["setitem", "add_", "out", "copy_relu_"])
def test_fx_refuses_reads_after_traced_writes_into_a_made_tensor(how: str) -> None:
    """fx sees the made tensor as a constant: a read after a write into it, and calls on it alone, would lose the
    write (the
    scaling of z would count no multiplication). fx refuses; auto falls back and counts fc (4*8*8 mults), z's
    scaling (32) and, where written, the multiplication by 1 (out) or the relu (copy_relu_: 32, official_rules.md's
    activation table counts a relu as one multiplication per element), as export and dispatch do."""
    with pytest.raises(Exception, match="after writing traced values into it in place"):
        score(WritesIntoMade(how), input_shape=(1, 4, 8), capture="fx")
    totals = {c: score(WritesIntoMade(how), input_shape=(1, 4, 8), capture=c).totals
              for c in ("auto", "export", "dispatch")}
    assert totals["auto"]["mults"] == totals["export"]["mults"] == totals["dispatch"]["mults"] == 4 * 8 * 8 + 32 + (
        32 if how in ("out", "copy_relu_") else 0)
    assert totals["auto"]["ops"] == totals["export"]["ops"] == totals["dispatch"]["ops"]
    assert totals["auto"]["mtas_bits"] == totals["export"]["mtas_bits"] == totals["dispatch"]["mtas_bits"]


class StateFromBatch(nn.Module):
    """A tutorial recurrent cell: its first state made with sizes as separate arguments, the first read off the
    input."""

    def __init__(self):
        super().__init__()
        self.cell, self.fc = nn.LSTMCell(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        h, c = torch.zeros(x.size(0), 8), torch.ones(x.shape[0], 8)
        for t in range(3):
            h, c = self.cell(x[:, t], (h, c))
        return self.fc(h)


def test_fx_traces_factories_given_separate_sizes() -> None:
    """``torch.zeros(x.size(0), 8)``: torch's argument parser refuses fx's proxy as the first of separate sizes, so
    fx alone could not trace it; the trace records the call, auto stays on fx, and the counts equal export's and
    dispatch's. torch's own functions are back in place after the trace."""
    zeros, ones = torch.zeros, torch.ones
    reps = {c: score(StateFromBatch(), input_shape=(2, 3, 4), capture=c) for c in ("auto", "export", "dispatch")}
    assert reps["auto"].capture == "fx"
    keys = ("params", "mults", "adds", "mtas_bits")
    assert len({tuple(r.totals[k] for k in keys) for r in reps.values()}) == 1
    assert torch.zeros is zeros and torch.ones is ones


class UsesTheWriteResult(nn.Module):
    """``torch.zeros(2, 8).add_(y)``: the made tensor is never read again, only the traced result of the write."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return torch.ones(2, 8).mul_(y) + y


def test_fx_keeps_a_write_whose_result_alone_is_read() -> None:
    """Nothing reads the made tensor after the write, so fx traces it, with export's and dispatch's counts."""
    reps = {c: score(UsesTheWriteResult(), input_shape=(2, 8), capture=c) for c in ("auto", "export", "dispatch")}
    assert reps["auto"].capture == "fx"
    keys = ("params", "mults", "adds", "mtas_bits")
    assert len({tuple(r.totals[k] for k in keys) for r in reps.values()}) == 1


class WritesThenReadsAFlag(WritesIntoMade):
    """``WritesIntoMade("add_")`` and a plain tensor attribute read for a Python value, which makes fx trace a second
    time with plain attributes as themselves: that trace must refuse the read after the write too."""

    def __init__(self):
        super().__init__("add_")
        self.flag = torch.tensor(1.0)

    def forward(self, x):
        return super().forward(x) if self.flag.item() > 0 else x


def test_fx_refuses_a_read_after_a_write_when_tracing_plain_attributes_as_themselves() -> None:
    with pytest.raises(Exception, match="after writing traced values into it in place"):
        score(WritesThenReadsAFlag(), input_shape=(1, 4, 8), capture="fx")
    totals = {c: score(WritesThenReadsAFlag(), input_shape=(1, 4, 8), capture=c).totals for c in ("auto", "export")}
    assert totals["auto"]["mults"] == totals["export"]["mults"] == 4 * 8 * 8 + 32
