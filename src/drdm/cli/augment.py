"""``drdm augment``: deform users' images and label maps (paper Algorithm 3), in batches.

For every input, level ``T'`` and sample it writes, under ``OUT/<input name>/``::

    L055_s003_image<ext>    the deformed image (the input's format, grid and geometry)
    L055_s003_label<ext>    the deformed label map (``_label1``, ``_label2``, ... for several)
    L055_s003_ddf.nii.gz    the displacement field (``_ddf.npy`` with --ddf-format npy)

plus ``OUT/manifest.csv`` (one row per sample), ``OUT/run.json`` (the settings) and
``OUT/overview.png``.  Batches, seeds, shards and resuming: :mod:`drdm.jobs`.  This module also
holds what ``drdm synth`` shares: the input options, reading and checking an input, the method.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

#: columns of the augment manifest, in order
COLUMNS = [
    "image",
    "label",
    "ddf",
    "source_image",
    "source_label",
    "level",
    "sample",
    "seed",
    "max_disp_pct",
    "mean_disp_pct",
    "fold_pct",
]
FILE_COLUMNS = ["image", "label", "ddf"]

METHODS = ("drdm", "bigaug", "mrbs", "elastic")

#: smallest number of voxels along every axis a method deforms (2D: the in-plane axes)
MIN_VOXELS = 8

#: image formats written as themselves; others (.mhd, .nhdr, DICOM folders) become these
_SUFFIXES = {
    ".nii.gz": ".nii.gz",
    ".nii": ".nii",
    ".mha": ".mha",
    ".mhd": ".mha",
    ".nrrd": ".nrrd",
    ".nhdr": ".nrrd",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "augment",
        help="deform images and their label maps with DRDM or a baseline (Algorithm 3)",
        description="Deform every input image (and its label maps) at every level T' N times "
        "(paper Algorithm 3). Writes, under OUT/<input name>/, L<level>_s<sample>_image, "
        "_label and _ddf files in the input's format and grid, a manifest.csv with one row per "
        "sample (paths relative to OUT, seed, displacement and folding metrics), run.json and "
        "overview.png. Re-running with the same arguments skips the samples already complete. "
        "Images need at least max(8, the model's size multiple) voxels along every axis the "
        "method deforms (the in-plane axes for 2D deformations of 3D volumes).",
    )
    add_input_arguments(p)
    p.add_argument(
        "--levels",
        help="deformation levels T' in 1..T, comma-separated (e.g. 32,48). Default for "
        "--method drdm: 0.4 and 0.6 of the model's T (32,48 for T = 80), the best DRDM "
        "recipe of the segmentation experiments (docs/experiments.md). The baselines have "
        "no levels: for them the levels only name the outputs and enter the seeds (default 0)",
    )
    p.add_argument(
        "--per-level",
        type=int,
        default=16,
        metavar="N",
        help="samples per level (default 16: with the two default levels 32 copies per image, "
        "as in the paper; DRDM needs many: with 8-16 copies it was behind BigAug in the "
        "segmentation experiments, with 32 level)",
    )
    p.add_argument(
        "--stack",
        default="auto",
        choices=("auto", "bigaug", "affine", "none"),
        help="transforms stacked after the deformation, in the same field (one warp): "
        "bigaug = BigAug's rotation, scaling and elastic deformation, then its six intensity "
        "transforms; affine = its rotation and scaling only; none. Default auto: bigaug for "
        "--method drdm (the best DRDM recipe of the segmentation experiments, level with BigAug; "
        "docs/experiments.md), none for the baselines",
    )
    add_run_arguments(p)
    p.set_defaults(run=run)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """``--image/--label/--input/--frame/--resample-label`` (shared with ``drdm synth``)."""
    g = p.add_argument_group("inputs")
    g.add_argument("--image", type=Path, help="one image (NIfTI, .mha/.mhd, .nrrd, DICOM folder)")
    g.add_argument(
        "--label",
        type=Path,
        action="append",
        default=[],
        help="a label map on the image's grid, deformed alike (repeatable)",
    )
    g.add_argument(
        "--input",
        type=Path,
        help="a folder of images with matching label maps (X.nii.gz with X_gt/_label/_seg/"
        "_mask.nii.gz, or images/ + labels/), or a .csv (columns image, label) or .json "
        "([{'image': ..., 'label': ...}, ...]) list of them",
    )
    g.add_argument("--frame", type=int, help="frame (0-based) of 4D time series inputs")
    g.add_argument(
        "--resample-label",
        action="store_true",
        help="resample label maps on another grid onto the image's (nearest neighbour) "
        "instead of stopping with an error",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Method, output, sharding and device options (shared with ``drdm synth``)."""
    p.add_argument("--seed", type=int, default=0, help="random seed of the run (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        default="drdm",
        help="drdm (default), bigaug, mrbs or elastic (the paper's baselines)",
    )
    g.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of a baseline method (repeatable; VALUE as JSON, else a string), "
        "e.g. --method-option sigma=0.08 for elastic",
    )
    g.add_argument(
        "--model",
        default="default",
        help="for --method drdm: 'default', 'default-3d' or a checkpoint folder",
    )
    g.add_argument(
        "--ndim",
        type=int,
        choices=(2, 3),
        default=2,
        help="dimensionality of a baseline's deformations (default 2: 3D volumes slice by "
        "slice, as the default 2D model); --method drdm takes the model's",
    )
    g.add_argument(
        "--slice-axis",
        default="auto",
        help="for 2D deformations of 3D volumes: the axis to slice along, 0, 1, 2 or auto "
        "(default: the axis of clearly the largest spacing, else the one with fewest voxels)",
    )
    g.add_argument(
        "--label-interp",
        choices=("onehot", "nearest"),
        default="onehot",
        help="label warping: onehot (linear warp of each label's mask, arg-max; default) or "
        "nearest",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--ddf-format",
        choices=("nifti", "npy"),
        default="nifti",
        help="nifti (default): a NIfTI displacement field in mm that SimpleITK reads as a "
        "DisplacementFieldTransform; npy: a (ndim, *spatial) float32 array in voxels",
    )
    o.add_argument("--no-figure", action="store_true", help="do not draw overview.png")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    r = p.add_argument_group("batch")
    r.add_argument(
        "--keep-going",
        action="store_true",
        help="process the other inputs when one fails, list failures at the end (exit 1)",
    )
    r.add_argument(
        "--shards",
        type=int,
        metavar="K",
        help="split the job list in K shards (default: torchrun's WORLD_SIZE, else 1)",
    )
    r.add_argument(
        "--shard-index",
        type=int,
        metavar="I",
        help="the shard to run, 0..K-1 (default: RANK, else 0)",
    )
    r.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    r.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's choice)"
    )


