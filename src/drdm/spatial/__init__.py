"""The spatial core: one implementation of warp, compose, invert, resize, integrate and Jacobian.

Pure PyTorch functions, 2D and 3D through the same code, batched and differentiable; no
randomness and no I/O.

Conventions (used throughout ``drdm``):

* images and label maps are ``(B, C, *spatial)`` with the spatial axes in the array order of
  the image on disk (``(H, W)`` or ``(D, H, W)`` as the array comes, no axis flips);
* a displacement field (DDF or DVF) is ``(B, ndim, *spatial)``; channel ``i`` is the
  displacement along spatial axis ``i``, in voxels;
* warping pulls back: ``warp(I, u)(x) = I(x + u(x))``;
* ``compose(a, b)[x] = b[x + a[x]] + a[x]`` (paper Eq. 5), so
  ``warp(I, compose(a, b)) ≈ warp(warp(I, b), a)``.
"""

from ._field import compose, integrate, resize_ddf
from ._grid import identity_grid
from ._invert import InversionReport, invert_field, invert_field_report, slicewise_axis
from ._jacobian import MagnitudeStats, fold_ratio, jacobian_det, magnitude_stats, spatial_gradient
from ._labels import warp_labels_onehot as warp_labels_onehot
from ._sample import (
    INTERP_MODES,
    PADDINGS,
    InterpMode,
    Padding,
    check_padding,
    sample,
    warp,
    warp_labels,
)
from ._separable import interpolation_matrix, resample_separable
from ._smooth import gaussian_kernel, smooth, smoothing_gain, smoothing_matrix

__all__ = [
    "INTERP_MODES",
    "PADDINGS",
    "InterpMode",
    "Padding",
    "check_padding",
    "InversionReport",
    "MagnitudeStats",
    "compose",
    "fold_ratio",
    "gaussian_kernel",
    "identity_grid",
    "integrate",
    "interpolation_matrix",
    "invert_field",
    "invert_field_report",
    "slicewise_axis",
    "jacobian_det",
    "magnitude_stats",
    "resample_separable",
    "resize_ddf",
    "sample",
    "smooth",
    "smoothing_gain",
    "smoothing_matrix",
    "spatial_gradient",
    "warp",
    "warp_labels",
]
