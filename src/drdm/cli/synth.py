"""``drdm synth``: registration training triples (moving, fixed, true field) from images
(paper Algorithm 4), in batches.

For every input, level pair ``T'_aug:T'_syn`` and sample it writes, under
``OUT/<input name>/``::

    A030_S020_s003_moving<ext>        I_mv = phi_aug(I0)          (+ _moving_label<ext>)
    A030_S020_s003_fixed<ext>         I_fx = (phi_syn o phi_aug)(I0), one warp of I0
                                                                  (+ _fixed_label<ext>)
    A030_S020_s003_ddf.nii.gz         phi_syn, with fixed(x) ~ moving(x + phi_syn(x))

``phi_syn`` is defined on the fixed image's grid (which is the input's grid) and tells where
each fixed voxel lies in the moving image: the displacement a registration network predicts
for the pair (moving, fixed) when it warps the moving image onto the fixed one
(:class:`drdm.deform.SynthesisResult`).  ``T'_aug = 0`` means no augmentation (``I_mv = I0``).
Batches, seeds, shards, resuming and the input options are those of ``drdm augment``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import augment

COLUMNS = [
    "moving",
    "fixed",
    "ddf",
    "moving_label",
    "fixed_label",
    "source_image",
    "source_label",
    "level_aug",
    "level_syn",
    "sample",
    "seed",
    "max_disp_pct",
    "mean_disp_pct",
    "fold_pct",
]
FILE_COLUMNS = ["moving", "fixed", "ddf", "moving_label", "fixed_label"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesise registration pairs (moving, fixed, true field) from images (Algorithm 4)",
        description="For every input image and level pair T'_aug:T'_syn, N times: the moving "
        "image I_mv = phi_aug(I0), the fixed image I_fx = (phi_syn o phi_aug)(I0) (one warp of "
        "I0) and the true field phi_syn with I_fx(x) ~ I_mv(x + phi_syn(x)) (voxels of the "
        "fixed grid, pull-back: the field a registration network predicts to warp the moving "
        "image onto the fixed one), with label maps carried along. Writes them under "
        "OUT/<input name>/ in the input's format and grid, a manifest.csv, run.json and "
        "overview.png. T'_aug = 0: no augmentation (I_mv = I0).",
    )
    augment.add_input_arguments(p)
    p.add_argument(
        "--level-pairs",
        required=True,
        help="T'_aug:T'_syn pairs, comma-separated (e.g. 30:20,45:30); T'_aug may be 0",
    )
    p.add_argument(
        "--per-pair", type=int, default=1, metavar="N", help="triples per level pair (default 1)"
    )
    augment.add_run_arguments(p)
    p.set_defaults(run=run)


def parse_level_pairs(text: str) -> list[tuple[int, int]]:
    """``"30:20,45:30"`` -> ``[(30, 20), (45, 30)]``; one-line errors for bad syntax, repeats,
    a negative ``T'_aug`` or a ``T'_syn`` below 1."""
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            aug, syn = (int(v) for v in part.split(":"))
        except ValueError:
            raise InputError(
                f"--level-pairs {text!r}: expected T'_aug:T'_syn pairs such as 30:20,45:30"
            ) from None
        if aug < 0 or syn < 1:
            raise InputError(f"--level-pairs {part}: need T'_aug >= 0 and T'_syn >= 1")
        pairs.append((aug, syn))
    if not pairs:
        raise InputError(f"--level-pairs {text!r}: expected at least one pair")
    if len(set(pairs)) != len(pairs):
        raise InputError(f"--level-pairs {text!r}: repeated pair")
    return pairs


def build_jobs(
    items: list[Any], pairs: list[tuple[int, int]], per_pair: int, seed: int
) -> list[Any]:
    """Jobs in the order inputs x level pairs x samples (:class:`drdm.jobs.Job`)."""
    from ..jobs import Job, derive_seed

    width = max(3, len(str(per_pair - 1)))
    jobs = []
    for item in items:
        suffix = augment.output_suffix(item.image)
        for aug, syn in pairs:
            for s in range(per_pair):
                prefix = f"{item.name}/A{aug:03d}_S{syn:03d}_s{s:0{width}d}"
                seed_s = derive_seed("synth", seed, item.name, f"{aug}:{syn}", s)
                jobs.append(Job(item, (aug, syn), s, seed_s, prefix, f"{prefix}_moving{suffix}"))
    return jobs


def run(args: argparse.Namespace) -> int:
    import torch

    from ..deform import synthesize_pair

    pairs = parse_level_pairs(args.level_pairs)
    if args.per_pair < 1:
        raise InputError(f"--per-pair {args.per_pair}: must be >= 1")
    levels = sorted({lv for pair in pairs for lv in pair if lv > 0})
    setup = augment.prepare(args, levels)
    settings = augment.common_settings(args, setup)
    jobs = build_jobs(setup.items, pairs, args.per_pair, args.seed)
    out: Path = args.out
    dsuffix = augment.ddf_suffix(args.ddf_format)

    def compute(job: Any, data: augment.LoadedInput) -> dict[str, Any]:
        aug, syn = job.level
        sampler_aug = setup.method.make(aug)[0] if aug > 0 else None
        sampler_syn = setup.method.make(syn)[0]
        result = synthesize_pair(
            sampler_aug,
            sampler_syn,
            data.image.array,
            [lab.array for lab in data.labels],
            torch.Generator().manual_seed(job.seed),
            slice_axis=data.slice_axis,
            spacing=data.image.spacing,
            label_method=args.label_interp,
            device=setup.device,
        )
        suffix = augment.output_suffix(job.item.image)
        count = len(data.labels)
        moving_labels = augment.label_names(job.prefix, count, suffix, stem="moving_label")
        fixed_labels = augment.label_names(job.prefix, count, suffix, stem="fixed_label")
        ddf_name = f"{job.prefix}_ddf{dsuffix}"
        fixed_name = f"{job.prefix}_fixed{suffix}"
        augment.write_field(out, ddf_name, result.ddf_syn, data.image, args.ddf_format)
        for names, arrays in ((moving_labels, result.moving_labels),
                              (fixed_labels, result.fixed_labels)):  # fmt: skip
            for name, array in zip(names, arrays, strict=True):
                augment.write_sample(out, name, array, data.image, kind="label")
        augment.write_sample(out, fixed_name, result.fixed, data.image)
        augment.write_sample(out, job.key, result.moving, data.image)
        return {
            "moving": job.key,
            "fixed": fixed_name,
            "ddf": ddf_name,
            "moving_label": ";".join(moving_labels),
            "fixed_label": ";".join(fixed_labels),
            "source_image": str(Path(job.item.image).resolve()),
            "source_label": ";".join(str(Path(p).resolve()) for p in job.item.labels),
            "level_aug": aug,
            "level_syn": syn,
            "sample": job.sample,
            "seed": job.seed,
            **augment.field_metrics(result.ddf_syn),
        }

    return augment.execute(args, "synth", setup, settings, jobs, COLUMNS, FILE_COLUMNS, compute)
