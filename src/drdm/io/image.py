"""Medical images (NIfTI, MetaImage, NRRD, DICOM series) with their geometry.

Array and geometry conventions
------------------------------
* :class:`MedicalImage` ``array`` keeps the axis order nibabel returns for a NIfTI file,
  ``(i, j, k)`` (or ``(i, j)`` for 2D). Files read through SimpleITK (``.mha``/``.mhd``,
  ``.nrrd``/``.nhdr``, DICOM series folders) are transposed into the same order
  (``GetArrayFromImage`` gives ``(k, j, i)``).
* ``affine`` is always 4 x 4 and maps a voxel index ``(i, j, k, 1)`` to RAS+ millimetres
  (NIfTI's world frame). ITK's world frame is LPS: ITK point = ``diag(-1, -1, 1)`` x RAS point.
  A 2D image keeps a 4 x 4 affine (its third column is the slice normal times the slice
  thickness).
* A NIfTI file of shape ``X x Y x 1`` is read as a 2D image (``squeezed=True``);
  :func:`write_image` writes it back as ``X x Y x 1``.

Geometry policy (ITK's, measured with SimpleITK 2.5 / ITK 5.4)
--------------------------------------------------------------
For a NIfTI header the affine is built the way ITK's NIfTI reader builds its origin, spacing
and direction, so that this package and ITK-based tools (SimpleITK, ANTs, ITK-SNAP, 3D Slicer)
agree on where every voxel is:

1. Which transform: the **sform** when ``sform_code == 1`` (scanner) or when the qform is
   absent (``qform_code == 0``) and ``sform_code > 0``; otherwise the **qform** when
   ``qform_code > 0``. With neither, the grid ITK builds is used: origin 0, spacing
   ``|pixdim|`` and the LPS direction ``diag(sign(pixdim))`` (identity unless a pixdim is
   negative), i.e. RAS affine ``diag(-dx, -dy, dz)`` with the signed ``pixdim`` as stored in the
   file (nibabel makes them positive; the raw header is read for the signs); a warning is
   emitted.
2. Spacing always comes from ``pixdim``; the direction is the chosen matrix's columns
   normalised; the origin is its translation. An sform whose column lengths contradict
   ``pixdim`` (relative difference above 1e-3) therefore keeps the pixdim spacing (warning).
3. An sform with shear (normalised columns not orthogonal) cannot be represented by ITK: the
   qform is used instead (warning), or, without a qform, the file is rejected.
4. A 2D file (``dim[0] == 2``) is placed by its first two columns only, as in ITK; a third
   column that is not the plane normal (some tools write zeros) is replaced by the normal
   (warning; ITK rejects such a file when it has no qform).
5. When both qform and sform are set and describe different grids (any voxel corner further
   apart than 1e-3 voxel), a warning names the one used.

Warnings are :class:`GeometryWarning` (a ``UserWarning``), one line naming the file. MetaImage,
NRRD and DICOM geometry is taken from SimpleITK as is.

Written files keep the input's grid exactly: NIfTI outputs get ``affine`` as both qform and
sform (codes 1, scanner), so the two always agree; ``.mha``/``.nrrd`` outputs get the same
origin, spacing and direction through SimpleITK.

Kinds
-----
``kind="image"``: the array is returned as float32 (float64 input stays float64), i.e. the
input's intensity values in floating point (NIfTI ``scl_slope``/``scl_inter`` applied); images
are written as float32. ``kind="label"``: values must be integral, non-negative and at most
``2**63 - 1`` (label maps are warped as int64; larger values are refused, never wrapped); the
array is returned with an integer dtype (the file's own integer type, or the smallest unsigned
type holding the values when the file stores floats) and written with the input label's dtype,
64-bit types included, every value exact.

Displacement fields
-------------------
:func:`write_displacement` stores a ``(ndim, *spatial)`` voxel-unit field (pull-back,
``warped(x) = image(x + u(x))``) either as a NIfTI file of physical millimetre vectors that
SimpleITK reads as a vector image and turns into a ``sitk.DisplacementFieldTransform``, or as a
plain ``.npy`` of voxel units. The NIfTI layout (measured with SimpleITK 2.4 and 2.5, ITK 5.4):

* 3D, ``(X, Y, Z, 1, 3)``: intent ``NIFTI_INTENT_DISPVECT`` (1006), vectors in the RAS+ world
  frame (the NIfTI convention). ITK's reader converts them to LPS by negating the first two
  components: a stored ``(1, 2, 3)`` is read as ``(-1, -2, 3)``.
* 2D, ``(X, Y, 1, 1, 2)``: intent ``NIFTI_INTENT_VECTOR`` (1007, name ``disp_mm_lps``), vectors
  already in ITK's LPS frame (the convention of ANTs warp files), which ITK reads unchanged.
  DISPVECT is not used in 2D because ITK's conversion assumes 3 components: on a
  2-component field it negates every first and second value of each group of three stored
  values, scrambling the vectors (a stored ``(1, 2), (11, 12), (21, 22)`` is read as
  ``(-1, -2), (11, -12), (-21, 22)``). SimpleITK 2.3 (ITK 5.3) reads DISPVECT files as 5D
  scalar images, hence the requirement ``SimpleITK>=2.4``.

Either way ``sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))`` used in
``sitk.Resample(moving, reference, transform, ...)`` reproduces the package's own warp. A 2D
image stored as ``X x Y x 1`` is a 3D image for ITK; take its slice (``image[:, :, 0]``) before
applying the 2D field.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import nibabel as nib
import numpy as np

from ..choices import DDF_FORMATS, DdfFormat, check_choice
from ..errors import InputError
from .files import IMAGE_SUFFIXES, atomic_path, image_suffix
from .geometry import spacing_from_affine

NIFTI_INTENT_VECTOR = 1007
NIFTI_INTENT_DISPVECT = 1006
_DISP_RAS = "disp_mm_ras"
_DISP_LPS = "disp_mm_lps"
_DDF_VOXELS = "ddf_voxels"  # voxel fields of the removed write_ddf: still readable
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_READ_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
SITK_WRITE_SUFFIXES = (".mha", ".nrrd")
#: NIfTI spatial units converted to millimetres on reading (others, and "unknown", are mm)
_UNIT_TO_MM = {"meter": 1000.0, "micron": 1e-3, "mm": 1.0}
_FLOAT32_MAX = float(np.finfo(np.float32).max)

Kind = Literal["image", "label"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_ORTHO_TOL = 1e-4  # |R^T R - I| above this (normalised columns) counts as shear
_SCALE_RTOL = 1e-3  # sform column length vs pixdim
_AGREE_TOL_VOX = 1e-3  # qform vs sform, in voxels at the grid corners


class GeometryWarning(UserWarning):
    """An inconsistent image header (the policy in :mod:`drdm.io.image` decided the grid)."""


class ITKGeometry(NamedTuple):
    """Geometry in ITK's terms (LPS world frame), ready for ``SetOrigin`` etc."""

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]  # row-major ndim x ndim; column a is array axis a


