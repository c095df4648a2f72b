"""What the phantoms share: the :class:`Phantom` record, the seeded random streams and
the shape, blur and noise primitives (coordinates in mm)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...seeding import drawn_generator
from ...spatial import smooth

CARDIAC_LABELS: dict[int, str] = {
    0: "background",
    1: "rv_cavity",
    2: "myocardium",
    3: "lv_cavity",
}
THORAX_LABELS: dict[int, str] = {0: "background", 1: "left_lung", 2: "right_lung"}

GeneratorLike = torch.Generator | int | None

_F32 = torch.float32
_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class Phantom:
    """One synthetic image with its label map.

    Attributes:
        image: float32 tensor of the spatial shape (``(H, W)`` or ``(D, H, W)``), values in [0, 1].
        label: int64 tensor of the same shape.
        label_names: label value -> structure name.
        spacing: voxel size in mm, one entry per spatial axis.
        masks: auxiliary boolean masks of the same shape (e.g. ``"body"``, ``"vessels"``),
            useful for tests and visualisation; not part of the label convention.
    """

    image: Tensor
    label: Tensor
    label_names: dict[int, str]
    spacing: tuple[float, ...]
    masks: dict[str, Tensor] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of the image."""
        return tuple(self.image.shape)


# ----------------------------------------------------------------------------------------------
# Randomness
# ----------------------------------------------------------------------------------------------


def _as_generator(generator: GeneratorLike) -> torch.Generator:
    if generator is None:
        generator = 0
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError("phantoms are generated on the CPU; pass a CPU torch.Generator")
        return generator
    if isinstance(generator, bool) or not isinstance(generator, numbers.Integral):
        raise TypeError(f"generator must be a torch.Generator, an int or None, got {generator!r}")
    g = torch.Generator()
    g.manual_seed(int(generator) % (2**64))
    return g


class _Rng:
    """Thin helper around an explicit torch.Generator (never the global RNG)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.g = generator

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=self.g, dtype=torch.float64))

    def chance(self, p: float) -> bool:
        return self.uniform(0.0, 1.0) < p

    def rand(self, *shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=self.g, dtype=_F32)

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.g, dtype=_F32)

    def coef(self, k: int, amp: float) -> Tensor:
        """Fourier coefficients (k, 2) for modes 1..k with std ``amp / mode``."""
        return self.randn(k, 2) * (amp / torch.arange(1, k + 1, dtype=_F32))[:, None]

    def fork(self) -> torch.Generator:
        return drawn_generator(self.g)


class _Waves:
    """A smooth random scalar field: a sum of plane waves, evaluable anywhere (mm coordinates).

    Resolution independent; the standard deviation of the field is about ``amp``.
    """

    def __init__(
        self, rng: _Rng, ndim: int, n: int, wavelength: tuple[float, float], amp: float
    ) -> None:
        dirs = rng.randn(n, ndim)
        dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-6)
        lo, hi = wavelength
        wl = lo * (hi / lo) ** rng.rand(n)
        self.k = (dirs * (_TWO_PI / wl)[:, None]).tolist()
        self.phase = (rng.rand(n) * _TWO_PI).tolist()
        self.amp = (rng.randn(n) * amp * math.sqrt(2.0 / n)).tolist()

    def __call__(self, *coords: Tensor) -> Tensor:
        out: Tensor | None = None
        for k, ph, a in zip(self.k, self.phase, self.amp, strict=True):
            arg = ph + sum(kj * c for kj, c in zip(k, coords, strict=True))
            term = a * torch.cos(arg)
            out = term if out is None else out + term
        assert out is not None
        return out

    @property
    def bound(self) -> float:
        """Upper bound of ``|field|``."""
        return float(sum(abs(a) for a in self.amp))


# ----------------------------------------------------------------------------------------------
# Shape and image helpers
# ----------------------------------------------------------------------------------------------

_FAR = 1.0e4  # "distance" of points far outside a shape that was only evaluated in a box


def _soft(d: Tensor, w: float) -> Tensor:
    """Partial-volume occupancy of the region ``d < 0`` with edge width ``w`` (mm)."""
    return torch.sigmoid(d * (-1.0 / w))


def _paint(img: Tensor, m: Tensor, value: Tensor | float) -> None:
    """In place: ``img = (1 - m) * img + m * value``."""
    img.add_(m * (value - img))


def _smax(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Smooth maximum (intersection of level sets) with rounding radius ~``k`` mm."""
    return torch.logaddexp(a / k, b / k) * k


def _modes(
    c1: Tensor, s1: Tensor, coef: Tensor, coef_t: Tensor | None = None, t: Any = None
) -> Tensor:
    """``sum_k a_k cos(k th) + b_k sin(k th)`` for k = 1..K, from ``c1 = cos th, s1 = sin th``.

    Uses the angle-addition recurrence (no trigonometric calls).  With ``coef_t`` the
    coefficients vary linearly with ``t``: ``a_k + a'_k t``.
    """
    out = torch.zeros_like(c1)
    ck, sk = c1, s1
    slopes = coef_t.tolist() if coef_t is not None else None
    for i, (a, b) in enumerate(coef.tolist()):
        if i:
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        if slopes is not None:
            a = a + slopes[i][0] * t
            b = b + slopes[i][1] * t
        out = out + a * ck + b * sk
    return out


def _modes_at(theta: float, coef: Tensor) -> float:
    """:func:`_modes` at a single angle, in plain Python."""
    return sum(
        a * math.cos((k + 1) * theta) + b * math.sin((k + 1) * theta)
        for k, (a, b) in enumerate(coef.tolist())
    )


