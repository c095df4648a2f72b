"""The network as the package computed it before the engine options, for side-by-side timing.

Shared by the benchmarks: same weights and the same maths, but PyTorch's own convolution
dispatch and ``nn.InstanceNorm2d/3d`` instead of oneDNN calls and ``group_norm``.
"""

from __future__ import annotations

import copy

from torch import nn

from drdm.nn import RecursiveUNet
from drdm.nn.blocks import InstanceNorm


def previous_network(network: RecursiveUNet) -> RecursiveUNet:
    """A copy of ``network`` computing as the package did before (see module docstring)."""
    old = copy.deepcopy(network).set_engine("native")
    norm_class = nn.InstanceNorm2d if network.config.ndim == 2 else nn.InstanceNorm3d
    for module in old.modules():
        norm = getattr(module, "norm", None)
        if isinstance(norm, InstanceNorm):
            new = norm_class(norm.channels, eps=norm.eps, affine=True)
            new.load_state_dict(norm.state_dict())
            module.norm = new
    return old.train(network.training)
