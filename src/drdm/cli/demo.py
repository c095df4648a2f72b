"""``drdm demo``: the most complete thing the package does, on built-in phantoms.

1. A 2D cardiac phantom with its ACDC label map is written as NIfTI into ``OUT/input/``, the way
   a user's scan would be given.
2. With a trained model (the packaged ``default`` when installed, or ``--model DIR``):
   ``drdm augment`` on it at its default levels x 2 samples (``OUT/augment/``) and ``drdm synth``
   registration triples (``OUT/synth/``): images, labels, fields, manifests, overview figures.
   Without one, a message says so and only step 3 runs.
3. The random forward deformation-diffusion process (no model) on the 2D phantom at several
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
from ..pretrained import is_available
from ..spatial import fold_ratio, magnitude_stats, warp_labels
from ..viz import deformation_figure

TIMESTEPS_2D = (10, 30, 55, 80)
#: synth level pairs (T'_aug, T'_syn) as fractions of the model's T ((30, 20), (0, 40) for T = 80)
PAIR_FRACTIONS = ((30 / 80, 20 / 80), (0.0, 40 / 80))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the package on built-in phantoms and write images, labels, fields, figures",
        description="Write a built-in 2D cardiac phantom with labels as NIfTI into OUT/input/, "
        "augment it with the packaged default model (drdm augment: OUT/augment/) and "
        "synthesise registration pairs (drdm synth: OUT/synth/); then deform the phantom and "
        "a 3D thorax phantom with the random forward process. Without an installed model "
        "only the forward process runs.",
    )
    p.add_argument("--out", type=Path, default=Path("drdm-demo"), help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size-2d", type=int, default=256, help="2D phantom size (default 256)")
    p.add_argument("--size-3d", type=int, default=64, help="3D phantom size (default 64)")
    p.add_argument(
        "--model",
        default="default",
        help="'default' (the packaged 2D model, if installed) or a 2D checkpoint folder",
    )
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


def _level_pairs(num_steps: int) -> str:
    """``--level-pairs`` for a model with ``num_steps`` steps."""
    pairs = [(round(a * num_steps), max(1, round(s * num_steps))) for a, s in PAIR_FRACTIONS]
    return ",".join(f"{a}:{s}" for a, s in dict.fromkeys(pairs))


def _with_model(args: argparse.Namespace, image: Path, label: Path) -> bool:
    """Run ``drdm augment`` and ``drdm synth`` on the written phantom; False without a model."""
    from ..pipeline import DRDM
    from .main import build_parser

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
    pairs = _level_pairs(model.num_steps)
    common = ["--image", str(image), "--label", str(label), "--model", str(args.model)]
    common += ["--seed", str(args.seed), "--device", args.device, "--quiet"]
    parser = build_parser()
    for argv in (
        ["augment", "--per-level", "2", "--out", str(args.out / "augment")],  # default levels
        ["synth", "--level-pairs", pairs, "--per-pair", "1", "--out", str(args.out / "synth")],
    ):
        sub = parser.parse_args([*argv, *common])
        sub.run(sub)
    return True


def run(args: argparse.Namespace) -> None:
    if args.size_2d < 16 or args.size_3d < 16:
        raise InputError("--size-2d and --size-3d must be at least 16")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out}: exists and is not a directory")
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    print(f"drdm demo: built-in phantoms -> {args.out}/")

    phantom = cardiac_phantom_2d(args.size_2d, generator=args.seed)
    affine2 = _affine(phantom.spacing)
    image_path = args.out / "input" / "cardiac.nii.gz"
    label_path = args.out / "input" / "cardiac_gt.nii.gz"
    write_volume(image_path, phantom.image.numpy(), affine2)
    write_volume(label_path, phantom.label.numpy().astype(np.uint8), affine2)
    print(f"input: {image_path} with labels {label_path} (0 bg, 1 RV, 2 myocardium, 3 LV)")
    used_model = _with_model(args, image_path, label_path)

    print("forward process (random deformations, no model):")
    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=2))
    image, label = phantom.image.to(device), phantom.label.to(device)
    deformed, ddfs, titles = _deform_and_write(
        args.out, "cardiac2d", process, image, label, TIMESTEPS_2D, affine2, generator
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
    model_part = "augment/ and synth/ (overview.png each), " if used_model else ""
    print(
        f"wrote {args.out}/: {model_part}forward_2d.png, forward_3d.png and NIfTI images, "
        f"labels and fields ({time.perf_counter() - start:.1f} s)"
    )
