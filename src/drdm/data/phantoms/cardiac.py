"""The 2D cardiac short-axis cine-MRI phantom (:func:`cardiac_phantom_2d`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import (
    _F32,
    _TWO_PI,
    CARDIAC_LABELS,
    GeneratorLike,
    Phantom,
    _as_generator,
    _blob2,
    _blur,
    _coarse_axis,
    _empty,
    _modes,
    _modes_at,
    _noise_field,
    _paint,
    _Rng,
    _robust_normalise,
    _size,
    _soft,
    _spacing,
    _span,
    _upsample,
    _Waves,
)

# ----------------------------------------------------------------------------------------------
# 2D cardiac short-axis cine MRI
# ----------------------------------------------------------------------------------------------


class _Plane:
    """Pixel centres in mm (y down = posterior, x right = patient left), smoothly warped."""

    def __init__(self, H: int, W: int, sy: float, sx: float, warp: Sequence[_Waves]) -> None:
        self.H, self.W, self.sy, self.sx = H, W, sy, sx
        y = ((torch.arange(H, dtype=_F32) - (H - 1) / 2) * sy)[:, None]
        x = ((torch.arange(W, dtype=_F32) - (W - 1) / 2) * sx)[None, :]
        self.y0, self.x0 = y, x
        stride = max(1, round(8.0 / max(sy, sx)))  # coarse sub-grid of ~8 mm
        yc = _coarse_axis(H, sy, stride)[:, None]
        xc = _coarse_axis(W, sx, stride)[None, :]
        self.coarse = (yc.shape[0], xc.shape[1])
        disp = [f(yc, xc).expand(self.coarse) for f in warp]
        self.Yc, self.Xc = yc + disp[0], xc + disp[1]
        self.Y = y + self.up(disp[0])
        self.X = x + self.up(disp[1])
        self.margin = max(f.bound for f in warp) + 2.0 * max(sy, sx)

    def up(self, t: Tensor) -> Tensor:
        """Upsample a field from the coarse sub-grid (bilinear)."""
        return _upsample(t, (self.H, self.W), self.coarse)

    def box(self, cy: float, cx: float, ry: float, rx: float) -> tuple[slice, slice]:
        """Index box covering the anatomical rectangle ``[cy +- ry] x [cx +- rx]`` (mm)."""
        m = self.margin
        return (
            _span(cy - ry - m, cy + ry + m, -(self.H - 1) / 2 * self.sy, self.sy, self.H),
            _span(cx - rx - m, cx + rx + m, -(self.W - 1) / 2 * self.sx, self.sx, self.W),
        )


@dataclass(frozen=True)
class _Heart:
    """The heart of one cardiac phantom (mm, radians): LV, myocardium, RV crescent,
    papillary muscles and epicardial fat, at a random cardiac phase and slice level."""

    phase: float
    level: float
    lcx: float
    lcy: float
    R: float
    lv_ax: tuple[float, float, float]
    endo_coef: Tensor
    T0: float
    thick_coef: Tensor
    R_epi: float
    psi: float
    ext: float
    dist: float
    b_rv: float
    a_rv: float
    tang: float
    rcx: float
    rcy: float
    rv_ang: float
    rv_coef: Tensor
    t_rv: float
    pms: list[tuple[tuple[float, float], float, float, float]]
    pm_coef: Tensor
    present_pm: bool
    fat_off: float
    fat_coef: Tensor


@dataclass(frozen=True)
class _Surroundings:
    """Body wall, lungs, liver, stomach, aorta, spine, lung vessels and ribs (mm)."""

    a_b: float
    b_b: float
    bang: float
    bcx: float
    bcy: float
    body_coef: Tensor
    fsc0: float
    fsc_coef: Tensor
    m0: float
    m_coef: Tensor
    gap: float
    lungs: list[tuple[tuple[float, float], tuple[float, float], float, Tensor]]
    lung_inset: float
    has_liver: bool
    has_stomach: bool
    liver: tuple[tuple[float, float], tuple[float, float], float, Tensor]
    stomach: tuple[tuple[float, float], tuple[float, float], float, Tensor]
    r_ao: float
    ao_c: tuple[float, float]
    ao_q: float
    ao_ang: float
    sp_c: tuple[float, float]
    vb: tuple[float, float]
    vb_coef: Tensor
    r_can: float
    dots: list[tuple[tuple[float, float], float, float, float]]
    dot_val: list[float]
    ribs: list[tuple[tuple[float, float], tuple[float, float], float]]


@dataclass(frozen=True)
class _Contrast:
    """SSFP intensities relative to the image maximum, and the acquisition settings
    (texture, coil, bias field, noise, point-spread function)."""

    blood: float
    rv_blood: float
    myo: float
    fat: float
    muscle: float
    inner: float
    lung_i: float
    liver_i: float
    stomach_i: float
    marrow: float
    csf: float
    aorta_i: float
    tex_amp: float
    inner_var: float
    coil: float
    coil_ang: float
    bias_amp: float
    noise_rel: float
    psf: float


@dataclass(frozen=True)
class _Distances:
    """Signed distance maps (mm, negative inside) of the structures on the grid; the
    heart's only inside the box ``hb``."""

    d_body: Tensor
    d_musc: Tensor
    d_in: Tensor
    d_lungs: Tensor
    d_liver: Tensor
    d_stom: Tensor
    hb: tuple[slice, slice]
    d_endo: Tensor
    d_epi: Tensor
    d_rv: Tensor
    d_rvw: Tensor
    d_fat: Tensor


