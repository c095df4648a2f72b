"""The 3D thorax-CT phantom (:func:`thorax_phantom_3d`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...spatial import smoothing_gain
from ._common import (
    _F32,
    _FAR,
    THORAX_LABELS,
    GeneratorLike,
    Phantom,
    _as_generator,
    _blur,
    _coarse_axis,
    _ellipsoid,
    _empty,
    _modes,
    _modes_at,
    _noise_field,
    _paint,
    _Rng,
    _size,
    _smax,
    _soft,
    _spacing,
    _span,
    _upsample,
    _Waves,
)

# ----------------------------------------------------------------------------------------------
# 3D thorax CT
# ----------------------------------------------------------------------------------------------


class _Grid3:
    """Voxel centres in mm (z up = superior, y = posterior, x = patient left), smoothly warped.

    Smooth fields are evaluated on a coarse sub-grid (~12 mm) and upsampled trilinearly.
    """

    def __init__(self, shape: tuple[int, int, int], s: float, warp: Sequence[_Waves]) -> None:
        D, H, W = shape
        self.shape, self.s, self.warp = shape, s, warp
        z = (((D - 1) / 2 - torch.arange(D, dtype=_F32)) * s).view(D, 1, 1)
        y = ((torch.arange(H, dtype=_F32) - (H - 1) / 2) * s).view(1, H, 1)
        x = ((torch.arange(W, dtype=_F32) - (W - 1) / 2) * s).view(1, 1, W)
        stride = max(1, round(12.0 / s))  # coarse sub-grid of ~12 mm
        zc = _coarse_axis(D, -s, stride).view(-1, 1, 1)
        yc = _coarse_axis(H, s, stride).view(1, -1, 1)
        xc = _coarse_axis(W, s, stride).view(1, 1, -1)
        self.coarse = (zc.shape[0], yc.shape[1], xc.shape[2])
        disp = [f(zc, yc, xc).expand(self.coarse) for f in warp]
        self.Zc, self.Yc, self.Xc = zc + disp[0], yc + disp[1], xc + disp[2]
        self.Z = z + self.up(disp[0])
        self.Y = y + self.up(disp[1])
        self.X = x + self.up(disp[2])
        self.margin = max(f.bound for f in warp) + 2.0 * s
        self._points: Tensor | None = None

    def up(self, t: Tensor) -> Tensor:
        return _upsample(t, self.shape, self.coarse)

    def smooth(self, f: _Waves) -> Tensor:
        """A smooth field evaluated at the (warped) voxel positions via the coarse grid."""
        return self.up(f(self.Zc, self.Yc, self.Xc))

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice]:
        """Index box covering the anatomical (z, y, x) mm range ``[lo, hi]`` (plus warp margin)."""
        D, H, W = self.shape
        s, m = self.s, self.margin
        return (
            _span(lo[0] - m, hi[0] + m, (D - 1) / 2 * s, -s, D),
            _span(lo[1] - m, hi[1] + m, -(H - 1) / 2 * s, s, H),
            _span(lo[2] - m, hi[2] + m, -(W - 1) / 2 * s, s, W),
        )

    def around(self, c: Sequence[float], r: float) -> tuple[slice, slice, slice]:
        return self.box([ci - r for ci in c], [ci + r for ci in c])

    def points(self) -> Tensor:
        """Warped voxel positions as a ``(D * H * W, 3)`` (z, y, x) table (cached)."""
        if self._points is None:
            self._points = torch.stack([self.Z, self.Y, self.X], dim=-1).reshape(-1, 3)
        return self._points

    def at(self, b: tuple[slice, ...]) -> tuple[Tensor, Tensor, Tensor]:
        return self.Z[b], self.Y[b], self.X[b]

    def unwarp(self, p: Tensor) -> Tensor:
        """Grid positions (mm) that the warp maps onto anatomical points ``p`` (N, 3)."""
        q = p
        for _ in range(3):
            u = torch.stack([f(q[:, 0], q[:, 1], q[:, 2]) for f in self.warp], dim=1)
            q = p - u
        return q

    def to_index(self, q: Tensor) -> Tensor:
        D, H, W = self.shape
        return torch.stack(
            [
                (D - 1) / 2 - q[:, 0] / self.s,
                q[:, 1] / self.s + (H - 1) / 2,
                q[:, 2] / self.s + (W - 1) / 2,
            ],
            dim=1,
        )


def _chaikin(
    points: Sequence[Sequence[float]], radii: Sequence[float], it: int = 3
) -> tuple[Tensor, Tensor, Tensor]:
    """Smooth a polyline with per-vertex radii by corner cutting; returns segments a, b, r."""
    pr = torch.cat(
        [torch.tensor(points, dtype=_F32), torch.tensor(radii, dtype=_F32)[:, None]], dim=1
    )
    for _ in range(it):
        a, b = pr[:-1], pr[1:]
        cut = torch.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], dim=1).reshape(-1, 4)
        pr = torch.cat([pr[:1], cut, pr[-1:]], dim=0)
    return pr[:-1, :3], pr[1:, :3], 0.5 * (pr[:-1, 3] + pr[1:, 3])


def _cat_segments(*segs: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.cat([s[0] for s in segs]),
        torch.cat([s[1] for s in segs]),
        torch.cat([s[2] for s in segs]),
    )


def _tubes(
    grid: _Grid3,
    segs: tuple[Tensor, Tensor, Tensor],
    margin: float = 0.0,
    sdf: bool = True,
    occ: bool = True,
) -> tuple[Tensor | None, Tensor | None, tuple[slice, slice, slice]]:
    """Rasterise a union of capsules (segments ``a -> b`` in anatomical (z, y, x) mm, radii r).

    Only voxels near the segments are visited (a scatter into small windows around points
    sampled along each segment), so thousands of segments are cheap.  Returns ``(sdf, occ,
    box)``: ``sdf`` is the signed distance to the union surface in mm (valid up to ``margin``
    mm outside, ``_FAR`` further away), ``occ`` the partial-volume occupancy in [0, 1]
    (mass-preserving for sub-voxel vessels), and ``box`` an index box containing the tubes.
    """
    a, b, r = segs
    D, H, W = grid.shape
    s = grid.s
    w = 0.3 * s
    sdf_t = torch.full((D * H * W,), _FAR, dtype=_F32) if sdf else None
    occ_t = torch.zeros(D * H * W, dtype=_F32) if occ else None
    reach_s = r + margin + 3.0 * w
    lo = (torch.minimum(a, b) - reach_s[:, None]).amin(0).tolist() if len(r) else [0.0] * 3
    hi = (torch.maximum(a, b) + reach_s[:, None]).amax(0).tolist() if len(r) else [0.0] * 3
    box = grid.box(lo, hi)
    if len(r) == 0:
        return (
            None if sdf_t is None else sdf_t.view(D, H, W),
            None if occ_t is None else occ_t.view(D, H, W),
            box,
        )
    seg = b - a
    L = seg.norm(dim=1)
    step = torch.clamp(0.5 * reach_s, min=s)
    npts = (L / step).ceil().long().clamp_min(1)
    sid = torch.repeat_interleave(torch.arange(a.shape[0]), npts)
    local = torch.arange(int(npts.sum())) - (torch.cumsum(npts, 0) - npts)[sid]
    t = (local.to(_F32) + 0.5) / npts[sid].to(_F32)  # sample points mid-way in equal pieces
    c = grid.to_index(grid.unwarp(a[sid] + t[:, None] * seg[sid])).round().long()
    cflat = (c[:, 0] * H + c[:, 1]) * W + c[:, 2]
    half = (1.1 * (reach_s + 0.5 * step) / s + 0.7).ceil().long()[sid]
    G = grid.points()
    L2 = (L * L).clamp_min(1e-6)
    r_eff = torch.sqrt(r * r + (0.6 * s) ** 2)
    amp = (r / r_eff) ** 2
    nvox = D * H * W
    for h in torch.unique(half).tolist():
        sel = (half == h).nonzero().squeeze(1)
        ar = torch.arange(-h, h + 1)
        off = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), dim=-1).reshape(-1, 3)
        off = off[(off * off).sum(1) <= (h + 0.5) ** 2]  # a ball is enough
        off_flat = (off[:, 0] * H + off[:, 1]) * W + off[:, 2]
        # Indices that wrap around a row only visit other (far) voxels, whose values are still
        # computed from their own coordinates, so no per-axis bounds check is needed.
        flat = (cflat[sel][:, None] + off_flat[None]).clamp_(0, nvox - 1)
        k = sid[sel]
        rel = G[flat] - a[k][:, None, :]
        sk = seg[k][:, None, :]
        tt = ((rel * sk).sum(-1) / L2[k][:, None]).clamp_(0.0, 1.0)
        dist = (rel - tt[..., None] * sk).norm(dim=-1)
        flat = flat.reshape(-1)
        if sdf_t is not None:
            sdf_t.scatter_reduce_(0, flat, (dist - r[k][:, None]).reshape(-1), reduce="amin")
        if occ_t is not None:
            val = amp[k][:, None] * torch.sigmoid((r_eff[k][:, None] - dist) / w)
            occ_t.scatter_reduce_(0, flat, val.reshape(-1), reduce="amax")
    return (
        None if sdf_t is None else sdf_t.view(D, H, W),
        None if occ_t is None else occ_t.view(D, H, W),
        box,
    )


def _vessel_tree(
    rng: _Rng, roots: Tensor, dirs: Tensor, r0: Tensor, l0: Tensor, pull: Tensor, depth: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric binary branching trees, vectorised per generation; returns segments a, b, r.

    Each branch point gives a main child (small angle, slightly thinner) and a side child
    (larger angle, much thinner).  ``pull`` (M, 3) gently bends each tree outwards.
    """
    pos, d, rad, ln = roots, dirs / dirs.norm(dim=1, keepdim=True), r0, l0
    pull = pull / pull.norm(dim=1, keepdim=True)
    A, B, Rr = [], [], []
    for g in range(depth + 1):
        n = pos.shape[0]
        d = d + 0.15 * rng.randn(n, 3) + 0.1 * pull
        d = d / d.norm(dim=1, keepdim=True)
        end = pos + d * ln[:, None]
        A.append(pos)
        B.append(end)
        Rr.append(rad)
        if g == depth:
            break
        rnd = rng.randn(n, 3)
        perp = rnd - (rnd * d).sum(1, keepdim=True) * d
        perp = perp / perp.norm(dim=1, keepdim=True).clamp_min(1e-6)
        a1 = rng.rand(n, lo=0.15, hi=0.4)[:, None]
        a2 = rng.rand(n, lo=0.5, hi=1.0)[:, None]
        pos = torch.cat([end, end])
        d = torch.cat(
            [torch.cos(a1) * d + torch.sin(a1) * perp, torch.cos(a2) * d - torch.sin(a2) * perp]
        )
        rad = torch.cat([rad * rng.rand(n, lo=0.8, hi=0.9), rad * rng.rand(n, lo=0.55, hi=0.75)])
        ln = torch.cat([ln * rng.rand(n, lo=0.72, hi=0.9), ln * rng.rand(n, lo=0.5, hi=0.75)])
        pull = torch.cat([pull, pull])
    return torch.cat(A), torch.cat(B), torch.cat(Rr)


