"""An input of the batch commands: finding, listing and reading it.

* **Pairing** (:func:`find_pairs`): image/label pairs from a folder (ACDC, nnU-Net and MSD
  layouts) or a CSV/JSON list.
* **Listing** (:func:`list_inputs`): one image with its label maps, or a folder or list of
  pairs; every input (:class:`InputItem`) gets a unique ``name`` (its file stem; repeated stems
  get ``-2``, ``-3``, ... in list order) that names its output folder and enters its seeds.
* **Reading** (:func:`load_input`): an image and its label maps read through
  :func:`drdm.io.read_image` and checked against the method (grid, labels, size, slice axis).
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import MedicalImage
from ..io.files import IMAGE_SUFFIXES, file_stem, image_suffix
from .method import Method

__all__ = [
    "InputItem",
    "LoadedInput",
    "find_pairs",
    "input_name",
    "list_inputs",
    "load_input",
    "parse_slice_axis",
]


# ----------------------------------------------------------------------------------------------
# Pairing images with their label maps
# ----------------------------------------------------------------------------------------------


_LABEL_SUFFIXES = ("_gt", "_label", "_labels", "_seg", "_mask")
_LABEL_FOLDERS = ("labels", "labelsTr", "labelsTs")
_IMAGE_FOLDERS = ("images", "imagesTr", "imagesTs")


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and image_suffix(p)
    )


def find_pairs(
    source: str | Path, labeled_only: bool = False, require_files: bool = True
) -> list[tuple[Path, Path | None]]:
    """Image/label pairs from a folder, a CSV file or a JSON file.

    Folder rules (files with a recognised image suffix, not recursive, sorted by name):

    * with a ``labels/`` (or ``labelsTr``/``labelsTs``) subfolder: images are the files in
      ``images/`` (``imagesTr``/``imagesTs``) if present, else in the folder itself; the
      label of ``X.ext`` is ``labels/X.*`` (also for nnU-Net's ``X_0000.ext``); an image
      without a label and a label without an image (skipped) each give a ``UserWarning``;
    * otherwise the label of ``X.ext`` is the file ``X_gt.*`` (ACDC), ``X_label.*``,
      ``X_labels.*``, ``X_seg.*`` or ``X_mask.*`` beside it; such files are never images (a
      label file without its image is skipped with a ``UserWarning`` naming it).

    CSV: a header row with an ``image`` column and optionally a ``label`` column (empty cell:
    no label). JSON: a list of ``{"image": ..., "label": ...}`` objects or of image paths, or
    an object holding such a list under ``"pairs"`` or ``"training"`` (MSD ``dataset.json``).
    Relative paths are relative to the CSV/JSON file.

    Args:
        source: the folder, ``.csv`` or ``.json`` file.
        labeled_only: drop images without a label (e.g. ACDC's ``*_4d`` series).
        require_files: a CSV/JSON entry naming a missing file is an error; ``False`` keeps it
            (reading it fails later, e.g. one failed input of ``--keep-going``).

    Raises:
        InputError: missing source, no images found, a listed file missing, two label
            candidates for one image, a malformed list.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: no such file or directory")
    if source.is_dir():
        pairs = _pairs_from_folder(source, labeled_only)
    elif source.suffix.lower() == ".csv":
        pairs = _pairs_from_csv(source, require_files)
    elif source.suffix.lower() == ".json":
        pairs = _pairs_from_json(source, require_files)
    else:
        raise InputError(f"{source}: expected a folder, a .csv or a .json list of images")
    if labeled_only:
        pairs = [pair for pair in pairs if pair[1] is not None]
    if not pairs:
        what = "labelled images" if labeled_only else "images"
        if not source.is_dir():
            raise InputError(f"{source}: the list names no {what}")
        raise InputError(
            f"{source}: no {what} found (looked for {', '.join(IMAGE_SUFFIXES)} files)"
        )
    return pairs


def _pairs_from_folder(folder: Path, labeled_only: bool = False) -> list[tuple[Path, Path | None]]:
    label_dir = next((folder / n for n in _LABEL_FOLDERS if (folder / n).is_dir()), None)
    if label_dir is not None:
        image_dir = next((folder / n for n in _IMAGE_FOLDERS if (folder / n).is_dir()), folder)
        labels: dict[str, list[Path]] = {}
        for path in _image_files(label_dir):
            labels.setdefault(file_stem(path), []).append(path)
        pairs = []
        used: set[str] = set()
        for image in _image_files(image_dir):
            stem = file_stem(image)
            keys = [stem, stem[:-5]] if stem.endswith("_0000") else [stem]
            key = next((k for k in keys if k in labels), None)
            found = [] if key is None else labels[key]
            if key is None:
                warnings.warn(
                    f"{image}: no label map in {label_dir} ({stem}.*); "
                    + ("skipped" if labeled_only else "used without a label map"),
                    UserWarning,
                    stacklevel=4,
                )
            else:
                used.add(key)
            pairs.append((image, _one_label(image, found)))
        for stem, paths in labels.items():
            if stem not in used:
                for path in paths:
                    warnings.warn(
                        f"{path}: a label file without its image in {image_dir} ({stem}.*); "
                        "skipped",
                        UserWarning,
                        stacklevel=4,
                    )
        return pairs
    files = _image_files(folder)
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(file_stem(path), []).append(path)
    pairs = []
    for image in files:
        stem = file_stem(image)
        label_of = next(
            (stem[: -len(s)] for s in _LABEL_SUFFIXES if stem.endswith(s) and len(stem) > len(s)),
            None,
        )
        if label_of is not None:
            if label_of not in by_stem:
                warnings.warn(
                    f"{image}: a label file without its image ({label_of}.*); skipped",
                    UserWarning,
                    stacklevel=4,
                )
            continue  # a label file, never an image
        found = [p for s in _LABEL_SUFFIXES for p in by_stem.get(stem + s, [])]
        pairs.append((image, _one_label(image, found)))
    return pairs


def _one_label(image: Path, found: list[Path]) -> Path | None:
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(f"{image}: several label candidates ({names}); keep one")
    return found[0] if found else None


def _resolve(base: Path, value: object, listing: Path, where: str, require: bool = True) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{listing}: {where}: expected a file path, got {value!r}")
    path = Path(value.strip())
    path = path if path.is_absolute() else base / path
    if require and not path.exists():
        raise InputError(f"{listing}: {where}: {path} does not exist")
    return path


def _pairs_from_csv(listing: Path, require: bool = True) -> list[tuple[Path, Path | None]]:
    from ..io.image import _first_line

    try:
        with open(listing, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{listing}: cannot read the CSV ({_first_line(exc)})") from None
    if rows and "image" not in rows[0]:
        raise InputError(f"{listing}: needs a header row with an 'image' column")
    pairs = []
    for number, row in enumerate(rows, start=2):
        where = f"row {number}"
        image = _resolve(listing.parent, row.get("image"), listing, where, require)
        label_value = (row.get("label") or "").strip()
        label = (
            _resolve(listing.parent, label_value, listing, where, require) if label_value else None
        )
        pairs.append((image, label))
    return pairs


def _pairs_from_json(listing: Path, require: bool = True) -> list[tuple[Path, Path | None]]:
    from ..io.image import _first_line

    try:
        content = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{listing}: cannot read the JSON ({_first_line(exc)})") from None
    if isinstance(content, dict):
        content = content.get("pairs", content.get("training"))
    if not isinstance(content, list):
        raise InputError(f'{listing}: expected a list of {{"image": ..., "label": ...}} entries')
    pairs = []
    for number, entry in enumerate(content):
        where = f"entry {number}"
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise InputError(f"{listing}: {where}: expected an object with an 'image' key")
        image = _resolve(listing.parent, entry["image"], listing, where, require)
        label_value = entry.get("label")
        label = (
            _resolve(listing.parent, label_value, listing, where, require) if label_value else None
        )
        pairs.append((image, label))
    return pairs


# ----------------------------------------------------------------------------------------------
# Listing the inputs of a run
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputItem:
    """One input of a batch: an image and the label maps on its grid.

    Attributes:
        index: position in the input list (0-based).
        name: unique name: the output subfolder and part of every sample's seed.
        image: the image file (or DICOM series folder).
        labels: label-map files deformed alike, possibly none.
    """

    index: int
    name: str
    image: Path
    labels: tuple[Path, ...] = ()


def input_name(path: str | Path) -> str:
    """The name an image contributes to output paths: :func:`drdm.io.file_stem`."""
    return file_stem(path)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """File stems, the repeated ones made unique with ``-2``, ``-3``, ... in list order."""
    used: set[str] = set()
    names = []
    for path in paths:
        base = input_name(path) or "image"
        name, count = base, 1
        while name in used:
            count += 1
            name = f"{base}-{count}"
        used.add(name)
        names.append(name)
    return names


def list_inputs(
    image: str | Path | None = None,
    labels: Sequence[str | Path] = (),
    input: str | Path | None = None,
    require_files: bool = True,
) -> list[InputItem]:
    """The inputs of a run: ``image`` (a file or a DICOM series folder) with its ``labels``, or
    ``input``: a folder of images with matching labels, or a ``.csv`` / ``.json`` list, paired
    by :func:`find_pairs` (one label map per image).

    Raises :class:`~drdm.errors.InputError` when both or neither of ``image`` and ``input`` are
    given, ``labels`` come with ``input``, a folder holds no image, or a list is malformed or
    (with ``require_files``) names a missing file. Images are not opened here (unreadable or
    missing ones are reported when an input is read: one failed input of ``--keep-going``).
    """
    if (image is None) == (input is None):
        raise InputError("give exactly one of image and input")
    pairs: list[tuple[Path, tuple[Path, ...]]]
    if image is not None:
        pairs = [(Path(image), tuple(Path(p) for p in labels))]
    else:
        if labels:
            raise InputError("labels go with image; with input, pair the labels there")
        found = find_pairs(Path(input), require_files=require_files)  # type: ignore[arg-type]
        pairs = [(Path(img), () if lab is None else (Path(lab),)) for img, lab in found]
    names = _unique_names([p[0] for p in pairs])
    return [
        InputItem(index=k, name=name, image=img, labels=labs)
        for k, (name, (img, labs)) in enumerate(zip(names, pairs, strict=True))
    ]


def parse_slice_axis(text: str | int) -> str | int:
    """``slice_axis``: ``"auto"`` or 0, 1, 2 (also as text)."""
    if text == "auto" or (isinstance(text, int) and not isinstance(text, bool) and 0 <= text < 3):
        return text
    if text in ("0", "1", "2"):
        return int(text)
    raise InputError(f"slice_axis {text}: expected auto, 0, 1 or 2")


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
    resample_option: str | None = "resample_label=True",
) -> LoadedInput:
    """Read an image and its label maps (:func:`drdm.io.read_image`) and check them against
    ``method``.

    ``resample_option``: what resamples a label map on another grid for the caller, named in
    the error (``None``: the caller has nothing, e.g. :func:`~drdm.batch.generate_file`).

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
