"""Image augmentations on tensors (plain torch, CPU or GPU).

Geometric and colour ops take float images in [0, 1], either one image (C, H, W) or a batch (N, C, H, W);
random choices are drawn per sample (from ``generator`` when given). Mixup and CutMix take a batch and
labels and return ``(mixed, y_a, y_b, lam)``; train on ``lam * L(y_a) + (1 - lam) * L(y_b)``.

AutoAugment follows the PIL-based reference implementation used by the MicroNet teams (DeepVoltaire's
``autoaugment.py``, vendored by OSI AI as ``data_utils/autoaugment.py``): 14 ops, magnitudes as indices
0..9 into fixed ranges, signed ops with a random sign, grey (128) fill for geometric ops. Two policies are
bundled: ``"cifar10"`` (the 25 sub-policies of the AutoAugment paper) and ``"osi_cifar100"`` (the 25
sub-policies OSI AI searched for CIFAR-100, their ``CIFAR100Policy``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "AutoAugment",
    "Compose",
    "cutmix",
    "cutout",
    "mixup",
    "random_crop",
    "random_hflip",
    "random_rotation",
]

GREY = 128 / 255


def _batched(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Let a batch op accept a single (C, H, W) image too."""

    def wrapper(x: Tensor, *args: object, **kwargs: object) -> Tensor:
        if x.ndim == 3:
            return fn(x.unsqueeze(0), *args, **kwargs).squeeze(0)
        if x.ndim != 4:
            raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W), got shape {tuple(x.shape)}")
        return fn(x, *args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator).to(device)


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randint(high, (n,), generator=generator).to(device)


# --------------------------------------------------------------------------- basic ops


