"""``drdm diffuse``: deform an image by the forward process at one timestep."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import add_device_argument
from .augment import output_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diffuse",
        help="randomly deform an image by the forward process at timestep t",
        description="Deform a 2D or 3D image (NIfTI, .mha/.mhd, .nrrd or a DICOM folder) by "
        "the forward deformation-diffusion process at timestep t (no model). Writes into OUT "
        "the deformed image and label map if given (the input's format, grid and label type), "
        "the displacement field (NIfTI in mm, or .npy voxels) and a PNG figure. A stack of "
        "thick slices (largest spacing > 1.5 x the second) is deformed slice by slice.",
    )
    p.add_argument("image", type=Path, help="input image (2D or 3D)")
    p.add_argument("--t", type=int, required=True, help="timestep, 1..T (T = 80)")
    p.add_argument("--out", type=output_path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed, any integer (default 0)")
    p.add_argument("--label", type=Path, help="label map on the image's grid, deformed alike")
    p.add_argument("--frame", type=int, help="frame (0-based) of a 4D time series input")
    p.add_argument(
        "--ndim",
        default="auto",
        choices=("auto", "2", "3"),
        help="2: slice by slice (zero through-plane motion); 3: the whole volume; auto "
        "(default): 2 for 2D images and stacks of thick slices, else 3",
    )
    p.add_argument(
        "--slice-axis",
        default="auto",
        help="for --ndim 2 on a 3D volume: the axis to slice along, 0, 1, 2 or auto (default)",
    )
    p.add_argument(
        "--ddf-format",
        choices=("nifti", "npy"),
        default="nifti",
        help="nifti (default): displacement in mm; npy: (ndim, *spatial) float32 voxels",
    )
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import diffuse_file

    report = diffuse_file(
        args.image,
        args.t,
        args.out,
        seed=args.seed,
        label=args.label,
        frame=args.frame,
        ndim=args.ndim if args.ndim == "auto" else int(args.ndim),
        slice_axis=args.slice_axis,
        ddf_format=args.ddf_format,
        device=args.device,
        progress=not args.quiet,
    )
    how = "" if report.slice_axis is None else f", slice by slice along axis {report.slice_axis}"
    print(f"{args.image} at t = {args.t} -> {args.out}/ (seed {args.seed}{how})")
    print("\n".join(report.lines()))
    return 0