@dataclass
class MedicalImage:
    """An image or label map with its grid.

    Attributes:
        array: ``(i, j)`` or ``(i, j, k)`` array in nibabel's axis order.
        affine: 4 x 4 voxel index -> RAS+ millimetres.
        path: the file (or DICOM folder) it came from, if any.
        squeezed: the file stored this 2D image as ``X x Y x 1``; writing restores that axis.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    squeezed: bool = False

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4 x 4, got {self.affine.shape}")
        if self.path is not None:
            self.path = Path(self.path)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Millimetres per voxel along each array axis (length ``ndim``)."""
        return spacing_from_affine(self.affine, self.ndim)

    @property
    def name(self) -> str:
        """The file name for messages (``"<array>"`` without a path)."""
        return str(self.path) if self.path is not None else "<array>"

    def with_array(self, array: np.ndarray) -> MedicalImage:
        """A new image on this grid (same affine, ``squeezed``) holding ``array``."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the grid {self.shape}")
        return MedicalImage(array, self.affine.copy(), None, self.squeezed)

    def index_to_lps(self) -> np.ndarray:
        """``(ndim, ndim)`` linear part of index -> ITK physical (LPS mm) as ITK sees it.

        3D: ``diag(-1, -1, 1) @ affine[:3, :3]``. 2D: ITK keeps the first two rows of each
        in-plane column, renormalised to the column's full length (its spacing).
        """
        lps = _RAS_TO_LPS @ self.affine[:3, :3]
        if self.ndim == 3:
            return lps
        spacing = np.linalg.norm(lps[:, :2], axis=0)
        plane = lps[:2, :2]
        norms = np.linalg.norm(plane, axis=0)
        if np.any(norms < 1e-6 * spacing) or abs(np.linalg.det(plane / norms)) < 1e-3:
            raise InputError(
                f"{self.name}: the 2D image plane is perpendicular to the x-y plane; ITK's 2D "
                "geometry cannot represent it"
            )
        return plane / norms * spacing

    def itk_geometry(self) -> ITKGeometry:
        """Origin, spacing and direction as ITK (SimpleITK) uses them for this image."""
        matrix = self.index_to_lps()
        spacing = np.linalg.norm(matrix, axis=0)
        direction = matrix / spacing
        origin = (_RAS_TO_LPS @ self.affine[:3, 3])[: self.ndim]
        return ITKGeometry(
            tuple(float(v) for v in origin),
            tuple(float(v) for v in spacing),
            tuple(float(v) for v in direction.ravel()),
        )


# ----------------------------------------------------------------------------- reading


def read_image(
    path: str | Path,
    kind: Kind = "image",
    frame: int | None = None,
    *,
    frame_option: str | None = "frame",
) -> MedicalImage:
    """Read a 2D or 3D image or label map with its geometry.

    Args:
        path: ``.nii``/``.nii.gz`` (nibabel), ``.mha``/``.mhd``/``.nrrd``/``.nhdr``
            (SimpleITK) or a folder holding one DICOM series.
        kind: ``"image"`` (float32, float64 kept) or ``"label"`` (integer, validated).
        frame: the time point to take from a 4D time series (0-based); ignored for images
            without a time axis. A 4D series without ``frame`` is an error.
        frame_option: what chooses ``frame`` for the caller (e.g. a command's ``--frame``),
            named in the messages about 4D series (``None``: the caller has nothing; the
            message says to extract one frame).

    Returns:
        :class:`MedicalImage` in ``(i, j[, k])`` order with a RAS+ affine (policy: module
        docstring).

    Raises:
        InputError: one line naming the file: missing, not an image, unreadable or truncated,
            NaN/Inf voxels, 4D without ``frame`` or ``frame`` out of range, not 2D/3D, an
            axis with fewer than 2 voxels, invalid label values.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        array, affine = _read_dicom_series(path)
    else:
        suffix = image_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            array, affine = _read_nifti(path, frame)
        elif suffix in SITK_READ_SUFFIXES:
            array, affine = _read_sitk(path)
        else:
            raise InputError(
                f"{path}: unsupported file type (expected {', '.join(IMAGE_SUFFIXES)} "
                "or a DICOM series folder)"
            )
    array = _select_frame(array, path, frame, frame_option)
    squeezed = False
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
        squeezed = True
    if array.ndim not in (2, 3):
        raise InputError(
            f"{path}: image is {array.ndim}D with shape {array.shape}, expected 2D or 3D"
        )
    if min(array.shape) < 2:
        raise InputError(f"{path}: every axis needs at least 2 voxels, got shape {array.shape}")
    array = _as_kind(array, path, kind)
    return MedicalImage(array=array, affine=affine, path=path, squeezed=squeezed)


@dataclass
class Volume:
    """An image as float array with its voxel -> RAS+ millimetre affine (4 x 4), as
    :func:`read_volume` returns it (the reading policy of :func:`read_image`)."""

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def ndim(self) -> int:
        return self.array.ndim


def read_volume(path: str | Path, allow_ndim: tuple[int, ...] = (2, 3)) -> Volume:
    """Read an image (any format :func:`read_image` reads, its geometry policy included) as a
    float :class:`Volume`; an ``X x Y x 1`` file is 2D.

    Raises :class:`~drdm.errors.InputError` (one line naming the file) for everything
    :func:`read_image` refuses and for a dimensionality outside ``allow_ndim``.
    """
    image = read_image(path, kind="image", frame_option=None)
    if image.ndim not in allow_ndim:
        wanted = " or ".join(f"{d}D" for d in allow_ndim)
        raise InputError(
            f"{path}: image is {image.ndim}D with shape {image.shape}, expected {wanted}"
        )
    return Volume(array=image.array, affine=image.affine, path=image.path)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    for line in lines:  # ITK messages: the useful part follows "ITK ERROR:"
        if "ERROR:" in line:
            text = line.split("ERROR:", 1)[1]
            break
    return re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", text).strip()[:200]


def _select_frame(
    array: np.ndarray, path: Path, frame: int | None, option: str | None = "frame"
) -> np.ndarray:
    """Drop trailing singleton axes beyond the third; pick ``frame`` of a 4D series."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 4:
        frames = array.shape[3]
        if frame is None:
            how = (
                f"choose one with {option} (0..{frames - 1})"
                if option
                else "save the frame to use as a 2D or 3D file"
            )
            raise InputError(
                f"{path}: 4D time series with {frames} frames (shape {array.shape}); {how}"
            )
        if not 0 <= frame < frames:
            raise InputError(
                f"{path}: {option or 'frame'} {frame} is out of range, the series has {frames} "
                f"frames (0..{frames - 1})"
            )
        array = array[..., frame]
    return array


def _as_kind(array: np.ndarray, path: Path, kind: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{path}: voxel type {array.dtype} is not a real number type")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{path}: contains {bad} NaN or Inf voxel(s)")
    if kind == "image" and array.size:
        # outputs are float32 and the warps compute in float32: larger values become Inf/NaN
        peak = float(np.abs(array).max())
        if peak > _FLOAT32_MAX:
            raise InputError(
                f"{path}: intensities up to {peak:.3g} exceed the float32 range "
                f"(+-{_FLOAT32_MAX:.3g}); rescale the image"
            )
    if kind == "image":
        return np.ascontiguousarray(
            array, dtype=np.float64 if array.dtype == np.float64 else np.float32
        )
    if np.issubdtype(array.dtype, np.floating):
        fractional = array != np.round(array)
        if fractional.any():
            example = float(array[fractional].flat[0])
            raise InputError(
                f"{path}: label map has non-integer values (e.g. {example:g}); "
                "labels must be integers"
            )
    low = array.min()
    if low < 0:
        raise InputError(f"{path}: label map has negative values (minimum {low:g})")
    high = array.max()
    # label maps are warped as int64: larger values would wrap around (2**63 -> -2**63)
    integer = np.issubdtype(array.dtype, np.integer)
    if int(high) > _LABEL_MAX if integer else float(high) >= 2.0**63:
        raise InputError(
            f"{path}: label values up to {int(high)} exceed the largest supported label "
            f"2**63 - 1 = {_LABEL_MAX}; renumber the labels"
        )
    if integer:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray(array.astype(_label_dtype_for(int(high))))


#: the largest label value (label maps are warped as int64)
_LABEL_MAX = int(np.iinfo(np.int64).max)


def _label_dtype_for(high: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


class _NibabelMessages(logging.Handler):
    """Collects what nibabel's ``nibabel.global`` logger says (it prints unprefixed lines such
    as ``pixdim[1,2,3] should be non-zero`` to stderr by default)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _nibabel_quiet(path: Path) -> Iterator[None]:
    """Keep nibabel's header-check messages off the terminal while reading ``path``; those
    that matter come back as one-line :class:`GeometryWarning` naming the file (the pixdim
    fixes are not repeated: :func:`_nifti_affine` judges the raw pixdim itself)."""
    logger = logging.getLogger("nibabel.global")
    handlers = list(logger.handlers)
    collector = _NibabelMessages()
    for handler in handlers:
        logger.removeHandler(handler)
    logger.addHandler(collector)
    failed = False
    try:
        yield
    except BaseException:
        failed = True  # the error names the problem; the messages would only repeat it
        raise
    finally:
        logger.removeHandler(collector)
        for handler in handlers:
            logger.addHandler(handler)
        if not failed:
            for message in dict.fromkeys(collector.messages):
                if message.startswith("pixdim"):
                    continue
                text = " ".join(message.split())
                warnings.warn(f"{path}: header: {text}", GeometryWarning, stacklevel=4)


