"""``drdm diffuse``: deform an image by the forward process at one timestep."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _defaults as D
from ._options import (
    add_ddf_format_argument,
    add_device_argument,
    add_frame_argument,
    add_label_argument,
    add_quiet_argument,
    add_seed_argument,
    add_slice_axis_argument,
    output_path,
)


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
    p.add_argument("--t", type=int, required=True, help=f"timestep, 1..T (T = {D.NUM_STEPS})")
    p.add_argument("--out", type=output_path, required=True, help="output directory")
    add_seed_argument(p)
    add_label_argument(p)
    add_frame_argument(p)
    p.add_argument(
        "--ndim",
        default=D.DIFFUSE_NDIM,
        choices=("auto", "2", "3"),
        help="2: slice by slice (zero through-plane motion); 3: the whole volume; auto "
        "(default): 2 for 2D images and stacks of thick slices, else 3",
    )
    add_slice_axis_argument(p, "for --ndim 2 on a 3D volume")
    add_ddf_format_argument(p)
    add_device_argument(p)
    add_quiet_argument(p)
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
