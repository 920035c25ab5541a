"""Measured nonzero counts (scorer.sparsity.measured_nonzeros): exact on every tensor kind the fast path sees.

Expected counts are written from the tensors' construction (official_rules.md §2.2: sparsity is the fraction
of exactly-zero weights), not taken from the scorer.
"""

import pytest
import torch

import scorer.sparsity as sp


def test_signed_zero_nan_inf():
    t = torch.tensor([0.0, -0.0, float("nan"), 1.0, float("inf"), -2.5])
    assert sp.measured_nonzeros(t) == 4.0  # nan, 1, inf, -2.5; both zeros are zeros


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
                                   torch.int64, torch.bool])
def test_dtypes(dtype):
    t = torch.zeros(6, 7, dtype=dtype)
    t[::2, 1] = 1  # rows 0, 2, 4
    t[5, 6] = 1
    assert sp.measured_nonzeros(t) == 4.0


def test_strided_views_and_parameters():
    base = torch.zeros(8, 8)
    base[0, :] = 1.0  # row 0: 8 nonzeros
    assert sp.measured_nonzeros(base.t()) == 8.0
    assert sp.measured_nonzeros(base[::2]) == 8.0  # rows 0, 2, 4, 6
    assert sp.measured_nonzeros(base[1::2]) == 0.0
    p = torch.nn.Parameter(base.clone())
    assert sp.measured_nonzeros(p) == 8.0
    assert sp.measured_nonzeros(torch.zeros(0)) == 0.0
    assert sp.measured_nonzeros(torch.tensor(3.0)) == 1.0
    assert sp.measured_nonzeros(torch.empty(3, device="meta")) is None


def test_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(sp, "_CHUNK", 7)
    monkeypatch.setattr(sp, "_SMALL", 0)  # every size takes the compare-and-count path
    t = torch.zeros(50)
    t[[0, 6, 7, 13, 14, 49]] = -1.0
    assert sp.measured_nonzeros(t) == 6.0


@pytest.mark.parametrize("size", [sp._SMALL - 1, sp._SMALL, sp._SMALL + 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_small_and_large_paths_agree(size, dtype):
    # on both sides of the size where numpy counts the values directly instead of comparing first
    t = torch.zeros(size, dtype=dtype)
    t[1::3] = -0.0  # signed zeros: still zeros
    t[0] = float("nan")
    t[2] = float("inf")
    t[-1] = 1e-7  # a small value (subnormal in float16): nonzero
    assert sp.measured_nonzeros(t) == 3.0


def test_a_tensor_numpy_cannot_view_goes_to_torch():
    # a negative bit (the imaginary part of a conjugate view): numpy() refuses it, and the count is torch's, on
    # the values the tensor stands for
    z = torch.tensor([1 + 0j, 2 - 3j, 0 + 0j, 0 + 5j]).conj()
    assert z.imag.is_neg()
    assert sp.measured_nonzeros(z.imag) == 2.0  # 3, -5 (conjugated); 0 and 0 are zeros
    dense = torch.zeros(4, 5)
    dense[0, 1], dense[3, 4] = 2.0, -1.0
    g = torch.nn.Parameter(dense.clone())  # requires grad: counted on a detached view
    assert sp.measured_nonzeros(g) == 2.0 and g.requires_grad
