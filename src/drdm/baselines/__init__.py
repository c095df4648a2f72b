"""Baseline deformation and augmentation methods behind the same interfaces as DRDM.

* :class:`ElasticSampler`: plain random elastic deformation (Gaussian-smoothed noise);
* :class:`MRBSSampler`: multi-resolution random B-spline deformations (Eppenhof and Pluim
  2019), the synthetic registration pairs baseline;
* :class:`BigAug`: the nine stacked transforms of Zhang et al. (2020); its spatial part is a
  FieldSampler (:meth:`BigAug.field_sampler`) and its appearance part an IntensityTransform
  (:meth:`BigAug.intensity_transform`);
Methods by name (``"none"``, ``"elastic"``, ``"mrbs"``, ``"bigaug"``, ``"drdm"``) and the
stacks are built by the registry in :mod:`drdm.pipelines.registry` (``make_method``,
``make_stack``).

A FieldSampler (see :mod:`drdm.pipelines.core`) has ``ndim`` and ``sample_ddf(images (B, C,
*spatial), generator) -> (B, ndim, *spatial)`` displacements in voxels of the images' grid
(pull-back, channel ``i`` along array axis ``i``); an IntensityTransform maps ``(images,
generator)`` to images of the same shape. All randomness comes from the ``torch.Generator``.
"""

from .bigaug import INTENSITY, SPATIAL, TRANSFORMS, BigAug, BigAugConfig
from .elastic import ElasticSampler
from .mrbs import MRBSSampler

__all__ = [
    "INTENSITY",
    "SPATIAL",
    "TRANSFORMS",
    "BigAug",
    "BigAugConfig",
    "ElasticSampler",
    "MRBSSampler",
]