def _draw_heart(rng: _Rng, px: float) -> _Heart:
    """Draw the heart's shape parameters (the first draws of a phantom)."""
    phase = rng.uniform(0.0, 1.0)  # 0 end-diastole ... 1 end-systole
    level = rng.uniform(0.0, 1.0)  # 0 base ... 1 towards the apex
    rot = rng.uniform(-0.25, 0.25)
    lcx, lcy = rng.uniform(-5.0, 25.0), rng.uniform(-18.0, 18.0)
    R = rng.uniform(26.0, 33.0) * (1.0 - 0.25 * phase) * (1.0 - 0.2 * level)
    q = rng.uniform(0.82, 1.0)
    lv_ax = (R / math.sqrt(q), R * math.sqrt(q), rng.uniform(0.0, math.pi))
    endo_coef = rng.coef(4, 0.035)
    T0 = rng.uniform(6.0, 9.5) * (1.0 + 0.6 * phase)  # myocardial wall thickness (mm)
    thick_coef = rng.coef(3, 0.15)
    R_epi = R + T0

    # Right ventricle: an ellipse centred towards the septum, minus the LV -> a crescent.
    psi = math.pi + rng.uniform(0.15, 0.55) + rot  # direction LV -> RV (image left, anterior)
    rv_scale = (1.0 - 0.35 * level) * (1.0 - 0.2 * phase)
    ext = rng.uniform(14.0, 28.0) * rv_scale + 4.0  # RV cavity width at mid-crescent (mm)
    dist = rng.uniform(0.3, 0.5) * R_epi
    b_rv = R_epi + ext - dist
    a_rv = rng.uniform(0.8, 1.1) * R_epi * (0.8 + 0.2 * rv_scale)
    tang = rng.uniform(-0.2, 0.2) * R_epi
    rcx = lcx + dist * math.cos(psi) - tang * math.sin(psi)
    rcy = lcy + dist * math.sin(psi) + tang * math.cos(psi)
    rv_ang = psi + rng.uniform(-0.25, 0.25)
    rv_coef = rng.coef(4, 0.04)
    t_rv = max(rng.uniform(2.5, 4.0), px)

    # Papillary muscles (anterolateral, posteromedial): dark blobs on the LV wall.
    pms = []
    for base in (psi + 0.75 * math.pi, psi - 0.375 * math.pi):
        ang = base + rng.uniform(-0.3, 0.3)
        r_pm = R * rng.uniform(0.12, 0.2) * (1.0 + 0.5 * phase)
        dd = R - r_pm * rng.uniform(0.2, 0.8)
        pc = (lcy + dd * math.sin(ang), lcx + dd * math.cos(ang))
        pms.append((pc, r_pm * rng.uniform(1.0, 1.5), r_pm, ang + rng.uniform(-0.6, 0.6)))
    pm_coef = rng.coef(3, 0.06)
    present_pm = rng.chance(0.85)
    fat_off, fat_coef = rng.uniform(-3.0, 1.5), rng.coef(4, 0.8)

    return _Heart(
        phase=phase,
        level=level,
        lcx=lcx,
        lcy=lcy,
        R=R,
        lv_ax=lv_ax,
        endo_coef=endo_coef,
        T0=T0,
        thick_coef=thick_coef,
        R_epi=R_epi,
        psi=psi,
        ext=ext,
        dist=dist,
        b_rv=b_rv,
        a_rv=a_rv,
        tang=tang,
        rcx=rcx,
        rcy=rcy,
        rv_ang=rv_ang,
        rv_coef=rv_coef,
        t_rv=t_rv,
        pms=pms,
        pm_coef=pm_coef,
        present_pm=present_pm,
        fat_off=fat_off,
        fat_coef=fat_coef,
    )


