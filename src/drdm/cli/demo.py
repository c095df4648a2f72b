"""``drdm demo``: the most complete thing the package does, on built-in phantoms.

1. A 2D cardiac phantom with its ACDC label map and a 3D thorax phantom with its labels are
   written as NIfTI into ``OUT/input/``, the way a user's scans would be given.
2. With a trained model (the packaged ``default`` when installed, or ``--model DIR``):
   :func:`drdm.batch.augment_files` on the 2D phantom at the model's default levels x 2 samples
   (``OUT/augment/``) and :func:`drdm.batch.synthesize_files` registration triples
   (``OUT/synth/``): images, labels, fields, manifests, overview figures. Without one, a
   message says so and only step 3 runs.
3. :func:`drdm.batch.diffuse_file`, the random forward process (no model), on the phantoms
   and on a short-axis stack of 2D phantoms (10 mm slices, deformed slice by slice) at several
   timesteps, with images, label maps, fields (mm) and figures.

Every file goes through the same reader and writer as ``drdm augment``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import InputError
from . import _defaults as D
from ._options import add_device_argument, add_seed_argument, output_path

TIMESTEPS_2D = (10, 30, 55, 80)
TIMESTEPS_3D = (30, 80)
TIMESTEPS_STACK = (30, 80)
#: slices and slice thickness (mm; at least 4 x the in-plane spacing) of the short-axis stack
STACK_SLICES, STACK_THICKNESS = 4, 10.0
#: synth level pairs (T'_aug, T'_syn) as fractions of the model's T ((30, 20), (0, 40) for T = 80)
PAIR_FRACTIONS = ((30 / 80, 20 / 80), (0.0, 40 / 80))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the package on built-in phantoms and write images, labels, fields, figures",
        description="Write a built-in 2D cardiac phantom and a 3D thorax phantom with labels "
        "as NIfTI into OUT/input/, augment the 2D phantom with the packaged default model "
        "(as drdm augment: OUT/augment/), synthesise registration pairs (as drdm synth: "
        "OUT/synth/) and augment the 3D phantom with the packaged 3D model (OUT/augment_3d/); "
        "then deform the phantoms with the random forward process (as drdm diffuse). Without "
        "an installed model only the forward process runs.",
    )
    p.add_argument("--out", type=output_path, default=Path("drdm-demo"), help="output directory")
    add_seed_argument(p)
    p.add_argument(
        "--size-2d", type=int, default=D.SIZE_2D, help="2D phantom size (default %(default)s)"
    )
    p.add_argument(
        "--size-3d", type=int, default=D.SIZE_3D, help="3D phantom size (default %(default)s)"
    )
    p.add_argument(
        "--model",
        default=D.MODEL,
        help="'default' (the packaged 2D model, if installed) or a 2D checkpoint folder",
    )
    p.add_argument(
        "--model-3d",
        default="default-3d",
        help="'default-3d' (the packaged 3D model, if installed) or a 3D checkpoint folder",
    )
    add_device_argument(p)
    p.set_defaults(run=run)


def _write_phantom(folder: Path, name: str, phantom: object) -> tuple[Path, Path]:
    """Write a phantom's image and label map (uint8) with its spacing; return both paths."""
    import numpy as np

    from ..io import MedicalImage, write_image

    image = np.asarray(phantom.image.numpy(), dtype=np.float32)  # type: ignore[attr-defined]
    label = np.asarray(phantom.label.numpy(), dtype=np.uint8)  # type: ignore[attr-defined]
    affine = np.eye(4)
    for axis, size in enumerate(phantom.spacing):  # type: ignore[attr-defined]
        affine[axis, axis] = float(size)
    like = MedicalImage(image, affine)
    paths = folder / f"{name}.nii.gz", folder / f"{name}_gt.nii.gz"
    write_image(paths[0], image, like)
    write_image(paths[1], label, like.with_array(label), kind="label")
    return paths


def _stack_phantom(size: int, seed: int) -> SimpleNamespace:
    """A short-axis stack: ``STACK_SLICES`` 2D cardiac phantoms, ``STACK_THICKNESS`` mm (at
    least 4 x the in-plane spacing) apart."""
    import torch

    from ..data.phantoms import cardiac_phantom_2d

    slices = [cardiac_phantom_2d(size, generator=seed + k) for k in range(STACK_SLICES)]
    return SimpleNamespace(
        image=torch.stack([p.image for p in slices], -1),
        label=torch.stack([p.label for p in slices], -1),
        spacing=(*slices[0].spacing, max(STACK_THICKNESS, 4.0 * max(slices[0].spacing))),
    )


def _level_pairs(num_steps: int) -> list[tuple[int, int]]:
    """The synth level pairs for a model with ``num_steps`` steps."""
    pairs = [(round(a * num_steps), max(1, round(s * num_steps))) for a, s in PAIR_FRACTIONS]
    return list(dict.fromkeys(pairs))


def _options(args: argparse.Namespace, part: str, image: Path, label: Path, model: str) -> Any:
    """The batch options of one demo part written to ``OUT/part``."""
    from ..batch import BatchOptions

    return BatchOptions(
        out=args.out / part,
        image=image,
        labels=(label,),
        model=str(model),
        seed=args.seed,
        device=args.device,
        progress=False,
    )