# ----------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------


@dataclass
class Method:
    """A deformation method ready to sample: ``make(level) -> (FieldSampler, intensity)``."""

    name: str
    ndim: int
    min_voxels: int
    settings: dict[str, Any]
    model: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[int, tuple[Any, Any]] = field(default_factory=dict)

    def make(self, level: int) -> tuple[Any, Any]:
        """The field sampler and intensity transform (or ``None``) of ``level``."""
        if level not in self._cache:
            if self.name == "drdm":
                from ..deform import DRDMSampler

                self._cache[level] = (DRDMSampler(self.model, level), None)
            else:
                from ..baselines import make_method

                try:  # the level plays no part in a baseline
                    self._cache[level] = make_method(self.name, self.ndim, **self.options)
                except (TypeError, ValueError) as exc:
                    if isinstance(exc, InputError):
                        raise
                    raise InputError(f"--method {self.name}: {exc}") from None
        return self._cache[level]


def parse_method_options(items: Sequence[str]) -> dict[str, Any]:
    """``["sigma=0.08", "units=mm"]`` -> ``{"sigma": 0.08, "units": "mm"}`` (JSON values)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--method-option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def load_method(args: argparse.Namespace, levels: Sequence[int], device: Any) -> Method:
    """Check ``--method``/``--model``/levels and load the model; one-line errors."""
    name = str(args.method).lower()
    if name not in METHODS:
        raise InputError(f"--method {args.method}: unknown method; expected {', '.join(METHODS)}")
    options = parse_method_options(args.method_option)
    if name != "drdm":
        settings = {"method": name, "ndim": args.ndim, "options": options}
        method = Method(name, args.ndim, MIN_VOXELS, settings, options=options)
        method.make(0)  # options are checked here, before anything is written
        return method
    if options:
        raise InputError(f"--method-option: --method drdm takes none, got {sorted(options)}")
    from ..pipeline import DRDM

    model = DRDM.from_pretrained(args.model, device=device)
    bad = [lv for lv in levels if not 1 <= lv <= model.num_steps]
    if bad:
        raise InputError(
            f"--levels: {', '.join(map(str, bad))} outside 1..{model.num_steps} (the T of "
            f"model {args.model!r})"
        )
    info = getattr(model.network, "checkpoint_info", None)
    # the weights identify the model (a path or name could point to other weights later)
    settings = {"method": "drdm", "model_weights_sha256": getattr(info, "weights_sha256", None)}
    minimum = max(MIN_VOXELS, model.network.config.size_multiple)
    return Method("drdm", model.ndim, minimum, settings, model=model)


def parse_slice_axis(text: str) -> str | int:
    """``--slice-axis``: ``"auto"`` or 0, 1, 2."""
    if text == "auto":
        return "auto"
    if text in ("0", "1", "2"):
        return int(text)
    raise InputError(f"--slice-axis {text}: expected auto, 0, 1 or 2")


# ----------------------------------------------------------------------------------------------
# Reading and checking one input
# ----------------------------------------------------------------------------------------------


@dataclass
class LoadedInput:
    """An input read and checked: the image and its label maps on the image's grid."""

    image: Any  # drdm.io.image.MedicalImage
    labels: list[Any]
    slice_axis: int | None