@dataclass(frozen=True)
class _Frame:
    """What :func:`_draw_frame` returns."""

    a0: float
    b0: float
    bcx: float
    bcy: float
    body_coef: Tensor
    body_coef_z: Tensor
    diaph_f: _Waves
    dome: Callable[..., Any]
    fsc0: float
    fsc_coef: Tensor
    ga: float
    ga2: float
    gb: float
    gb2: float
    kyph: float
    m0: float
    m_back: float
    m_coef: Tensor
    m_top: float
    period: float
    protr: float
    r_can: float
    rc_a: float
    rc_b: float
    rc_nb: float
    rc_shift: float
    rc_top: float
    rc_z0: float
    spin_len: float
    spx: float
    tab_off: float
    vb_rx: float
    vb_ry: float
    vphase: float
    y_back: float
    y_cavb: float
    y_vb: Callable[..., Any]
    z_sh: float
    zl: float
    zr: float


@dataclass(frozen=True)
class _Heart:
    """What :func:`_draw_heart` returns."""

    frame: list[list[float]]
    ha: tuple[float, float, float]
    hc: tuple[float, float, float]
    hpt: Callable[..., Any]
    peri_f: _Waves
    peri_off: float


@dataclass(frozen=True)
class _Tubes:
    """What :func:`_draw_tubes` returns."""

    airways: tuple[Tensor, Tensor, Tensor]
    aorta: tuple[Tensor, Tensor, Tensor]
    hil: dict[float, tuple[float, float, float]]
    oesophagus: tuple[Tensor, Tensor, Tensor]
    pulm: tuple[Tensor, Tensor, Tensor]
    side: float
    svc: tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class _LungsAbdomen:
    """What :func:`_draw_lungs_and_abdomen` returns."""

    cos_phi_max: float
    drop: float
    la: tuple[float, float, float]
    lc: tuple[float, float, float]
    liver_a: tuple[float, float, float]
    liver_c: tuple[float, float, float]
    lung_par: dict[
        float, tuple[tuple[float, float, float], tuple[float, float, float], _Waves, float]
    ]
    rib_h: float
    rib_jit: Tensor
    rib_p: float
    rib_t: float
    side: float
    spl_a: tuple[float, float, float]
    spl_c: tuple[float, float, float]
    st_hi: float
    st_level: float
    st_lo: float
    st_w: float
    stom_a: tuple[float, float, float]
    stom_c: tuple[float, float, float]
    z1: float


@dataclass(frozen=True)
class _VesselTrees:
    """What :func:`_draw_vessel_trees` returns."""

    la_c: tuple[float, float, float]
    side: float
    trees: tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class _Intensities:
    """What :func:`_draw_intensities` returns."""

    hu_abd: float
    hu_blood_l: float
    hu_blood_r: float
    hu_bone: float
    hu_cart: float
    hu_disc: float
    hu_fat: float
    hu_liver: float
    hu_lung: float
    hu_med: float
    hu_muscle: float
    hu_myo: float
    hu_noise: float
    hu_spleen: float
    hu_stom: float
    hu_svc: float
    hu_vb: float
    lung_grad: float


@dataclass(frozen=True)
class _WallShapes:
    """What :func:`_wall_shapes` returns."""

    cart: Tensor
    d_abd: Tensor
    d_body: Tensor
    d_cav: Tensor
    d_musc: Tensor
    d_st: Tensor
    rib_occ: Tensor
    stb: tuple[slice, slice, slice]


@dataclass(frozen=True)
class _SpineShapes:
    """What :func:`_spine_shapes` returns."""

    arch_on: Tensor
    d_can: Tensor
    d_post: Tensor
    d_vb: Tensor
    disc: Tensor
    spb: tuple[slice, slice, slice]


