"""The DRDM training loss (paper Eq. 14).

All fields are ``(B, ndim, *spatial)`` displacement fields in voxels (channel ``i`` along
spatial axis ``i``, pull-back convention, see :mod:`drdm.spatial`). ``psi`` is the forward
DVF ``psi_t`` that deformed the image and ``psi_hat`` the network's estimate of its inverse
``psi_t^{-1}``. Every term is averaged over voxels and the batch.

* distance: ``||<psi o psi_hat>[x]|| / (||psi[x]|| + eps)`` with
  ``<psi o psi_hat>[x] = psi_hat[x + psi[x]] + psi[x]`` (Eq. 5, ``compose(psi, psi_hat)``),
  zero for a perfect inverse;
* angle: the cosine between ``psi[x]`` and ``psi_hat[x + psi[x]]``,
  ``psi[x] . psi_hat[x + psi[x]] / (||psi[x]|| ||psi_hat[x + psi[x]]|| + eps)``, which is
  ``-1`` for a perfect inverse (the recovering vector points back along ``psi``). Eq. 14 as
  printed carries an extra minus sign, which would make the perfect inverse the *maximum*
  (``+1``); the sign here is the one that makes the inverse the minimum;
* regulariser: ``sum_{c,i} |d psi_hat_c / d x_i|`` (L1 of the spatial gradient, central
  differences) plus ``relu(-det(I + grad psi_hat))`` (folding penalty).

``total = lambda_dist * distance + lambda_angle * angle + lambda_reg * regulariser`` with the
paper's weights 1, 1 and 10 by default.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .choices import ComposePadding
from .spatial import compose, jacobian_det, spatial_gradient, warp

__all__ = [
    "DRDMLoss",
    "LossTerms",
    "angle_loss",
    "distance_loss",
    "drdm_loss",
    "regularisation_loss",
    "unrecovered_fraction",
]

DEFAULT_EPS = 1e-3


class LossTerms(NamedTuple):
    """Scalar loss tensors: the weighted ``total`` and the three unweighted Eq. 14 terms."""

    total: Tensor
    distance: Tensor
    angle: Tensor
    regularisation: Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats, e.g. for a progress bar."""
        return {k: float(v.detach()) for k, v in self._asdict().items()}


def _check_pair(psi: Tensor, psi_hat: Tensor) -> None:
    if psi.shape != psi_hat.shape:
        raise ValueError(
            f"psi and psi_hat must have the same shape, got {tuple(psi.shape)} and "
            f"{tuple(psi_hat.shape)}"
        )
    if psi.dim() not in (4, 5) or psi.shape[1] != psi.dim() - 2:
        raise ValueError(
            f"fields must be (B, ndim, *spatial) with ndim 2 or 3, got {tuple(psi.shape)}"
        )


def distance_loss(
    psi: Tensor, psi_hat: Tensor, eps: float = DEFAULT_EPS, padding: ComposePadding = "border"
) -> Tensor:
    """Relative residual ``||compose(psi, psi_hat)|| / (||psi|| + eps)``, mean (Eq. 14)."""
    _check_pair(psi, psi_hat)
    residual = compose(psi, psi_hat, padding=padding)
    return (residual.norm(dim=1) / (psi.norm(dim=1) + eps)).mean()


def angle_loss(
    psi: Tensor, psi_hat: Tensor, eps: float = DEFAULT_EPS, padding: ComposePadding = "border"
) -> Tensor:
    """Mean cosine between ``psi[x]`` and ``psi_hat[x + psi[x]]`` (Eq. 14); -1 is perfect."""
    _check_pair(psi, psi_hat)
    moved = warp(psi_hat, psi, mode="linear", padding=padding)
    dot = (psi * moved).sum(dim=1)
    return (dot / (psi.norm(dim=1) * moved.norm(dim=1) + eps)).mean()


