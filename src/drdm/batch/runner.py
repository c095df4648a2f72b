"""The batch engine of paper Algorithms 3 and 4 on users' files: :func:`augment_files` and
:func:`synthesize_files` (``drdm augment`` and ``drdm synth`` call them and print the report).

For every input, level (pair) and sample they write, under ``OUT/<input name>/``, the deformed
image(s), label maps and field in the input's format and grid, plus ``OUT/manifest.csv``,
``OUT/run.json`` and ``OUT/overview.png``. Inputs: :mod:`drdm.batch.inputs`; jobs, seeds and
shards: :mod:`drdm.batch.jobs`; manifests and resuming: :mod:`drdm.batch.manifest`; the
one-run-per-folder rules: :mod:`drdm.batch.run_folder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..choices import DDF_FORMATS, LABEL_METHODS, DdfFormat, Engine, LabelMethod, check_choice
from ..errors import InputError
from ..seeding import sample_seed
from .inputs import InputItem, LoadedInput, list_inputs, load_input, parse_slice_axis
from .jobs import MAX_JOBS, BatchReport, Job, check_job_count, resolve_shards, run_batch, shard_jobs
from .manifest import MANIFEST_SCHEMAS, ManifestBook, manifest_name
from .method import Method, load_method
from .outputs import ddf_suffix, field_metrics, label_names, output_suffix, write_outputs
from .run_folder import RunLock, check_run_settings, claim_run_settings

__all__ = [
    "MAX_JOBS",
    "BatchOptions",
    "RunReport",
    "augment_files",
    "build_augment_jobs",
    "build_synth_jobs",
    "parse_level_pairs",
    "synthesize_files",
]


@dataclass
class BatchOptions:
    """What ``drdm augment`` and ``drdm synth`` share: inputs, method, output and batch options.

    Attributes:
        out: the run folder.
        image, labels: one image (file or DICOM folder) and its label maps; or
        input: a folder or ``.csv``/``.json`` list (:func:`drdm.batch.inputs.list_inputs`).
        frame: the time point of 4D inputs.
        resample_label: resample label maps on another grid onto the image's.
        seed: the run's seed (any integer; per-sample seeds: :func:`drdm.seeding.sample_seed`).
        method, method_options, model, ndim: the method (:func:`load_method`).
        slice_axis: ``"auto"`` or 0, 1, 2 (2D methods on 3D volumes).
        label_interp: ``"onehot"`` or ``"nearest"``.
        ddf_format: ``"nifti"`` (mm) or ``"npy"`` (voxels).
        figure, progress: draw ``overview.png``; show a progress bar.
        keep_going: list failed inputs and go on.
        shards, shard_index: this process's part (default: ``WORLD_SIZE``/``RANK``, else all).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        stride: DRDM's network-call stride (``None``: the model's, 4 by default; 1 is
            Algorithm 2 literally); recorded in the run's settings.
        engine: how DRDM's network runs: ``"auto"``, ``"torch"``, ``"onnxruntime"``.
    """

    out: Path
    image: Path | None = None
    labels: Sequence[Path] = ()
    input: Path | None = None
    frame: int | None = None
    resample_label: bool = False
    seed: int = 0
    method: str = "drdm"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    model: str = "default"
    ndim: int = 2
    slice_axis: str | int = "auto"
    label_interp: LabelMethod = "onehot"
    ddf_format: DdfFormat = "nifti"
    figure: bool = True
    progress: bool = True
    keep_going: bool = False
    shards: int | None = None
    shard_index: int | None = None
    device: str = "auto"
    stride: int | None = None
    engine: Engine = "auto"


@dataclass
class RunReport:
    """What a batch run did: the :class:`~drdm.batch.jobs.BatchReport` counts and failures,
    the number of jobs of this shard, the manifest written, and the shard."""

    command: str
    batch: BatchReport
    jobs: int
    manifest: Path
    shards: int = 1
    shard_index: int = 0

    @property
    def status(self) -> int:
        """The exit status: 1 when an input failed (``keep_going``), else 0."""
        return 1 if self.batch.failures else 0

    def summary(self) -> str:
        """One line: samples written, skipped, in all, and the manifest."""
        shard = f" (shard {self.shard_index} of {self.shards})" if self.shards > 1 else ""
        return (
            f"drdm {self.command}: {self.batch.computed} sample(s) written, "
            f"{self.batch.skipped} already complete, {self.jobs} in all{shard} -> {self.manifest}"
        )


@dataclass
class _Setup:
    items: list[InputItem]
    method: Method
    shards: int
    shard_index: int
    slice_axis: str | int
    device: torch.device


def _prepare(
    options: BatchOptions, levels: Sequence[int], level_option: str, method_options: bool = True
) -> _Setup:
    """Check the common options, list the inputs and load the method (writes nothing)."""
    from ..device import resolve_device
    from ..io import check_output_folder

    check_output_folder(options.out, "out")
    if options.frame is not None and options.frame < 0:
        raise InputError(f"frame {options.frame}: must be >= 0")
    check_choice("label_interp", options.label_interp, LABEL_METHODS)
    check_choice("ddf_format", options.ddf_format, DDF_FORMATS)
    slice_axis = parse_slice_axis(options.slice_axis)
    shards, index = resolve_shards(options.shards, options.shard_index)
    device = resolve_device(options.device)
    items = list_inputs(
        image=options.image,
        labels=options.labels,
        input=options.input,
        require_files=not options.keep_going,
    )
    if str(options.method).lower() == "drdm" and options.method_options:
        raise InputError(
            f"method_options: method drdm takes none, got {sorted(options.method_options)}"
        )
    method_options = dict(options.method_options)
    if options.stride is not None:
        if str(options.method).lower() != "drdm":
            raise InputError(f"stride {options.stride}: only method drdm has a sampler stride")
        method_options["stride"] = options.stride
    method = load_method(
        options.method,
        levels,
        model=options.model,
        ndim=options.ndim,
        options=method_options,
        device=device,
        level_option=level_option,
        engine=options.engine,
    )
    return _Setup(items, method, shards, index, slice_axis, device)


def _settings(options: BatchOptions, setup: _Setup) -> dict[str, Any]:
    """The options that change a sample's output (recorded in ``run.json``)."""
    return {
        **setup.method.settings,
        "seed": options.seed,
        "slice_axis": setup.slice_axis,
        "label_interp": options.label_interp,
        "ddf_format": options.ddf_format,
        "resample_label": bool(options.resample_label),
        "frame": options.frame,
    }