@dataclass(frozen=True)
class _OrganShapes:
    """What :func:`_organ_shapes` returns."""

    air_box: tuple[slice, slice, slice]
    art_box: tuple[slice, slice, slice]
    d_atria: Tensor
    d_heart: Tensor
    d_lung: dict[float, Tensor]
    d_lvc: Tensor
    d_pfat: Tensor
    d_rvc: Tensor
    hb: tuple[slice, slice, slice]
    occ_v: Tensor
    oe_box: tuple[slice, slice, slice]
    sdf_air: Tensor
    sdf_art: Tensor
    sdf_oe: Tensor
    sdf_svc: Tensor
    svc_box: tuple[slice, slice, slice]


def _draw_frame(
    rng: _Rng,
) -> _Frame:
    """Draw the chest frame: body wall, rib cage, spine and diaphragm (mm, radians)."""
    # body wall: elliptic cross-section varying along z, flat back, fat and muscle layers
    bcx, bcy = rng.uniform(-8.0, 8.0), rng.uniform(-5.0, 10.0)
    a0, b0 = rng.uniform(140.0, 170.0), rng.uniform(105.0, 130.0)
    ga, ga2 = rng.uniform(-0.05, 0.1), rng.uniform(0.0, 0.15)
    gb, gb2 = rng.uniform(-0.15, 0.0), rng.uniform(0.0, 0.1)
    body_coef, body_coef_z = rng.coef(4, 0.03), rng.coef(4, 0.02)
    y_back = bcy + b0 * rng.uniform(0.82, 0.9)
    fsc0, fsc_coef = rng.uniform(6.0, 20.0), rng.coef(4, 0.3)
    m0, m_back, m_coef = rng.uniform(8.0, 14.0), rng.uniform(20.0, 35.0), rng.coef(4, 0.25)
    m_top, z_sh = rng.uniform(5.0, 20.0), rng.uniform(90.0, 120.0)
    # rib cage: a barrel, widest low in the chest, that closes in a dome at the lung apices
    rc_top, rc_z0 = rng.uniform(135.0, 160.0), rng.uniform(-60.0, -20.0)
    rc_a, rc_b = a0 * rng.uniform(0.85, 0.95), b0 * rng.uniform(0.85, 0.95)
    rc_nb, rc_shift = rng.uniform(0.75, 0.9), rng.uniform(10.0, 25.0)
    f_post = max(3.0, fsc0 * (1.0 + _modes_at(math.pi / 2, fsc_coef)))
    m_post = max(4.0, m0 * (1.0 + _modes_at(math.pi / 2, m_coef)) + m_back)
    y_cavb = y_back - f_post - m_post  # posterior wall of the thoracic cavity (below shoulders)
    tab_off = rng.uniform(2.0, 6.0)

    # spine
    spx = rng.uniform(-4.0, 4.0)
    vb_rx, vb_ry = rng.uniform(18.0, 24.0), rng.uniform(14.0, 18.0)
    protr, kyph = rng.uniform(0.3, 0.7), rng.uniform(0.0, 10.0)

    def y_vb(z: Any) -> Any:
        return y_cavb - vb_ry * protr + kyph * (1.0 - (z / 190.0) ** 2)

    period, vphase = rng.uniform(24.0, 30.0), rng.uniform(0.0, 1.0)
    r_can, spin_len = rng.uniform(7.0, 9.0), rng.uniform(25.0, 40.0)

    # diaphragm: two domes, the right one higher
    zr = rng.uniform(-75.0, -45.0)
    zl = zr - rng.uniform(5.0, 25.0)
    xs_d, ys_d = rng.uniform(55.0, 75.0), rng.uniform(-10.0, 20.0)
    cxd, cyp, cya = 70.0 / 95.0**2, 70.0 / 80.0**2, 25.0 / 80.0**2

    def dome(z_pk: float, side: float, x: Any, y: Any) -> Any:
        dy = y - ys_d
        pos, neg = (
            (dy.clamp_min(0.0), dy.clamp_max(0.0))
            if isinstance(dy, Tensor)
            else (
                max(dy, 0.0),
                min(dy, 0.0),
            )
        )
        return z_pk - cxd * (x - side * xs_d) ** 2 - cyp * pos**2 - cya * neg**2

    diaph_f = _Waves(rng, 3, 4, (80.0, 200.0), 3.0)
    return _Frame(
        a0=a0,
        b0=b0,
        bcx=bcx,
        bcy=bcy,
        body_coef=body_coef,
        body_coef_z=body_coef_z,
        diaph_f=diaph_f,
        dome=dome,
        fsc0=fsc0,
        fsc_coef=fsc_coef,
        ga=ga,
        ga2=ga2,
        gb=gb,
        gb2=gb2,
        kyph=kyph,
        m0=m0,
        m_back=m_back,
        m_coef=m_coef,
        m_top=m_top,
        period=period,
        protr=protr,
        r_can=r_can,
        rc_a=rc_a,
        rc_b=rc_b,
        rc_nb=rc_nb,
        rc_shift=rc_shift,
        rc_top=rc_top,
        rc_z0=rc_z0,
        spin_len=spin_len,
        spx=spx,
        tab_off=tab_off,
        vb_rx=vb_rx,
        vb_ry=vb_ry,
        vphase=vphase,
        y_back=y_back,
        y_cavb=y_cavb,
        y_vb=y_vb,
        z_sh=z_sh,
        zl=zl,
        zr=zr,
    )


def _draw_heart(
    rng: _Rng,
    p_frame: _Frame,
) -> _Heart:
    """Draw the heart: a tilted ellipsoid on the diaphragm, and its pericardial fat."""
    dome, zl, zr = p_frame.dome, p_frame.zl, p_frame.zr
    # heart: tilted ellipsoid on the diaphragm, long axis to the left, anterior and inferior
    hx, hy = rng.uniform(15.0, 35.0), rng.uniform(-45.0, -25.0)
    ha = (rng.uniform(55.0, 68.0), rng.uniform(42.0, 52.0), rng.uniform(42.0, 52.0))
    hc = (max(dome(zl, 1.0, hx, hy), dome(zr, -1.0, hx, hy)) + rng.uniform(25.0, 40.0), hy, hx)
    e1 = torch.tensor(
        [-rng.uniform(0.3, 0.6), -rng.uniform(0.3, 0.6), rng.uniform(0.6, 0.9)], dtype=_F32
    )
    e1 = e1 / e1.norm()
    to_rv = torch.tensor([0.1, -0.8, -0.6], dtype=_F32)  # anterior-right
    e2 = to_rv - (to_rv @ e1) * e1
    e2 = e2 / e2.norm()
    e3 = torch.linalg.cross(e1, e2)
    frame = [e1.tolist(), e2.tolist(), e3.tolist()]

    def hpt(u1: float, u2: float, u3: float) -> tuple[float, float, float]:
        v = torch.tensor(hc) + u1 * ha[0] * e1 + u2 * ha[1] * e2 + u3 * ha[2] * e3
        return (v[0].item(), v[1].item(), v[2].item())

    peri_f = _Waves(rng, 3, 6, (40.0, 120.0), 3.0)
    peri_off = rng.uniform(2.0, 6.0)
    return _Heart(
        frame=frame,
        ha=ha,
        hc=hc,
        hpt=hpt,
        peri_f=peri_f,
        peri_off=peri_off,
    )


