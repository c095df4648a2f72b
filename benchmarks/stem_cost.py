"""Cost of one 256 x 256 deformation (``DRDM.generate``, level 55) and of one training step
for the input designs of issue 17, in the same run: the packaged design (U-Net on a 64 grid,
the image resized to 64), a lossless space-to-depth stem and a learned strided stem (the image
kept at 256, the U-Net on 64), and a thin full-resolution first level (widths 4, 8 at 256 and
128, then the packaged 10, 20, 40). Random weights: the cost does not depend on them.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/stem_cost.py > docs/results/stem_cost.md
"""

from __future__ import annotations

import os
import platform
import time

import torch

from drdm import DRDM
from drdm.diffusion import ForwardDiffusion
from drdm.losses import drdm_loss
from drdm.nn import NetworkConfig, RecursiveUNet

DESIGNS = {
    "packaged (64 grid)": ({}, 64),
    "space-to-depth stem, r = 4 (256 grid)": ({"input_stride": 4}, 256),
    "strided stem, r = 4 (256 grid)": ({"input_stride": 4, "input_stem": "strided"}, 256),
    "thin full-resolution levels (256 grid)": (
        {"widths": (4, 8, 10, 20, 40), "bottleneck_width": 20},
        256,
    ),
}


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model: DRDM, image: torch.Tensor, grid: int) -> list[float]:
    """Seconds of one deformation (torch, ONNX Runtime) and of one training step."""
    cells = []
    for engine in ("torch", "onnxruntime"):
        gen = torch.Generator().manual_seed(1)
        model.generate(image, 55, generator=gen, engine=engine)  # warm-up / export
        cells.append(
            best_of(lambda e=engine, g=gen: model.generate(image, 55, generator=g, engine=e), 3)
        )
    net = model.network.train()
    batch = torch.rand(8, 1, grid, grid, generator=torch.Generator().manual_seed(2))
    t = torch.randint(1, 81, (8,), generator=torch.Generator().manual_seed(3))

    def step() -> None:
        fwd = model.process.sample(batch, t, generator=torch.Generator().manual_seed(4))
        drdm_loss(fwd.step, net(fwd.images, t), lambda_reg=0.15).total.backward()

    step()
    cells.append(best_of(step, 3))
    return cells


def main() -> None:
    torch.set_num_threads(1)
    image = torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    print(
        f"one 256x256 deformation (generate, level 55, engine torch and onnxruntime) and one "
        f"training step (batch 8, Eq. 14, forward + backward); best of 3; {platform.machine()}, "
        f"torch {torch.__version__}, 1 thread, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}\n"
    )
    print("| design | parameters | generate, torch (s) | generate, ONNX Runtime (s) | train (s) |")
    print("|---|---|---|---|---|")
    base = None
    for name, (overrides, grid) in DESIGNS.items():
        cfg = NetworkConfig(**{"widths": (10, 20, 40), "bottleneck_width": 20, **overrides})
        model = DRDM(RecursiveUNet(cfg), ForwardDiffusion(), (grid, grid))
        cells = measure(model, image, grid)
        base = base or cells
        ratios = [f"{c:.2f} ({c / b:.1f}x)" for c, b in zip(cells, base, strict=True)]
        n = sum(p.numel() for p in model.network.parameters())
        print(f"| {name} | {n} | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
