"""Seeded synthetic phantoms with label maps: a 2D cardiac cine-MRI slice and a 3D thorax CT.

The phantoms are built analytically: every structure is a smooth, randomly perturbed shape
evaluated on the voxel grid with vectorised tensor operations, drawn in painter's order with
partial-volume edges, then blurred (point-spread function), textured, bias-modulated and
corrupted with scanner-like noise.  Label maps are the hard versions of the same shapes, so the
image and the labels always agree.

Conventions
-----------
* ``image`` is float32 in ``[0, 1]``, ``label`` is int64, both with the spatial shape only (no
  batch or channel axes).  :func:`cardiac_batch` / :func:`thorax_batch` add ``(N, 1)``.
* Randomness is explicit: ``generator`` is a :class:`torch.Generator` (advanced in place), an
  ``int`` seed, or ``None`` (seed 0).  The global RNGs of torch and numpy are never used, and the
  same seed gives bit-identical output.  The anatomy is drawn before any voxel-level noise, so one
  seed gives the same anatomy (in millimetres) at every grid size.
* Coordinates are in millimetres about the centre of the field of view.

Cardiac (2D, ``(H, W)``): a short-axis slice in the usual radiological display orientation:
row 0 is anterior, column 0 is the patient's right, so the right ventricle lies on the image left
of the left ventricle.  Labels follow ACDC: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV
cavity (papillary muscles inside the LV cavity are labelled 3, as in ACDC; the thin RV free wall
is background).

Thorax (3D, ``(D, H, W)``): axis 0 runs superior (index 0, head) to inferior, axis 1 anterior
(index 0) to posterior, axis 2 from the patient's right (index 0) to the patient's left, i.e. an
axial slice ``image[k]`` is displayed radiologically.  Labels: 0 everything else, 1 left lung,
2 right lung (the intrapulmonary vessels and airways belong to their lung).
"""

from ._common import CARDIAC_LABELS, THORAX_LABELS, GeneratorLike, Phantom
from .cardiac import cardiac_batch, cardiac_phantom_2d
from .thorax import thorax_batch, thorax_phantom_3d

__all__ = [
    "CARDIAC_LABELS",
    "THORAX_LABELS",
    "GeneratorLike",
    "Phantom",
    "cardiac_batch",
    "cardiac_phantom_2d",
    "thorax_batch",
    "thorax_phantom_3d",
]