def _blob2(
    y: Tensor,
    x: Tensor,
    cy: float,
    cx: float,
    ru: float,
    rv: float,
    angle: float,
    coef: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Radial signed distance (mm, < 0 inside) to a rotated, Fourier-perturbed ellipse.

    ``ru`` is the semi-axis along direction ``angle`` (image x right, y down), ``rv`` the other.
    Also returns ``cos``/``sin`` of the polar angle in the ellipse frame, for perturbing
    related contours (wall thickness, fat layers) consistently.
    """
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    u = c * dx + s * dy
    v = c * dy - s * dx
    un, vn = u / ru, v / rv
    rho = torch.hypot(un, vn)
    inv = 1.0 / rho.clamp_min(1e-4)
    c1, s1 = un * inv, vn * inv
    r = 1.0 + _modes(c1, s1, coef) if coef is not None else 1.0
    n = torch.hypot(u, v)
    scale = torch.where(rho > 1e-4, n * inv, torch.full_like(n, min(ru, rv)))
    return (rho - r) * scale, c1, s1


def _ellipsoid(
    p: Sequence[Tensor],
    center: Sequence[float],
    axes: Sequence[float],
    frame: Sequence[Sequence[float]] | None = None,
) -> Tensor:
    """Radial signed distance (mm) to an ellipsoid; ``p``/``center`` in (z, y, x) mm.

    ``frame`` holds three orthonormal row vectors (in (z, y, x) components) along which the
    semi-axes ``axes`` lie; the default is axis-aligned.
    """
    d = [pi - ci for pi, ci in zip(p, center, strict=True)]
    u = d if frame is None else [e[0] * d[0] + e[1] * d[1] + e[2] * d[2] for e in frame]
    rho = torch.sqrt(sum((ui / ai) ** 2 for ui, ai in zip(u, axes, strict=True)))
    n = torch.sqrt(sum(ui * ui for ui in u))
    scale = torch.where(rho > 1e-4, n / rho.clamp_min(1e-4), torch.full_like(rho, min(axes)))
    return (rho - 1.0) * scale


def _blur(x: Tensor, sigma: float | Sequence[float]) -> Tensor:
    """Separable Gaussian blur of a 2D/3D spatial tensor (sigma in voxels, replicate edges;
    sigmas up to 0.05 voxel leave their axis untouched)."""
    nd = x.dim()
    sig = [float(sigma)] * nd if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    sig = [s if s > 0.05 else 0.0 for s in sig]
    return smooth(x[None, None], sig, edges="replicate")[0, 0]


def _upsample(
    t: Tensor, shape: Sequence[int], coarse: Sequence[int], cubic: bool = False
) -> Tensor:
    """Upsample a coarse field to ``shape`` (linear, or bicubic in 2D with ``cubic``)."""
    mode = ("bicubic" if cubic else "bilinear") if len(shape) == 2 else "trilinear"
    t = t.expand(tuple(coarse))[None, None]
    return F.interpolate(t, size=tuple(shape), mode=mode, align_corners=True)[0, 0]


def _coarse_axis(n: int, step: float, stride: int) -> Tensor:
    """Coordinates (mm) of a coarse sub-grid whose ends coincide with the full grid's ends."""
    nc = max(2, math.ceil((n - 1) / stride) + 1)
    return (torch.linspace(0.0, n - 1.0, nc) - (n - 1) / 2) * step


def _noise_field(gen: torch.Generator, shape: Sequence[int], cell: float) -> Tensor:
    """Smooth noise with correlation length ~``cell`` voxels and about unit std."""
    coarse = [max(2, math.ceil((n - 1) / cell) + 1) for n in shape]
    t = torch.randn(tuple(coarse), generator=gen, dtype=_F32)
    out = _upsample(t, shape, coarse, cubic=cell >= 6.0)
    sub = out[tuple(slice(None, None, 3) for _ in shape)]
    return out / sub.std().clamp_min(1e-6)


def _size(size: int | Sequence[int], nd: int, name: str) -> tuple[int, ...]:
    if isinstance(size, numbers.Integral):
        shape = (int(size),) * nd
    else:
        shape = tuple(int(s) for s in size)
    if len(shape) != nd or min(shape) < 8:
        raise ValueError(f"{name}: size must be an int or {nd} ints >= 8, got {size!r}")
    return shape


def _spacing(spacing: float | Sequence[float] | None, default: float, nd: int) -> tuple[float, ...]:
    if spacing is None:
        return (default,) * nd
    if isinstance(spacing, (int, float)):
        sp = (float(spacing),) * nd
    else:
        sp = tuple(float(s) for s in spacing)
    if len(sp) != nd or min(sp) <= 0:
        raise ValueError(f"spacing must be a positive float or {nd} positive floats")
    return sp


def _robust_normalise(img: Tensor, q: float) -> Tensor:
    flat = img.flatten()
    flat = flat[:: max(1, flat.numel() // 16_384)]
    k = min(flat.numel(), max(1, round(q * flat.numel())))
    top = flat.kthvalue(k).values.clamp_min(1e-6)
    return (img / top).clamp_(0.0, 1.0)


def _span(lo_mm: float, hi_mm: float, first: float, step: float, n: int) -> slice:
    """Index range of grid points (position ``first + i * step``) within [lo_mm, hi_mm]."""
    a, b = (lo_mm - first) / step, (hi_mm - first) / step
    if a > b:
        a, b = b, a
    return slice(max(0, math.floor(a)), min(n, math.ceil(b) + 1))


def _empty(box: tuple[slice, ...]) -> bool:
    return any(sl.stop <= sl.start for sl in box)