def load_input(
    item: Any,
    method: Method,
    frame: int | None,
    resample_label: bool,
    slice_axis: str | int,
) -> LoadedInput:
    """Read ``item``'s image and labels and check them against ``method``.

    Errors (one line, naming the file): unreadable/truncated file, NaN/Inf voxels, a 4D series
    without ``--frame``, a label map on another grid (unless ``resample_label``), non-integer or
    negative labels, a 3D method on a 2D image, and an image with fewer than
    ``method.min_voxels`` voxels along an axis the method deforms.
    """
    from ..deform import resolve_slice_axis
    from ..io.image import check_same_grid, read_image, resample_label_to

    image = read_image(item.image, kind="image", frame=frame)  # 2D/3D, finite voxels
    array = image.array
    labels = []
    for path in item.labels:
        label = read_image(path, kind="label", frame=frame)
        try:
            check_same_grid(image, label)
        except InputError:
            if not resample_label:
                raise
            label = resample_label_to(image, label)
        labels.append(label)  # read_image checked: integer values >= 0
    axis: int | None = None
    if method.ndim == 3 and array.ndim == 2:
        raise InputError(f"{item.image}: a 3D method cannot deform a 2D image")
    axes = list(range(array.ndim))
    if method.ndim == 2 and array.ndim == 3:
        axis = resolve_slice_axis(array.shape, tuple(image.spacing), slice_axis)
        axes.remove(axis)
    small = [array.shape[a] for a in axes if array.shape[a] < method.min_voxels]
    if small:
        which = "in-plane " if axis is not None else ""
        raise InputError(
            f"{item.image}: image of shape {array.shape} is too small: the method needs at "
            f"least {method.min_voxels} voxels along every {which}axis"
        )
    return LoadedInput(image=image, labels=labels, slice_axis=axis)


def output_suffix(path: Path) -> str:
    """The file ending of an output image: the input's (``.mhd`` -> ``.mha``, ``.nhdr`` ->
    ``.nrrd``; a DICOM folder or anything else -> ``.nii.gz``)."""
    name = path.name.lower()
    for suffix, out in _SUFFIXES.items():
        if name.endswith(suffix) and not path.is_dir():
            return out
    return ".nii.gz"


def ddf_suffix(ddf_format: str) -> str:
    return ".npy" if ddf_format == "npy" else ".nii.gz"


def label_names(prefix: str, count: int, suffix: str, stem: str = "label") -> list[str]:
    """``[prefix_label.ext]`` for one label map, ``[prefix_label1.ext, ...]`` for several."""
    if count == 1:
        return [f"{prefix}_{stem}{suffix}"]
    return [f"{prefix}_{stem}{k}{suffix}" for k in range(1, count + 1)]