def _draw_surroundings(rng: _Rng, heart: _Heart) -> _Surroundings:
    """Draw the body and the organs around the heart."""
    lcx, lcy, R_epi, ext = heart.lcx, heart.lcy, heart.R_epi, heart.ext
    (t_rv,) = (heart.t_rv,)
    h_ext = R_epi + ext + t_rv + 6.0
    fsc0, m0 = rng.uniform(5.0, 18.0), rng.uniform(8.0, 16.0)
    depth = h_ext + 1.3 * (fsc0 + m0) + rng.uniform(0.0, 20.0)
    a_b = rng.uniform(150.0, 200.0)
    b_b = max(rng.uniform(110.0, 140.0), depth + 30.0)
    bang = rng.uniform(-0.15, 0.15)
    bcx, bcy = lcx - rng.uniform(15.0, 45.0), lcy - depth + b_b
    body_coef, fsc_coef, m_coef = rng.coef(5, 0.025), rng.coef(4, 0.3), rng.coef(4, 0.3)
    gap = rng.uniform(2.0, 6.0)
    lungs = []
    for side in (1.0, -1.0):  # +1: left lung (image right), -1: right lung (image left)
        off = R_epi + (0.0 if side > 0 else ext) + rng.uniform(15.0, 40.0)
        c = (lcy + rng.uniform(10.0, 45.0), lcx + side * off)
        ax = (rng.uniform(30.0, 50.0), rng.uniform(45.0, 80.0))
        lungs.append((c, ax, rng.uniform(-0.4, 0.4), rng.coef(4, 0.05)))
    lung_inset = rng.uniform(1.0, 3.0)
    has_liver, has_stomach = rng.chance(0.75), rng.chance(0.4)
    liver = (
        (lcy + R_epi + rng.uniform(35.0, 75.0), lcx - rng.uniform(20.0, 70.0)),
        (rng.uniform(80.0, 130.0), rng.uniform(55.0, 85.0)),
        rng.uniform(-0.5, 0.3),
        rng.coef(4, 0.05),
    )
    stomach = (
        (lcy + R_epi + rng.uniform(30.0, 65.0), lcx + rng.uniform(10.0, 50.0)),
        (rng.uniform(20.0, 40.0), rng.uniform(15.0, 30.0)),
        rng.uniform(0.0, math.pi),
        rng.coef(3, 0.06),
    )
    r_ao = rng.uniform(9.0, 13.0)
    ao_c = (lcy + R_epi + rng.uniform(12.0, 35.0), lcx + rng.uniform(-20.0, 10.0))
    ao_q, ao_ang = rng.uniform(0.85, 1.0), rng.uniform(0.0, math.pi)
    sp_c = (bcy + b_b - rng.uniform(40.0, 55.0), bcx + rng.uniform(-8.0, 8.0))
    vb = (rng.uniform(16.0, 22.0), rng.uniform(13.0, 18.0))
    vb_coef = rng.coef(3, 0.04)
    r_can = rng.uniform(6.0, 8.0)
    dots = []
    for c, ax, ang, _ in lungs:
        for _ in range(9):
            rr, tt = math.sqrt(rng.uniform(0.0, 1.0)) * 0.85, rng.uniform(0.0, _TWO_PI)
            u, v = rr * ax[0] * math.cos(tt), rr * ax[1] * math.sin(tt)
            ca, sa = math.cos(ang), math.sin(ang)
            dc = (c[0] + u * sa + v * ca, c[1] + u * ca - v * sa)
            dots.append((dc, rng.uniform(1.0, 3.0), rng.uniform(1.0, 2.2), rng.uniform(0.0, 3.2)))
    dot_val = rng.rand(len(dots), lo=0.12, hi=0.45).tolist()
    ribs = []
    for i in range(9):
        t = -math.pi / 2 + (i - 4) * 0.42 + rng.uniform(-0.12, 0.12)  # around the anterior wall
        rb = 1.0 + _modes_at(t, body_coef)
        bx, by = a_b * rb * math.cos(t), b_b * rb * math.sin(t)
        dep = fsc0 * (1.0 + _modes_at(t, fsc_coef)) + m0 * (
            1.0 + _modes_at(t, m_coef)
        ) * rng.uniform(0.3, 0.8)
        f = max(0.0, 1.0 - dep / math.hypot(bx, by))
        cb, sb = math.cos(bang), math.sin(bang)
        ry_, rx_ = sb * bx * f + cb * by * f, cb * bx * f - sb * by * f
        size_ = (rng.uniform(5.0, 8.0), rng.uniform(3.0, 5.0))
        if rng.chance(0.7):
            ribs.append(((bcy + ry_, bcx + rx_), size_, math.atan2(ry_, rx_) + math.pi / 2))

    return _Surroundings(
        a_b=a_b,
        b_b=b_b,
        bang=bang,
        bcx=bcx,
        bcy=bcy,
        body_coef=body_coef,
        fsc0=fsc0,
        fsc_coef=fsc_coef,
        m0=m0,
        m_coef=m_coef,
        gap=gap,
        lungs=lungs,
        lung_inset=lung_inset,
        has_liver=has_liver,
        has_stomach=has_stomach,
        liver=liver,
        stomach=stomach,
        r_ao=r_ao,
        ao_c=ao_c,
        ao_q=ao_q,
        ao_ang=ao_ang,
        sp_c=sp_c,
        vb=vb,
        vb_coef=vb_coef,
        r_can=r_can,
        dots=dots,
        dot_val=dot_val,
        ribs=ribs,
    )


