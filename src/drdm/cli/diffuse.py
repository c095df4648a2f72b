"""``drdm diffuse``: deform an image by the forward process at one timestep."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device
from ..diffusion import ForwardDiffusion, ForwardDiffusionConfig
from ..errors import InputError
from ..io import file_stem, read_volume, write_ddf, write_volume
from ..spatial import fold_ratio, magnitude_stats
from ..viz import deformation_figure


def add_parser(sub: argparse._SubParsersAction) -> None:
    defaults = ForwardDiffusionConfig()
    p = sub.add_parser(
        "diffuse",
        help="randomly deform a NIfTI image by the forward process at timestep t",
        description="Deform a 2D or 3D NIfTI image by the forward deformation-diffusion "
        "process at timestep t. Writes the deformed image, the displacement field (voxels) and "
        "a PNG figure into OUT.",
    )
    p.add_argument("image", type=Path, help="input image (.nii or .nii.gz, 2D or 3D)")
    p.add_argument("--t", type=int, required=True, help=f"timestep, 1..{defaults.num_steps}")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    defaults = ForwardDiffusionConfig()
    if not 1 <= args.t <= defaults.num_steps:
        raise InputError(f"--t {args.t}: must lie in 1..{defaults.num_steps}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out}: exists and is not a directory")
    device = resolve_device(args.device)
    volume = read_volume(args.image)
    process = ForwardDiffusion(dataclasses.replace(defaults, ndim=volume.ndim))
    image = torch.as_tensor(volume.array, dtype=torch.float32, device=device)[None, None]
    generator = torch.Generator().manual_seed(args.seed)
    result = process.sample(image, args.t, generator=generator)
    deformed = result.images[0, 0].cpu().numpy()
    ddf = result.cumulative[0].cpu().numpy()
    stats = magnitude_stats(result.cumulative)
    folds = float(fold_ratio(result.cumulative)[0]) * 100

    stem = file_stem(args.image)
    prefix = args.out / f"{stem}_t{args.t}_seed{args.seed}"
    write_volume(f"{prefix}_image.nii.gz", deformed.astype(np.float32), volume.affine)
    write_ddf(f"{prefix}_ddf.nii.gz", ddf, volume.affine)
    deformation_figure(f"{prefix}.png", [volume.array], [deformed], [ddf], titles=[f"t = {args.t}"])
    print(
        f"{prefix}_image.nii.gz, {prefix.name}_ddf.nii.gz, {prefix.name}.png: "
        f"max |u| {float(stats.max_percent[0]):.2f} %, mean |u| "
        f"{float(stats.mean_percent[0]):.2f} % of the image size, folds {folds:.3f} %"
    )