def field_metrics(ddf: np.ndarray) -> dict[str, float]:
    """``max_disp_pct``, ``mean_disp_pct`` (|u| in % of the size per axis,
    :func:`drdm.spatial.magnitude_stats`) and ``fold_pct`` (% of voxels with a negative
    Jacobian determinant) of a ``(ndim, *spatial)`` voxel field."""
    import torch

    from ..spatial import fold_ratio, magnitude_stats

    t = torch.as_tensor(ddf, dtype=torch.float32)[None]
    stats = magnitude_stats(t)
    return {
        "max_disp_pct": round(float(stats.max_percent[0]), 4),
        "mean_disp_pct": round(float(stats.mean_percent[0]), 4),
        "fold_pct": round(float(fold_ratio(t)[0]) * 100.0, 4),
    }


def write_sample(out: Path, name: str, array: np.ndarray, like: Any, kind: str = "image") -> None:
    """Write one output image or label map on ``like``'s grid (atomically, via
    :func:`drdm.io.image.write_image`; label maps keep their own integer dtype)."""
    from ..io.image import write_image

    write_image(out / name, array, like.with_array(array) if kind == "label" else like, kind=kind)


def write_field(out: Path, name: str, ddf: np.ndarray, like: Any, ddf_format: str) -> None:
    """Write a ``(ndim, *spatial)`` voxel field: NIfTI displacement in mm, or ``.npy`` voxels."""
    from ..io.image import write_displacement

    write_displacement(out / name, ddf, like, format=ddf_format)


# ----------------------------------------------------------------------------------------------
# Shared set-up and reporting
# ----------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What both commands need before running their jobs."""

    items: list[Any]
    method: Method
    shards: int
    shard_index: int
    slice_axis: str | int
    device: Any


def prepare(args: argparse.Namespace, levels: Sequence[int]) -> Setup:
    """Check the common options, list the inputs and load the method (writes nothing)."""
    import torch

    from ..device import resolve_device
    from ..jobs import list_inputs, resolve_shards

    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    if args.frame is not None and args.frame < 0:
        raise InputError(f"--frame {args.frame}: must be >= 0")
    slice_axis = parse_slice_axis(args.slice_axis)
    shards, index = resolve_shards(args.shards, args.shard_index)
    device = resolve_device(args.device)
    items = list_inputs(image=args.image, labels=args.label, input=args.input)
    method = load_method(args, levels, device)
    return Setup(items, method, shards, index, slice_axis, device)