def _draw_contrast(rng: _Rng, noise: float | None, bias: float | None) -> _Contrast:
    """Draw the SSFP intensities and the acquisition settings (``noise`` and ``bias``
    override theirs)."""
    blood = rng.uniform(0.8, 1.0)
    rv_blood = blood * rng.uniform(0.88, 1.05)
    myo = rng.uniform(0.16, 0.28)
    fat = rng.uniform(0.6, 0.9)
    muscle = rng.uniform(0.15, 0.28)
    inner = rng.uniform(0.2, 0.35)
    lung_i = rng.uniform(0.03, 0.1)
    liver_i = rng.uniform(0.2, 0.36)
    stomach_i = rng.uniform(0.15, 0.7)
    marrow = rng.uniform(0.35, 0.55)
    csf = rng.uniform(0.55, 0.8)
    aorta_i = blood * rng.uniform(0.7, 1.0)
    tex_amp = rng.uniform(0.04, 0.09)
    inner_var = rng.uniform(0.1, 0.3)
    coil, coil_ang = rng.uniform(0.0, 0.35), rng.uniform(-0.6, 0.6)
    bias_amp = rng.uniform(0.08, 0.25) if bias is None else float(bias)
    noise_rel = rng.uniform(0.01, 0.035) if noise is None else float(noise)
    psf = rng.uniform(0.4, 0.8)

    return _Contrast(
        blood=blood,
        rv_blood=rv_blood,
        myo=myo,
        fat=fat,
        muscle=muscle,
        inner=inner,
        lung_i=lung_i,
        liver_i=liver_i,
        stomach_i=stomach_i,
        marrow=marrow,
        csf=csf,
        aorta_i=aorta_i,
        tex_amp=tex_amp,
        inner_var=inner_var,
        coil=coil,
        coil_ang=coil_ang,
        bias_amp=bias_amp,
        noise_rel=noise_rel,
        psf=psf,
    )


