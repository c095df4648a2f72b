"""What every command does to one input: the method, reading and checking, output names,
field statistics and writing.

* :class:`Method` / :func:`load_method`: a deformation method by name, through the one
  registry :func:`drdm.pipelines.make_method` (names: :data:`drdm.pipelines.METHODS`).
* :func:`load_input`: an image and its label maps read through :func:`drdm.io.read_image` and
  checked against the method (grid, labels, size, slice axis).
* Output names (:func:`output_suffix`, :func:`label_names`, :func:`ddf_suffix`) and writing
  (:func:`write_outputs`): the input's format, grid and kind; fields in mm (``nifti``) or voxels
  (``npy``).
* :func:`field_metrics`: the manifest's displacement and folding statistics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import BATCH_METHODS
from ..errors import InputError
from ..io import MedicalImage

__all__ = [
    "BATCH_METHODS",
    "MIN_VOXELS",
    "LoadedInput",
    "Method",
    "ddf_suffix",
    "field_metrics",
    "label_names",
    "load_input",
    "load_method",
    "output_suffix",
    "parse_method_options",
    "parse_slice_axis",
    "write_outputs",
]


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


# ----------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------


@dataclass
class Method:
    """A deformation method ready to sample: :meth:`make` ``(level) -> (FieldSampler,
    intensity transform or None)``, built by :func:`drdm.pipelines.make_method`.

    Attributes:
        name: a name of :data:`BATCH_METHODS`.
        ndim: the dimensionality of its deformations (a 2D method works slice by slice on 3D).
        min_voxels: voxels needed along every deformed axis.
        settings: what identifies the method in ``run.json``.
        model: the :class:`drdm.DRDM` model of ``"drdm"``.
        options: keyword options of the method (``make_method``'s ``**options``).
    """

    name: str
    ndim: int
    min_voxels: int
    settings: dict[str, Any]
    model: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[int, tuple[Any, Any]] = field(default_factory=dict)

    def make(self, level: int) -> tuple[Any, Any]:
        """The field sampler and intensity transform (or ``None``) of ``level`` (the level
        plays no part in a baseline)."""
        from ..pipelines.registry import make_method

        key = level if self.name == "drdm" else 0
        if key not in self._cache:
            try:
                self._cache[key] = make_method(
                    self.name,
                    self.ndim,
                    model=self.model,
                    level=level if self.name == "drdm" else None,
                    **self.options,
                )
            except InputError:
                raise
            except (TypeError, ValueError) as exc:
                raise InputError(f"--method {self.name}: {exc}") from None
        return self._cache[key]


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


def load_method(
    name: str,
    levels: Sequence[int] = (),
    *,
    model: str = "default",
    ndim: int = 2,
    options: Mapping[str, Any] | None = None,
    device: Any = None,
    level_option: str = "--levels",
    engine: str = "auto",
) -> Method:
    """Check a method, its options and ``levels`` and load the model; one-line errors.

    ``engine``: how a DRDM model's network runs (:mod:`drdm.nn.engine`; outputs agree within
    float32 rounding, so it is not part of the run's settings).

    ``level_option`` names the option the levels came from in messages (``--level-pairs`` for
    ``drdm synth``, ``--level`` for ``drdm generate``). For ``"drdm"`` the options go to
    :class:`drdm.pipelines.DRDMSampler` (e.g. ``normalize``).
    """
    key = str(name).lower()
    if key not in BATCH_METHODS:
        raise InputError(f"--method {name}: unknown method; expected {', '.join(BATCH_METHODS)}")
    options = dict(options or {})
    if key != "drdm":
        settings = {"method": key, "ndim": ndim, "options": options}
        method = Method(key, ndim, MIN_VOXELS, settings, options=options)
        method.make(0)  # options are checked here, before anything is written
        return method
    from ..model import DRDM

    loaded = DRDM.from_pretrained(model, device=device)
    from ..nn.engine import resolve_engine

    try:
        resolve_engine(engine, loaded.device, loaded.dtype)
    except ValueError as err:
        raise InputError(f"--engine {engine}: {err}") from None
    loaded.engine = engine  # type: ignore[assignment]
    bad = [lv for lv in levels if not 1 <= lv <= loaded.num_steps]
    if bad:
        raise InputError(
            f"{level_option} {', '.join(map(str, bad))}: must lie in 1..{loaded.num_steps} "
            f"(the T of model {model!r})"
        )
    if loaded.in_channels != 1:
        raise InputError(
            f"--model {model}: the network takes {loaded.in_channels} channels, an image gives 1"
        )
    info = getattr(loaded.network, "checkpoint_info", None)
    # the weights identify the model (a path or name could point to other weights later)
    settings = {"method": "drdm", "model_weights_sha256": getattr(info, "weights_sha256", None)}
    if options:
        settings["options"] = options
    minimum = max(MIN_VOXELS, loaded.network.config.size_multiple)
    method = Method("drdm", loaded.ndim, minimum, settings, model=loaded, options=options)
    if loaded.num_steps >= 1:
        method.make(1)  # options are checked here
        method._cache.clear()
    return method


def parse_slice_axis(text: str | int) -> str | int:
    """``--slice-axis``: ``"auto"`` or 0, 1, 2."""
    if text == "auto" or (isinstance(text, int) and not isinstance(text, bool) and 0 <= text < 3):
        return text
    if text in ("0", "1", "2"):
        return int(text)
    raise InputError(f"--slice-axis {text}: expected auto, 0, 1 or 2")


# ----------------------------------------------------------------------------------------------
# Reading and checking one input
# ----------------------------------------------------------------------------------------------


@dataclass
class LoadedInput:
    """An input read and checked: the image and its label maps on the image's grid, and the
    slice axis of a 2D method on a 3D volume (else ``None``)."""

    image: MedicalImage
    labels: list[MedicalImage]
    slice_axis: int | None


def load_input(
    image_path: str | Path,
    label_paths: Sequence[str | Path],
    method: Method,
    frame: int | None = None,
    resample_label: bool = False,
    slice_axis: str | int = "auto",
    resample_option: str | None = "--resample-label",
) -> LoadedInput:
    """Read an image and its label maps (:func:`drdm.io.read_image`) and check them against
    ``method``.

    ``resample_option``: the caller's option that resamples a label map on another grid,
    named in the error (``None``: the caller has none, e.g. ``drdm generate``).

    Errors (:class:`~drdm.errors.InputError`, one line naming the file): unreadable or
    truncated file, NaN/Inf voxels or values beyond float32, a 4D series without ``frame``, a
    label map on another grid (unless ``resample_label``), non-integer or negative labels, a
    3D method on a 2D image, and an image with fewer than ``method.min_voxels`` voxels along an
    axis the method deforms.
    """
    from ..io.image import check_same_grid, read_image, resample_label_to
    from ..pipelines.core import resolve_slice_axis

    image = read_image(image_path, kind="image", frame=frame)  # 2D/3D, finite voxels
    array = image.array
    labels = []
    for path in label_paths:
        label = read_image(path, kind="label", frame=frame)  # integer values >= 0
        try:
            check_same_grid(image, label, resample_option=resample_option)
        except InputError:
            if not resample_label:
                raise
            label = resample_label_to(image, label)
        labels.append(label)
    axis: int | None = None
    if method.ndim == 3 and array.ndim == 2:
        raise InputError(f"{image_path}: a 3D method cannot deform a 2D image")
    axes = list(range(array.ndim))
    if method.ndim == 2 and array.ndim == 3:
        axis = resolve_slice_axis(array.shape, tuple(image.spacing), slice_axis)
        axes.remove(axis)
    small = [array.shape[a] for a in axes if array.shape[a] < method.min_voxels]
    if small:
        which = "in-plane " if axis is not None else ""
        raise InputError(
            f"{image_path}: image of shape {array.shape} is too small: the method needs at "
            f"least {method.min_voxels} voxels along every {which}axis"
        )
    return LoadedInput(image=image, labels=labels, slice_axis=axis)


# ----------------------------------------------------------------------------------------------
# Names, statistics, writing
# ----------------------------------------------------------------------------------------------


def output_suffix(path: str | Path) -> str:
    """The file ending of an output image: the input's (``.mhd`` -> ``.mha``, ``.nhdr`` ->
    ``.nrrd``; a DICOM folder or anything else -> ``.nii.gz``)."""
    path = Path(path)
    name = path.name.lower()
    for suffix, out in _SUFFIXES.items():
        if name.endswith(suffix) and not path.is_dir():
            return out
    return ".nii.gz"


def ddf_suffix(ddf_format: str) -> str:
    """``.npy`` for ``--ddf-format npy``, else ``.nii.gz``."""
    return ".npy" if ddf_format == "npy" else ".nii.gz"


def label_names(prefix: str, count: int, suffix: str, stem: str = "label") -> list[str]:
    """``[prefix_label.ext]`` for one label map, ``[prefix_label1.ext, ...]`` for several."""
    if count == 1:
        return [f"{prefix}_{stem}{suffix}"]
    return [f"{prefix}_{stem}{k}{suffix}" for k in range(1, count + 1)]


def field_metrics(ddf: np.ndarray) -> dict[str, float]:
    """``max_disp_pct``, ``mean_disp_pct`` (|u| in % of the size per axis,
    :func:`drdm.metrics.displacement_magnitude`) and ``fold_pct`` (% of voxels with a negative
    Jacobian determinant, :func:`drdm.metrics.fold_ratio`) of a ``(ndim, *spatial)`` voxel
    field, rounded to 4 decimals (the manifest's and the commands' statistics)."""
    from ..metrics import displacement_magnitude, fold_ratio

    size = displacement_magnitude(ddf)
    return {
        "max_disp_pct": round(float(size.max_percent), 4),
        "mean_disp_pct": round(float(size.mean_percent), 4),
        "fold_pct": round(float(fold_ratio(ddf)) * 100.0, 4),
    }


def write_outputs(
    out: Path,
    like: MedicalImage,
    ddf: tuple[str, np.ndarray] | None,
    images: Sequence[tuple[str, np.ndarray]] = (),
    labels: Sequence[tuple[str, np.ndarray]] = (),
    ddf_format: str = "nifti",
) -> None:
    """Write one sample's files under ``out`` on ``like``'s grid (each atomically): the field
    ``(name, (ndim, *spatial) voxels)`` in mm (NIfTI) or voxels (``.npy``), label maps with
    their own integer dtype, images as float32 (:func:`drdm.io.write_image`).

    Everything is checked before the first file is written: a non-finite image (e.g. from
    intensities near the float32 limit) is an :class:`~drdm.errors.InputError` naming the
    input.
    """
    from ..io.image import write_displacement, write_image

    for name, array in images:
        if np.issubdtype(np.asarray(array).dtype, np.floating) and not np.isfinite(array).all():
            raise InputError(
                f"{like.path or name}: the deformed image has NaN or Inf values (intensities "
                "too large for float32 arithmetic?); rescale the image"
            )
    if ddf is not None:
        write_displacement(out / ddf[0], ddf[1], like, format=ddf_format)  # type: ignore[arg-type]
    for name, array in labels:
        write_image(out / name, array, like.with_array(array), kind="label")
    for name, array in images:
        write_image(out / name, array, like)
