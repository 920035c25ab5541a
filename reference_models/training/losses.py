"""Losses used by the MicroNet recipes.

* :func:`label_smoothing_cross_entropy`: cross entropy against ``(1 - eps)`` on the true class and ``eps``
  spread either over all classes (``eps / K`` each, the usual form, bnn-training-tricks trick 14) or over
  the other classes only (``eps / (K - 1)`` each, OSI AI: "0.7 for the correct label and 0.3/99 for the
  others").
* :func:`weighted_label_smoothing_loss` (KAIST AI): ``eps`` is spread over the other classes in proportion
  to the cosine similarity between the classifier's weight rows ("the class representative feature vector
  from the fully-connected layer's i-th row vector"). Negative similarities get no mass; a class with no
  positively similar class falls back to the uniform spread.
* :func:`soft_smoothing_loss` (OSI AI, exit heads): per-sample cross entropy times
  ``(1 + max softmax probability)``, averaged (the factor is not detached, as in OSI's code).
* :func:`distillation_kl` and :func:`feature_matching_mse`: knowledge distillation (KL between softened
  distributions, scaled by ``T**2``) and L2-normalised feature-map matching (bnn-training-tricks trick 12).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "WeightedLabelSmoothingLoss",
    "class_similarity",
    "distillation_kl",
    "feature_matching_mse",
    "label_smoothing_cross_entropy",
    "mixed_loss",
    "smooth_targets",
    "soft_smoothing_loss",
    "weighted_label_smoothing_loss",
    "weighted_smooth_targets",
]

SPREADS = ("all", "others")


def smooth_targets(target: Tensor, num_classes: int, smoothing: float, spread: str = "all") -> Tensor:
    """Smoothed one-hot targets (N, K).

    ``spread="all"``: ``1 - eps + eps/K`` on the true class, ``eps/K`` elsewhere.
    ``spread="others"``: ``1 - eps`` on the true class, ``eps/(K-1)`` elsewhere.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {SPREADS}, got {spread!r}")
    onehot = F.one_hot(target, num_classes).float()
    if spread == "all":
        return onehot * (1 - smoothing) + smoothing / num_classes
    return onehot * (1 - smoothing) + (1 - onehot) * (smoothing / (num_classes - 1))


def _soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross entropy against a target distribution."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)


def label_smoothing_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.1, spread: str = "all", reduction: str = "mean"
) -> Tensor:
    """Cross entropy with label smoothing (see :func:`smooth_targets` for ``spread``)."""
    loss = _soft_ce(logits, smooth_targets(target, logits.shape[1], smoothing, spread).to(logits.dtype))
    return _reduce(loss, reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def class_similarity(weight: Tensor) -> Tensor:
    """Cosine similarity between the rows of a classifier weight (K, D), diagonal zeroed, negatives to 0."""
    w = F.normalize(weight.detach().float().flatten(1), dim=1)
    sim = (w @ w.t()).clamp(min=0)
    sim.fill_diagonal_(0)
    return sim


def weighted_smooth_targets(target: Tensor, similarity: Tensor, smoothing: float) -> Tensor:
    """KAIST targets: ``1 - eps`` on the true class ``y``; ``eps * s[y, j] / sum_k s[y, k]`` on class ``j``.

    Rows of ``similarity`` that sum to zero spread ``eps`` uniformly over the other classes.
    """
    k = similarity.shape[0]
    rows = similarity[target]
    uniform = torch.ones_like(rows)
    uniform[torch.arange(len(target)), target] = 0
    total = rows.sum(dim=1, keepdim=True)
    weights = torch.where(total > 0, rows / total.clamp(min=torch.finfo(rows.dtype).tiny), uniform / (k - 1))
    return weights * smoothing + F.one_hot(target, k).to(rows.dtype) * (1 - smoothing)


def weighted_label_smoothing_loss(
    logits: Tensor, target: Tensor, classifier_weight: Tensor, smoothing: float = 0.1, reduction: str = "mean"
) -> Tensor:
    """Cross entropy against :func:`weighted_smooth_targets` built from ``classifier_weight`` (K, D)."""
    targets = weighted_smooth_targets(target, class_similarity(classifier_weight).to(logits.device), smoothing)
    return _reduce(_soft_ce(logits, targets.to(logits.dtype)), reduction)


class WeightedLabelSmoothingLoss(nn.Module):
    """KAIST's weighted label smoothing, reading the similarity from a live classifier module."""

    def __init__(self, classifier: nn.Module, smoothing: float = 0.1) -> None:
        super().__init__()
        if not isinstance(getattr(classifier, "weight", None), Tensor):
            raise ValueError("the classifier needs a weight tensor")
        self.classifier = [classifier]  # a list, so the classifier is not registered as a submodule
        self.smoothing = smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the batch."""
        return weighted_label_smoothing_loss(logits, target, self.classifier[0].weight, self.smoothing)


def soft_smoothing_loss(
    logits: Tensor, target: Tensor, smoothing: float = 0.0, spread: str = "others", reduction: str = "mean"
) -> Tensor:
    """OSI AI's soft smoothing loss: ``(1 + max_j softmax(logits)_j) * CE`` per sample.

    With ``smoothing > 0`` the cross entropy is taken against smoothed targets (OSI's
    ``SoftLabelSmoothingLoss``); with 0 it is the plain cross entropy used for the exit head.
    """
    targets = smooth_targets(target, logits.shape[1], smoothing, spread).to(logits.dtype)
    ce = _soft_ce(logits, targets)
    confidence = F.softmax(logits, dim=1).amax(dim=1)
    return _reduce(ce * (1 + confidence), reduction)


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """``T**2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch (Hinton et al. 2015)."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * t * t


def feature_matching_mse(student: Tensor, teacher: Tensor, normalize: bool = True) -> Tensor:
    """Mean squared difference of feature maps, each flattened per sample and L2-normalised first."""
    s = student.flatten(1)
    t = teacher.detach().flatten(1)
    if normalize:
        s, t = F.normalize(s, dim=1), F.normalize(t, dim=1)
    return F.mse_loss(s, t)


def mixed_loss(
    criterion: Callable[[Tensor, Tensor], Tensor], logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float
) -> Tensor:
    """``lam * criterion(logits, y_a) + (1 - lam) * criterion(logits, y_b)`` (Mixup / CutMix)."""
    if lam >= 1.0:
        return criterion(logits, y_a)
    return lam * criterion(logits, y_a) + (1 - lam) * criterion(logits, y_b)
