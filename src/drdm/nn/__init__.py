"""The DRDM network: a recursive, time-conditioned U-Net of ACNN-II blocks (Eq. 12, App. A).

Input images are ``(B, C, *spatial)`` (2D or 3D, every spatial size a multiple of 8 by
default), timesteps are 1-based LongTensors ``(B,)`` in ``1..T``; the output is a displacement
field ``(B, ndim, *spatial)`` in voxels, channel ``i`` along spatial axis ``i``, pull-back
convention, as everywhere in :mod:`drdm.spatial`.
"""

from .blocks import ACNNBlock, TimeProjection, sinusoidal_table
from .config import NetworkConfig
from .unet import RecursiveUNet

__all__ = ["ACNNBlock", "NetworkConfig", "RecursiveUNet", "TimeProjection", "sinusoidal_table"]