def common_settings(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    """The options that change a sample's output (recorded in ``run.json``)."""
    return {
        **setup.method.settings,
        "seed": args.seed,
        "slice_axis": setup.slice_axis,
        "label_interp": args.label_interp,
        "ddf_format": args.ddf_format,
        "resample_label": bool(args.resample_label),
        "frame": args.frame,
    }


def execute(
    args: argparse.Namespace,
    command: str,
    setup: Setup,
    settings: dict[str, Any],
    all_jobs: Sequence[Any],
    columns: Sequence[str],
    file_columns: Sequence[str],
    compute: Any,
) -> int:
    """Run this shard's part of ``all_jobs`` with :func:`drdm.jobs.run_batch`, draw the
    overview, print the summary; returns the exit status (1 if an input failed)."""
    from ..jobs import (
        ManifestBook,
        check_run_settings,
        manifest_name,
        run_batch,
        shard_jobs,
        write_run_settings,
    )

    out: Path = args.out
    check_run_settings(out, command, settings)
    jobs = shard_jobs(all_jobs, setup.shards, setup.shard_index)
    manifest = out / manifest_name(setup.shards, setup.shard_index)
    others = sorted(out.glob("manifest*.csv")) if out.is_dir() else []
    book = ManifestBook(manifest, columns, out, file_columns, [j.key for j in jobs], others)

    def load(item: Any) -> LoadedInput:
        return load_input(item, setup.method, args.frame, args.resample_label, setup.slice_axis)

    def start() -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_run_settings(out, command, settings)

    report = run_batch(
        jobs,
        book,
        load,
        compute,
        keep_going=args.keep_going,
        progress=not args.quiet,
        before_first_write=start,
    )
    if not args.no_figure and book.rows:
        from ..viz import overview_figure

        suffix = "" if setup.shards == 1 else f"-shard{setup.shard_index}of{setup.shards}"
        overview_figure(manifest, out / f"overview{suffix}.png")
    shard = f" (shard {setup.shard_index} of {setup.shards})" if setup.shards > 1 else ""
    print(
        f"drdm {command}: {report.computed} sample(s) written, {report.skipped} already "
        f"complete, {len(jobs)} in all{shard} -> {manifest}"
    )
    if report.failures:
        print(f"drdm {command}: {len(report.failures)} input(s) failed:", file=sys.stderr)
        for line in report.failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# drdm augment
# ----------------------------------------------------------------------------------------------


def build_jobs(items: Sequence[Any], levels: Sequence[int], per_level: int, seed: int) -> list[Any]:
    """Jobs in the order inputs x levels x samples (:class:`drdm.jobs.Job`)."""
    from ..jobs import Job, derive_seed

    width = max(3, len(str(per_level - 1)))
    jobs = []
    for item in items:
        suffix = output_suffix(item.image)
        for level in levels:
            for s in range(per_level):
                prefix = f"{item.name}/L{level:03d}_s{s:0{width}d}"
                seed_s = derive_seed("augment", seed, item.name, level, s)
                jobs.append(Job(item, level, s, seed_s, prefix, f"{prefix}_image{suffix}"))
    return jobs


def run(args: argparse.Namespace) -> int:
    import torch

    from ..deform import deform_volume
    from ..jobs import parse_int_list

    # ---- check everything before writing anything
    drdm = str(args.method).lower() == "drdm"
    if args.levels is None and not drdm:
        args.levels = "0"
    levels = [] if args.levels is None else parse_int_list(args.levels, "--levels")
    if any(lv < (1 if drdm else 0) for lv in levels):
        raise InputError(f"--levels {args.levels}: levels must be >= {1 if drdm else 0}")
    if args.per_level < 1:
        raise InputError(f"--per-level {args.per_level}: must be >= 1")
    setup = prepare(args, levels)
    if not levels:  # --method drdm without --levels: the default levels of the model's T
        from ..transforms import default_levels

        levels = list(default_levels(setup.method.model.num_steps))
    from ..baselines import make_stack
    from ..transforms import resolve_stack

    stack = resolve_stack(args.stack, drdm) or "none"
    then, stack_intensity = make_stack(stack, setup.method.ndim)
    settings = {**common_settings(args, setup), "stack": stack}
    jobs = build_jobs(setup.items, levels, args.per_level, args.seed)
    out: Path = args.out
    dsuffix = ddf_suffix(args.ddf_format)

    def compute(job: Any, data: LoadedInput) -> dict[str, Any]:
        sampler, intensity = setup.method.make(job.level)
        if intensity is None:
            intensity = stack_intensity
        result = deform_volume(
            sampler,
            data.image.array,
            [lab.array for lab in data.labels],
            torch.Generator().manual_seed(job.seed),
            slice_axis=data.slice_axis,
            spacing=data.image.spacing,
            label_method=args.label_interp,
            intensity=intensity,
            device=setup.device,
            then=then,
        )
        names = label_names(job.prefix, len(data.labels), output_suffix(job.item.image))
        ddf_name = f"{job.prefix}_ddf{dsuffix}"
        write_field(out, ddf_name, result.ddf, data.image, args.ddf_format)
        for name, array in zip(names, result.labels, strict=True):
            write_sample(out, name, array, data.image, kind="label")
        write_sample(out, job.key, result.image, data.image)
        return {
            "image": job.key,
            "label": ";".join(names),
            "ddf": ddf_name,
            "source_image": str(Path(job.item.image).resolve()),
            "source_label": ";".join(str(Path(p).resolve()) for p in job.item.labels),
            "level": job.level,
            "sample": job.sample,
            "seed": job.seed,
            **field_metrics(result.ddf),
        }

    return execute(args, "augment", setup, settings, jobs, COLUMNS, FILE_COLUMNS, compute)