def _draw_tubes(
    rng: _Rng,
    p_frame: _Frame,
    p_heart: _Heart,
) -> _Tubes:
    """Draw the mediastinal tubes: aorta, pulmonary trunk and arteries, SVC, trachea and
    bronchi, oesophagus (centre lines with radii)."""
    rc_top, spx, vb_ry, y_vb = p_frame.rc_top, p_frame.spx, p_frame.vb_ry, p_frame.y_vb
    zl = p_frame.zl
    hc, hpt = p_heart.hc, p_heart.hpt
    # mediastinal tubes: aorta, pulmonary trunk and arteries, SVC, trachea/bronchi, oesophagus
    root = hpt(-0.55, 0.05, -0.15)
    car_z = rc_top - rng.uniform(70.0, 95.0)  # carina, about a third down the thorax
    ao_top = car_z + rng.uniform(10.0, 25.0)
    ao_x = spx + rng.uniform(14.0, 24.0)
    r_asc, r_desc = rng.uniform(14.0, 17.0), rng.uniform(10.0, 13.0)
    aorta = _chaikin(
        [
            root,
            (0.5 * (root[0] + ao_top), root[1] - rng.uniform(0.0, 10.0), root[2] - 12.0),
            (ao_top, 0.5 * (root[1] + y_vb(ao_top)), 0.5 * (root[2] + ao_x)),
            (ao_top - 15.0, y_vb(ao_top - 15.0) - vb_ry - 12.0, ao_x),
            (0.0, y_vb(0.0) - vb_ry * 0.9, ao_x),
            (-250.0, y_vb(-250.0) - vb_ry - 4.0, spx + rng.uniform(2.0, 8.0)),
        ],
        [r_asc, r_asc, 0.5 * (r_asc + r_desc), r_desc, r_desc, r_desc],
    )
    tr_y = y_vb(car_z) - vb_ry - rng.uniform(18.0, 26.0)
    tr_x = spx + rng.uniform(-3.0, 3.0)
    hil = {
        1.0: (
            car_z - rng.uniform(5.0, 20.0),
            tr_y + rng.uniform(5.0, 20.0),
            rng.uniform(55.0, 70.0),
        ),
        -1.0: (
            car_z - rng.uniform(10.0, 25.0),
            tr_y + rng.uniform(0.0, 15.0),
            -rng.uniform(50.0, 65.0),
        ),
    }
    pt0 = hpt(-0.35, 0.45, 0.3)
    ptb = (car_z - rng.uniform(15.0, 25.0), pt0[1] + rng.uniform(15.0, 25.0), pt0[2] + 5.0)
    r_pt = rng.uniform(12.0, 15.0)
    hl, hr = hil[1.0], hil[-1.0]
    pulm = _cat_segments(
        _chaikin([pt0, ptb], [r_pt, r_pt], 0),
        _chaikin(
            [ptb, (0.5 * (ptb[0] + hl[0]), ptb[1] + 15.0, 0.5 * (ptb[2] + hl[2])), hl],
            [0.75 * r_pt, 0.7 * r_pt, 0.55 * r_pt],
            2,
        ),
        _chaikin(
            [ptb, (ptb[0] - 5.0, root[1] + 10.0, root[2] - 25.0), hr],
            [0.75 * r_pt, 0.7 * r_pt, 0.55 * r_pt],
            2,
        ),
    )
    svc_x, svc_y = root[2] - rng.uniform(25.0, 40.0), root[1] + rng.uniform(-5.0, 10.0)
    r_svc = rng.uniform(8.0, 11.0)
    svc = _chaikin(
        [(250.0, svc_y, svc_x), (hc[0] + 20.0, svc_y, svc_x), hpt(-0.75, 0.5, 0.0)], [r_svc] * 3
    )
    r_tr = rng.uniform(8.0, 10.0)
    airway_parts = [
        _chaikin(
            [(250.0, tr_y - 5.0, tr_x), (car_z + 30.0, tr_y, tr_x), (car_z, tr_y, tr_x)],
            [r_tr] * 3,
            2,
        )
    ]
    for side in (1.0, -1.0):
        hz, hy_, hx_ = hil[side]
        end = (hz - 10.0, hy_ + 8.0, hx_ - side * 5.0)
        mid = (0.5 * (car_z + end[0]) + 5.0, 0.5 * (tr_y + end[1]), 0.5 * (tr_x + end[2]))
        airway_parts.append(
            _chaikin([(car_z, tr_y, tr_x), mid, end], [0.7 * r_tr, 0.65 * r_tr, 0.55 * r_tr], 2)
        )
    airways = _cat_segments(*airway_parts)
    oe_x = spx + rng.uniform(-2.0, 10.0)
    oesophagus = _chaikin(
        [
            (250.0, y_vb(200.0) - vb_ry - 8.0, oe_x),
            (0.0, y_vb(0.0) - vb_ry - 10.0, oe_x + 5.0),
            (zl - 40.0, y_vb(zl) - vb_ry - 40.0, oe_x + 35.0),
        ],
        [8.0, 8.0, 9.0],
        2,
    )
    return _Tubes(
        airways=airways,
        aorta=aorta,
        hil=hil,
        oesophagus=oesophagus,
        pulm=pulm,
        side=side,
        svc=svc,
    )


def _draw_lungs_and_abdomen(
    rng: _Rng,
    p_frame: _Frame,
    p_tubes: _Tubes,
) -> _LungsAbdomen:
    """Draw the lungs, ribs and sternum and the abdomen below the diaphragm."""
    rc_top, zl, zr = p_frame.rc_top, p_frame.zl, p_frame.zr
    side = p_tubes.side
    # lungs: large perturbed ellipsoids clipped by the chest wall, mediastinum and diaphragm
    lung_par = {}
    lc0 = (rng.uniform(-35.0, -15.0), rng.uniform(0.0, 20.0), rng.uniform(55.0, 75.0))
    la0 = (rng.uniform(95.0, 120.0), rng.uniform(70.0, 90.0))
    for side in (1.0, -1.0):
        lc = (lc0[0], lc0[1] + rng.uniform(-5.0, 5.0), side * (lc0[2] + rng.uniform(-5.0, 5.0)))
        la = (
            rc_top - lc[0] + rng.uniform(0.0, 15.0),
            la0[0] * rng.uniform(0.95, 1.05),
            la0[1] * rng.uniform(0.95, 1.05) * (1.0 if side > 0 else 1.1),  # right lung larger
        )
        lung_par[side] = (lc, la, _Waves(rng, 3, 8, (50.0, 160.0), 5.0), rng.uniform(3.0, 10.0))
    apex = min(lp[0][0] + lp[1][0] for lp in lung_par.values())

    # ribs and sternum
    z1 = apex + rng.uniform(-10.0, 5.0)
    rib_p, drop = rng.uniform(22.0, 28.0), rng.uniform(45.0, 75.0)
    rib_h, rib_t = rng.uniform(5.0, 7.0), rng.uniform(7.0, 10.0)
    rib_jit = rng.rand(12, lo=-4.0, hi=4.0)
    cos_phi_max = math.cos(rng.uniform(2.3, 2.6))
    st_lo, st_hi = zr - rng.uniform(10.0, 30.0), z1 - rng.uniform(10.0, 30.0)
    st_w = rng.uniform(12.0, 18.0)

    # abdomen below the diaphragm
    liver_c = (zr - rng.uniform(45.0, 70.0), rng.uniform(-10.0, 20.0), -rng.uniform(30.0, 50.0))
    liver_a = (rng.uniform(70.0, 100.0), rng.uniform(70.0, 95.0), rng.uniform(90.0, 120.0))
    stom_c = (zl - rng.uniform(35.0, 55.0), rng.uniform(-30.0, 0.0), rng.uniform(45.0, 70.0))
    stom_a = (rng.uniform(35.0, 55.0), rng.uniform(30.0, 45.0), rng.uniform(35.0, 50.0))
    st_level = stom_c[0] + rng.uniform(0.0, 0.6) * stom_a[0]
    spl_c = (zl - rng.uniform(40.0, 70.0), rng.uniform(30.0, 60.0), rng.uniform(70.0, 95.0))
    spl_a = (rng.uniform(45.0, 60.0), rng.uniform(35.0, 50.0), rng.uniform(25.0, 35.0))
    return _LungsAbdomen(
        cos_phi_max=cos_phi_max,
        drop=drop,
        la=la,
        lc=lc,
        liver_a=liver_a,
        liver_c=liver_c,
        lung_par=lung_par,
        rib_h=rib_h,
        rib_jit=rib_jit,
        rib_p=rib_p,
        rib_t=rib_t,
        side=side,
        spl_a=spl_a,
        spl_c=spl_c,
        st_hi=st_hi,
        st_level=st_level,
        st_lo=st_lo,
        st_w=st_w,
        stom_a=stom_a,
        stom_c=stom_c,
        z1=z1,
    )