def _execute(
    options: BatchOptions,
    command: str,
    setup: _Setup,
    settings: dict[str, Any],
    all_jobs: Sequence[Job],
    compute: Callable[[Job, LoadedInput], Mapping[str, Any]],
) -> RunReport:
    """Run this shard's part of ``all_jobs`` in the locked run folder and draw the overview."""
    from ..io import remove_stale_temporaries

    out = Path(options.out)
    columns, file_columns = MANIFEST_SCHEMAS[command]
    check_run_settings(out, command, settings)  # before reading anything: a quick refusal
    jobs = shard_jobs(all_jobs, setup.shards, setup.shard_index)
    name = manifest_name(setup.shards, setup.shard_index)
    manifest = out / name

    def load(item: InputItem) -> LoadedInput:
        return load_input(
            item.image,
            item.labels,
            setup.method,
            options.frame,
            options.resample_label,
            setup.slice_axis,
        )

    lock = RunLock(out, name.removesuffix(".csv"))
    try:

        def start() -> None:
            lock.acquire()  # one run per folder (shard) at a time
            claim_run_settings(out, command, settings)  # settings never mix, even at once
            remove_stale_temporaries(out)

        others = [p for p in sorted(out.glob("manifest*.csv")) if p != manifest]
        book = ManifestBook(manifest, columns, out, file_columns, [j.key for j in jobs], others)
        report = run_batch(
            jobs,
            book,
            load,
            compute,
            keep_going=options.keep_going,
            progress=options.progress,
            before_first_write=start,
        )
        if options.figure and book.rows:
            from ..viz import overview_figure

            suffix = "" if setup.shards == 1 else f"-shard{setup.shard_index}of{setup.shards}"
            overview_figure(manifest, out / f"overview{suffix}.png")
    finally:
        lock.release()
    return RunReport(command, report, len(jobs), manifest, setup.shards, setup.shard_index)


# ----------------------------------------------------------------------------------------------
# Algorithm 3: augment
# ----------------------------------------------------------------------------------------------


