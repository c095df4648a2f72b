"""The forward deformation-diffusion process (no network)."""

from .config import ForwardDiffusionConfig
from .forward import ForwardDiffusion, ForwardFields, ForwardSample
from .random_field import multiscale_velocity
from .schedule import cumulative_units, step_units

__all__ = [
    "ForwardDiffusion",
    "ForwardDiffusionConfig",
    "ForwardFields",
    "ForwardSample",
    "cumulative_units",
    "multiscale_velocity",
    "step_units",
]
