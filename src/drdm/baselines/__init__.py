"""Baseline deformation and augmentation methods behind the same interfaces as DRDM.

* :class:`ElasticSampler`: plain random elastic deformation (Gaussian-smoothed noise);
* :class:`MRBSSampler`: multi-resolution random B-spline deformations (Eppenhof and Pluim
  2019), the synthetic registration pairs baseline;
* :class:`BigAug`: the nine stacked transforms of Zhang et al. (2020); its spatial part is a
  FieldSampler (:meth:`BigAug.field_sampler`) and its appearance part an IntensityTransform
  (:meth:`BigAug.intensity_transform`);
* :func:`make_method`: a method by name (``"none"``, ``"elastic"``, ``"mrbs"``, ``"bigaug"``,
  ``"drdm"``) as ``(FieldSampler | None, IntensityTransform | None)``;
* :func:`make_stack`: transforms stacked after any deformation (``"bigaug"``: all nine
  BigAug transforms; ``"affine"``: its rotation and scaling), the same pair of types.

A FieldSampler (see :mod:`drdm.deform`) has ``ndim`` and ``sample_ddf(images (B, C,
*spatial), generator) -> (B, ndim, *spatial)`` displacements in voxels of the images' grid
(pull-back, channel ``i`` along array axis ``i``); an IntensityTransform maps ``(images,
generator)`` to images of the same shape. All randomness comes from the ``torch.Generator``.
"""

from .bigaug import INTENSITY, SPATIAL, TRANSFORMS, BigAug, BigAugConfig
from .elastic import ElasticSampler
from .factory import METHODS, STACKS, make_method, make_stack
from .mrbs import MRBSSampler

__all__ = [
    "INTENSITY",
    "METHODS",
    "SPATIAL",
    "TRANSFORMS",
    "BigAug",
    "BigAugConfig",
    "ElasticSampler",
    "MRBSSampler",
    "STACKS",
    "make_method",
    "make_stack",
]
