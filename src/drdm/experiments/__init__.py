"""Downstream experiments of the paper: few-shot segmentation with augmentation (Section 4)
and registration pre-training on synthetic pairs (Section 5).

>>> from drdm.experiments import SegmentationConfig, run_segmentation   # doctest: +SKIP
>>> run_segmentation(SegmentationConfig(seeds=(0,)), "results/segment")  # doctest: +SKIP

Command line: ``drdm experiment segment|register`` (see ``docs/experiments.md``).
"""

from .config import RegistrationConfig, SegmentationConfig
from .register import RegistrationResult, run_registration
from .segment import SegmentationResult, run_segmentation

__all__ = [
    "RegistrationConfig",
    "RegistrationResult",
    "SegmentationConfig",
    "SegmentationResult",
    "run_registration",
    "run_segmentation",
]