def _draw_vessel_trees(
    rng: _Rng,
    p_heart: _Heart,
    p_tubes: _Tubes,
    p_lungsabdomen: _LungsAbdomen,
) -> _VesselTrees:
    """Draw the intrapulmonary vessel trees: arteries from the hila, veins towards the left
    atrium."""
    hpt = p_heart.hpt
    hil = p_tubes.hil
    side = p_lungsabdomen.side
    # intrapulmonary vessel trees: arteries from the hila, veins towards the left atrium
    la_c = hpt(-0.72, -0.25, 0.1)
    roots, dirs, r0, l0, pull = [], [], [], [], []
    for side in (1.0, -1.0):
        art_dirs = [
            (1.0, 0.1, 0.3 * side),
            (0.7, -0.6, 0.5 * side),
            (0.7, 0.6, 0.5 * side),
            (0.0, 0.0, side),
            (-0.1, -0.9, 0.6 * side),
            (-1.0, 0.3, 0.3 * side),
            (-0.7, 0.8, 0.3 * side),
            (-0.7, -0.1, 0.8 * side),
        ]
        for dd in art_dirs:
            roots.append(hil[side])
            dirs.append(dd)
            r0.append(rng.uniform(4.0, 5.5))
            l0.append(rng.uniform(25.0, 40.0))
            pull.append(dd)
        vroot = (la_c[0], la_c[1], la_c[2] + side * 25.0)
        vein_dirs = (
            (0.6, 0.3, side),
            (-0.5, 0.4, side),
            (0.0, -0.5, side),
            (-0.3, 0.8, side),
            (0.3, 0.0, side),
        )
        for dd in vein_dirs:
            roots.append(vroot)
            dirs.append(dd)
            r0.append(rng.uniform(3.5, 5.0))
            l0.append(rng.uniform(35.0, 50.0))
            pull.append(dd)
    trees = _vessel_tree(
        rng,
        torch.tensor(roots, dtype=_F32),
        torch.tensor(dirs, dtype=_F32) + 0.2 * rng.randn(len(dirs), 3),
        torch.tensor(r0, dtype=_F32),
        torch.tensor(l0, dtype=_F32),
        torch.tensor(pull, dtype=_F32),
        7,
    )
    return _VesselTrees(
        la_c=la_c,
        side=side,
        trees=trees,
    )


def _draw_intensities(
    rng: _Rng,
    noise: float | None,
) -> _Intensities:
    """Draw the tissue intensities (HU) and the CT noise level."""
    # intensities (HU)
    hu_fat = rng.uniform(-115.0, -85.0)
    hu_muscle = rng.uniform(40.0, 60.0)
    hu_med = rng.uniform(-80.0, -40.0)
    hu_abd = rng.uniform(-40.0, 10.0)
    hu_lung = rng.uniform(-850.0, -780.0)
    lung_grad = rng.uniform(30.0, 100.0)
    hu_blood_l = rng.uniform(180.0, 330.0)
    hu_blood_r = hu_blood_l * rng.uniform(0.75, 1.25)
    hu_svc = min(hu_blood_r * rng.uniform(1.0, 1.8), 700.0)
    hu_myo = rng.uniform(90.0, 140.0)
    hu_liver = rng.uniform(70.0, 120.0)
    hu_spleen = rng.uniform(100.0, 140.0)
    hu_stom = rng.uniform(0.0, 40.0)
    hu_bone = rng.uniform(450.0, 700.0)
    hu_vb = rng.uniform(180.0, 280.0)
    hu_disc = rng.uniform(70.0, 100.0)
    hu_cart = rng.uniform(100.0, 200.0)
    hu_noise = rng.uniform(8.0, 25.0) if noise is None else float(noise)
    return _Intensities(
        hu_abd=hu_abd,
        hu_blood_l=hu_blood_l,
        hu_blood_r=hu_blood_r,
        hu_bone=hu_bone,
        hu_cart=hu_cart,
        hu_disc=hu_disc,
        hu_fat=hu_fat,
        hu_liver=hu_liver,
        hu_lung=hu_lung,
        hu_med=hu_med,
        hu_muscle=hu_muscle,
        hu_myo=hu_myo,
        hu_noise=hu_noise,
        hu_spleen=hu_spleen,
        hu_stom=hu_stom,
        hu_svc=hu_svc,
        hu_vb=hu_vb,
        lung_grad=lung_grad,
    )


