"""One image at a time: :func:`generate_file` (``drdm generate``, Algorithm 2 with a trained
model) and :func:`diffuse_file` (``drdm diffuse``, the random forward process at timestep t).

Both read through :func:`drdm.io.read_image` (any format, ITK's geometry policy) and write
through the writer of ``drdm augment`` (:func:`drdm.batch.outputs.write_outputs`): outputs
keep the input's format, grid and kind, and displacement fields are millimetres that SimpleITK
applies as a ``DisplacementFieldTransform`` (or voxel ``.npy`` with ``ddf_format="npy"``).
A 2D deformation of a 3D volume works slice by slice (:func:`drdm.io.auto_slice_axis`).
Every sample has its own seed (:func:`drdm.seeding.sample_seed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import DDF_FORMATS, DdfFormat, Engine, check_choice
from ..errors import InputError
from ..seeding import sample_generator
from .inputs import LoadedInput, load_input, parse_slice_axis
from .jobs import check_job_count
from .method import MIN_VOXELS, Method, load_method
from .outputs import ddf_suffix, field_metrics, output_suffix, write_outputs

__all__ = ["SampleRecord", "SingleReport", "diffuse_file", "generate_file", "seed_tag"]


@dataclass
class SampleRecord:
    """One written sample: its files (relative to the output folder), statistics
    (:func:`~drdm.batch.outputs.field_metrics`) and, for figures, the arrays."""

    image: str
    ddf: str
    label: str | None
    metrics: dict[str, float]
    deformed: np.ndarray = field(repr=False)
    field: np.ndarray = field(repr=False)


@dataclass
class SingleReport:
    """What :func:`generate_file` / :func:`diffuse_file` wrote."""

    source: Path
    out: Path
    samples: list[SampleRecord]
    figure: Path | None
    slice_axis: int | None
    original: np.ndarray = field(repr=False)

    def lines(self) -> list[str]:
        """One line per sample: its image file and statistics."""
        return [
            f"  {s.image}: max |u| {s.metrics['max_disp_pct']:.2f} %, mean |u| "
            f"{s.metrics['mean_disp_pct']:.2f} % of the image size, folds "
            f"{s.metrics['fold_pct']:.3f} %"
            for s in self.samples
        ]


def _bar(total: int, progress: bool, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, disable=not progress, dynamic_ncols=True)


def _stage(bar: Any, text: str) -> None:
    """Show what the bar's current item is doing (a long 3D field shows more than 0/1)."""
    bar.set_postfix_str(text, refresh=True)


def _run_samples(
    data: LoadedInput,
    label: Path | None,
    out: Path,
    names: Sequence[str],
    sampler: Any,
    generator_of: Any,
    ddf_format: DdfFormat,
    device: Any,
    progress: bool,
    unit: str,
) -> list[SampleRecord]:
    from ..pipelines.core import deform_volume

    suffix = output_suffix(data.image.path or "x.nii.gz")
    records = []
    with _bar(len(names), progress, unit) as bar:
        for k, name in enumerate(names):
            _stage(bar, "deforming")
            result = deform_volume(
                sampler,
                data.image.array,
                [lab.array for lab in data.labels],
                generator_of(k),
                slice_axis=data.slice_axis,
                spacing=data.image.spacing,
                device=device,
            )
            image_name = f"{name}_image{suffix}"
            ddf_name = f"{name}_ddf{ddf_suffix(ddf_format)}"
            label_name = f"{name}_label{suffix}" if label is not None else None
            _stage(bar, "writing")
            write_outputs(
                out,
                data.image,
                (ddf_name, result.ddf),
                images=[(image_name, result.image)],
                labels=[] if label_name is None else [(label_name, result.labels[0])],
                ddf_format=ddf_format,
            )
            records.append(
                SampleRecord(
                    image_name,
                    ddf_name,
                    label_name,
                    field_metrics(result.ddf),
                    result.image,
                    result.ddf,
                )
            )
            bar.update(1)
    return records


