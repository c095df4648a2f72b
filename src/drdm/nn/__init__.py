"""The DRDM network: a recursive, time-conditioned U-Net of ACNN-II blocks (Eq. 12, App. A).

Input images are ``(B, C, *spatial)`` (2D or 3D, every spatial size a multiple of 8 by
default), timesteps are 1-based LongTensors ``(B,)`` in ``1..T``; the output is a displacement
field ``(B, ndim, *spatial)`` in voxels, channel ``i`` along spatial axis ``i``, pull-back
convention, as everywhere in :mod:`drdm.spatial`.
"""

from .blocks import CONV_ENGINES, ACNNBlock, TimeProjection, onednn_available, sinusoidal_table
from .config import NetworkConfig
from .unet import RecursiveUNet

__all__ = [
    "CONV_ENGINES",
    "ACNNBlock",
    "NetworkConfig",
    "RecursiveUNet",
    "TimeProjection",
    "onednn_available",
    "sinusoidal_table",
]