def _with_model(args: argparse.Namespace, image: Path, label: Path) -> bool:
    """Augment and synthesise on the written phantom; False without a model."""
    from ..batch import augment_files, synthesize_files
    from ..model import DRDM
    from ..pretrained import is_available

    if args.model == "default" and not is_available("default"):
        print(
            "drdm demo: the packaged default model is not installed in this version of drdm "
            "(drdm/pretrained/default/ has no weights yet), so 'drdm augment' and 'drdm synth' "
            "are skipped and only the random forward process is shown. Pass --model DIR with a "
            "trained 2D checkpoint (e.g. from 'drdm train' or 'drdm import-official')."
        )
        return False
    model = DRDM.from_pretrained(args.model)
    if model.ndim != 2:
        raise InputError(f"--model {args.model}: the demo needs a 2D model, got {model.ndim}D")
    report = augment_files(_options(args, "augment", image, label, args.model), per_level=2)
    print(report.summary())
    pairs = _level_pairs(model.num_steps)
    report = synthesize_files(_options(args, "synth", image, label, args.model), pairs)
    print(report.summary())
    return True


def _with_model_3d(args: argparse.Namespace, image: Path, label: Path) -> bool:
    """Augment the 3D phantom with the 3D model (one sample per default level); False
    without one."""
    from ..batch import augment_files
    from ..model import DRDM
    from ..pretrained import is_available

    if args.model_3d == "default-3d" and not is_available("default-3d"):
        print("drdm demo: no packaged 3D model installed; the 3D augmentation is skipped.")
        return False
    model = DRDM.from_pretrained(args.model_3d)
    if model.ndim != 3:
        raise InputError(f"--model-3d {args.model_3d}: needs a 3D model, got {model.ndim}D")
    options = _options(args, "augment_3d", image, label, args.model_3d)
    print(augment_files(options, per_level=1).summary())
    return True


def _forward(
    args: argparse.Namespace,
    name: str,
    image: Path,
    label: Path,
    timesteps: tuple[int, ...],
    ndim: int | str,
    figure: str,
) -> None:
    """The forward process at ``timesteps`` on one phantom, and one figure for all."""
    from ..batch import diffuse_file
    from ..viz import deformation_figure

    deformed, fields, titles, original, axis = [], [], [], None, None
    for t in timesteps:
        report = diffuse_file(
            image,
            t,
            args.out,
            seed=args.seed,
            label=label,
            ndim=ndim,
            device=args.device,
            progress=False,
            figure=False,
            prefix=f"{name}_t{t}",
        )
        record = report.samples[0]
        original, axis = report.original, report.slice_axis
        deformed.append(record.deformed)
        fields.append(record.field)
        titles.append(f"t = {t}")
        m = record.metrics
        print(
            f"  {name} t={t:2d}: max |u| {m['max_disp_pct']:5.2f} %  mean |u| "
            f"{m['mean_disp_pct']:5.2f} %  folds {m['fold_pct']:.3f} %"
        )
    deformation_figure(
        args.out / figure,
        [original] * len(timesteps),
        deformed,
        fields,
        titles,
        slice_axis=axis or 0,
    )


def run(args: argparse.Namespace) -> None:
    from ..data.phantoms import cardiac_phantom_2d, thorax_phantom_3d
    from ..io import check_output_folder

    if args.size_2d < 16 or args.size_3d < 16:
        raise InputError("--size-2d and --size-3d must be at least 16")
    check_output_folder(args.out, "--out")
    start = time.perf_counter()
    print(f"drdm demo: built-in phantoms -> {args.out}/")
    image2, label2 = _write_phantom(
        args.out / "input", "cardiac", cardiac_phantom_2d(args.size_2d, generator=args.seed)
    )
    image3, label3 = _write_phantom(
        args.out / "input", "thorax", thorax_phantom_3d(args.size_3d, generator=args.seed)
    )
    image_s, label_s = _write_phantom(
        args.out / "input", "stack", _stack_phantom(args.size_2d, args.seed)
    )
    print(
        f"input: {image2} with labels {label2} (0 bg, 1 RV, 2 myocardium, 3 LV), the "
        f"short-axis stack {image_s} and {image3}"
    )
    used_model = _with_model(args, image2, label2)
    used_model_3d = _with_model_3d(args, image3, label3)
    print("forward process (random deformations, no model):")
    _forward(args, "cardiac2d", image2, label2, TIMESTEPS_2D, 2, "forward_2d.png")
    _forward(args, "thorax3d", image3, label3, TIMESTEPS_3D, 3, "forward_3d.png")
    # a stack of thick slices: deformed slice by slice, as drdm diffuse does by default
    _forward(args, "stack", image_s, label_s, TIMESTEPS_STACK, "auto", "forward_stack.png")
    model_part = "augment/ and synth/ (overview.png each), " if used_model else ""
    model_part += "augment_3d/, " if used_model_3d else ""
    print(
        f"wrote {args.out}/: {model_part}forward_2d.png, forward_3d.png, forward_stack.png "
        "and NIfTI images, "
        f"labels and fields ({time.perf_counter() - start:.1f} s)"
    )
