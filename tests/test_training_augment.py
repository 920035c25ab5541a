"""Tensor augmentations: shapes, exactness of the simple ops, Mixup/CutMix lambdas vs pixel areas."""

from __future__ import annotations

import random

import pytest
import torch

from reference_models.training import augment as aug


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=_gen(1))


def test_shapes_are_kept(batch):
    for fn in (aug.random_crop, aug.random_hflip, aug.random_rotation, aug.cutout):
        assert fn(batch, generator=_gen()).shape == batch.shape
        assert fn(batch[0], generator=_gen()).shape == batch[0].shape  # a single image too
    for policy in aug.AUTOAUGMENT_POLICIES:
        out = aug.AutoAugment(policy)(batch, generator=_gen())
        assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1


def test_every_autoaugment_op_keeps_range_and_shape(batch):
    mags = torch.full((6,), 0.5)
    signs = torch.tensor([1.0, -1.0] * 3)
    for name, (fn, magnitudes, _signed) in aug.AUTOAUGMENT_OPS.items():
        out = fn(batch, torch.full((6,), magnitudes[5]) if magnitudes[5] else mags, signs)
        assert out.shape == batch.shape, name
        assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6, name


def test_invert_and_solarize_are_exact():
    x = torch.tensor([0, 100, 200, 255], dtype=torch.float32).div(255).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    inv, _, _ = aug.AUTOAUGMENT_OPS["invert"]
    assert torch.allclose(inv(x, torch.zeros(1), torch.ones(1)), 1 - x)
    sol, _, _ = aug.AUTOAUGMENT_OPS["solarize"]
    out = sol(x, torch.tensor([128.0]), torch.ones(1)).mul(255).round()
    assert out[0, 0].flatten().tolist() == [0, 100, 255 - 200, 255 - 255]  # values >= 128 inverted


def test_flip_is_a_mirror_or_identity(batch):
    out = aug.random_hflip(batch, p=0.5, generator=_gen(2))
    for a, b in zip(out, batch, strict=True):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    assert torch.equal(aug.random_hflip(batch, p=1.0), batch.flip(-1))


def test_crop_is_a_window_of_the_padded_image(batch):
    out = aug.random_crop(batch, padding=4, generator=_gen(3))
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    for a, p in zip(out, padded, strict=True):
        windows = [p[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
        assert any(torch.equal(a, w) for w in windows)


def test_rotation_by_zero_degrees_is_identity(batch):
    assert torch.allclose(aug.random_rotation(batch, degrees=0.0), batch, atol=1e-5)


def test_cutout_fills_at_most_a_square(batch):
    out = aug.cutout(torch.ones(4, 3, 32, 32), size=8, fill=0.0, generator=_gen(4))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert all(0 < int(z) <= 8 * 8 for z in zeros)
    assert torch.equal(out[:, 0], out[:, 2])  # same square on every channel


def _labelled_constant_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is constant (i + 1) / n, label i: every pixel says where it came from."""
    values = (torch.arange(n, dtype=torch.float64) + 1) / n
    return values.view(n, 1, 1, 1).expand(n, 3, 16, 16).clone(), torch.arange(n)


def test_mixup_lambda_matches_the_pixels():
    x, y = _labelled_constant_images(5)
    mixed, y_a, y_b, lam = aug.mixup(x, y, alpha=1.0, rng=random.Random(0), generator=_gen(5))
    assert 0 <= lam <= 1 and torch.equal(y_a, y)
    value_a = (y_a.double() + 1) / 5
    value_b = (y_b.double() + 1) / 5
    expected = lam * value_a + (1 - lam) * value_b
    assert torch.allclose(mixed[:, 0, 0, 0], expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cutmix_lambda_is_the_share_of_own_pixels(seed):
    x, y = _labelled_constant_images(6)
    mixed, y_a, y_b, lam = aug.cutmix(x, y, alpha=1.0, rng=random.Random(seed), generator=_gen(seed))
    own = (y_a.double() + 1) / 6
    for i in range(6):
        share_own = float((mixed[i, 0] == own[i]).double().mean())
        if y_b[i] == y_a[i]:  # mixed with itself: every pixel is its own
            assert share_own == 1.0
        else:
            assert share_own == pytest.approx(lam)  # 1 - box area / (16 * 16)
