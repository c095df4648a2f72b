"""Synthetic data: seeded phantoms with label maps for demos, tests and small training runs."""

from .phantoms import (
    CARDIAC_LABELS,
    THORAX_LABELS,
    GeneratorLike,
    Phantom,
    cardiac_batch,
    cardiac_phantom_2d,
    thorax_batch,
    thorax_phantom_3d,
)

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
