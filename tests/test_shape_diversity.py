"""drdm.metrics.nonrigid_residual: the non-affine part of a field over a region, hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drdm.metrics import nonrigid_residual


def _coords(n: int) -> np.ndarray:
    """``(2, n, n)`` voxel coordinates along the array axes."""
    return np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij")).astype(np.float64)


def _disk(n: int, radius: float) -> np.ndarray:
    c = (n - 1) / 2.0
    x = _coords(n) - c
    return (x**2).sum(axis=0) <= radius**2


def test_pure_affine_field_has_zero_residual() -> None:
    n = 48
    x = _coords(n)
    a = np.array([[1.1, 0.2], [-0.15, 0.9]])  # x + u(x) = A x + b
    b = np.array([2.0, -3.5])
    u = np.einsum("ij,j...->i...", a, x) + b[:, None, None] - x
    mask = _disk(n, 15.0)
    res = nonrigid_residual(u, mask)
    assert res.mean < 1e-9 and res.rms < 1e-9 and res.percent < 1e-8
    assert res.displacement > 1.0
    np.testing.assert_allclose(res.affine, np.concatenate([a, b[:, None]], axis=1), atol=1e-9)


def test_known_bump_gives_its_non_affine_part() -> None:
    # A Gaussian bump centred on a centred disk is even along both axes, so it is orthogonal to
    # the linear functions over the disk: the residual is the bump minus its mean.
    n = 64
    c = (n - 1) / 2.0
    x = _coords(n) - c
    mask = _disk(n, 20.0)
    g = 1.5 * np.exp(-(x**2).sum(axis=0) / (2 * 6.0**2))
    u = np.zeros((2, n, n))
    u[0] = g
    res = nonrigid_residual(torch.as_tensor(u), torch.as_tensor(mask))
    expected = np.abs(g[mask] - g[mask].mean())
    assert res.mean == pytest.approx(expected.mean(), rel=1e-9)
    assert res.rms == pytest.approx(math.sqrt((expected**2).mean()), rel=1e-9)
    assert res.percent == pytest.approx(100 * res.mean / res.size)
    # adding an affine field changes nothing
    more = u + 0.05 * x[::-1] + np.array([1.0, -2.0])[:, None, None]
    assert nonrigid_residual(more, mask).mean == pytest.approx(res.mean, rel=1e-9)


def test_size_is_the_diameter_of_a_disk_and_spacing_gives_mm() -> None:
    n = 128
    mask = _disk(n, 40.0)
    u = np.zeros((2, n, n))
    u[1] = 0.01 * (_coords(n)[0] - 60.0) ** 2
    res = nonrigid_residual(u, mask)
    assert res.size == pytest.approx(80.0, rel=0.01)
    mm = nonrigid_residual(u, mask, spacing=(2.0, 2.0))
    assert mm.size == pytest.approx(2 * res.size)
    assert mm.mean == pytest.approx(2 * res.mean)
    assert mm.percent == pytest.approx(res.percent)


def test_bad_masks_are_refused() -> None:
    u = np.zeros((2, 16, 16))
    with pytest.raises(ValueError, match="at least 3"):
        nonrigid_residual(u, np.zeros((16, 16), bool))
    line = np.zeros((16, 16), bool)
    line[4, :] = True
    with pytest.raises(ValueError, match="line or plane"):
        nonrigid_residual(u, line)
    with pytest.raises(ValueError, match="does not match"):
        nonrigid_residual(u, np.ones((8, 8), bool))