def _load(
    image: str | Path,
    label: str | Path | None,
    method: Method,
    slice_axis: str | int,
    frame: int | None = None,
) -> LoadedInput:
    """:func:`~drdm.batch.inputs.load_input`; a problem of the label map names ``label``."""
    try:
        return load_input(
            image,
            [] if label is None else [label],
            method,
            frame=frame,
            slice_axis=slice_axis,
            resample_option=None,  # no resample_label here
        )
    except InputError as exc:
        if label is not None and str(exc).startswith(str(label)):
            raise InputError(f"label {exc}") from None
        raise


def _figure(path: Path, original: np.ndarray, records: Sequence[SampleRecord], titles: list[str],
            slice_axis: int | None) -> Path:  # fmt: skip
    from ..viz import deformation_figure

    rows = min(len(records), 8)
    deformation_figure(
        path,
        [original] * rows,
        [r.deformed for r in records[:rows]],
        [r.field for r in records[:rows]],
        titles=titles[:rows],
        slice_axis=slice_axis or 0,
    )
    return path


def seed_tag(seed: int) -> str:
    """``seed<seed>`` for output names; a seed of more than 24 digits (any integer is allowed)
    is shortened to its first 12 digits and a hash of the whole, so names stay short."""
    text = str(int(seed))
    if len(text) <= 24:
        return f"seed{text}"
    digest = hashlib.sha256(text.encode("ascii")).hexdigest()[:12]
    return f"seed{text[:12]}-{digest}"


def _check_options(out: str | Path, frame: int | None, ddf_format: str) -> Path:
    """The options :func:`generate_file` and :func:`diffuse_file` share (nothing written)."""
    from ..io import check_output_folder

    if frame is not None and (isinstance(frame, bool) or int(frame) < 0):
        raise InputError(f"frame {frame}: must be >= 0")
    check_choice("ddf_format", ddf_format, DDF_FORMATS)
    return check_output_folder(out, "out")


def generate_file(
    image: str | Path,
    level: int,
    out: str | Path,
    *,
    n: int = 1,
    model: str = "default",
    seed: int = 0,
    label: str | Path | None = None,
    frame: int | None = None,
    normalize: bool = False,
    slice_axis: str | int = "auto",
    ddf_format: DdfFormat = "nifti",
    device: str = "auto",
    progress: bool = True,
    figure: bool = True,
    stride: int | None = None,
    engine: Engine = "auto",
) -> SingleReport:
    """``n`` deformations of one image by a trained model at level ``T'`` (Algorithm 2).

    ``stride``: the sampler's network-call stride (``None``: the model's, 4 by default; 1 is
    Algorithm 2 literally); ``engine``: how the network runs (:mod:`drdm.nn.engine`).

    Writes ``OUT/<stem>_T<level>_seed<seed>_<k>_image<ext>``, ``_ddf.nii.gz`` (mm; ``.npy``
    voxels with ``ddf_format="npy"``), ``_label<ext>`` with ``label``, and
    ``OUT/<stem>_T<level>_seed<seed>.png`` (a seed of more than 24 digits is shortened in the
    names, :func:`seed_tag`). ``normalize``: min-max rescale the image for the network only.
    ``frame``: the time point of a 4D series. A 2D model deforms a 3D volume slice by slice.
    Sample ``k`` is seeded with ``sample_seed("generate", seed, stem, level, k)``.

    Raises :class:`~drdm.errors.InputError` (one line, nothing written) for a bad file, label
    (other grid, negative or non-integer values), model, level, ``n`` or output folder.
    """
    from ..device import resolve_device
    from ..io import file_stem

    if n < 1:
        raise InputError(f"n {n}: must be >= 1")
    check_job_count(n, "n", n)
    out = _check_options(out, frame, ddf_format)
    axis_choice = parse_slice_axis(slice_axis)
    dev = resolve_device(device)
    sampler_options: dict[str, object] = {"normalize": bool(normalize)}
    if stride is not None:
        sampler_options["stride"] = stride
    method = load_method(
        "drdm", [level], model=model, options=sampler_options, device=dev,
        level_option="level", engine=engine,
    )  # fmt: skip
    data = _load(image, label, method, axis_choice, frame)
    stem = file_stem(image)
    prefix = f"{stem}_T{level}_{seed_tag(seed)}"
    sampler = method.make(level)[0]
    records = _run_samples(
        data,
        None if label is None else Path(label),
        out,
        [f"{prefix}_{k:0{len(str(n - 1))}d}" for k in range(n)],
        sampler,
        lambda k: sample_generator("generate", seed, stem, level, k),
        ddf_format,
        dev,
        progress,
        "deformation",
    )
    path = None
    if figure:
        titles = [f"T'={level} #{k}" for k in range(n)]
        path = _figure(out / f"{prefix}.png", data.image.array, records, titles, data.slice_axis)
    return SingleReport(Path(image), out, records, path, data.slice_axis, data.image.array)


