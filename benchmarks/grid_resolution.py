"""How coarse can a model grid be? Detail of forward-process fields lost on a coarser grid.

The network runs on the model grid and its field is resized to the input (``resize_ddf``), so
a coarse grid can only express deformations as fine as its own voxels. This draws the
forward process's cumulative fields ``phi_{t:1}`` on the full grid (default 128^3, the
process's own multi-scale statistics), resizes each to a coarser grid ``G`` and back, and
reports the relative error ``E|phi - up(down(phi))| / E|phi|`` and the same for the fields'
Jacobian determinants (local volume change), per level. A small error means a model on grid
``G`` can represent what the process produces on the full grid.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/grid_resolution.py [--size 128] [--grids 32 48 64]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import platform  # noqa: E402

import torch  # noqa: E402

from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig  # noqa: E402
from drdm.spatial import jacobian_det, resize_ddf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--ndim", type=int, default=3)
    parser.add_argument("--grids", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--levels", type=int, nargs="+", default=[32, 48, 70])
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=args.ndim))
    full = (args.size,) * args.ndim
    print(
        f"forward process {args.ndim}D on {args.size}^{args.ndim}, {args.draws} draws per "
        f"level, seed {args.seed}; {platform.machine()}, torch {torch.__version__}"
    )
    print("\n| level | grid | field error | Jacobian-determinant error |")
    print("|---|---|---|---|")
    g = torch.Generator().manual_seed(args.seed)
    for level in args.levels:
        phi = process.sample_fields(full, level, g, batch=args.draws).cumulative
        det = jacobian_det(phi)
        for grid in args.grids:
            back = resize_ddf(resize_ddf(phi, (grid,) * args.ndim), full)
            field_err = (back - phi).norm(dim=1).mean() / phi.norm(dim=1).mean()
            det_err = (jacobian_det(back) - det).abs().mean() / (det - 1).abs().mean()
            print(f"| {level} | {grid} | {field_err:.3f} | {det_err:.3f} |", flush=True)


if __name__ == "__main__":
    main()