@_batched
def random_crop(x: Tensor, padding: int = 4, fill: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Pad each side by ``padding`` (constant ``fill``) and crop back to the input size at a random offset."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, value=fill)
    oy = _randint(2 * padding + 1, n, generator, x.device)
    ox = _randint(2 * padding + 1, n, generator, x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2).contiguous()


@_batched
def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = _rand(x.shape[0], generator, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _affine(x: Tensor, matrices: Tensor, fill: float, mode: str = "bilinear") -> Tensor:
    """Warp each image by a 2x3 matrix mapping *output* pixel coordinates (x, y) to input coordinates."""
    n, _, h, w = x.shape
    dtype = x.dtype
    # normalised (align_corners=False) -> pixel: p = u * size / 2 + (size - 1) / 2
    to_pix = torch.tensor([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]], dtype=dtype, device=x.device)
    to_norm = torch.linalg.inv(to_pix)
    full = torch.cat([matrices.to(dtype), torch.tensor([[[0, 0, 1]]], dtype=dtype, device=x.device).expand(n, 1, 3)], 1)
    theta = (to_norm @ full @ to_pix)[:, :2, :]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill


def _rotation_matrices(angles_deg: Tensor, h: int, w: int) -> Tensor:
    """Matrices rotating each output image by ``angle`` (counter-clockwise) about the image centre."""
    a = torch.deg2rad(angles_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # output -> input is the inverse rotation: in = R(-a) (out - c) + c, with y pointing down
    m = torch.zeros(len(a), 2, 3, dtype=a.dtype, device=a.device)
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    m[:, 0, 2] = cx - cos * cx + sin * cy
    m[:, 1, 2] = cy - sin * cx - cos * cy
    return m


@_batched
def random_rotation(
    x: Tensor, degrees: float = 15.0, fill: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """Rotate each image by an angle drawn uniformly from ``[-degrees, degrees]`` (bilinear)."""
    n, _, h, w = x.shape
    angles = (_rand(n, generator, x.device) * 2 - 1) * degrees
    return _affine(x, _rotation_matrices(angles.to(x.dtype), h, w), fill)


@_batched
def cutout(x: Tensor, size: int = 16, fill: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill a ``size`` x ``size`` square (centre uniform over the image, clipped at the border) with ``fill``."""
    n, _, h, w = x.shape
    cy = _randint(h, n, generator, x.device)
    cx = _randint(w, n, generator, x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    half = size // 2
    inside = (
        (ys >= (cy - half)[:, None, None])
        & (ys < (cy - half + size)[:, None, None])
        & (xs >= (cx - half)[:, None, None])
        & (xs < (cx - half + size)[:, None, None])
    )
    return x.masked_fill(inside[:, None], fill)


# --------------------------------------------------------------------------- mixing


def mixup(
    x: Tensor, y: Tensor, alpha: float = 1.0, rng: random.Random | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Mixup: ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)``.

    Returns ``(mixed, y, y[perm], lam)``.
    """
    lam = (rng or random).betavariate(alpha, alpha) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], float(lam)


def cutmix(
    x: Tensor, y: Tensor, alpha: float = 1.0, rng: random.Random | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """CutMix: paste a box of ``x[perm]`` into ``x``; the box area is about ``1 - lam0`` of the image with
    ``lam0 ~ Beta(alpha, alpha)``, clipped at the border.

    Returns ``(mixed, y, y[perm], lam)`` where ``lam = 1 - box_area / (H * W)`` is the share of pixels that
    still come from ``x`` (the exact area after clipping).
    """
    r = rng or random
    lam0 = r.betavariate(alpha, alpha) if alpha > 0 else 1.0
    n, _, h, w = x.shape
    ratio = math.sqrt(1.0 - lam0)
    bh, bw = int(h * ratio), int(w * ratio)
    cy, cx = r.randrange(h), r.randrange(w)
    y1, y2 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
    x1, x2 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
    perm = torch.randperm(n, generator=generator).to(x.device)
    mixed = x.clone()
    mixed[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return mixed, y, y[perm], float(lam)


# --------------------------------------------------------------------------- AutoAugment ops


def _grey(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma (PIL ``convert('L')``), shape (N, 1, H, W)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL ImageEnhance: ``degenerate + factor * (x - degenerate)``, clipped to [0, 1]."""
    return (degenerate + factor[:, None, None, None] * (x - degenerate)).clamp(0, 1)


def _to_uint8(x: Tensor) -> Tensor:
    return (x * 255).round().clamp(0, 255).long()


def _signed(mag: Tensor, sign: Tensor) -> Tensor:
    return mag * sign


def _identity_plus(x: Tensor, row: int, col: int, value: Tensor) -> Tensor:
    """Per-sample 2×3 affine matrices: the identity with entry (row, col) set to ``value``."""
    m = torch.zeros(len(value), 2, 3, dtype=x.dtype, device=x.device)
    m[:, 0, 0] = m[:, 1, 1] = 1
    m[:, row, col] = value
    return m


def _shear_x(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return _affine(x, _identity_plus(x, 0, 1, _signed(mag, sign)), GREY)


def _shear_y(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return _affine(x, _identity_plus(x, 1, 0, _signed(mag, sign)), GREY)


def _translate_x(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return _affine(x, _identity_plus(x, 0, 2, _signed(mag, sign) * x.shape[-1]), GREY, mode="nearest")


def _translate_y(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return _affine(x, _identity_plus(x, 1, 2, _signed(mag, sign) * x.shape[-2]), GREY, mode="nearest")


def _rotate(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return _affine(x, _rotation_matrices(_signed(mag, sign), x.shape[-2], x.shape[-1]), GREY)


def _color(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return _blend(_grey(x).expand_as(x), x, 1 + _signed(mag, sign))


def _contrast(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    mean = (_grey(x).mul(255).mean(dim=(1, 2, 3), keepdim=True) + 0.5).floor() / 255
    return _blend(mean.expand_as(x), x, 1 + _signed(mag, sign))


def _brightness(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return _blend(torch.zeros_like(x), x, 1 + _signed(mag, sign))


def _sharpness(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(x.shape[1], 1, 3, 3)
    smooth = F.conv2d(x, kernel, groups=x.shape[1])
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth  # PIL's SMOOTH filter leaves the border pixels unchanged
    return _blend(degenerate, x, 1 + _signed(mag, sign))


def _posterize(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    shift = (8 - mag.round().long()).clamp(0, 8)[:, None, None, None]
    v = _to_uint8(x)
    return ((v >> shift) << shift).to(x.dtype) / 255


def _solarize(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    v = _to_uint8(x)
    thr = mag[:, None, None, None]
    return torch.where(v >= thr, 255 - v, v).to(x.dtype) / 255


def _autocontrast(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    v = _to_uint8(x).to(x.dtype)
    lo = v.amin(dim=(2, 3), keepdim=True)
    hi = v.amax(dim=(2, 3), keepdim=True)
    scale = 255 / (hi - lo).clamp(min=1)
    out = torch.where(hi > lo, ((v - lo) * scale).floor().clamp(0, 255), v)
    return out / 255


def _equalize(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    """PIL ``ImageOps.equalize`` per image and channel."""
    n, c, h, w = x.shape
    v = _to_uint8(x).view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    idx = torch.arange(256, device=x.device).expand_as(hist)
    last_nonzero = torch.where(hist > 0, idx, torch.full_like(idx, -1)).amax(dim=1, keepdim=True)
    step = (hist.sum(dim=1, keepdim=True) - hist.gather(1, last_nonzero.clamp(min=0))) // 255
    before = torch.cumsum(hist, dim=1) - hist  # pixels strictly below each level
    lut = ((step // 2 + before) // step.clamp(min=1)).clamp(max=255)
    lut = torch.where(step > 0, lut, idx)
    return lut.gather(1, v).view(n, c, h, w).to(x.dtype) / 255


def _invert(x: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    return 1 - x


def _linspace(a: float, b: float) -> list[float]:
    return [a + (b - a) * i / 9 for i in range(10)]


#: op name -> (function, magnitude for indices 0..9, signed)
AUTOAUGMENT_OPS: dict[str, tuple[Callable[[Tensor, Tensor, Tensor], Tensor], list[float], bool]] = {
    "shearX": (_shear_x, _linspace(0, 0.3), True),
    "shearY": (_shear_y, _linspace(0, 0.3), True),
    "translateX": (_translate_x, _linspace(0, 150 / 331), True),
    "translateY": (_translate_y, _linspace(0, 150 / 331), True),
    "rotate": (_rotate, _linspace(0, 30), True),
    "color": (_color, _linspace(0, 0.9), True),
    "posterize": (_posterize, [float(round(v)) for v in _linspace(8, 4)], False),
    "solarize": (_solarize, _linspace(256, 0), False),
    "contrast": (_contrast, _linspace(0, 0.9), True),
    "sharpness": (_sharpness, _linspace(0, 0.9), True),
    "brightness": (_brightness, _linspace(0, 0.9), True),
    "autocontrast": (_autocontrast, [0.0] * 10, False),
    "equalize": (_equalize, [0.0] * 10, False),
    "invert": (_invert, [0.0] * 10, False),
}

SubPolicy = tuple[float, str, int, float, str, int]

#: Policies as (p1, op1, magnitude index 1, p2, op2, magnitude index 2) sub-policies.
AUTOAUGMENT_POLICIES: dict[str, list[SubPolicy]] = {
    # AutoAugment paper (Cubuk et al. 2019), CIFAR-10 policy: the usual choice for CIFAR-100 too.
    "cifar10": [
        (0.1, "invert", 7, 0.2, "contrast", 6), (0.7, "rotate", 2, 0.3, "translateX", 9),
        (0.8, "sharpness", 1, 0.9, "sharpness", 3), (0.5, "shearY", 8, 0.7, "translateY", 9),
        (0.5, "autocontrast", 8, 0.9, "equalize", 2), (0.2, "shearY", 7, 0.3, "posterize", 7),
        (0.4, "color", 3, 0.6, "brightness", 7), (0.3, "sharpness", 9, 0.7, "brightness", 9),
        (0.6, "equalize", 5, 0.5, "equalize", 1), (0.6, "contrast", 7, 0.6, "sharpness", 5),
        (0.7, "color", 7, 0.5, "translateX", 8), (0.3, "equalize", 7, 0.4, "autocontrast", 8),
        (0.4, "translateY", 3, 0.2, "sharpness", 6), (0.9, "brightness", 6, 0.2, "color", 8),
        (0.5, "solarize", 2, 0.0, "invert", 3), (0.2, "equalize", 0, 0.6, "autocontrast", 0),
        (0.2, "equalize", 8, 0.8, "equalize", 4), (0.9, "color", 9, 0.6, "equalize", 6),
        (0.8, "autocontrast", 4, 0.2, "solarize", 8), (0.1, "brightness", 3, 0.7, "color", 0),
        (0.4, "solarize", 5, 0.9, "autocontrast", 3), (0.9, "translateY", 9, 0.7, "translateY", 9),
        (0.9, "autocontrast", 2, 0.8, "solarize", 3), (0.8, "equalize", 8, 0.1, "invert", 3),
        (0.7, "translateY", 9, 0.9, "autocontrast", 1),
    ],
    # OSI AI's searched CIFAR-100 policy (Lee-Gihun/MicroNet_OSI-AI data_utils/autoaugment.py,
    # CIFAR100Policy; probabilities rounded to 4 decimals).
    "osi_cifar100": [
        (0.9879, "solarize", 1, 0.0387, "rotate", 8), (0.5907, "autocontrast", 2, 0.0777, "shearX", 9),
        (0.1806, "contrast", 3, 0.6762, "translateY", 1), (0.4678, "posterize", 0, 0.5506, "contrast", 2),
        (0.7938, "solarize", 4, 0.3125, "shearY", 2), (0.3417, "translateY", 8, 0.2643, "sharpness", 5),
        (0.6481, "shearX", 5, 0.2030, "shearY", 9), (0.1147, "color", 3, 0.9132, "autocontrast", 6),
        (0.4558, "shearY", 0, 0.8893, "brightness", 5), (0.9959, "translateX", 1, 0.5779, "solarize", 6),
        (0.4201, "sharpness", 5, 0.5383, "brightness", 4), (0.6410, "shearY", 7, 0.5017, "autocontrast", 4),
        (0.6463, "translateX", 4, 0.2738, "solarize", 4), (0.9323, "translateX", 5, 0.7434, "sharpness", 2),
        (0.5576, "invert", 4, 0.2230, "brightness", 4), (0.5397, "color", 4, 0.4765, "equalize", 6),
        (0.6940, "shearY", 4, 0.5243, "color", 4), (0.6019, "solarize", 1, 0.3977, "shearY", 7),
        (0.9534, "equalize", 8, 0.3650, "equalize", 6), (0.1890, "translateX", 3, 0.5527, "sharpness", 0),
        (0.9786, "shearX", 4, 0.3082, "rotate", 7), (0.4671, "contrast", 8, 0.5407, "translateY", 9),
        (0.1324, "shearY", 9, 0.5511, "brightness", 6), (0.3967, "rotate", 3, 0.9258, "posterize", 1),
        (0.7877, "contrast", 7, 0.0678, "invert", 8),
    ],
}


class AutoAugment:
    """Apply one randomly chosen sub-policy per image: each of its two ops with its own probability."""

    def __init__(self, policy: str | Sequence[SubPolicy] = "cifar10") -> None:
        if isinstance(policy, str):
            if policy not in AUTOAUGMENT_POLICIES:
                raise ValueError(f"unknown AutoAugment policy {policy!r}; known: {sorted(AUTOAUGMENT_POLICIES)}")
            policy = AUTOAUGMENT_POLICIES[policy]
        self.policy = list(policy)
        for sub in self.policy:
            for op in (sub[1], sub[4]):
                if op not in AUTOAUGMENT_OPS:
                    raise ValueError(f"unknown AutoAugment op {op!r}")
        self._ops = sorted(AUTOAUGMENT_OPS)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment an image (C, H, W) or a batch (N, C, H, W) in [0, 1]."""
        if x.ndim == 3:
            return self(x.unsqueeze(0), generator).squeeze(0)
        n = x.shape[0]
        choice = torch.randint(len(self.policy), (n,), generator=generator)
        out = x.clone()
        for slot in (0, 1):
            coin = torch.rand(n, generator=generator)
            signs = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
            probs = torch.tensor([sub[3 * slot] for sub in self.policy])[choice]
            names = [self.policy[int(c)][3 * slot + 1] for c in choice]
            levels = [self.policy[int(c)][3 * slot + 2] for c in choice]
            apply = coin < probs
            for name in set(names):
                fn, magnitudes, signed = AUTOAUGMENT_OPS[name]
                sel = torch.tensor([nm == name for nm in names]) & apply
                if not bool(sel.any()):
                    continue
                idx = sel.nonzero().flatten()
                mag = torch.tensor([magnitudes[levels[i]] for i in idx.tolist()], dtype=x.dtype)
                sign = signs[idx].to(x.dtype) if signed else torch.ones(len(idx), dtype=x.dtype)
                dev_idx = idx.to(x.device)
                out[dev_idx] = fn(out[dev_idx], mag.to(x.device), sign.to(x.device))
        return out


class Compose:
    """Apply tensor augmentations in order; each is called as ``fn(x, generator=generator)``."""

    def __init__(self, ops: Sequence[Callable[..., Tensor]]) -> None:
        self.ops = list(ops)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Run every op on ``x``."""
        for op in self.ops:
            x = op(x, generator=generator)
        return x

    def __len__(self) -> int:
        return len(self.ops)