def build_augment_jobs(
    items: Sequence[InputItem], levels: Sequence[int], per_level: int, seed: int
) -> list[Job]:
    """Jobs in the order inputs x levels x samples."""
    width = max(3, len(str(per_level - 1)))
    jobs = []
    for item in items:
        suffix = output_suffix(item.image)
        for level in levels:
            for s in range(per_level):
                prefix = f"{item.name}/L{level:03d}_s{s:0{width}d}"
                seed_s = sample_seed("augment", seed, item.name, level, s)
                jobs.append(Job(item, level, s, seed_s, prefix, f"{prefix}_image{suffix}"))
    return jobs


def augment_files(
    options: BatchOptions,
    levels: Sequence[int] | None = None,
    per_level: int = 16,
    stack: str = "auto",
) -> RunReport:
    """Deform every input at every level ``per_level`` times (paper Algorithm 3).

    Args:
        options: inputs, method and output (:class:`BatchOptions`).
        levels: levels T' (``None``: for ``"drdm"`` the model's default levels,
            :func:`drdm.pipelines.registry.default_levels`; for a baseline ``[0]``, which only names
            the outputs).
        per_level: samples per level.
        stack: transforms stacked after the deformation in the same field: ``"auto"``
            (BigAug for DRDM, none for the baselines), ``"bigaug"``, ``"affine"``, ``"none"``.

    Raises :class:`~drdm.errors.InputError` (one line) for bad options or inputs before
    anything is written (with ``keep_going`` failed inputs are listed in the report instead).
    """
    from ..pipelines.core import deform_volume
    from ..pipelines.registry import default_levels, make_stack, resolve_stack

    drdm = str(options.method).lower() == "drdm"
    if levels is None and not drdm:
        levels = [0]
    levels = list(levels or [])
    if any(lv < (1 if drdm else 0) for lv in levels):
        bad = ",".join(map(str, levels))
        raise InputError(f"levels {bad}: levels must be >= {1 if drdm else 0}")
    if per_level < 1:
        raise InputError(f"per_level {per_level}: must be >= 1")
    check_job_count(per_level * max(len(levels), 1), "per_level", per_level)
    setup = _prepare(options, levels, "levels")
    if not levels:  # method drdm without levels: the default levels of the model's T
        levels = list(default_levels(setup.method.model.num_steps))
    check_job_count(len(setup.items) * len(levels) * per_level, "per_level", per_level)
    stack_name = resolve_stack(stack, drdm) or "none"
    then, stack_intensity = make_stack(stack_name, setup.method.ndim)
    settings = {**_settings(options, setup), "stack": stack_name}
    jobs = build_augment_jobs(setup.items, levels, per_level, options.seed)

    def compute(job: Job, data: LoadedInput) -> dict[str, Any]:
        sampler, intensity = setup.method.make(job.level)
        result = deform_volume(
            sampler,
            data.image.array,
            [lab.array for lab in data.labels],
            torch.Generator().manual_seed(job.seed),
            slice_axis=data.slice_axis,
            spacing=data.image.spacing,
            label_method=options.label_interp,
            intensity=stack_intensity if intensity is None else intensity,
            device=setup.device,
            then=then,
        )
        names = label_names(job.prefix, len(data.labels), output_suffix(job.item.image))
        ddf_name = f"{job.prefix}_ddf{ddf_suffix(options.ddf_format)}"
        write_outputs(
            Path(options.out),
            data.image,
            (ddf_name, result.ddf),
            images=[(job.key, result.image)],
            labels=list(zip(names, result.labels, strict=True)),
            ddf_format=options.ddf_format,
        )
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
            "slice_axis": "" if data.slice_axis is None else data.slice_axis,
        }

    return _execute(options, "augment", setup, settings, jobs, compute)


# ----------------------------------------------------------------------------------------------
# Algorithm 4: synth
# ----------------------------------------------------------------------------------------------


