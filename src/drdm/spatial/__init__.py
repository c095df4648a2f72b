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
  ``warp(I, compose(a, b)) ≈ warp(warp(I, b), a)``;
* a slice-wise field (a 2D deformation of every slice of a 3D volume) is ``(3, *spatial)``
  with a zero component along its slice axis; the functions that treat it slice by slice take
  that axis as ``slice_axis`` (the code that made the field knows it; nothing infers it).
"""

from ..choices import INTERP_MODES, PADDINGS, InterpMode, Padding
from ._field import compose, integrate, resize_ddf
from ._grid import identity_grid
from ._invert import InversionReport, invert_field, invert_field_report
from ._jacobian import MagnitudeStats, fold_ratio, jacobian_det, magnitude_stats, spatial_gradient
from ._labels import warp_label_maps, warp_labels_onehot
from ._sample import check_padding, sample, warp, warp_labels
from ._separable import interpolation_matrix, resample_separable
from ._slices import check_slice_axis, field_to_slices, from_slices, slices_to_field, to_slices
from ._smooth import gaussian_kernel, smooth, smoothing_gain, smoothing_matrix

__all__ = [
    "INTERP_MODES",
    "PADDINGS",
    "InterpMode",
    "Padding",
    "check_padding",
    "check_slice_axis",
    "InversionReport",
    "MagnitudeStats",
    "compose",
    "field_to_slices",
    "from_slices",
    "fold_ratio",
    "gaussian_kernel",
    "identity_grid",
    "integrate",
    "interpolation_matrix",
    "invert_field",
    "invert_field_report",
    "jacobian_det",
    "magnitude_stats",
    "resample_separable",
    "resize_ddf",
    "sample",
    "slices_to_field",
    "smooth",
    "smoothing_gain",
    "smoothing_matrix",
    "spatial_gradient",
    "to_slices",
    "warp",
    "warp_label_maps",
    "warp_labels",
    "warp_labels_onehot",
]
