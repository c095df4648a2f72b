"""Algorithms 3 and 4 of the paper on tensors and arrays, the dataset transforms built on them
and the one registry of deformation methods.

* :mod:`drdm.pipelines.core`: deform an image (and its labels) with any field sampler
  (:func:`deform_volume`, Algorithm 3), synthesise a registration pair
  (:func:`synthesize_pair`, Algorithm 4), a 2D model on 3D stacks slice by slice along an
  explicit ``slice_axis``;
* :mod:`drdm.pipelines.transforms`: :class:`DRDMDeform` and :class:`BigAugIntensity`, the
  PyTorch / MONAI / TorchIO dataset transforms;
* :mod:`drdm.pipelines.bank`: :class:`FieldBank`, precomputed DRDM fields replayed in a
  training loop;
* :mod:`drdm.pipelines.registry`: method and stack names, :func:`make_method`,
  :func:`make_stack` and the default levels.
"""

from .bank import FieldBank, image_fingerprint
from .core import (
    DeformResult,
    DRDMSampler,
    FieldSampler,
    ForwardProcessSampler,
    IntensityTransform,
    SynthesisResult,
    deform_volume,
    resolve_slice_axis,
    sample_field,
    synthesize_pair,
    warp_volume,
)
from .registry import (
    DEFAULT_LEVEL_FRACTIONS,
    DEFAULT_LEVELS,
    DEFAULT_STACK,
    METHODS,
    STACKS,
    default_levels,
    make_method,
    make_stack,
    resolve_stack,
)
from .transforms import BigAugIntensity, DRDMDeform

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_LEVEL_FRACTIONS",
    "DEFAULT_STACK",
    "METHODS",
    "STACKS",
    "BigAugIntensity",
    "DRDMDeform",
    "DRDMSampler",
    "DeformResult",
    "FieldBank",
    "FieldSampler",
    "ForwardProcessSampler",
    "IntensityTransform",
    "SynthesisResult",
    "default_levels",
    "deform_volume",
    "image_fingerprint",
    "make_method",
    "make_stack",
    "resolve_slice_axis",
    "resolve_stack",
    "sample_field",
    "synthesize_pair",
    "warp_volume",
]
