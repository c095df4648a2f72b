"""``drdm generate``: deform an image with a trained DRDM model (Algorithm 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate plausible deformations of a NIfTI image with a trained DRDM model",
        description="Generate N deformations of a 2D or 3D NIfTI image with a trained DRDM "
        "model (paper Algorithm 2) at deformation level T'. Writes the deformed images, the "
        "displacement fields (voxels, pull-back: deformed(x) = image(x + u(x))), the deformed "
        "label map if given, and a PNG figure into OUT; NIfTI files keep the input's affine.",
    )
    p.add_argument("image", type=Path, help="input image (.nii or .nii.gz, 2D or 3D)")
    p.add_argument(
        "--level", type=int, required=True, help="deformation level T' in 1..T (e.g. 55)"
    )
    p.add_argument("--n", type=int, default=1, help="number of deformations (default 1)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--model",
        default="default",
        help="'default', 'default-3d' or a checkpoint directory (default 'default')",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--label", type=Path, help="label map on the image's grid, deformed alike")
    p.add_argument(
        "--normalize",
        action="store_true",
        help="min-max rescale the image to [0, 1] for the network (outputs keep intensities)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..device import resolve_device
    from ..io import file_stem, read_volume, write_ddf, write_volume
    from ..pipeline import DRDM
    from ..spatial import fold_ratio, magnitude_stats, warp_labels
    from ..viz import deformation_figure

    # ---- validate everything before computing or writing anything
    if args.n < 1:
        raise InputError(f"--n {args.n}: must be >= 1")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a directory")
    device = resolve_device(args.device)
    volume = read_volume(args.image)
    label = None
    if args.label is not None:
        label = read_volume(args.label)
        if label.array.shape != volume.array.shape:
            raise InputError(
                f"--label {args.label}: shape {label.array.shape} differs from the image's "
                f"{volume.array.shape}"
            )
        if not np.array_equal(label.array, np.round(label.array)):
            raise InputError(f"--label {args.label}: label values must be integers")
    model = DRDM.from_pretrained(args.model, device=device)
    if volume.ndim != model.ndim:
        raise InputError(
            f"{args.image}: image is {volume.ndim}D, model {args.model!r} is {model.ndim}D"
        )
    if model.in_channels != 1:
        raise InputError(
            f"--model {args.model}: the network takes {model.in_channels} channels, "
            "a NIfTI image gives 1"
        )
    if not 1 <= args.level <= model.num_steps:
        raise InputError(
            f"--level {args.level}: must lie in 1..{model.num_steps} for model {args.model!r}"
        )

    # ---- generate
    image = torch.as_tensor(volume.array, dtype=torch.float32)[None, None]
    generator = torch.Generator().manual_seed(args.seed)
    out = model.generate(
        image,
        args.level,
        num_samples=args.n,
        generator=generator,
        progress=not args.quiet,
        normalize=args.normalize,
    )
    deformed = out.images[:, 0].cpu().numpy()
    ddfs = out.ddf.cpu().numpy()
    labels = None
    if label is not None:
        lab = torch.as_tensor(np.round(label.array).astype(np.int64), device=out.ddf.device)
        lab = lab[None, None].expand(args.n, 1, *lab.shape)
        labels = warp_labels(lab, out.ddf).cpu().numpy()[:, 0]
    stats = magnitude_stats(out.ddf)
    folds = fold_ratio(out.ddf) * 100

    # ---- write
    prefix = args.out / f"{file_stem(args.image)}_T{args.level}_seed{args.seed}"
    width = len(str(args.n - 1))
    for k in range(args.n):
        name = f"{prefix}_{k:0{width}d}"
        write_volume(f"{name}_image.nii.gz", deformed[k].astype(np.float32), volume.affine)
        write_ddf(f"{name}_ddf.nii.gz", ddfs[k], volume.affine)
        if labels is not None:
            dtype = np.int16 if np.abs(labels[k]).max(initial=0) < 2**15 else np.int32
            write_volume(f"{name}_label.nii.gz", labels[k].astype(dtype), volume.affine)
    rows = min(args.n, 8)
    deformation_figure(
        f"{prefix}.png",
        [volume.array] * rows,
        list(deformed[:rows]),
        list(ddfs[:rows]),
        titles=[f"T'={args.level} #{k}" for k in range(rows)],
    )
    print(
        f"{args.n} deformation(s) of {args.image} at T'={args.level} -> {args.out}/ "
        f"(model {args.model!r}, preset {model.preset!r}, seed {args.seed})"
    )
    for k in range(args.n):
        print(
            f"  #{k}: max |u| {float(stats.max_percent[k]):.2f} %, mean |u| "
            f"{float(stats.mean_percent[k]):.2f} % of the image size, folds "
            f"{float(folds[k]):.3f} %"
        )
