"""Did the network learn to recover deformations? Eq. 14 terms on held-out forward draws.

For a DRDM checkpoint, draws forward-process samples ``(I_t, psi_t)`` of one image with the
model's own forward process (its training distribution, 5 % perturbation included) and
reports, per band of timesteps, the network's distance and angle terms of Eq. 14 beside those
of the zero field (the trivial solution: distance 1, angle 0). A network that recovers the
step has distance < 1 and angle < 0 (-1 is a perfect inverse). Also the unrecovered fraction
``U = E|r| / E|psi_t|`` with ``r = compose(psi_hat, psi_t)`` (``r[x] = psi_t[x + psi_hat[x]] +
psi_hat[x]``; the zero field gives 1, a perfect inverse 0) and the mean per-voxel cosine
between ``psi_t`` and ``-psi_hat`` (1: every voxel's recovery points straight back).

The images are the real M&Ms sample when ``../shared`` is present (``--image``; 2D models), or
with ``--phantoms N`` N built-in phantoms of a seed that no training config uses (held-out:
cardiac slices for 2D models, thorax volumes for 3D models).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/recovery_eval.py --model default
    OMP_WAIT_POLICY=PASSIVE python benchmarks/recovery_eval.py --model default --phantoms 16
    OMP_WAIT_POLICY=PASSIVE python benchmarks/recovery_eval.py --model default-3d --phantoms 8
    OMP_WAIT_POLICY=PASSIVE python benchmarks/recovery_eval.py --model /tmp/official

``--teacher PTH_OR_DIR`` evaluates, instead of the model's network, a teacher converted to the
model's forward process as distillation uses it (:mod:`drdm.training.distill`: the teacher at
``--teacher-size`` on the same deformation, its timestep matched by magnitude, its output
scaled by the least-squares factor fitted on separate draws of the same images): how much of
our steps the teacher could recover, an upper reference for a distilled student.

    python benchmarks/recovery_eval.py --model default \
        --teacher ../shared/data/official_drdm/cmr_recresacnet_000000.pth
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from drdm import DRDM
from drdm.data.phantoms import cardiac_phantom_2d, thorax_phantom_3d
from drdm.io import read_volume
from drdm.losses import drdm_loss, unrecovered_fraction
from drdm.training.distill import TeacherTargets, downsample, load_teacher

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/data/samples/mnms_OpenDataset_162867.nii.gz"
)
HELD_OUT_SEED = 1000  # training configs use phantom seed 0


def evaluate(
    model: DRDM,
    image: torch.Tensor,
    bands: list[tuple[int, int]],
    draws: int,
    batch: int,
    seed: int,
    teacher: TeacherTargets | None = None,
    image_hi: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """Mean Eq. 14 terms per timestep band; ``image``: ``(N, 1, *spatial)`` on the model grid
    (draw ``k`` takes images ``k * batch ...`` cyclically). With ``teacher``, its converted
    prediction (from ``image_hi``, the same images at its size) replaces the network's."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for lo, hi in bands:
        sums = torch.zeros(7, dtype=torch.float64)
        for k in range(draws):
            t = torch.randint(lo, hi + 1, (batch,), generator=generator)
            pick = (torch.arange(batch) + k * batch) % image.shape[0]
            with torch.inference_mode():
                if teacher is None:  # the public one-step API (same draws as below)
                    out = model.recovery_step(image[pick], t, generator=generator, perturb=True)
                    step, psi_hat = out.step, out.estimate
                else:
                    fwd = model.process.sample(image[pick], t, generator=generator, perturb=True)
                    step, psi_hat = fwd.step, teacher(image_hi[pick], fwd.cumulative, t)
                ours = drdm_loss(step, psi_hat)
                zero = drdm_loss(step, torch.zeros_like(psi_hat))
                unrecovered = unrecovered_fraction(step, psi_hat)
                cosine = F.cosine_similarity(step, -psi_hat, dim=1, eps=1e-8).mean()
            sums += torch.tensor(
                [
                    ours.distance.item(),
                    ours.angle.item(),
                    ours.regularisation.item(),
                    zero.distance.item(),
                    zero.angle.item(),
                    unrecovered.item(),
                    cosine.item(),
                ],
                dtype=torch.float64,
            )
        mean = (sums / draws).tolist()
        keys = (
            "distance",
            "angle",
            "regularisation",
            "zero_distance",
            "zero_angle",
            "unrecovered",
            "cosine",
        )
        rows.append({"lo": lo, "hi": hi, **dict(zip(keys, mean, strict=True))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="packaged name or checkpoint dir")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="2D NIfTI image")
    parser.add_argument(
        "--phantoms", type=int, default=0, help="use N held-out built-in phantoms instead"
    )
    parser.add_argument("--draws", type=int, default=4, help="batches per band")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--teacher", type=Path, default=None, help="evaluate this teacher")
    parser.add_argument("--teacher-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = DRDM.from_pretrained(args.model)
    size = tuple(model.image_size)
    mode = "bilinear" if len(size) == 2 else "trilinear"
    image_hi = None
    if args.phantoms > 0 or len(size) == 3 or not args.image.is_file():
        count = max(1, args.phantoms)
        make = cardiac_phantom_2d if len(size) == 2 else thorax_phantom_3d
        gen = torch.Generator().manual_seed(HELD_OUT_SEED)
        image = torch.stack([make(size, gen).image.float()[None] for _ in range(count)])
        source = f"{count} held-out built-in phantoms (seed {HELD_OUT_SEED})"
    else:
        array = read_volume(args.image).array
        source = args.image.name
        image = torch.as_tensor(array, dtype=torch.float32)[None, None]
        if args.teacher is not None:
            teacher_size = (args.teacher_size,) * len(size)
            image_hi = F.interpolate(image, size=teacher_size, mode=mode, align_corners=False)
            image = downsample(image_hi, size)  # the student's input, as in training
        else:
            image = F.interpolate(image, size=size, mode=mode, align_corners=False)
    teacher = None
    if args.teacher is not None:
        if args.phantoms > 0 or not args.image.is_file():
            raise SystemExit("--teacher needs the real image (--image), not phantoms")
        teacher = TeacherTargets(
            load_teacher(args.teacher, torch.device("cpu")), model.process, size, teacher_size
        )
        cal_gen = torch.Generator().manual_seed(args.seed + 1)  # not the evaluation draws
        teacher.calibrate(
            lambda n: (image_hi.expand(n, -1, -1, -1), image.expand(n, -1, -1, -1)),
            cal_gen,
            torch.device("cpu"),
        )
        source += f"; TEACHER {args.teacher.name} converted to the model's process"
    t_max = model.num_steps
    edges = [1, t_max // 4, t_max // 2, 3 * t_max // 4, t_max]
    bands = [(edges[0], edges[1])] + [(edges[i] + 1, edges[i + 1]) for i in range(1, 4)]
    print(
        f"model {args.model!r} (preset {model.preset!r}, grid {size}, T = {t_max}); image "
        f"{source}; {args.draws} x {args.batch} draws per band, seed {args.seed}; "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print(
        "\n| t | U (unrecovered) | cosine | distance | angle | regularisation "
        "| zero field: distance | angle |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = evaluate(model, image, bands, args.draws, args.batch, args.seed, teacher, image_hi)
    for row in rows:
        print(
            f"| {row['lo']}-{row['hi']} | {row['unrecovered']:.3f} | {row['cosine']:.3f} "
            f"| {row['distance']:.3f} | {row['angle']:.3f} "
            f"| {row['regularisation']:.4f} | {row['zero_distance']:.3f} "
            f"| {row['zero_angle']:.3f} |"
        )


if __name__ == "__main__":
    main()