def _raw_pixdim(image: nib.Nifti1Image, path: Path) -> np.ndarray | None:
    """``pixdim[1:4]`` as stored in the file: nibabel's reader replaces negative values by
    their absolute value and zeros by 1, where ITK keeps the signs (codes 0: axis flips)."""
    try:
        with nib.openers.ImageOpener(str(path)) as handle:
            raw = type(image.header).from_fileobj(handle, check=False)
    except Exception:  # noqa: BLE001 - the checked header is then all there is
        return None
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def _read_nifti(path: Path, frame: int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        with _nibabel_quiet(path):
            image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
            raise InputError(f"{path}: not a NIfTI image")
        shape = image.shape
        if (
            len(shape) >= 4
            and all(s == 1 for s in shape[4:])
            and frame is not None
            and 0 <= frame < shape[3]
        ):  # read only the chosen time point
            array = np.asarray(image.dataobj[(slice(None),) * 3 + (frame,)])
            array = array.reshape(shape[:3])
        else:
            array = np.asarray(image.dataobj)
        affine = _nifti_affine(
            image.header, path, spatial_ndim=min(len(shape), 3), pixdim=_raw_pixdim(image, path)
        )
    except InputError:
        raise
    except Exception as exc:  # nibabel, gzip and numpy raise many types for corrupt files
        raise InputError(f"{path}: cannot read as NIfTI ({_first_line(exc)})") from None
    return array, affine


def _nifti_affine(
    header: nib.Nifti1Header, path: Path, spatial_ndim: int, pixdim: np.ndarray | None = None
) -> np.ndarray:
    """The voxel -> RAS affine ITK would use for this header (policy: module docstring), in
    millimetres: a header in metres or microns is converted (as ITK does), not relabelled.
    ``pixdim``: ``pixdim[1:4]`` as stored in the file, signs and zeros included (default: the
    header's, which nibabel has made positive)."""
    affine = _nifti_affine_native(header, path, spatial_ndim, pixdim)
    unit = header.get_xyzt_units()[0]
    affine[:3] *= _UNIT_TO_MM.get(unit, 1.0)
    return affine


def _nifti_affine_native(
    header: nib.Nifti1Header, path: Path, spatial_ndim: int, raw: np.ndarray | None = None
) -> np.ndarray:
    """:func:`_nifti_affine` in the header's own spatial unit."""
    qcode = int(header["qform_code"])
    scode = int(header["sform_code"])
    stored = np.asarray(header["pixdim"][1:4] if raw is None else raw, dtype=np.float64)
    pixdim = np.abs(stored)
    bad = ~np.isfinite(pixdim) | (pixdim == 0)
    if bad[:spatial_ndim].any():
        shown = ", ".join(f"{float(v):g}" for v in stored[:spatial_ndim])
        warnings.warn(
            f"{path}: pixdim ({shown}) has zero or invalid voxel sizes; using 1 mm for those axes",
            GeometryWarning,
            stacklevel=4,
        )
    pixdim[bad] = 1.0
    # ITK's grid without qform and sform: origin 0, spacing |pixdim|, LPS direction
    # diag(sign(pixdim)) (a negative pixdim flips its axis)
    signs = np.where(np.isfinite(stored) & (stored < 0), -1.0, 1.0)

    def rotation(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
        matrix = matrix.copy()
        if spatial_ndim == 2:  # ITK ignores the third column of a 2D file; some tools zero it
            normal = np.cross(matrix[:3, 0], matrix[:3, 1])
            third = matrix[:3, 2]
            cosine = abs(third @ normal) / max(
                np.linalg.norm(third) * np.linalg.norm(normal), 1e-12
            )
            if np.linalg.norm(normal) > 0 and cosine < 1.0 - 1e-6:
                matrix[:3, 2] = (-1.0 if third @ normal < 0 else 1.0) * normal
                warnings.warn(
                    f"{path}: the third column of this 2D image's transform is not the plane "
                    "normal; using the normal (ITK rejects such a file without a qform)",
                    GeometryWarning,
                    stacklevel=5,
                )
        norms = np.linalg.norm(matrix[:3, :3], axis=0)
        norms[norms == 0] = 1.0
        cols = matrix[:3, :3] / norms
        ok = np.abs(cols.T @ cols - np.eye(3)).max() < _ORTHO_TOL
        u, _, vt = np.linalg.svd(cols)
        return u @ vt, ok

    def build(rot: np.ndarray, origin: np.ndarray) -> np.ndarray:
        affine = np.eye(4)
        affine[:3, :3] = rot * pixdim
        affine[:3, 3] = origin
        return affine

    sform = header.get_sform() if scode > 0 else None
    qform = header.get_qform() if qcode > 0 else None
    use_sform = sform is not None and (scode == 1 or qform is None)
    if use_sform:
        rot, ok = rotation(sform)
        if not ok:
            if qform is None:
                raise InputError(
                    f"{path}: the sform has shear and there is no qform; "
                    "the voxel grid cannot be represented (ITK rejects it too)"
                )
            warnings.warn(
                f"{path}: the sform has shear (not a rotation with voxel sizes); "
                f"using the qform (code {qcode}) as ITK does",
                GeometryWarning,
                stacklevel=4,
            )
            use_sform = False
        else:
            scales = np.linalg.norm(sform[:3, :spatial_ndim], axis=0)
            if np.any(np.abs(scales - pixdim[:spatial_ndim]) > _SCALE_RTOL * pixdim[:spatial_ndim]):
                warnings.warn(
                    f"{path}: sform voxel sizes {_fmt(scales)} contradict pixdim "
                    f"{_fmt(pixdim[:spatial_ndim])}; using pixdim spacing as ITK does",
                    GeometryWarning,
                    stacklevel=4,
                )
            affine = build(rot, sform[:3, 3])
    if not use_sform:
        if qform is None:
            flips = [a for a in range(spatial_ndim) if signs[a] < 0]
            how = "identity direction"
            if flips:
                axes = ", ".join(map(str, flips))
                how = f"axis {axes} flipped" if len(flips) == 1 else f"axes {axes} flipped"
                how += " (negative pixdim)"
            warnings.warn(
                f"{path}: no qform or sform (codes 0); placing the grid as ITK does: origin 0, "
                f"spacing |pixdim|, {how} in ITK's LPS frame",
                GeometryWarning,
                stacklevel=4,
            )
            return build(np.diag([-1.0, -1.0, 1.0]) * signs, np.zeros(3))
        rot, _ = rotation(qform)
        affine = build(rot, qform[:3, 3])
    if sform is not None and qform is not None:
        other = qform if use_sform else sform
        corners = _corners(tuple(int(s) for s in header.get_data_shape()[:spatial_ndim]))
        gap = np.abs((affine[:3] - other[:3]) @ corners).max()
        if gap > _AGREE_TOL_VOX * float(pixdim[:spatial_ndim].min()):
            used = f"sform (code {scode})" if use_sform else f"qform (code {qcode})"
            warnings.warn(
                f"{path}: qform and sform disagree (up to {gap:.3g} mm at the grid corners); "
                f"using the {used} as ITK does",
                GeometryWarning,
                stacklevel=4,
            )
    return affine


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _corners(shape: Sequence[int]) -> np.ndarray:
    """``(4, 2**n)`` homogeneous voxel indices of the grid corners (unused axes at 0)."""
    ndim = len(shape)
    grids = np.meshgrid(*[[0, max(s - 1, 0)] for s in shape], indexing="ij")
    corners = np.zeros((4, 2**ndim))
    for axis in range(ndim):
        corners[axis] = grids[axis].ravel()
    corners[3] = 1.0
    return corners


def _sitk() -> object:
    import SimpleITK as sitk

    return sitk


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's own warnings (printed to stderr) while reading; errors still raise."""
    sitk = _sitk()
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


def _from_sitk(image: object, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Array in (i, j, k[, t]) order and RAS affine from a SimpleITK image."""
    sitk = _sitk()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "expected a scalar image"
        )
    dim = image.GetDimension()
    array = sitk.GetArrayFromImage(image).transpose(tuple(range(dim))[::-1])
    spatial = min(dim, 3)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    lps = np.eye(3)
    lps[:spatial, :spatial] = direction[:spatial, :spatial] * spacing[:spatial]
    lps_origin = np.zeros(3)
    lps_origin[:spatial] = origin[:spatial]
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ lps
    affine[:3, 3] = _RAS_TO_LPS @ lps_origin
    return array, affine


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    sitk = _sitk()
    try:
        with _quiet_itk():
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read the image ({_first_line(exc)})") from None
    return _from_sitk(image, path)


def _read_dicom_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    sitk = _sitk()
    with _quiet_itk():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(f"{path}: is a directory but holds no DICOM series")
    if len(series) > 1:
        raise InputError(f"{path}: holds {len(series)} DICOM series; put one series per folder")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
    try:
        with _quiet_itk():
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read the DICOM series ({_first_line(exc)})") from None
    return _from_sitk(image, path)


# ----------------------------------------------------------------------------- writing


def _check_writable(like: MedicalImage) -> None:
    cols = like.affine[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms == 0) or np.abs((cols / norms).T @ (cols / norms) - np.eye(3)).max() > 1e-4:
        raise ValueError(
            f"{like.name}: affine columns are not orthogonal; a NIfTI qform (and ITK) cannot "
            "represent this grid"
        )


def _nifti_header_image(
    data: np.ndarray, affine: np.ndarray, dtype: np.dtype | None = None
) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, affine, dtype=dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image


def _output_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(SITK_WRITE_SUFFIXES):
        return "sitk"
    raise ValueError(
        f"{path}: cannot write this file type; use .nii.gz, .nii, .mha or .nrrd "
        "(.mhd/.nhdr would need a second data file)"
    )


def _fits(dtype: type, low: int, high: int) -> bool:
    info = np.iinfo(dtype)
    return int(info.min) <= low and high <= int(info.max)


def _output_label_dtype(low: int, high: int, like: MedicalImage) -> np.dtype:
    dtype = like.array.dtype
    if np.issubdtype(dtype, np.integer) and _fits(dtype, low, high):
        return dtype
    if low < 0:
        return np.dtype(np.int32 if _fits(np.int32, low, high) else np.int64)
    return _label_dtype_for(high)


def _label_values(array: np.ndarray, path: Path) -> np.ndarray:
    """An integer array of the label values of ``array``, exactly: integer arrays as they
    are (never through float64, which rounds above 2**53), floating ones rounded; values
    outside the int64/uint64 range are an error, not a wrap-around."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise ValueError(f"{path}: label values must be finite integers")
    rounded = np.rint(array)
    if rounded.size and (rounded.min() < -(2.0**63) or rounded.max() >= 2.0**64):
        raise ValueError(f"{path}: label values beyond the 64-bit integer range")
    if rounded.size and rounded.max() >= 2.0**63:
        return rounded.astype(np.uint64)
    return rounded.astype(np.int64)


def write_image(
    path: str | Path, array: np.ndarray, like: MedicalImage, kind: Kind = "image"
) -> None:
    """Write ``array`` on the grid of ``like``, atomically.

    Args:
        path: ``.nii.gz``/``.nii`` (nibabel; qform = sform = ``like.affine``, codes 1) or
            ``.mha``/``.nrrd`` (SimpleITK; the same origin, spacing and direction; a 2D
            image there has ITK's 2D geometry, without the slice's through-plane position).
        array: ``like.shape`` array in ``(i, j[, k])`` order (numpy or CPU tensor).
        like: the image whose grid is kept (an ``X x Y x 1`` input is written the same way).
        kind: ``"image"`` -> float32; ``"label"`` -> values rounded to integers (integer
            arrays exactly, 64-bit values included) and stored with ``like``'s integer dtype
            (int64 stays int64; a wider type if the values do not fit).
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    array = np.asarray(array)
    if array.shape != like.array.shape:
        raise ValueError(f"{path}: array shape {array.shape} differs from the grid {like.shape}")
    fmt = _output_format(path)
    _check_writable(like)
    if kind == "label":
        values = _label_values(array, path)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        data = values.astype(_output_label_dtype(low, high, like))
    else:
        data = array.astype(np.float32)
    if fmt == "nifti":
        if like.squeezed:
            data = data[..., None]
        _save_nifti(_nifti_header_image(data, like.affine, data.dtype), path)
    else:
        _save_sitk(_to_sitk(data, like), path)


def _to_sitk(data: np.ndarray, like: MedicalImage) -> object:
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))
    if like.squeezed:  # keep the file's X x Y x 1 grid
        image = sitk.JoinSeries(image)
        lps = _RAS_TO_LPS @ like.affine[:3, :3]
        spacing = np.linalg.norm(lps, axis=0)
        image.SetSpacing(tuple(float(v) for v in spacing))
        image.SetDirection(tuple(float(v) for v in (lps / spacing).ravel()))
        image.SetOrigin(tuple(float(v) for v in _RAS_TO_LPS @ like.affine[:3, 3]))
    else:
        geometry = like.itk_geometry()
        image.SetSpacing(geometry.spacing)
        image.SetDirection(geometry.direction)
        image.SetOrigin(geometry.origin)
    return image


def _save_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """Save atomically; nibabel picks gzip from the name, so the temporary ends alike."""
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    with atomic_path(path) as tmp:
        real_tmp = tmp.with_name(tmp.name + suffix)
        try:
            nib.save(image, str(real_tmp))
            os.replace(real_tmp, tmp)
        finally:
            if real_tmp.exists():
                real_tmp.unlink()


def _save_sitk(image: object, path: Path) -> None:
    sitk = _sitk()
    suffix = ".mha" if path.name.lower().endswith(".mha") else ".nrrd"
    with atomic_path(path) as tmp:
        # SimpleITK picks the format from the suffix: write to a name that ends with it
        real_tmp = tmp.with_name(tmp.name + suffix)
        try:
            sitk.WriteImage(image, str(real_tmp), True)
            os.replace(real_tmp, tmp)
        finally:
            if real_tmp.exists():
                real_tmp.unlink()


# ------------------------------------------------------------------- displacement fields


def write_displacement(
    path: str | Path,
    ddf_voxels: np.ndarray,
    like: MedicalImage,
    format: DdfFormat = "nifti",
) -> None:
    """Write a displacement field on the grid of ``like``, atomically.

    Args:
        path: ``.nii.gz``/``.nii`` for ``"nifti"``, ``.npy`` for ``"npy"``.
        ddf_voxels: ``(ndim, *like.shape)`` displacement in voxels along the array axes
            (pull-back: ``warped(x) = image(x + u(x))``).
        like: the image the field belongs to.
        format: ``"nifti"``: physical millimetre vectors readable by SimpleITK as a
            ``DisplacementFieldTransform`` (3D: RAS, intent DISPVECT; 2D: LPS, intent VECTOR;
            see the module docstring); ``"npy"``: the float32 voxel array as given.
    """
    path = Path(path)
    ddf = np.asarray(ddf_voxels, dtype=np.float64)
    expected = (like.ndim, *like.shape)
    if ddf.shape != expected:
        raise ValueError(f"{path}: ddf shape {ddf.shape} does not match {expected}")
    if check_choice("format", format, DDF_FORMATS) == "npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, ddf.astype(np.float32))
        return
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: a NIfTI displacement field needs a .nii.gz or .nii name")
    _check_writable(like)
    ndim = like.ndim
    vectors = np.einsum("ab,b...->a...", like.index_to_lps(), ddf)  # ITK's LPS millimetres
    if ndim == 3:
        vectors[:2] *= -1.0  # RAS, the NIfTI displacement-vector convention
    data = np.moveaxis(vectors, 0, -1).astype(np.float32)
    data = data.reshape(*like.shape, *([1] * (3 - ndim)), 1, ndim)
    image = _nifti_header_image(data, like.affine)
    if ndim == 3:
        image.header.set_intent(NIFTI_INTENT_DISPVECT, name=_DISP_RAS)
    else:
        image.header.set_intent(NIFTI_INTENT_VECTOR, name=_DISP_LPS)
    _save_nifti(image, path)


def read_displacement(path: str | Path, like: MedicalImage | None = None) -> np.ndarray:
    """Read a field written by :func:`write_displacement` (or by the removed voxel writer
    ``write_ddf``: intent name ``ddf_voxels``) in voxels.

    Returns:
        float32 ``(ndim, *spatial)`` displacement in voxels along the array axes. With
        ``like``, the field's grid must match it (``InputError`` otherwise).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.name.lower().endswith(".npy"):
        try:
            ddf = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{path}: cannot read as .npy ({_first_line(exc)})") from None
        ndim = ddf.shape[0] if ddf.ndim else 0
        if ddf.ndim not in (3, 4) or ndim != ddf.ndim - 1:
            raise InputError(f"{path}: expected a (ndim, *spatial) field, got {ddf.shape}")
        if like is not None and ddf.shape[1:] != like.shape:
            raise InputError(f"{path}: field grid {ddf.shape[1:]} differs from {like.name}")
        return ddf.astype(np.float32)
    try:
        with _nibabel_quiet(path):
            image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as exc:
        raise InputError(f"{path}: cannot read as NIfTI ({_first_line(exc)})") from None
    if data.ndim != 5 or data.shape[3] != 1 or data.shape[4] not in (2, 3):
        raise InputError(f"{path}: not a displacement field (shape {data.shape})")
    ndim = data.shape[4]
    if ndim == 2 and data.shape[2] != 1:
        raise InputError(f"{path}: a 2-component field must be X x Y x 1, got {data.shape}")
    field = np.moveaxis(data[:, :, :, 0, :], -1, 0)
    field = field[:, :, :, 0] if ndim == 2 else field
    intent = int(image.header["intent_code"])
    name = image.header.get_intent()[2]
    if intent == NIFTI_INTENT_VECTOR and name == _DDF_VOXELS:  # voxels already
        ddf = field
    elif intent in (NIFTI_INTENT_VECTOR, NIFTI_INTENT_DISPVECT):
        # DISPVECT: RAS millimetres; VECTOR: ITK's LPS millimetres (as in ANTs warp files)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GeometryWarning)
            affine = _nifti_affine(image.header, path, spatial_ndim=3)
        grid = MedicalImage(np.empty(field.shape[1:], np.uint8), affine, path)
        lps = field.copy()
        if intent == NIFTI_INTENT_DISPVECT:
            lps[:2] *= -1.0
        ddf = np.einsum("ab,b...->a...", np.linalg.inv(grid.index_to_lps()), lps)
    else:
        raise InputError(f"{path}: NIfTI intent {intent} is not a displacement field")
    if like is not None:
        if ddf.shape[1:] != like.shape:
            raise InputError(f"{path}: field grid {ddf.shape[1:]} differs from {like.name}")
    return ddf.astype(np.float32)


# ------------------------------------------------------------------------ grids, pairs


def check_same_grid(
    image: MedicalImage,
    label: MedicalImage,
    path_hint: str | None = None,
    tolerance: float = 1e-2,
    resample_option: str | None = None,
) -> None:
    """Raise :class:`InputError` unless ``label`` lies on ``image``'s voxel grid.

    Shapes must be equal and the world positions of the grid corners may differ by at most
    ``tolerance`` voxels (of the smallest spacing). ``path_hint`` names the pair in the
    message when the images carry no path (e.g. ``"row 3 of pairs.csv"``);
    ``resample_option`` what resamples the label instead for the caller (e.g.
    ``"resample_label=True"``; ``None``: the message points at :func:`resample_label_to`).
    """
    image_name = str(image.path) if image.path is not None else (path_hint or "<image>")
    label_name = str(label.path) if label.path is not None else (path_hint or "<label>")
    advice = (
        f"; use {resample_option} to resample the label onto the image grid"
        if resample_option
        else "; resample the label onto the image grid first (drdm.io.resample_label_to)"
    )
    if image.shape != label.shape:
        raise InputError(
            f"{label_name}: label shape {label.shape} differs from image {image_name} "
            f"shape {image.shape}{advice}"
        )
    corners = _corners(image.shape)
    gap = float(np.linalg.norm((image.affine - label.affine)[:3] @ corners, axis=0).max())
    limit = tolerance * min(image.spacing)
    if gap > limit:
        raise InputError(
            f"{label_name}: label grid differs from image {image_name} (voxel corners up to "
            f"{gap:.3g} mm apart, spacing {_fmt(np.array(label.spacing))} vs "
            f"{_fmt(np.array(image.spacing))} mm){advice}"
        )


def resample_label_to(image: MedicalImage, label: MedicalImage) -> MedicalImage:
    """``label`` resampled onto ``image``'s grid by nearest neighbour (outside: 0).

    Works in world coordinates through both affines (2D images as one-voxel-thick slices).
    Returns a :class:`MedicalImage` with the label's dtype, ``image``'s affine and ``squeezed``
    flag, and ``label.path``.
    """
    transform = np.linalg.inv(label.affine) @ image.affine
    src = label.array if label.ndim == 3 else label.array[:, :, None]
    out_shape = image.shape if image.ndim == 3 else (*image.shape, 1)
    out = np.zeros(out_shape, dtype=label.array.dtype)
    ii, jj = np.meshgrid(np.arange(out_shape[0]), np.arange(out_shape[1]), indexing="ij")
    for k in range(out_shape[2]):  # one output slice at a time bounds the memory
        index = [
            np.floor(
                transform[a, 0] * ii
                + transform[a, 1] * jj
                + transform[a, 2] * k
                + transform[a, 3]
                + 0.5
            ).astype(np.int64)
            for a in range(3)
        ]
        inside = np.ones(ii.shape, dtype=bool)
        for a in range(3):
            inside &= (index[a] >= 0) & (index[a] < src.shape[a])
        out[:, :, k][inside] = src[index[0][inside], index[1][inside], index[2][inside]]
    array = out if image.ndim == 3 else out[:, :, 0]
    return MedicalImage(array, image.affine.copy(), label.path, image.squeezed)
