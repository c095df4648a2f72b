"""Losses of the downstream experiments: segmentation BCE (paper Eq. 17), supervised
registration loss (paper Eq. 20) and the unsupervised fine-tuning terms (VoxelMorph)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "gradient_penalty",
    "local_ncc",
    "registration_loss",
    "segmentation_bce",
    "similarity_loss",
]


def segmentation_bce(logits: Tensor, target: Tensor) -> Tensor:
    """Paper Eq. 17: per-voxel binary cross-entropy summed over the ``C`` class channels and
    averaged over voxels (and the batch).

    ``L = -E_x sum_i [L[x,i] log S[x,i] + (1 - L[x,i]) log(1 - S[x,i])]`` with
    ``S = sigmoid(logits)``; the paper writes the log-likelihood, the loss to minimise is its
    negative. Computed from the logits for numerical stability (same value).

    Args:
        logits: ``(B, C, *spatial)`` network outputs before the sigmoid.
        target: ``(B, C, *spatial)`` one-hot (or soft) masks in ``[0, 1]``, one channel per
            foreground class.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return bce.sum(dim=1).mean()


def _forward_differences(ddf: Tensor) -> list[Tensor]:
    ndim = ddf.dim() - 2
    return [torch.diff(ddf, dim=2 + axis) for axis in range(ndim)]


def gradient_penalty(ddf: Tensor, norm: Literal["l1", "l2"] = "l1") -> Tensor:
    """Smoothness of a displacement field ``(B, ndim, *spatial)`` (voxels).

    ``"l1"``: ``sum_{i,j} E_x |d_j u_i|`` (paper Eq. 20, ``E_x ||grad u||_1``); ``"l2"``:
    ``sum_{i,j} E_x (d_j u_i)^2`` (VoxelMorph's diffusion regulariser). Forward differences
    along each axis ``j``, averaged over the voxels where they are defined.
    """
    diffs = _forward_differences(ddf)
    if norm == "l1":
        return sum(d.abs().mean(dim=(0, *range(2, d.dim()))).sum() for d in diffs)  # type: ignore[return-value]
    if norm == "l2":
        return sum(d.square().mean(dim=(0, *range(2, d.dim()))).sum() for d in diffs)  # type: ignore[return-value]
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def registration_loss(
    pred: Tensor, target: Tensor, lambda_mse: float = 1.0, lambda_grad: float = 1.0
) -> Tensor:
    """Paper Eq. 20, supervised pre-training on synthetic pairs.

    ``L = lambda_4 E_x ||phi - phi~||^2 + lambda_5 E_x ||grad phi~||_1`` with the error summed
    over the ``ndim`` components (the squared Euclidean distance, the "MSE" of the paper) and
    averaged over voxels and the batch; the gradient term is :func:`gradient_penalty` ``"l1"``.
    Both fields ``(B, ndim, *spatial)`` in voxels; the paper uses ``lambda_4 = lambda_5 = 1``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    mse = (pred - target).square().sum(dim=1).mean()
    return lambda_mse * mse + lambda_grad * gradient_penalty(pred, "l1")


def local_ncc(a: Tensor, b: Tensor, window: int = 9, eps: float = 1e-5) -> Tensor:
    """Mean local normalised cross-correlation (squared, as VoxelMorph) of two images
    ``(B, 1, *spatial)`` over cubic windows of ``window`` voxels; 1 for identical images."""
    ndim = a.dim() - 2
    pool = F.avg_pool2d if ndim == 2 else F.avg_pool3d
    pad = window // 2

    def mean(x: Tensor) -> Tensor:
        return pool(x, window, stride=1, padding=pad, count_include_pad=False)

    mu_a, mu_b = mean(a), mean(b)
    cov = mean(a * b) - mu_a * mu_b
    var_a = (mean(a * a) - mu_a.square()).clamp_min(0.0)
    var_b = (mean(b * b) - mu_b.square()).clamp_min(0.0)
    return (cov.square() / (var_a * var_b + eps)).mean()


def similarity_loss(warped: Tensor, fixed: Tensor, kind: Literal["mse", "ncc"] = "ncc") -> Tensor:
    """Image dissimilarity for unsupervised fine-tuning: ``"mse"`` or ``"ncc"`` (``1 - NCC``)."""
    if kind == "mse":
        return (warped - fixed).square().mean()
    if kind == "ncc":
        return 1.0 - local_ncc(warped, fixed)
    raise ValueError(f"similarity must be 'mse' or 'ncc', got {kind!r}")