def parse_level_pairs(text: str) -> list[tuple[int, int]]:
    """``"30:20,45:30"`` -> ``[(30, 20), (45, 30)]``; one-line errors for bad syntax, empty
    items, repeats, a negative ``T'_aug`` or a ``T'_syn`` below 1."""
    items = [p.strip() for p in str(text).split(",")]
    if len(items) > 1 and not all(items):
        raise InputError(f"level_pairs {text!r}: empty item; expected pairs such as 30:20,45:30")
    pairs = []
    for part in (p for p in items if p):
        try:
            aug, syn = (int(v) for v in part.split(":"))
        except ValueError:
            raise InputError(
                f"level_pairs {text!r}: expected T'_aug:T'_syn pairs such as 30:20,45:30"
            ) from None
        if aug < 0 or syn < 1:
            raise InputError(f"level_pairs {part}: need T'_aug >= 0 and T'_syn >= 1")
        pairs.append((aug, syn))
    if not pairs:
        raise InputError(f"level_pairs {text!r}: expected at least one pair")
    if len(set(pairs)) != len(pairs):
        raise InputError(f"level_pairs {text!r}: repeated pair")
    return pairs


def build_synth_jobs(
    items: Sequence[InputItem], pairs: Sequence[tuple[int, int]], per_pair: int, seed: int
) -> list[Job]:
    """Jobs in the order inputs x level pairs x samples."""
    width = max(3, len(str(per_pair - 1)))
    jobs = []
    for item in items:
        suffix = output_suffix(item.image)
        for aug, syn in pairs:
            for s in range(per_pair):
                prefix = f"{item.name}/A{aug:03d}_S{syn:03d}_s{s:0{width}d}"
                seed_s = sample_seed("synth", seed, item.name, f"{aug}:{syn}", s)
                jobs.append(Job(item, (aug, syn), s, seed_s, prefix, f"{prefix}_moving{suffix}"))
    return jobs


def synthesize_files(
    options: BatchOptions, level_pairs: Sequence[tuple[int, int]], per_pair: int = 1
) -> RunReport:
    """Registration triples (moving, fixed, true field) from every input (Algorithm 4).

    For every level pair ``(T'_aug, T'_syn)`` (``T'_aug = 0``: no augmentation) and sample:
    ``moving = phi_aug(I0)``, ``fixed`` = ONE warp of ``I0`` by ``compose(phi_syn, phi_aug)``
    and the field ``phi_syn`` with ``fixed(x) ~ moving(x + phi_syn(x))`` on the fixed grid
    (:class:`drdm.pipelines.SynthesisResult`), with the label maps carried along.
    """
    from ..pipelines.core import synthesize_pair

    pairs = [(int(a), int(s)) for a, s in level_pairs]
    if not pairs or any(a < 0 or s < 1 for a, s in pairs):
        raise InputError(f"level_pairs {pairs}: need T'_aug >= 0 and T'_syn >= 1")
    if per_pair < 1:
        raise InputError(f"per_pair {per_pair}: must be >= 1")
    check_job_count(per_pair * len(pairs), "per_pair", per_pair)
    levels = sorted({lv for pair in pairs for lv in pair if lv > 0})
    setup = _prepare(options, levels, "level_pairs")
    check_job_count(len(setup.items) * len(pairs) * per_pair, "per_pair", per_pair)
    settings = _settings(options, setup)
    jobs = build_synth_jobs(setup.items, pairs, per_pair, options.seed)

    def compute(job: Job, data: LoadedInput) -> dict[str, Any]:
        aug, syn = job.level
        result = synthesize_pair(
            setup.method.make(aug)[0] if aug > 0 else None,
            setup.method.make(syn)[0],
            data.image.array,
            [lab.array for lab in data.labels],
            torch.Generator().manual_seed(job.seed),
            slice_axis=data.slice_axis,
            spacing=data.image.spacing,
            label_method=options.label_interp,
            device=setup.device,
        )
        suffix = output_suffix(job.item.image)
        count = len(data.labels)
        moving_labels = label_names(job.prefix, count, suffix, stem="moving_label")
        fixed_labels = label_names(job.prefix, count, suffix, stem="fixed_label")
        ddf_name = f"{job.prefix}_ddf{ddf_suffix(options.ddf_format)}"
        fixed_name = f"{job.prefix}_fixed{suffix}"
        write_outputs(
            Path(options.out),
            data.image,
            (ddf_name, result.ddf_syn),
            images=[(fixed_name, result.fixed), (job.key, result.moving)],
            labels=[
                *zip(moving_labels, result.moving_labels, strict=True),
                *zip(fixed_labels, result.fixed_labels, strict=True),
            ],
            ddf_format=options.ddf_format,
        )
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
            **field_metrics(result.ddf_syn),
            "slice_axis": "" if data.slice_axis is None else data.slice_axis,
        }

    return _execute(options, "synth", setup, settings, jobs, compute)
