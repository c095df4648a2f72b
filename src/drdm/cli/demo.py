"""``drdm demo``: the most complete thing the package does, on built-in phantoms.

Currently: the forward deformation-diffusion process on a 2D cardiac phantom at several
timesteps and on a 3D thorax phantom, with images, label maps, fields and figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ..data.phantoms import cardiac_phantom_2d, thorax_phantom_3d
from ..device import resolve_device
from ..diffusion import ForwardDiffusion, ForwardDiffusionConfig
from ..errors import InputError
from ..io import write_ddf, write_volume
from ..spatial import fold_ratio, magnitude_stats, warp_labels
from ..viz import deformation_figure

TIMESTEPS_2D = (10, 30, 55, 80)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the package on built-in phantoms and write images, labels, fields, figures",
        description="Deform a built-in 2D cardiac phantom and a 3D thorax phantom with the "
        "forward deformation-diffusion process; write NIfTI images, label maps and "
        "displacement fields and PNG figures into OUT.",
    )
    p.add_argument("--out", type=Path, default=Path("drdm-demo"), help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size-2d", type=int, default=256, help="2D phantom size (default 256)")
    p.add_argument("--size-3d", type=int, default=64, help="3D phantom size (default 64)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.set_defaults(run=run)


def _affine(spacing: tuple[float, ...]) -> np.ndarray:
    affine = np.eye(4)
    for i, s in enumerate(spacing):
        affine[i, i] = s
    return affine


def _deform_and_write(
    out: Path,
    name: str,
    process: ForwardDiffusion,
    image: torch.Tensor,
    label: torch.Tensor,
    timesteps: tuple[int, ...],
    affine: np.ndarray,
    generator: torch.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    batch = len(timesteps)
    images = image[None, None].expand(batch, 1, *image.shape)
    labels = label[None, None].expand(batch, 1, *label.shape)
    result = process.sample(images, torch.tensor(timesteps), generator=generator)
    warped_labels = warp_labels(labels, result.cumulative)
    stats = magnitude_stats(result.cumulative)
    folds = fold_ratio(result.cumulative) * 100
    write_volume(out / f"{name}_image.nii.gz", image.cpu().numpy(), affine)
    write_volume(out / f"{name}_label.nii.gz", label.cpu().numpy().astype(np.int16), affine)
    deformed, ddfs, titles = [], [], []
    for i, t in enumerate(timesteps):
        prefix = out / f"{name}_t{t}"
        img = result.images[i, 0].cpu().numpy()
        ddf = result.cumulative[i].cpu().numpy()
        write_volume(f"{prefix}_image.nii.gz", img, affine)
        write_volume(
            f"{prefix}_label.nii.gz", warped_labels[i, 0].cpu().numpy().astype(np.int16), affine
        )
        write_ddf(f"{prefix}_ddf.nii.gz", ddf, affine)
        deformed.append(img)
        ddfs.append(ddf)
        titles.append(f"t = {t}")
        print(
            f"  {name} t={t:2d}: max |u| {float(stats.max_percent[i]):5.2f} %  mean |u| "
            f"{float(stats.mean_percent[i]):5.2f} %  folds {float(folds[i]):.3f} %"
        )
    return deformed, ddfs, titles


def run(args: argparse.Namespace) -> None:
    if args.size_2d < 16 or args.size_3d < 16:
        raise InputError("--size-2d and --size-3d must be at least 16")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out}: exists and is not a directory")
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    print(f"drdm demo: forward deformation diffusion on built-in phantoms -> {args.out}/")

    phantom = cardiac_phantom_2d(args.size_2d, generator=args.seed)
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=2))
    image, label = phantom.image.to(device), phantom.label.to(device)
    deformed, ddfs, titles = _deform_and_write(
        args.out,
        "cardiac2d",
        process,
        image,
        label,
        TIMESTEPS_2D,
        _affine(phantom.spacing),
        generator,
    )
    n = len(TIMESTEPS_2D)
    original = phantom.image.numpy()
    deformation_figure(args.out / "forward_2d.png", [original] * n, deformed, ddfs, titles)

    thorax = thorax_phantom_3d(args.size_3d, generator=args.seed)
    process3 = ForwardDiffusion(ForwardDiffusionConfig(ndim=3))
    image3, label3 = thorax.image.to(device), thorax.label.to(device)
    deformed3, ddfs3, titles3 = _deform_and_write(
        args.out, "thorax3d", process3, image3, label3, (30, 80), _affine(thorax.spacing), generator
    )
    original3 = thorax.image.numpy()
    deformation_figure(args.out / "forward_3d.png", [original3] * 2, deformed3, ddfs3, titles3)
    print(
        f"wrote {args.out}/forward_2d.png, forward_3d.png and NIfTI images, labels and "
        f"fields ({time.perf_counter() - start:.1f} s)"
    )