def _distances(pl: _Plane, px: float, heart: _Heart, sur: _Surroundings) -> _Distances:
    """The signed distance maps of the large shapes and of the heart on the grid."""
    Y, X = pl.Y, pl.X
    lcx, lcy, R, lv_ax = heart.lcx, heart.lcy, heart.R, heart.lv_ax
    endo_coef, T0, thick_coef, dist = heart.endo_coef, heart.T0, heart.thick_coef, heart.dist
    b_rv, a_rv, tang, rcx = heart.b_rv, heart.a_rv, heart.tang, heart.rcx
    rcy, rv_ang, rv_coef, t_rv = heart.rcy, heart.rv_ang, heart.rv_coef, heart.t_rv
    fat_off, fat_coef = heart.fat_off, heart.fat_coef
    a_b, b_b, bang, bcx = sur.a_b, sur.b_b, sur.bang, sur.bcx
    bcy, body_coef, fsc0, fsc_coef = sur.bcy, sur.body_coef, sur.fsc0, sur.fsc_coef
    m0, m_coef, gap, lungs = sur.m0, sur.m_coef, sur.gap, sur.lungs
    lung_inset, liver, stomach = sur.lung_inset, sur.liver, sur.stomach
    # Large smooth shapes are evaluated on the coarse sub-grid and upsampled (their distance
    # functions are smooth near their boundaries); intersections are taken at full resolution.
    Yc, Xc = pl.Yc, pl.Xc
    d_body_c, cb_, sb_ = _blob2(Yc, Xc, bcy, bcx, a_b, b_b, bang, body_coef)
    d_musc_c = d_body_c + (fsc0 * (1.0 + _modes(cb_, sb_, fsc_coef))).clamp_min(2.0)
    d_in_c = d_musc_c + (m0 * (1.0 + _modes(cb_, sb_, m_coef))).clamp_min(3.0)
    d_body, d_musc, d_in = pl.up(d_body_c), pl.up(d_musc_c), pl.up(d_in_c)
    d_lungs_c = torch.minimum(
        *(_blob2(Yc, Xc, c[0], c[1], ax[0], ax[1], ang, coef)[0] for c, ax, ang, coef in lungs)
    )
    d_lungs = torch.maximum(pl.up(d_lungs_c), d_in + lung_inset)
    d_liver = pl.up(_blob2(Yc, Xc, *liver[0], *liver[1], liver[2], liver[3])[0])
    d_liver = torch.maximum(d_liver, d_in + 1.0)
    d_stom = pl.up(_blob2(Yc, Xc, *stomach[0], *stomach[1], stomach[2], stomach[3])[0])
    d_stom = torch.maximum(d_stom, d_in + 1.0)

    # Heart: everything below is evaluated in a box around it only.
    r_box = max(R * 1.2 + T0 * 1.6, dist + abs(tang) + 1.15 * max(a_rv, b_rv) + t_rv) + 22.0
    hb = pl.box(lcy, lcx, r_box, r_box)
    Yh, Xh = Y[hb], X[hb]
    d_endo, c_lv, s_lv = _blob2(Yh, Xh, lcy, lcx, *lv_ax, endo_coef)
    T = (T0 * (1.0 + _modes(c_lv, s_lv, thick_coef))).clamp_min(max(2.2 * px, 0.4 * T0))
    d_epi = d_endo - T
    d_rv, _, _ = _blob2(Yh, Xh, rcy, rcx, b_rv, a_rv, rv_ang, rv_coef)
    d_rvw = d_rv - t_rv
    d_heart = torch.minimum(d_epi, d_rvw)
    rh = torch.hypot(Yh - lcy, Xh - lcx).clamp_min(1e-3)
    f_peri = (fat_off + 4.0 * _modes((Xh - lcx) / rh, (Yh - lcy) / rh, fat_coef)).clamp(0.0, 10.0)
    d_fat = d_heart - f_peri
    for d in (d_lungs, d_liver, d_stom):
        d[hb] = torch.maximum(d[hb], gap - d_fat)

    return _Distances(
        d_body=d_body,
        d_musc=d_musc,
        d_in=d_in,
        d_lungs=d_lungs,
        d_liver=d_liver,
        d_stom=d_stom,
        hb=hb,
        d_endo=d_endo,
        d_epi=d_epi,
        d_rv=d_rv,
        d_rvw=d_rvw,
        d_fat=d_fat,
    )


