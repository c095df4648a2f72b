"""Shared test helpers (``from helpers import ...`` in any test folder): a tiny model, a
stand-in field sampler, a label map and seeded generators."""

from __future__ import annotations

import numpy as np
import torch

from conftest import smooth_field
from drdm import DRDM
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.diffusion.official_process import OfficialForwardProcess, OfficialProcessConfig
from drdm.nn import NetworkConfig, RecursiveUNet

#: the tiny model's number of forward steps
T = 10


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(ndim: int = 2, size: int = 32, official: bool = False, seed: int = 0) -> DRDM:
    config = NetworkConfig(
        ndim=ndim,
        widths=(4, 8, 8),
        bottleneck_width=4,
        num_steps=T,
        embed_dim=8,
        output_init_std=1e-3,
    )
    network = RecursiveUNet(config, generator=torch.Generator().manual_seed(seed))
    if official:
        process = OfficialForwardProcess(OfficialProcessConfig(ndim=ndim, num_steps=T))
    else:
        process = ForwardDiffusion(ForwardDiffusionConfig(ndim=ndim, num_steps=T))
    return DRDM(network, process, [size] * ndim, training={"note": "unit test"})


class RandomSmoothSampler:
    """Smooth random fields from the generator (a stand-in for any FieldSampler)."""

    def __init__(self, ndim: int = 2, amplitude: float = 2.0):
        self.ndim = ndim
        self.amplitude = amplitude

    def sample_ddf(self, images, generator):
        shape = (images.shape[0], self.ndim, *images.shape[2:])
        return smooth_field(shape, self.amplitude, generator, dtype=images.dtype)


def label_map(size=(24, 24)) -> np.ndarray:
    lab = np.zeros(size, np.int64)
    lab[4:14, 5:15] = 2
    lab[8:11, 8:12] = 5
    return lab