def regularisation_loss(psi_hat: Tensor) -> Tensor:
    """Mean of ``sum |grad psi_hat|`` plus ``relu(-det(I + grad psi_hat))`` (Eq. 14)."""
    grad = spatial_gradient(psi_hat)  # (B, ndim, ndim, *spatial)
    smooth = grad.abs().sum(dim=(1, 2)).mean()
    folding = torch.relu(-jacobian_det(psi_hat)).mean()
    return smooth + folding


def drdm_loss(
    psi: Tensor,
    psi_hat: Tensor,
    lambda_dist: float = 1.0,
    lambda_angle: float = 1.0,
    lambda_reg: float = 10.0,
    eps: float = DEFAULT_EPS,
    padding: ComposePadding = "border",
) -> LossTerms:
    """DRDM loss of Eq. 14 for the forward DVF ``psi`` and the estimated inverse ``psi_hat``.

    Args:
        psi: ``(B, ndim, *spatial)`` forward DVF ``psi_t`` (voxels).
        psi_hat: same shape, the network's estimate of ``psi_t^{-1}`` (voxels).
        lambda_dist, lambda_angle, lambda_reg: weights ``lambda_1..3`` (paper: 1, 1, 10).
        eps: stabiliser of the denominators (voxels for the distance, voxels^2 for the angle).
        padding: padding used when ``psi_hat`` is sampled at ``x + psi[x]``.

    Returns:
        :class:`LossTerms` of scalars; ``total`` is differentiable.
    """
    dist = distance_loss(psi, psi_hat, eps, padding)
    ang = angle_loss(psi, psi_hat, eps, padding)
    reg = regularisation_loss(psi_hat)
    total = lambda_dist * dist + lambda_angle * ang + lambda_reg * reg
    return LossTerms(total=total, distance=dist, angle=ang, regularisation=reg)


def unrecovered_fraction(psi: Tensor, psi_hat: Tensor, per_sample: bool = False) -> Tensor:
    """``U = E|r| / E|psi|`` with ``r = compose(psi_hat, psi)`` (``r[x] = psi[x + psi_hat[x]]
    + psi_hat[x]``): the part of the forward step ``psi`` left after warping the deformed
    image back by ``psi_hat`` (pull-back). 1 for the zero field, 0 for an exact inverse.

    ``psi``, ``psi_hat``: ``(B, ndim, *spatial)`` voxels. Returns a scalar (means over the
    batch and voxels), or ``(B,)`` with ``per_sample=True``.
    """
    _check_pair(psi, psi_hat)
    residual = compose(psi_hat, psi).norm(dim=1).flatten(1).mean(1)
    size = psi.norm(dim=1).flatten(1).mean(1)
    if per_sample:
        return residual / size.clamp_min(torch.finfo(size.dtype).tiny)
    return residual.mean() / size.mean().clamp_min(torch.finfo(size.dtype).tiny)


class DRDMLoss(nn.Module):
    """Module form of :func:`drdm_loss` holding the weights ``lambda_1..3`` and ``eps``."""

    def __init__(
        self,
        lambda_dist: float = 1.0,
        lambda_angle: float = 1.0,
        lambda_reg: float = 10.0,
        eps: float = DEFAULT_EPS,
        padding: ComposePadding = "border",
    ) -> None:
        super().__init__()
        self.lambda_dist = float(lambda_dist)
        self.lambda_angle = float(lambda_angle)
        self.lambda_reg = float(lambda_reg)
        self.eps = float(eps)
        self.padding: ComposePadding = padding

    def forward(self, psi: Tensor, psi_hat: Tensor) -> LossTerms:
        """See :func:`drdm_loss`; ``psi``, ``psi_hat``: ``(B, ndim, *spatial)`` voxels."""
        return drdm_loss(
            psi,
            psi_hat,
            self.lambda_dist,
            self.lambda_angle,
            self.lambda_reg,
            self.eps,
            self.padding,
        )
