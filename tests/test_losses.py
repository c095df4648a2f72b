"""Tests of the DRDM loss (Eq. 14)."""

from __future__ import annotations

import math

import pytest
import torch

from drdm.losses import DRDMLoss, LossTerms, drdm_loss, regularisation_loss
from drdm.spatial import compose, identity_grid, warp


def _translation(shape: tuple[int, ...], vector: tuple[float, ...]) -> torch.Tensor:
    field = torch.zeros(shape)
    for i, v in enumerate(vector):
        field[:, i] = v
    return field


def _smooth_field(size: int, amplitude: float, ndim: int = 2, shift: float = 0.0) -> torch.Tensor:
    """A smooth, invertible displacement field (voxels): a bump vanishing at the border,
    plus a translation ``(shift, -shift / 2, ...)``."""
    grid = identity_grid([size] * ndim) / (size - 1) * math.pi
    bump = torch.ones(grid.shape[1:])
    for i in range(ndim):
        bump = bump * torch.sin(grid[i])
    comps = [
        amplitude * bump * torch.cos(2 * grid[(i + 1) % ndim] + 0.5 * i) + shift * (-0.5) ** i
        for i in range(ndim)
    ]
    return torch.stack(comps).unsqueeze(0)


def _numerical_inverse(psi: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """psi_hat with psi_hat[x + psi[x]] = -psi[x]: fixed point of psi_hat = -psi(y + psi_hat)."""
    psi_hat = -psi
    for _ in range(iterations):
        psi_hat = -warp(psi, psi_hat, mode="linear", padding="border")
    return psi_hat


@pytest.mark.parametrize(
    ("shape", "vector"), [((2, 2, 16, 16), (1.5, -0.7)), ((1, 3, 8, 8, 8), (0.5, 2.0, -1.0))]
)
def test_perfect_translation_inverse(shape: tuple[int, ...], vector: tuple[float, ...]) -> None:
    psi = _translation(shape, vector)
    terms = drdm_loss(psi, -psi)
    assert isinstance(terms, LossTerms)
    assert terms.distance.item() == pytest.approx(0.0, abs=1e-5)
    assert terms.angle.item() == pytest.approx(-1.0, abs=1e-3)
    assert terms.regularisation.item() == pytest.approx(0.0, abs=1e-6)
    assert terms.total.item() == pytest.approx(terms.angle.item(), abs=1e-4)


def test_numerical_inverse_of_smooth_field() -> None:
    psi = _smooth_field(32, 2.0, shift=1.0)  # |psi| >= 0.09 voxels everywhere
    psi_hat = _numerical_inverse(psi)
    # The fixed point really inverts psi (compose is what the distance term measures).
    assert compose(psi, psi_hat).norm(dim=1).mean() < 0.03
    good = drdm_loss(psi, psi_hat)
    assert good.distance.item() < 0.03
    assert good.angle.item() == pytest.approx(-1.0, abs=0.005)
    naive = drdm_loss(psi, -psi)  # -psi is only the inverse of a translation
    assert naive.distance.item() > 3 * good.distance.item()
    bad = drdm_loss(psi, psi)  # the field itself instead of its inverse
    assert bad.distance.item() > 1.5
    assert bad.angle.item() > 0.9
    assert good.total.item() < naive.total.item() < bad.total.item()


def test_folding_field_is_penalised() -> None:
    smooth = _smooth_field(32, 0.5)
    folding = smooth.clone()
    # A steep negative slope along axis 0 in a band: d u_0 / d x_0 = -3 there, det < 0.
    ramp = torch.arange(32, dtype=torch.float32).view(32, 1).expand(32, 32)
    band = ((ramp > 10) & (ramp < 20)).float()
    folding[0, 0] += -3.0 * (ramp - 10).clamp(0, 10) * band + (-30.0) * (ramp >= 20).float()
    assert regularisation_loss(folding).item() > regularisation_loss(smooth).item() + 1.0


def test_weights_and_module() -> None:
    psi = _smooth_field(16, 1.0)
    psi_hat = -0.8 * psi
    terms = drdm_loss(psi, psi_hat, lambda_dist=2.0, lambda_angle=0.5, lambda_reg=3.0)
    expected = 2.0 * terms.distance + 0.5 * terms.angle + 3.0 * terms.regularisation
    torch.testing.assert_close(terms.total, expected)
    default = DRDMLoss()(psi, psi_hat)
    torch.testing.assert_close(
        default.total, default.distance + default.angle + 10.0 * default.regularisation
    )
    floats = default.as_floats()
    assert set(floats) == {"total", "distance", "angle", "regularisation"}
    assert all(isinstance(v, float) for v in floats.values())


def test_gradients_flow() -> None:
    psi = _smooth_field(16, 1.5, ndim=3)
    psi_hat = (-0.5 * psi).requires_grad_(True)
    drdm_loss(psi, psi_hat).total.backward()
    assert psi_hat.grad is not None
    assert torch.isfinite(psi_hat.grad).all()
    assert psi_hat.grad.abs().sum() > 0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        drdm_loss(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 16))
    with pytest.raises(ValueError, match="ndim"):
        drdm_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
