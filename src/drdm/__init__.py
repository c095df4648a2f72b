"""drdm: the Deformation-Recovery Diffusion Model for medical images."""

__version__ = "0.1.0.dev0"
