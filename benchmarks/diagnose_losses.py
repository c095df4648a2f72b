"""Diagnosis (c) of issue 17: what Eq. 14 rewards, per band of timesteps, without a network.

For real forward steps ``psi_t`` of our process (the M&Ms slice at the model grid) the script
scores hand-made predictions ``psi_hat = -a * (psi_t + n)``: the exact inverse direction
scaled by ``a``, plus an error ``n`` of relative size ``rho`` (a smooth random field with
``E|n| = rho * E|psi_t|``, as a network with imperfect information would make). For every
band, ``rho`` and loss variant it reports the ``a`` that minimises the loss and the U there.

* If the regulariser or the clamp held predictions at zero, the best ``a`` would sit near 0
  even for ``rho = 0``.
* For ``rho > 0`` any loss that averages squared or absolute residuals prefers shrunken
  predictions (``a < 1``); the U reached at the optimum shows how much an imperfect estimate
  can recover at best.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/diagnose_losses.py > docs/results/diagnose_losses.md
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from drdm.diffusion import ForwardDiffusion
from drdm.io import read_volume
from drdm.losses import drdm_loss, unrecovered_fraction

IMAGE = Path(__file__).resolve().parents[2] / "shared/data/samples/mnms_OpenDataset_162867.nii.gz"
SCALES = [i / 20 for i in range(0, 25)]


def smooth_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A smooth random field of the shape of ``like`` (correlation ~1/8 of the image)."""
    b, nd, *size = like.shape
    coarse = torch.randn(b, nd, *[8] * nd, generator=generator)
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def main() -> None:
    torch.set_num_threads(1)
    size = 64
    array = torch.as_tensor(read_volume(IMAGE).array, dtype=torch.float32)[None, None]
    image = F.interpolate(array, size=(size, size), mode="area")
    process = ForwardDiffusion()
    gen = torch.Generator().manual_seed(0)
    print(
        f"Eq. 14 on hand-made predictions psi_hat = -a (psi_t + n), E|n| = rho E|psi_t|; "
        f"M&Ms slice at {size}x{size}, 16 draws per band; {platform.machine()}, torch "
        f"{torch.__version__}, 1 thread, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}\n"
    )
    print("| t | mean abs psi_t (voxels) | rho | loss | best a | U at best a |")
    print("|---|---|---|---|---|---|")
    for lo, hi in [(1, 20), (21, 40), (41, 60), (61, 80)]:
        t = torch.randint(lo, hi + 1, (16,), generator=gen)
        psi = process.sample(image.expand(16, -1, -1, -1), t, generator=gen, perturb=True).step
        mag = psi.norm(dim=1).mean()
        noise = smooth_noise(psi, gen)
        noise = noise * (mag / noise.norm(dim=1).mean())
        for rho in (0.0, 0.5, 1.0):
            for name, kwargs in (
                ("Eq. 14, lambda_reg 0.15", {"lambda_reg": 0.15}),
                ("Eq. 14, lambda_reg 10", {"lambda_reg": 10.0}),
                ("distance term only", {"lambda_angle": 0.0, "lambda_reg": 0.0}),
            ):
                scores = []
                for a in SCALES:
                    psi_hat = -a * (psi + rho * noise)
                    scores.append(float(drdm_loss(psi, psi_hat, **kwargs).total))
                best = SCALES[min(range(len(SCALES)), key=scores.__getitem__)]
                u = float(unrecovered_fraction(psi, -best * (psi + rho * noise)))
                print(f"| {lo}-{hi} | {mag:.3f} | {rho} | {name} | {best:.2f} | {u:.3f} |")


if __name__ == "__main__":
    main()