def diffuse_file(
    image: str | Path,
    t: int,
    out: str | Path,
    *,
    seed: int = 0,
    label: str | Path | None = None,
    frame: int | None = None,
    ndim: str | int = "auto",
    slice_axis: str | int = "auto",
    ddf_format: DdfFormat = "nifti",
    device: str = "auto",
    progress: bool = True,
    figure: bool = True,
    prefix: str | None = None,
) -> SingleReport:
    """Deform one image by the random forward process at timestep ``t`` (no model).

    ``ndim``: ``2`` (a 3D volume slice by slice, each slice its own field and no through-plane
    motion), ``3``, or ``"auto"``: 2 for 2D images and for stacks of thick slices (largest
    spacing > 1.5 x the second largest, :func:`drdm.io.geometry.is_anisotropic`), else 3.
    Writes ``OUT/<prefix>_image<ext>``, ``_ddf.nii.gz`` (mm) or ``.npy`` (voxels),
    ``_label<ext>`` with ``label`` and ``<prefix>.png``; ``prefix`` defaults to
    ``<stem>_t<t>_seed<seed>`` (:func:`seed_tag`). ``frame``: the time point of a 4D series.
    Seeded with ``sample_seed("diffuse", seed, stem, t, 0)``.
    """
    from ..device import resolve_device
    from ..diffusion import ForwardDiffusion, ForwardDiffusionConfig
    from ..io import file_stem
    from ..io.geometry import is_anisotropic
    from ..io.image import read_image

    defaults = ForwardDiffusionConfig()
    if isinstance(t, bool) or not 1 <= int(t) <= defaults.num_steps:
        raise InputError(f"t {t}: must lie in 1..{defaults.num_steps}")
    out = _check_options(out, frame, ddf_format)
    axis_choice = parse_slice_axis(slice_axis)
    if ndim not in ("auto", 2, 3, "2", "3"):
        raise InputError(f"ndim {ndim}: expected auto, 2 or 3")
    dev = resolve_device(device)
    head = read_image(image, kind="image", frame=frame)
    if ndim == "auto":
        flat = head.ndim == 2 or is_anisotropic(head.spacing) or axis_choice != "auto"
        dims = 2 if flat else 3
    else:
        dims = int(ndim)
    if dims == 3 and head.ndim == 2:
        raise InputError(f"{image}: ndim 3 needs a 3D image, got shape {head.shape}")
    method = Method("forward", dims, MIN_VOXELS, {})
    data = _load(image, label, method, axis_choice, frame)
    process = ForwardDiffusion(dataclasses.replace(defaults, ndim=dims))
    from ..pipelines.core import ForwardProcessSampler

    stem = file_stem(image)
    name = prefix or f"{stem}_t{t}_{seed_tag(seed)}"
    records = _run_samples(
        data,
        None if label is None else Path(label),
        out,
        [name],
        ForwardProcessSampler(process, int(t)),
        lambda k: sample_generator("diffuse", seed, stem, t, k),
        ddf_format,
        dev,
        progress,
        "field",
    )
    path = None
    if figure:
        path = _figure(out / f"{name}.png", data.image.array, records, [f"t = {t}"],
                       data.slice_axis)  # fmt: skip
    return SingleReport(Path(image), out, records, path, data.slice_axis, data.image.array)