def _wall_shapes(
    Z: Tensor,
    Y: Tensor,
    X: Tensor,
    grid: _Grid3,
    w: float,
    p_frame: _Frame,
    p_lungsabdomen: _LungsAbdomen,
) -> _WallShapes:
    """The chest wall on the grid: body layers and ribs as signed distances (mm, negative
    inside) and occupancies."""
    a0, b0, bcx, bcy = p_frame.a0, p_frame.b0, p_frame.bcx, p_frame.bcy
    body_coef, body_coef_z, diaph_f = p_frame.body_coef, p_frame.body_coef_z, p_frame.diaph_f
    dome, fsc0, fsc_coef, ga = p_frame.dome, p_frame.fsc0, p_frame.fsc_coef, p_frame.ga
    ga2, gb, gb2, m0, m_back = p_frame.ga2, p_frame.gb, p_frame.gb2, p_frame.m0, p_frame.m_back
    m_coef, m_top, rc_a, rc_b = p_frame.m_coef, p_frame.m_top, p_frame.rc_a, p_frame.rc_b
    rc_nb, rc_shift, rc_top = p_frame.rc_nb, p_frame.rc_shift, p_frame.rc_top
    rc_z0, y_back, z_sh, zl = p_frame.rc_z0, p_frame.y_back, p_frame.z_sh, p_frame.zl
    zr = p_frame.zr
    cos_phi_max, drop = p_lungsabdomen.cos_phi_max, p_lungsabdomen.drop
    rib_h, rib_jit, rib_p = p_lungsabdomen.rib_h, p_lungsabdomen.rib_jit, p_lungsabdomen.rib_p
    rib_t, st_hi, st_lo = p_lungsabdomen.rib_t, p_lungsabdomen.st_hi, p_lungsabdomen.st_lo
    st_w, z1 = p_lungsabdomen.st_w, p_lungsabdomen.z1

    def body_angle(Zq: Tensor, Yq: Tensor, Xq: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        tz = Zq / 190.0
        un = (Xq - bcx) / (a0 * (1.0 + ga * tz + ga2 * tz * tz))
        vn = (Yq - bcy) / (b0 * (1.0 + gb * tz + gb2 * tz * tz))
        rho = torch.hypot(un, vn)
        inv = 1.0 / rho.clamp_min(1e-4)
        return rho, inv, un * inv, vn * inv  # cos/sin of the polar angle; sin = 1: posterior

    # body layers: smooth, so evaluated on the coarse grid and upsampled
    Zc, Yc, Xc = grid.Zc, grid.Yc, grid.Xc
    rho, inv, c1, s1 = body_angle(Zc, Yc, Xc)
    rb = 1.0 + _modes(c1, s1, body_coef, body_coef_z, Zc / 190.0)
    d_body_c = _smax((rho - rb) * torch.hypot(Xc - bcx, Yc - bcy) * inv, Yc - y_back, 6.0)
    d_musc_c = d_body_c + (fsc0 * (1.0 + _modes(c1, s1, fsc_coef))).clamp_min(3.0)
    m_l = m0 * (1.0 + _modes(c1, s1, m_coef)) + m_back * s1.clamp_min(0.0) ** 4
    m_l = m_l.clamp_min(4.0) + m_top * torch.sigmoid((Zc - z_sh) / 20.0)
    t2 = ((Zc - rc_z0) / (rc_top - rc_z0)).clamp(0.0, 1.0) ** 2
    yb = Yc - bcy - rc_shift * t2
    ub = (Xc - bcx) / (rc_a * torch.sqrt((1.0 - t2).clamp_min(1e-3)))
    vb_ = yb / (rc_b * torch.sqrt((1.0 - rc_nb * t2).clamp_min(1e-3)))
    rho_b = torch.hypot(ub, vb_).clamp_min(1e-4)
    d_barrel = (rho_b - 1.0) * torch.hypot(Xc - bcx, yb) / rho_b
    d_cav_c = torch.maximum(d_musc_c + m_l, d_barrel)
    d_body, d_musc, d_cav = grid.up(d_body_c), grid.up(d_musc_c), grid.up(d_cav_c)
    s1 = body_angle(Z, Y, X)[3]
    d_abd = Z - (torch.maximum(dome(zl, 1.0, X, Y), dome(zr, -1.0, X, Y)) + grid.smooth(diaph_f))

    # ribs: bands that descend from the spine towards the front (cos(phi) = s1)
    vrib = (z1 - drop * (1.0 - s1) / 2.0 - Z) / rib_p
    kr = torch.round(vrib)
    dz = (vrib - kr) * rib_p + rib_jit[kr.clamp(0, 11).long()]
    d_band = torch.maximum(dz.abs() - rib_h, (d_cav - 1.0 - rib_t / 2).abs() - rib_t / 2)
    rib_occ = _soft(d_band, w) * ((kr >= 0) & (kr <= 11))
    cart = rib_occ * (s1 < cos_phi_max)
    rib_occ = rib_occ * (s1 >= cos_phi_max)
    stb = grid.box((st_lo, -250.0, bcx - st_w), (st_hi, bcy, bcx + st_w))
    d_st = torch.maximum((X[stb] - bcx).abs() - st_w, (d_cav[stb] - 5.0).abs() - 6.0)
    d_st = torch.maximum(torch.maximum(d_st, Z[stb] - st_hi), st_lo - Z[stb])
    d_st = torch.maximum(d_st, Y[stb] - bcy)
    return _WallShapes(
        cart=cart,
        d_abd=d_abd,
        d_body=d_body,
        d_cav=d_cav,
        d_musc=d_musc,
        d_st=d_st,
        rib_occ=rib_occ,
        stb=stb,
    )


def _spine_shapes(
    grid: _Grid3,
    p_frame: _Frame,
) -> _SpineShapes:
    """The spine on the grid (in a box around the column): vertebral bodies, discs, canal
    and posterior arches."""
    kyph, period, protr, r_can = p_frame.kyph, p_frame.period, p_frame.protr, p_frame.r_can
    spin_len, spx, vb_rx, vb_ry = p_frame.spin_len, p_frame.spx, p_frame.vb_rx, p_frame.vb_ry
    vphase, y_cavb, y_vb = p_frame.vphase, p_frame.y_cavb, p_frame.y_vb
    # spine (box around the column)
    yv_lo = y_cavb - vb_ry * (protr + 1.3)
    yv_hi = y_cavb - vb_ry * (protr - 1.3) + kyph + 2.0 * r_can + spin_len + 12.0
    spb = grid.box((-1e3, yv_lo, spx - r_can - 40.0), (1e3, yv_hi, spx + r_can + 40.0))
    Zs, Ys, Xs = grid.at(spb)
    vscale = 1.0 - 0.12 * Zs / 190.0
    yv = y_vb(Zs)
    d_vb = (torch.hypot((Xs - spx) / (vb_rx * vscale), (Ys - yv) / (vb_ry * vscale)) - 1.0) * vb_ry
    vfrac = torch.remainder(Zs / period + vphase, 1.0)
    disc = vfrac < 0.2
    ycan = yv + vb_ry * vscale + r_can + 2.0
    rcan = torch.hypot(Xs - spx, Ys - ycan)
    d_can = rcan - r_can
    d_spin = torch.maximum(
        (Xs - spx).abs() - 4.0, (Ys - ycan - r_can - 2.0 - spin_len / 2).abs() - spin_len / 2
    )
    d_trans = torch.maximum((Xs - spx).abs() - r_can - 30.0, (Ys - ycan).abs() - 5.0)
    d_post = torch.minimum(torch.minimum(rcan - r_can - 6.0, d_spin), d_trans)
    d_post = torch.maximum(d_post, -d_can)
    arch_on = (vfrac > 0.25) & (vfrac < 0.85)
    return _SpineShapes(
        arch_on=arch_on,
        d_can=d_can,
        d_post=d_post,
        d_vb=d_vb,
        disc=disc,
        spb=spb,
    )


def _organ_shapes(
    X: Tensor,
    grid: _Grid3,
    s: float,
    p_frame: _Frame,
    p_heart: _Heart,
    p_tubes: _Tubes,
    p_lungsabdomen: _LungsAbdomen,
    p_vesseltrees: _VesselTrees,
    p_wallshapes: _WallShapes,
    p_spineshapes: _SpineShapes,
) -> _OrganShapes:
    """The heart, the tubes and the lungs on the grid: signed distances (mm, negative
    inside), boxes and occupancies."""
    spx = p_frame.spx
    frame, ha, hc, hpt = p_heart.frame, p_heart.ha, p_heart.hc, p_heart.hpt
    peri_f, peri_off = p_heart.peri_f, p_heart.peri_off
    airways, aorta, oesophagus = p_tubes.airways, p_tubes.aorta, p_tubes.oesophagus
    pulm, svc = p_tubes.pulm, p_tubes.svc
    la, lc, lung_par = p_lungsabdomen.la, p_lungsabdomen.lc, p_lungsabdomen.lung_par
    la_c, side, trees = p_vesseltrees.la_c, p_vesseltrees.side, p_vesseltrees.trees
    d_abd, d_cav = p_wallshapes.d_abd, p_wallshapes.d_cav
    d_vb, spb = p_spineshapes.d_vb, p_spineshapes.spb
    # heart (box)
    hb = grid.around(hc, max(ha) + 12.0 + peri_f.bound)
    Ph = grid.at(hb)
    d_heart = _ellipsoid(Ph, hc, ha, frame)
    d_lvc = _ellipsoid(Ph, hpt(0.15, -0.22, 0.0), (0.6 * ha[0], 0.36 * ha[1], 0.38 * ha[2]), frame)
    d_lvc = torch.maximum(d_lvc, d_heart + 6.0)
    d_rvc = _ellipsoid(Ph, hpt(0.0, 0.42, 0.0), (0.55 * ha[0], 0.3 * ha[1], 0.6 * ha[2]), frame)
    d_rvc = torch.maximum(torch.maximum(d_rvc, 10.0 - d_lvc), d_heart + 3.0)
    d_la = _ellipsoid(Ph, la_c, (0.33 * ha[0], 0.35 * ha[1], 0.45 * ha[2]), frame)
    d_ra = _ellipsoid(Ph, hpt(-0.62, 0.38, 0.1), (0.33 * ha[0], 0.33 * ha[1], 0.42 * ha[2]), frame)
    d_atria = torch.maximum(torch.minimum(d_la, d_ra), d_heart + 3.0)
    d_pfat = d_heart - (peri_off + peri_f(*Ph)).clamp(0.0, 12.0)

    # tubes
    sdf_art, _, art_box = _tubes(grid, _cat_segments(aorta, pulm), margin=4.0, occ=False)
    sdf_svc, _, svc_box = _tubes(grid, svc, margin=4.0, occ=False)
    sdf_air, _, air_box = _tubes(grid, airways, margin=6.0, occ=False)
    sdf_oe, _, oe_box = _tubes(grid, oesophagus, margin=3.0, occ=False)
    ta, tb, tr = trees
    keep = tr >= max(0.5, 0.1 * s)
    _, occ_v, _ = _tubes(grid, (ta[keep], tb[keep], tr[keep]), sdf=False)
    assert sdf_art is not None and sdf_svc is not None and sdf_air is not None
    assert sdf_oe is not None and occ_v is not None

    # lungs
    d_carve = torch.minimum(torch.minimum(sdf_art, sdf_svc) - 3.0, sdf_air - 3.0)
    d_carve = torch.minimum(d_carve, sdf_oe - 2.0)
    d_carve[hb] = torch.minimum(d_carve[hb], d_pfat - 4.0)
    d_carve[spb] = torch.minimum(d_carve[spb], d_vb - 6.0)
    d_lung = {}
    for side, (lc, la, pert, mw) in lung_par.items():
        dl = grid.up(
            _ellipsoid((grid.Zc, grid.Yc, grid.Xc), lc, la) + pert(grid.Zc, grid.Yc, grid.Xc)
        )
        dl = torch.maximum(dl, d_cav + 3.0)
        dl = torch.maximum(dl, mw - side * (X - spx))
        dl = torch.maximum(dl, -d_carve)
        d_lung[side] = torch.maximum(dl, 2.0 - d_abd)
    return _OrganShapes(
        air_box=air_box,
        art_box=art_box,
        d_atria=d_atria,
        d_heart=d_heart,
        d_lung=d_lung,
        d_lvc=d_lvc,
        d_pfat=d_pfat,
        d_rvc=d_rvc,
        hb=hb,
        occ_v=occ_v,
        oe_box=oe_box,
        sdf_air=sdf_air,
        sdf_art=sdf_art,
        sdf_oe=sdf_oe,
        sdf_svc=sdf_svc,
        svc_box=svc_box,
    )


def _compose(
    D: int,
    H: int,
    W: int,
    Y: Tensor,
    X: Tensor,
    grid: _Grid3,
    ngen: torch.Generator,
    w: float,
    hu_window: tuple[float, float],
    p_frame: _Frame,
    p_lungsabdomen: _LungsAbdomen,
    p_intensities: _Intensities,
    p_wallshapes: _WallShapes,
    p_spineshapes: _SpineShapes,
    p_organshapes: _OrganShapes,
) -> Tensor:
    """Paint the CT (HU) in painter's order with partial-volume edges, add texture, blur and
    noise, and window it to [0, 1]."""
    tab_off, y_back = p_frame.tab_off, p_frame.y_back
    liver_a, liver_c = p_lungsabdomen.liver_a, p_lungsabdomen.liver_c
    spl_a, spl_c, st_level = p_lungsabdomen.spl_a, p_lungsabdomen.spl_c, p_lungsabdomen.st_level
    stom_a, stom_c = p_lungsabdomen.stom_a, p_lungsabdomen.stom_c
    hu_abd, hu_blood_l = p_intensities.hu_abd, p_intensities.hu_blood_l
    hu_blood_r, hu_bone = p_intensities.hu_blood_r, p_intensities.hu_bone
    hu_cart, hu_disc = p_intensities.hu_cart, p_intensities.hu_disc
    hu_fat, hu_liver = p_intensities.hu_fat, p_intensities.hu_liver
    hu_lung, hu_med = p_intensities.hu_lung, p_intensities.hu_med
    hu_muscle, hu_myo = p_intensities.hu_muscle, p_intensities.hu_myo
    hu_noise, hu_spleen = p_intensities.hu_noise, p_intensities.hu_spleen
    hu_stom, hu_svc, hu_vb = p_intensities.hu_stom, p_intensities.hu_svc, p_intensities.hu_vb
    lung_grad = p_intensities.lung_grad
    cart, d_abd, d_body = p_wallshapes.cart, p_wallshapes.d_abd, p_wallshapes.d_body
    d_cav, d_musc, d_st = p_wallshapes.d_cav, p_wallshapes.d_musc, p_wallshapes.d_st
    rib_occ, stb = p_wallshapes.rib_occ, p_wallshapes.stb
    arch_on, d_can, d_post = p_spineshapes.arch_on, p_spineshapes.d_can, p_spineshapes.d_post
    d_vb, disc, spb = p_spineshapes.d_vb, p_spineshapes.disc, p_spineshapes.spb
    air_box, art_box = p_organshapes.air_box, p_organshapes.art_box
    d_atria, d_heart = p_organshapes.d_atria, p_organshapes.d_heart
    d_lung, d_lvc, d_pfat = p_organshapes.d_lung, p_organshapes.d_lvc, p_organshapes.d_pfat
    d_rvc, hb, occ_v = p_organshapes.d_rvc, p_organshapes.hb, p_organshapes.occ_v
    oe_box, sdf_air = p_organshapes.oe_box, p_organshapes.sdf_air
    sdf_art, sdf_oe = p_organshapes.sdf_art, p_organshapes.sdf_oe
    sdf_svc, svc_box = p_organshapes.sdf_svc, p_organshapes.svc_box
    hu = torch.full((D, H, W), -1000.0, dtype=_F32)
    tab_y = y_back + tab_off + X * X / 900.0
    _paint(hu, _soft(torch.maximum((Y - tab_y - 3.0).abs() - 3.0, X.abs() - 230.0), w), 100.0)
    _paint(hu, _soft(d_body, w), hu_fat)
    _paint(hu, _soft(d_musc, w), hu_muscle)
    _paint(hu, rib_occ, hu_bone)
    _paint(hu, cart, hu_cart)
    _paint(hu[stb], _soft(d_st, w), 0.7 * hu_bone)
    below = _soft(d_abd, w)
    tex = 25.0 * _noise_field(ngen, (D, H, W), 3.0)
    _paint(hu, _soft(d_cav, w), hu_med + below * (hu_abd - hu_med + tex))
    for c, ax, val in (
        (liver_c, liver_a, hu_liver),
        (spl_c, spl_a, hu_spleen),
        (stom_c, stom_a, 40.0),
    ):
        ob = grid.around(c, max(ax) + 2.0)
        if _empty(ob):
            continue
        Po = grid.at(ob)
        d = torch.maximum(torch.maximum(_ellipsoid(Po, c, ax), d_abd[ob] + 3.0), d_cav[ob] + 2.0)
        _paint(hu[ob], _soft(d, w), val)
        if c is stom_c:
            _paint(hu[ob], _soft(d + 3.0, w), hu_stom)
            _paint(hu[ob], _soft(d + 3.0, w) * _soft(st_level - Po[0], w), -1000.0)
    hs = hu[spb]
    _paint(hs, _soft(d_vb, w), torch.where(disc, hu_disc, hu_vb + 250.0))
    _paint(hs, _soft(d_vb + 2.0, w) * ~disc, hu_vb)
    _paint(hs, _soft(d_post, w) * arch_on, hu_bone)
    _paint(hs, _soft(d_can, w), 15.0)
    _paint(hu[oe_box], _soft(sdf_oe[oe_box], w), hu_muscle)
    lung_any = torch.minimum(d_lung[1.0], d_lung[-1.0])
    m_lung = _soft(lung_any, w)
    lung_tex = hu_lung + lung_grad * (Y / 100.0) + 18.0 * _noise_field(ngen, (D, H, W), 1.5)
    _paint(hu, m_lung, lung_tex)
    _paint(hu, occ_v * m_lung, hu_blood_r)
    hh = hu[hb]
    _paint(hh, _soft(d_pfat, w), hu_fat)
    _paint(hh, _soft(d_heart, w), hu_myo)
    _paint(hh, _soft(d_lvc, w), hu_blood_l)
    _paint(hh, _soft(d_atria, w), 0.5 * (hu_blood_l + hu_blood_r))
    _paint(hh, _soft(d_rvc, w), hu_blood_r)
    _paint(hu[art_box], _soft(sdf_art[art_box], w), hu_blood_l)
    _paint(hu[svc_box], _soft(sdf_svc[svc_box], w), hu_svc)
    _paint(hu[air_box], _soft(sdf_air[air_box] - 2.0, w), hu_muscle)
    _paint(hu[air_box], _soft(sdf_air[air_box], w), -1000.0)

    if hu_noise > 0:  # white noise, correlated by the point-spread blur below
        hu += (hu_noise / smoothing_gain([0.5] * 3)) * torch.randn(
            (D, H, W), generator=ngen, dtype=_F32
        )
    hu = _blur(hu, 0.5)
    lo, hi = hu_window
    img = ((hu - lo) / (hi - lo)).clamp_(0.0, 1.0)
    return img


def _assemble(
    img: Tensor,
    D: int,
    H: int,
    W: int,
    s: float,
    p_wallshapes: _WallShapes,
    p_spineshapes: _SpineShapes,
    p_organshapes: _OrganShapes,
) -> Phantom:
    """The label map (left and right lungs), the masks and the :class:`Phantom`."""
    d_body, d_st, rib_occ = p_wallshapes.d_body, p_wallshapes.d_st, p_wallshapes.rib_occ
    stb = p_wallshapes.stb
    arch_on, d_post, d_vb = p_spineshapes.arch_on, p_spineshapes.d_post, p_spineshapes.d_vb
    spb = p_spineshapes.spb
    d_heart, d_lung, hb = p_organshapes.d_heart, p_organshapes.d_lung, p_organshapes.hb
    occ_v, sdf_air = p_organshapes.occ_v, p_organshapes.sdf_air
    lab = torch.zeros(D, H, W, dtype=torch.int64)
    lab[d_lung[1.0] < 0] = 1
    lab[d_lung[-1.0] < 0] = 2
    heart = torch.zeros(D, H, W, dtype=torch.bool)
    heart[hb] = d_heart < 0
    bone = rib_occ > 0.5
    bone[spb] |= (d_vb < 0) | ((d_post < 0) & arch_on)
    bone[stb] |= d_st < 0
    masks = {
        "body": d_body < 0,
        "heart": heart,
        "vessels": (occ_v > 0.5) & (lab > 0),
        "airways": sdf_air < 0,
        "bone": bone,
    }
    return Phantom(img.contiguous(), lab, dict(THORAX_LABELS), (s, s, s), masks)


def thorax_phantom_3d(
    size: int | tuple[int, int, int] = 64,
    generator: GeneratorLike = None,
    *,
    spacing: float | None = None,
    noise: float | None = None,
    hu_window: tuple[float, float] = (-1000.0, 900.0),
) -> Phantom:
    """A contrast-enhanced thorax-CT-like volume with left/right lung labels.

    Args:
        size: ``N`` (cube) or ``(D, H, W)`` in voxels.
        generator: ``torch.Generator``, int seed, or ``None`` (seed 0).
        spacing: isotropic voxel size in mm; default ``380 / max(H, W)`` (a 380 mm field of
            view: 64^3 -> 5.9 mm, 128^3 -> 3.0 mm).  The anatomy is in mm.
        noise: CT noise std in HU; ``None`` draws it from [8, 25]; 0 disables noise.
        hu_window: the HU range mapped linearly onto [0, 1] (then clipped).  With the default,
            air -> 0, lung ~0.1-0.2, fat ~0.47, soft tissue ~0.55, contrast blood ~0.6-0.7,
            bone ~0.75-0.9.

    Returns:
        :class:`Phantom` with ``image`` float32 ``(D, H, W)`` in [0, 1] and ``label`` int64
        ``(D, H, W)``: 0 everything else, 1 left lung, 2 right lung (intrapulmonary vessels
        included).  Axis 0 runs superior -> inferior, axis 1 anterior -> posterior, axis 2 from
        the patient's right to left (radiological axial slices), spacing isotropic.
        ``masks``: ``body``, ``heart``, ``vessels`` (intrapulmonary), ``airways``, ``bone``.
    """
    D, H, W = _size(size, 3, "thorax_phantom_3d")
    (s,) = _spacing(spacing, 380.0 / max(H, W), 1)
    rng = _Rng(_as_generator(generator))
    ngen = rng.fork()  # voxel-level noise; the anatomy below does not depend on the grid size
    w = 0.3 * s
    grid = _Grid3((D, H, W), s, [_Waves(rng, 3, 5, (90.0, 300.0), 3.0) for _ in range(3)])
    Z, Y, X = grid.Z, grid.Y, grid.X
    p_frame = _draw_frame(rng)
    p_heart = _draw_heart(rng, p_frame)
    p_tubes = _draw_tubes(rng, p_frame, p_heart)
    p_lungsabdomen = _draw_lungs_and_abdomen(rng, p_frame, p_tubes)
    p_vesseltrees = _draw_vessel_trees(rng, p_heart, p_tubes, p_lungsabdomen)
    p_intensities = _draw_intensities(rng, noise)
    p_wallshapes = _wall_shapes(Z, Y, X, grid, w, p_frame, p_lungsabdomen)
    p_spineshapes = _spine_shapes(grid, p_frame)
    p_organshapes = _organ_shapes(
        X,
        grid,
        s,
        p_frame,
        p_heart,
        p_tubes,
        p_lungsabdomen,
        p_vesseltrees,
        p_wallshapes,
        p_spineshapes,
    )
    img = _compose(
        D,
        H,
        W,
        Y,
        X,
        grid,
        ngen,
        w,
        hu_window,
        p_frame,
        p_lungsabdomen,
        p_intensities,
        p_wallshapes,
        p_spineshapes,
        p_organshapes,
    )
    return _assemble(img, D, H, W, s, p_wallshapes, p_spineshapes, p_organshapes)


def thorax_batch(
    n: int,
    size: int | tuple[int, int, int] = 64,
    generator: GeneratorLike = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """``n`` thorax phantoms drawn in sequence from one generator.

    Returns ``(images, labels)`` of shapes ``(n, 1, D, H, W)`` (float32, [0, 1]) and
    ``(n, 1, D, H, W)`` (int64: 0 other, 1 left lung, 2 right lung).  ``kwargs`` go to
    :func:`thorax_phantom_3d`.
    """
    g = _as_generator(generator)
    ph = [thorax_phantom_3d(size, g, **kwargs) for _ in range(n)]
    return (
        torch.stack([p.image for p in ph])[:, None],
        torch.stack([p.label for p in ph])[:, None],
    )
