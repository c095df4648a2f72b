"""``drdm generate``: deform an image with a trained DRDM model (Algorithm 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _defaults as D
from ._options import (
    add_ddf_format_argument,
    add_device_argument,
    add_frame_argument,
    add_label_argument,
    add_model_argument,
    add_quiet_argument,
    add_sampler_arguments,
    add_seed_argument,
    add_slice_axis_argument,
    output_path,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate plausible deformations of an image with a trained DRDM model",
        description="Generate N deformations of a 2D or 3D image (NIfTI, .mha/.mhd, .nrrd or "
        "a DICOM folder) with a trained DRDM model (paper Algorithm 2) at deformation level "
        "T'. Writes into OUT the deformed images and the label map if given (the input's "
        "format, grid and label type), the displacement fields (NIfTI in mm that SimpleITK "
        "applies as a DisplacementFieldTransform, or .npy voxels) and a PNG figure. A 2D model "
        "deforms a 3D volume slice by slice.",
    )
    p.add_argument("image", type=Path, help="input image (2D or 3D)")
    p.add_argument(
        "--level", type=int, required=True, help="deformation level T' in 1..T (e.g. 55)"
    )
    p.add_argument(
        "--n", type=int, default=D.N, help="number of deformations (default %(default)s)"
    )
    p.add_argument("--out", type=output_path, required=True, help="output directory")
    add_model_argument(p)
    add_seed_argument(p)
    add_label_argument(p)
    add_frame_argument(p)
    p.add_argument(
        "--normalize",
        action="store_true",
        help="min-max rescale the image to [0, 1] for the network (outputs keep intensities)",
    )
    add_slice_axis_argument(p, "for a 2D model on a 3D volume")
    add_ddf_format_argument(p)
    add_sampler_arguments(p)
    add_device_argument(p)
    add_quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import generate_file

    report = generate_file(
        args.image,
        args.level,
        args.out,
        n=args.n,
        model=args.model,
        seed=args.seed,
        label=args.label,
        frame=args.frame,
        normalize=args.normalize,
        slice_axis=args.slice_axis,
        ddf_format=args.ddf_format,
        device=args.device,
        progress=not args.quiet,
        stride=args.stride,
        engine=args.engine,
    )
    print(
        f"{args.n} deformation(s) of {args.image} at T'={args.level} -> {args.out}/ "
        f"(model {args.model!r}, seed {args.seed})"
    )
    print("\n".join(report.lines()))
    return 0