def _draw_anatomy(
    pl: _Plane,
    w: float,
    px: float,
    heart: _Heart,
    sur: _Surroundings,
    con: _Contrast,
    dist: _Distances,
    ngen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Draw the anatomy in painter's order with partial-volume edges: the noise-free
    image and the papillary-muscle mask."""
    H, W = pl.H, pl.W
    Y, X = pl.Y, pl.X
    lcx, lcy, lv_ax, endo_coef = heart.lcx, heart.lcy, heart.lv_ax, heart.endo_coef
    pms, pm_coef, present_pm = heart.pms, heart.pm_coef, heart.present_pm
    bang, has_liver, has_stomach, r_ao = sur.bang, sur.has_liver, sur.has_stomach, sur.r_ao
    ao_c, ao_q, ao_ang, sp_c = sur.ao_c, sur.ao_q, sur.ao_ang, sur.sp_c
    vb, vb_coef, r_can, dots = sur.vb, sur.vb_coef, sur.r_can, sur.dots
    dot_val, ribs = sur.dot_val, sur.ribs
    blood, rv_blood, myo, fat = con.blood, con.rv_blood, con.myo, con.fat
    muscle, inner, lung_i, liver_i = con.muscle, con.inner, con.lung_i, con.liver_i
    stomach_i, marrow, csf, aorta_i = con.stomach_i, con.marrow, con.csf, con.aorta_i
    (inner_var,) = (con.inner_var,)
    d_body, d_musc, d_in, d_lungs = dist.d_body, dist.d_musc, dist.d_in, dist.d_lungs
    d_liver, d_stom, hb, d_endo = dist.d_liver, dist.d_stom, dist.hb, dist.d_endo
    d_epi, d_rv, d_rvw, d_fat = dist.d_epi, dist.d_rv, dist.d_rvw, dist.d_fat
    img = torch.zeros(H, W, dtype=_F32)
    _paint(img, _soft(d_body, w), fat)
    _paint(img, _soft(d_musc, w), muscle)
    for c, ax, ang in ribs:
        b = pl.box(c[0], c[1], ax[0], ax[0])
        if not _empty(b):
            d = _blob2(Y[b], X[b], c[0], c[1], ax[0], ax[1], ang)[0]
            _paint(img[b], _soft(d, w), 0.04)
            _paint(img[b], _soft(d + 1.2, w), marrow)
    inner_map = inner * (1.0 + inner_var * _noise_field(ngen, (H, W), 24.0 / px))
    _paint(img, _soft(d_in, w), inner_map)
    if has_liver:
        _paint(img, _soft(d_liver, w), liver_i)
    if has_stomach:
        _paint(img, _soft(d_stom, w), stomach_i)
    m_lung = _soft(d_lungs, w)
    _paint(img, m_lung, lung_i * (1.0 + 0.4 * _noise_field(ngen, (H, W), 6.0 / px)).clamp_min(0.2))
    for (dc, r1, r2, ang), val in zip(dots, dot_val, strict=True):
        b = pl.box(dc[0], dc[1], r1, r1)
        if not _empty(b):
            d = _blob2(Y[b], X[b], dc[0], dc[1], r1, min(r1, r2), ang)[0]
            _paint(img[b], _soft(d, w) * m_lung[b], val)
    # spine: vertebral body (dark cortex, marrow), canal (CSF) and posterior arch
    b = pl.box(sp_c[0] + vb[1] + r_can, sp_c[1], 2 * vb[1] + 2 * r_can + 12.0, vb[0] + 4.0)
    if not _empty(b):
        Yb, Xb = Y[b], X[b]
        d_vb = _blob2(Yb, Xb, sp_c[0], sp_c[1], vb[0], vb[1], bang, vb_coef)[0]
        rc = torch.hypot(Yb - (sp_c[0] + vb[1] + r_can + 3.0), Xb - sp_c[1])
        _paint(img[b], _soft(d_vb, w), 0.05)
        _paint(img[b], _soft(d_vb + 2.0, w), marrow)
        _paint(img[b], _soft(rc - r_can - 5.0, w) * _soft(-d_vb, w), 0.06)
        _paint(img[b], _soft(rc - r_can, w), csf)
    flow = 1.0 + 0.06 * _noise_field(ngen, (H, W), 12.0 / px)
    b = pl.box(ao_c[0], ao_c[1], r_ao + 3.0, r_ao + 3.0)
    if not _empty(b):
        d = _blob2(Y[b], X[b], ao_c[0], ao_c[1], r_ao, r_ao * ao_q, ao_ang)[0]
        _paint(img[b], _soft(d - 2.0, w), muscle)
        _paint(img[b], _soft(d, w), aorta_i * flow[b])
    ih, fh = img[hb], flow[hb]
    _paint(ih, _soft(d_fat, w), fat)
    _paint(ih, _soft(d_rvw, w), myo)
    _paint(ih, _soft(d_rv, w), rv_blood * fh)
    _paint(ih, _soft(d_epi, w), myo)
    _paint(ih, _soft(d_endo, w), blood * fh)
    pm_mask = torch.zeros(H, W, dtype=torch.bool)
    for c, r1, r2, ang in pms:
        b = pl.box(c[0], c[1], r1, r1)
        if present_pm and not _empty(b):
            d = _blob2(Y[b], X[b], c[0], c[1], r1, r2, ang, pm_coef)[0]
            d = torch.maximum(d, _blob2(Y[b], X[b], lcy, lcx, *lv_ax, endo_coef)[0])
            _paint(img[b], _soft(d, w), myo * 1.1)
            pm_mask[b] |= d < 0
    return img, pm_mask


def _acquire(img: Tensor, pl: _Plane, px: float, con: _Contrast, ngen: torch.Generator) -> Tensor:
    """The scanner: texture, point-spread blur, coil and bias field, Rician noise, robust
    normalisation to [0, 1]."""
    H, W, sy, sx = pl.H, pl.W, pl.sy, pl.sx
    blood, tex_amp, coil, coil_ang = con.blood, con.tex_amp, con.coil, con.coil_ang
    bias_amp, noise_rel, psf = con.bias_amp, con.noise_rel, con.psf
    tex = 1.0 + tex_amp * _noise_field(ngen, (H, W), 1.5 / px)
    img = _blur(img * tex, (psf * px / sy, psf * px / sx))
    cth, sth = math.cos(coil_ang), math.sin(coil_ang)
    log_bias = bias_amp * _noise_field(ngen, (H, W), H / 3.0)
    log_bias = log_bias - coil * (cth * pl.y0 + sth * pl.x0) / 100.0
    img = img * torch.exp(log_bias - log_bias.mean())
    sigma = noise_rel * blood
    n1 = torch.randn(H, W, generator=ngen, dtype=_F32)
    n2 = torch.randn(H, W, generator=ngen, dtype=_F32)
    if sigma > 0:
        img = torch.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    img = _robust_normalise(img, 0.998)
    return img


def _labels(pl: _Plane, dist: _Distances) -> tuple[Tensor, Tensor]:
    """The ACDC label map and the RV free-wall mask (hard versions of the shapes)."""
    H, W = pl.H, pl.W
    hb, d_endo, d_epi, d_rv = dist.hb, dist.d_endo, dist.d_epi, dist.d_rv
    (d_rvw,) = (dist.d_rvw,)
    lab = torch.zeros(H, W, dtype=torch.int64)
    lh = lab[hb]
    lh[d_rv < 0] = 1
    lh[d_epi < 0] = 2
    lv = d_endo < 0
    lh[lv] = 3
    # Safety net for coarse grids: the myocardium always separates the LV cavity from the rest.
    ring = F.max_pool2d(lv[None, None].to(_F32), 3, 1, 1)[0, 0] > 0
    lh[ring & ~lv & (lh != 2)] = 2
    rv_wall = torch.zeros(H, W, dtype=torch.bool)
    rv_wall[hb] = (d_rvw < 0) & (d_rv >= 0) & (d_epi >= 0)
    return lab, rv_wall


def cardiac_phantom_2d(
    size: int | tuple[int, int] = 256,
    generator: GeneratorLike = None,
    *,
    spacing: float | tuple[float, float] | None = None,
    noise: float | None = None,
    bias: float | None = None,
) -> Phantom:
    """A short-axis cardiac cine-MRI-like slice (bright-blood SSFP contrast) with ACDC labels.

    Args:
        size: ``H`` (square) or ``(H, W)`` in pixels.
        generator: ``torch.Generator``, int seed, or ``None`` (seed 0).
        spacing: pixel size in mm (float or ``(dy, dx)``); default ``256 / W`` mm, i.e. a
            256 mm wide field of view, so the LV cavity spans roughly 12-26 % of the image width
            (like a cropped, preprocessed slice).  The anatomy is in mm: a larger spacing
            zooms out.
        noise: Rician noise std relative to the blood-pool intensity; ``None`` draws it from
            [0.01, 0.035]; 0 disables noise.
        bias: std of the log of the smooth multiplicative bias field; ``None`` draws it from
            [0.08, 0.25]; 0 disables the random part (a mild coil-proximity gradient remains).

    Returns:
        :class:`Phantom` with ``image`` float32 ``(H, W)`` in [0, 1] and ``label`` int64
        ``(H, W)``: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity (papillary muscles
        included).  Row 0 is anterior, column 0 the patient's right.  ``masks``: ``body``,
        ``lungs``, ``rv_wall``, ``papillary``.

    Anatomy varies with a cardiac phase (end-diastole to end-systole) and a slice level (base
    towards apex): LV cavity radius 16-33 mm, myocardial wall 6-15 mm (about 0.2-0.8 of the
    cavity radius, thicker in systole, smoothly varying around the ring and never thinner than
    ~2 pixels), an RV crescent 8-32 mm wide wrapped around the septal side, papillary muscles,
    patchy epicardial fat, chest wall with ribs, lungs, liver/stomach, aorta and spine.
    """
    H, W = _size(size, 2, "cardiac_phantom_2d")
    sy, sx = _spacing(spacing, 256.0 / W, 2)
    rng = _Rng(_as_generator(generator))
    ngen = rng.fork()  # voxel-level noise; the anatomy below does not depend on the grid size
    px = max(sy, sx)
    w = 0.3 * min(sy, sx)  # partial-volume edge width (mm)
    # A gentle smooth warp of space, so that no contour is a perfect conic section.
    pl = _Plane(H, W, sy, sx, [_Waves(rng, 2, 6, (70.0, 220.0), 2.0) for _ in range(2)])
    heart = _draw_heart(rng, px)
    sur = _draw_surroundings(rng, heart)
    con = _draw_contrast(rng, noise, bias)
    dist = _distances(pl, px, heart, sur)
    img, pm_mask = _draw_anatomy(pl, w, px, heart, sur, con, dist, ngen)
    img = _acquire(img, pl, px, con, ngen)
    lab, rv_wall = _labels(pl, dist)
    masks = {
        "body": dist.d_body < 0,
        "lungs": dist.d_lungs < 0,
        "rv_wall": rv_wall,
        "papillary": pm_mask,
    }
    return Phantom(img.contiguous(), lab, dict(CARDIAC_LABELS), (sy, sx), masks)


def cardiac_batch(
    n: int,
    size: int | tuple[int, int] = 256,
    generator: GeneratorLike = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """``n`` cardiac phantoms drawn in sequence from one generator.

    Returns ``(images, labels)`` of shapes ``(n, 1, H, W)`` (float32, [0, 1]) and
    ``(n, 1, H, W)`` (int64, ACDC labels).  ``kwargs`` go to :func:`cardiac_phantom_2d`.
    """
    g = _as_generator(generator)
    ph = [cardiac_phantom_2d(size, g, **kwargs) for _ in range(n)]
    return (
        torch.stack([p.image for p in ph])[:, None],
        torch.stack([p.label for p in ph])[:, None],
    )
