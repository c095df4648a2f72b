"""Deforming users' volumes with any deformation sampler (paper Algorithms 3 and 4).

>>> sampler = DRDMSampler(DRDM.from_pretrained("default"), level=45)   # doctest: +SKIP
>>> result = deform_volume(sampler, image, [label], torch.Generator().manual_seed(0),
...                        spacing=(1.56, 1.56, 10.0))                  # doctest: +SKIP
>>> result.image, result.labels[0], result.ddf                          # doctest: +SKIP

Conventions (as in :mod:`drdm.spatial`): volumes are arrays ``(*spatial)`` in the array order
of the file (nibabel's ``(i, j, k)``), or ``(C, *spatial)`` with ``channel_first=True``;
displacement fields are ``(ndim, *spatial)`` in VOXELS of the volume's grid, channel ``i``
along array axis ``i``, and warping pulls back: ``warped(x) = volume(x + u(x))``.

* A sampler of the volume's dimensionality gives one field for the whole volume (it resizes
  internally if it works on a fixed grid, as :class:`~drdm.DRDM` does).
* A 2D sampler on a 3D volume works slice by slice along ``slice_axis``: every slice gets its
  own deformation (all slices go through the sampler as one batch) and the through-plane
  component of the field is exactly zero.
* A 3D sampler on a 2D image is an error.
* The output image is ONE warp of the original at its native resolution (linear by default,
  or cubic); label maps are warped with :func:`~drdm.spatial.warp_labels` and keep their
  values and dtype; an optional :class:`IntensityTransform` is applied to the warped image
  afterwards (deformation first, then intensity).
* An optional second sampler ``then`` (e.g. BigAug's rotation, scaling and elastic
  deformation, :func:`drdm.pipelines.make_stack`) acts after the first deformation: its field
  is composed with the first one, so the output is still ONE warp. On a slice-wise volume a 2D
  ``then`` draws ONE in-plane field shared by all slices (the stack is rotated as a whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..choices import IMAGE_MODES, LABEL_METHODS, ImageMode, LabelMethod, Padding, check_choice
from ..errors import InputError
from ..io.geometry import auto_slice_axis
from ..seeding import fresh_generator
from ..spatial import (
    check_slice_axis,
    compose,
    field_to_slices,
    from_slices,
    slices_to_field,
    to_slices,
    warp,
    warp_label_maps,
)

if TYPE_CHECKING:
    from ..model import DRDM

__all__ = [
    "DeformResult",
    "DRDMSampler",
    "FieldSampler",
    "ForwardProcessSampler",
    "IntensityTransform",
    "SynthesisResult",
    "deform_volume",
    "resolve_slice_axis",
    "sample_field",
    "synthesize_pair",
    "warp_volume",
]

SliceAxis = Literal["auto"] | int | None


@runtime_checkable
class FieldSampler(Protocol):
    """Anything that samples random displacement fields for a batch of images.

    ``ndim`` (2 or 3) is the number of spatial axes it works on. ``sample_ddf(images,
    generator)`` takes ``(B, C, *spatial)`` images (any spatial size) and returns ``(B, ndim,
    *spatial)`` displacements in voxels of the images' grid, on the images' device; all
    randomness comes from ``generator``.
    """

    ndim: int

    def sample_ddf(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


@runtime_checkable
class IntensityTransform(Protocol):
    """A random intensity (appearance) change: ``(B, C, *spatial)`` images -> same shape."""

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


class DRDMSampler:
    """A :class:`FieldSampler` generating DRDM deformations at one level ``T'`` (Algorithm 2).

    Every image of the batch gets its own deformation (``model.generate(images, level,
    num_samples=1, normalize=normalize)``); with ``normalize`` (default) each image is min-max
    normalised for the network only. Images are moved to the model's device and the field
    comes back on the images' device and floating dtype. Multi-channel images are averaged to
    one channel when the network takes one. ``batch_size`` bounds how many images go through
    the network at once (``None``: all). ``stride`` and ``recursions`` override the model's
    sampler settings (:meth:`drdm.DRDM.generate`; ``None``: the model's, stride 4 by default).
    """

    def __init__(
        self,
        model: DRDM,
        level: int,
        batch_size: int | None = None,
        *,
        normalize: bool = True,
        stride: int | None = None,
        recursions: int | None = None,
    ) -> None:
        for name, value in (("stride", stride), ("recursions", recursions)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
            ):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise InputError(f"level must be an integer in 1..{model.num_steps}, got {level!r}")
        if not 1 <= int(level) <= model.num_steps:
            raise InputError(f"level {int(level)} is outside 1..{model.num_steps} (the model's T)")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, got {batch_size}")
        self.model = model
        self.level = int(level)
        self.batch_size = batch_size
        self.normalize = bool(normalize)
        self.stride = None if stride is None else int(stride)
        self.recursions = None if recursions is None else int(recursions)

    @property
    def ndim(self) -> int:
        """Spatial dimensionality of the model (2 or 3)."""
        return self.model.ndim

    def __repr__(self) -> str:
        return f"DRDMSampler(ndim={self.ndim}, level={self.level})"

    def sample_ddf(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, C, *spatial)`` -> ``(B, ndim, *spatial)`` voxels, one deformation per image."""
        if images.dim() != self.ndim + 2:
            raise ValueError(
                f"images must be (B, C, *spatial) with {self.ndim} spatial axes, "
                f"got {tuple(images.shape)}"
            )
        x = images
        if x.shape[1] != self.model.in_channels:
            if self.model.in_channels != 1:
                raise InputError(
                    f"images have {x.shape[1]} channel(s), the model takes {self.model.in_channels}"
                )
            x = x.float().mean(dim=1, keepdim=True)
        chunks = [x] if self.batch_size is None else list(x.split(self.batch_size))
        fields = [
            self.model.generate(
                chunk,
                self.level,
                num_samples=1,
                generator=generator,
                normalize=self.normalize,
                stride=self.stride,
                recursions=self.recursions,
            ).ddf
            for chunk in chunks
        ]
        dtype = images.dtype if images.is_floating_point() else torch.float32
        return torch.cat(fields).to(images.device, dtype)


class ForwardProcessSampler:
    """A :class:`FieldSampler` drawing the random forward process's cumulative field
    ``phi_{t:1}`` at timestep ``t`` (paper Eq. 7-8; no network): ``drdm diffuse``.

    ``process`` is a :class:`drdm.diffusion.ForwardDiffusion` (its ``config.ndim`` is the
    sampler's); every image of the batch gets its own field, in voxels of its grid.
    """

    def __init__(self, process: object, t: int) -> None:
        steps = int(process.config.num_steps)  # type: ignore[attr-defined]
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= steps:
            raise InputError(f"timestep {t!r} is outside 1..{steps}")
        self.process = process
        self.t = int(t)

    @property
    def ndim(self) -> int:
        return int(self.process.config.ndim)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"ForwardProcessSampler(ndim={self.ndim}, t={self.t})"

    def sample_ddf(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, C, *spatial)`` -> ``(B, ndim, *spatial)`` voxels, one field per image."""
        x = images if images.is_floating_point() else images.float()
        result = self.process.sample(x, self.t, generator=generator)  # type: ignore[attr-defined]
        return result.cumulative.to(images.device, x.dtype)


@dataclass
class DeformResult:
    """Output of :func:`deform_volume`.

    Attributes:
        image: the deformed image, same shape as the input (``(*spatial)``, or
            ``(C, *spatial)`` with ``channel_first=True``), floating (the input's floating
            dtype; float32 for integer inputs).
        labels: the deformed label maps, each of its input's shape, dtype and label values.
        ddf: ``(ndim, *spatial)`` float32 displacement in voxels of the volume's grid
            (``ndim`` of the volume; the through-plane component is zero for slice-wise fields),
            with ``image = warp(original, ddf)``.
        slice_axis: the axis the volume was processed along slice by slice, or ``None``.
    """

    image: np.ndarray
    labels: list[np.ndarray]
    ddf: np.ndarray
    slice_axis: int | None = None


@dataclass
class SynthesisResult:
    """Output of :func:`synthesize_pair` (a registration training triple, Algorithm 4).

    Convention (pull-back, voxels, fields ``(ndim, *spatial)`` on the volume's grid)::

        moving = warp(I0, ddf_aug)                        # phi_aug(I0)
        fixed  = warp(I0, ddf_fixed)                      # ONE warp of I0
        ddf_fixed = compose(ddf_syn, ddf_aug)             # = ddf_aug(x + ddf_syn(x)) + ddf_syn(x)
        fixed ≈ warp(moving, ddf_syn)                     # fixed(x) ≈ moving(x + ddf_syn(x))

    i.e. ``ddf_syn`` is the displacement a registration network predicts for the pair
    (moving, fixed): defined on the fixed image's grid, it tells where each fixed voxel is
    found in the moving image. Labels follow the images (``moving_labels``/``fixed_labels``).
    """

    moving: np.ndarray
    fixed: np.ndarray
    moving_labels: list[np.ndarray]
    fixed_labels: list[np.ndarray]
    ddf_syn: np.ndarray
    ddf_aug: np.ndarray
    ddf_fixed: np.ndarray
    slice_axis: int | None = None


# ---------------------------------------------------------------------------- helpers
def resolve_slice_axis(
    shape: Sequence[int], spacing: Sequence[float] | None = None, slice_axis: SliceAxis = "auto"
) -> int:
    """The axis along which a 3D volume of ``shape`` is processed slice by slice.

    ``"auto"``: the package's one rule, :func:`drdm.io.geometry.auto_slice_axis` (a one-voxel
    axis; else the axis of the largest spacing when ``spacing`` (mm per axis) is given and
    clearly anisotropic, largest / second largest > 1.5; else the axis with the fewest voxels,
    the last one on ties), also used by training. An int (negative counts from the end) is
    taken as given. ``None`` is an error (:class:`~drdm.errors.InputError`).
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if slice_axis is None:
        raise InputError(
            f"a 2D deformation model needs a slice axis for a {ndim}D volume of shape {shape} "
            "(slice_axis='auto' or an axis index)"
        )
    if isinstance(slice_axis, str):
        if slice_axis != "auto":
            raise InputError(f"slice_axis must be 'auto', an int or None, got {slice_axis!r}")
        return auto_slice_axis(shape, spacing)
    if isinstance(slice_axis, bool) or not isinstance(slice_axis, (int, np.integer)):
        raise InputError(f"slice_axis must be 'auto', an int or None, got {slice_axis!r}")
    if not -ndim <= int(slice_axis) < ndim:
        raise InputError(f"slice_axis {slice_axis} is out of range for a {ndim}D volume")
    return int(slice_axis) % ndim


def _as_tensor(x: np.ndarray | Tensor, what: str) -> Tensor:
    if isinstance(x, Tensor):  # subclasses (e.g. MONAI's MetaTensor) as plain tensors
        return x.detach().as_subclass(Tensor)
    if isinstance(x, np.ndarray):
        if x.dtype.byteorder not in ("=", "|"):
            x = x.astype(x.dtype.newbyteorder("="))
        if x.dtype == np.uint16 or x.dtype == np.uint32 or x.dtype == np.uint64:
            x = x.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


# ---------------------------------------------------------------------------- tensor-level API
# The steps of Algorithms 3 and 4 on tensors, for the on-the-fly transforms
# (drdm.pipelines.transforms, drdm.pipelines.bank) that keep data on its device and in its kind:
# ``image_tensor`` -> ``(C, *spatial)`` floating, ``label_tensor`` -> int64 ``(L, *spatial)``,
# ``sample_field_tensor`` -> ``(ndim, *spatial)`` voxels and the slice axis, ``stack_field`` (a
# second sampler after a field, one composed field), ``warp_tensors`` (one warp of an image and
# label maps; slice-wise fields exactly in-plane), ``apply_intensity``, ``restore_label``,
# ``compose_fields``. A slice-wise field travels with its slice axis (returned by
# ``sample_field_tensor``, passed as ``slice_axis``/``axis`` to every step); nothing infers it
# from the field's values. Slicing helpers: :mod:`drdm.spatial` (``to_slices``,
# ``field_to_slices``, ...). Same conventions as the module docstring (pull-back, voxels,
# channel ``i`` along array axis ``i``).


def image_tensor(
    image: np.ndarray | Tensor, channel_first: bool, device: torch.device | None
) -> Tensor:
    """The image as a floating ``(C, *spatial)`` tensor (float64 stays float64)."""
    x = _as_tensor(image, "image")
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"image must hold real numbers, got {x.dtype}")
    if not channel_first:
        x = x[None]
    if x.dim() - 1 not in (2, 3):
        raise InputError(
            f"image must have 2 or 3 spatial axes{' after the channel axis' * channel_first}, "
            f"got shape {tuple(image.shape)}"
        )
    if min(x.shape[1:]) < 1 or x.shape[0] < 1:
        raise InputError(f"image has an empty axis: shape {tuple(image.shape)}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(x).all()):
        raise InputError("image contains NaN or Inf voxels")
    return x


def label_tensor(
    label: np.ndarray | Tensor,
    spatial: tuple[int, ...],
    index: int | str,
    device: torch.device | None,
) -> Tensor:
    """A label map ``(*spatial)`` or ``(L, *spatial)`` as int64 ``(L, *spatial)``.

    Errors name the label map by position (``index`` an int: "label map 1") or by the name
    the caller knows it by (``index`` a str, e.g. a dict key: "label 'seg'")."""
    what = f"label map {index}" if isinstance(index, int) else f"label {index!r}"
    x = _as_tensor(label, what)
    nd = len(spatial)
    if tuple(x.shape[-nd:]) != spatial or x.dim() not in (nd, nd + 1):
        raise InputError(f"{what} has shape {tuple(x.shape)}, the image's grid is {spatial}")
    if x.dim() == nd:
        x = x[None]
    if x.is_complex():
        raise InputError(f"{what} must hold integers, got {x.dtype}")
    if x.is_floating_point():
        if not bool(torch.isfinite(x).all()) or not bool((x == x.round()).all()):
            raise InputError(f"{what} has non-integer values")
    return x.to(device=device, dtype=torch.int64)


def restore_label(out: Tensor, original: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """``(L, *spatial)`` int64 back to the original label's shape, dtype and kind."""
    out = out.reshape(original.shape)
    if isinstance(original, Tensor):
        return out.to(device=original.device, dtype=original.dtype)
    return out.cpu().numpy().astype(original.dtype, copy=False)


def _check_sampler(sampler: FieldSampler) -> int:
    ndim = getattr(sampler, "ndim", None)
    if not callable(getattr(sampler, "sample_ddf", None)) or ndim not in (2, 3):
        raise TypeError(
            f"{type(sampler).__name__} is not a FieldSampler (needs ndim in (2, 3) and "
            "sample_ddf(images, generator))"
        )
    return int(ndim)


def _call_sampler(sampler: FieldSampler, images: Tensor, generator: torch.Generator) -> Tensor:
    ddf = sampler.sample_ddf(images, generator)
    expected = (images.shape[0], images.dim() - 2, *images.shape[2:])
    if not isinstance(ddf, Tensor) or tuple(ddf.shape) != expected:
        got = tuple(ddf.shape) if isinstance(ddf, Tensor) else type(ddf).__name__
        raise ValueError(f"{type(sampler).__name__}.sample_ddf returned {got}, expected {expected}")
    return ddf.to(images.device, images.dtype)


def stack_field(
    then: FieldSampler,
    image: Tensor,
    ddf: Tensor,
    axis: int | None,
    generator: torch.Generator,
) -> Tensor:
    """``compose(then's field, ddf)``: ``then`` acts after ``ddf`` (one field, one warp).

    ``image`` ``(C, *spatial)`` is the original; ``then`` samples on it warped by ``ddf``.
    ``axis``: the slice axis of a slice-wise ``ddf`` (else ``None``). A 2D ``then`` on a 3D
    volume needs a slice-wise ``ddf`` and draws one in-plane field from the middle slice,
    shared by every slice."""
    t_ndim = _check_sampler(then)
    if t_ndim == image.dim() - 1:
        moved, _ = warp_tensors(
            image, [], ddf.to(image.dtype), "onehot", "linear", "zeros", slice_axis=axis
        )
        assert moved is not None
        post = _call_sampler(then, moved[None], generator)[0]
        return compose_fields(post.to(ddf.dtype), ddf, None)
    if t_ndim == 2 and axis is not None:  # only the middle slice is needed: warp just it
        slices = to_slices(image, axis)
        middle = slices.shape[0] // 2
        plane = field_to_slices(ddf, axis)[middle : middle + 1].to(image.dtype)
        one = _call_sampler(then, warp(slices[middle : middle + 1], plane), generator)
        post = slices_to_field(one.expand(slices.shape[0], -1, -1, -1), axis)
        return compose_fields(post.to(ddf.dtype), ddf, axis)
    raise InputError(
        f"a {t_ndim}D stacked transform cannot follow a field of shape {tuple(ddf.shape)}"
    )


# ---------------------------------------------------------------------------- core (tensors)
def sample_field_tensor(
    sampler: FieldSampler,
    image: Tensor,
    generator: torch.Generator,
    slice_axis: SliceAxis,
    spacing: Sequence[float] | None,
) -> tuple[Tensor, int | None]:
    """``image`` ``(C, *spatial)`` -> field ``(ndim, *spatial)`` voxels and the slice axis."""
    s_ndim = _check_sampler(sampler)
    v_ndim = image.dim() - 1
    if s_ndim == 3 and (v_ndim == 2 or min(image.shape[1:]) == 1):
        raise InputError(
            f"a 3D deformation model cannot deform a 2D image (shape {tuple(image.shape[1:])})"
        )
    if s_ndim == v_ndim:
        return _call_sampler(sampler, image[None], generator)[0], None
    axis = resolve_slice_axis(image.shape[1:], spacing, slice_axis)
    ddf2 = _call_sampler(sampler, to_slices(image, axis), generator)
    return slices_to_field(ddf2, axis), axis


def warp_tensors(
    image: Tensor | None,
    labels: Sequence[Tensor],
    ddf: Tensor,
    label_method: LabelMethod,
    interpolation: ImageMode,
    padding: Padding,
    slice_axis: int | None = None,
) -> tuple[Tensor | None, list[Tensor]]:
    """One warp of ``image`` ``(C, *spatial)`` and of each ``(L, *spatial)`` label map
    (:func:`~drdm.spatial.warp_label_maps`); with ``slice_axis`` (a slice-wise ``ddf``) slice
    by slice, exactly in-plane (no through-plane blending)."""
    check_choice("interpolation", interpolation, IMAGE_MODES)
    check_choice("label_method", label_method, LABEL_METHODS)
    axis = check_slice_axis(ddf, slice_axis)
    out_image = None
    if image is not None and axis is not None:
        field = field_to_slices(ddf, axis).to(image.dtype)
        out_image = from_slices(warp(to_slices(image, axis), field, interpolation, padding), axis)
    elif image is not None:
        out_image = warp(image[None], ddf[None].to(image.dtype), interpolation, padding)[0]
    out_labels = [warp_label_maps(lab, ddf, label_method, padding, axis) for lab in labels]
    return out_image, out_labels


def apply_intensity(
    intensity: IntensityTransform | None,
    image: Tensor,
    generator: torch.Generator,
    slice_axis: int | None,
) -> Tensor:
    """Apply ``intensity`` to ``(C, *spatial)`` as ONE batch element (one draw for the volume).

    For slice-wise fields the transform sees the slices as the channels of one 2D image
    ``(1, n * C, h, w)``: every slice gets the same random appearance change and filters act
    in-plane only."""
    if intensity is None:
        return image
    if slice_axis is None:
        batch = image[None]
    else:
        slices = to_slices(image, slice_axis)  # (n, C, h, w)
        batch = slices.reshape(1, -1, *slices.shape[2:])
    out = intensity(batch, generator)
    if not isinstance(out, Tensor) or out.shape != batch.shape:
        raise ValueError(f"intensity transform changed the shape {tuple(batch.shape)}")
    out = out.to(image.dtype)
    if slice_axis is None:
        return out[0]
    return from_slices(out.reshape(slices.shape), slice_axis)


def _output_image(out: Tensor, original: np.ndarray | Tensor, channel_first: bool) -> np.ndarray:
    """``(C, *spatial)`` -> numpy of the input's layout; a floating input keeps its dtype."""
    out = out if channel_first else out[0]
    if isinstance(original, Tensor):
        if original.dtype in (torch.float16, torch.float32, torch.float64):
            out = out.to(original.dtype)
        return out.cpu().numpy()
    array = out.cpu().numpy()
    if np.issubdtype(original.dtype, np.floating):
        array = array.astype(original.dtype, copy=False)
    return array


def _labels_numpy(
    outs: Sequence[Tensor], originals: Sequence[np.ndarray | Tensor]
) -> list[np.ndarray]:
    result = []
    for out, original in zip(outs, originals, strict=True):
        restored = restore_label(out, original)
        result.append(restored.cpu().numpy() if isinstance(restored, Tensor) else restored)
    return result


# ---------------------------------------------------------------------------- public API
def sample_field(
    sampler: FieldSampler,
    image: np.ndarray | Tensor,
    generator: torch.Generator,
    slice_axis: SliceAxis = "auto",
    spacing: Sequence[float] | None = None,
    channel_first: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample one displacement field for a volume (no warping).

    ``image``: ``(*spatial)`` (or ``(C, *spatial)`` with ``channel_first``). Returns a float
    tensor ``(ndim, *spatial)`` in voxels (``ndim`` of the volume), on ``device`` (default: the
    image's device). Slice-wise fields (2D sampler, 3D volume) have a zero component along the
    slice axis, ``resolve_slice_axis(shape, spacing, slice_axis)`` (:func:`resolve_slice_axis`);
    pass that axis on to :func:`warp_volume`.
    """
    dev = torch.device(device) if device is not None else None
    x = image_tensor(image, channel_first, dev)
    return sample_field_tensor(sampler, x, generator, slice_axis, spacing)[0]


def warp_volume(
    image: np.ndarray | Tensor | None,
    ddf: np.ndarray | Tensor,
    labels: Sequence[np.ndarray | Tensor] = (),
    label_method: LabelMethod = "onehot",
    interpolation: ImageMode = "linear",
    padding: Padding = "zeros",
    channel_first: bool = False,
    slice_axis: int | None = None,
) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """Warp an image (ONE warp at native resolution) and label maps by a given field.

    ``ddf``: ``(ndim, *spatial)`` voxels, pull-back. ``slice_axis``: for a slice-wise 3D field
    (a 2D deformation of every slice along that axis, e.g. :attr:`DeformResult.slice_axis`;
    its component along the axis is zero), applied slice by slice in 2D (exactly in-plane);
    ``None``: the field acts in its own dimensionality. Returns ``(image, labels)`` as numpy
    arrays of the inputs' shapes; labels keep their dtype and values. ``image`` may be ``None``.
    """
    d = _as_tensor(ddf, "ddf")
    if not d.is_floating_point() or d.dim() - 1 != d.shape[0] or d.shape[0] not in (2, 3):
        raise InputError(f"ddf must be a floating (ndim, *spatial) field, got {tuple(d.shape)}")
    spatial = tuple(d.shape[1:])
    x = None
    if image is not None:
        x = image_tensor(image, channel_first, d.device)
        if tuple(x.shape[1:]) != spatial:
            raise InputError(f"image grid {tuple(x.shape[1:])} differs from the field's {spatial}")
        d = d.to(x.dtype)
    else:
        d = d.float() if d.dtype != torch.float64 else d
    labs = [label_tensor(lab, spatial, i, d.device) for i, lab in enumerate(labels)]
    out_image, out_labels = warp_tensors(
        x, labs, d, label_method, interpolation, padding, slice_axis
    )
    image_np = None
    if out_image is not None:
        assert image is not None
        image_np = _output_image(out_image, image, channel_first)
    return image_np, _labels_numpy(out_labels, labels)


def deform_volume(
    sampler: FieldSampler,
    image: np.ndarray | Tensor,
    labels: Sequence[np.ndarray | Tensor] = (),
    generator: torch.Generator | None = None,
    slice_axis: SliceAxis = "auto",
    spacing: Sequence[float] | None = None,
    label_method: LabelMethod = "onehot",
    intensity: IntensityTransform | None = None,
    *,
    interpolation: ImageMode = "linear",
    padding: Padding = "zeros",
    channel_first: bool = False,
    device: torch.device | str | None = None,
    then: FieldSampler | None = None,
) -> DeformResult:
    """Deform a volume and its label maps with one sampled deformation (Algorithm 3).

    Args:
        sampler: a :class:`FieldSampler`, e.g. :class:`DRDMSampler`.
        image: ``(*spatial)`` 2D or 3D array/tensor (single channel); with
            ``channel_first=True`` a ``(C, *spatial)`` multi-channel image (every channel is
            deformed by the same field; the sampler sees all channels).
        labels: label maps ``(*spatial)`` (or ``(L, *spatial)``, each channel warped as its own
            label map) on the image's grid, integer or integral floats.
        generator: the only source of randomness (sampler first, then ``intensity``). ``None``
            draws a fresh seed from the OS (not reproducible).
        slice_axis: for a 2D sampler on a 3D volume: ``"auto"``, an axis index, or ``None``
            (an error in that case); see :func:`resolve_slice_axis`. Ignored otherwise.
        spacing: voxel spacing (mm per array axis) for the automatic slice axis.
        label_method: ``"onehot"`` (linear warp of each label's indicator, arg-max) or
            ``"nearest"``.
        intensity: optional :class:`IntensityTransform` applied to the WARPED image
            ``(1, C, *spatial)`` (when slice-wise, the slices as channels ``(1, n * C, h, w)``:
            one appearance change for the whole stack, filters in-plane).
        interpolation: ``"linear"``, ``"cubic"``, ``"lanczos"`` or ``"gaussian"`` (a smoothing
            kernel) for the image; the kernels of :func:`drdm.spatial.sample`.
        padding: outside the image: ``"zeros"``, ``"border"`` or ``"reflection"`` (mirrored
            about the edge voxel centres).
        device: where sampling inputs and warps live (default: the image's device).
        then: optional second :class:`FieldSampler` acting after ``sampler`` (its field is
            composed with the first, so ``ddf`` is the whole deformation and the image is
            still warped once); a 2D ``then`` after a slice-wise field draws one in-plane
            field for all slices. Drawn from ``generator`` after ``sampler``.

    Returns:
        :class:`DeformResult` (numpy arrays): ``image = warp(original, ddf)`` (then intensity),
        ``ddf`` ``(ndim, *spatial)`` float32 voxels.
    """
    if generator is None:
        generator = fresh_generator()
    dev = torch.device(device) if device is not None else None
    x = image_tensor(image, channel_first, dev)
    labs = [label_tensor(lab, tuple(x.shape[1:]), i, x.device) for i, lab in enumerate(labels)]
    ddf, axis = sample_field_tensor(sampler, x, generator, slice_axis, spacing)
    if then is not None:
        ddf = stack_field(then, x, ddf, axis, generator)
    out_image, out_labels = warp_tensors(x, labs, ddf, label_method, interpolation, padding, axis)
    assert out_image is not None
    out_image = apply_intensity(intensity, out_image, generator, axis)
    return DeformResult(
        image=_output_image(out_image, image, channel_first),
        labels=_labels_numpy(out_labels, labels),
        ddf=ddf.float().cpu().numpy(),
        slice_axis=axis,
    )


def compose_fields(syn: Tensor, aug: Tensor, slice_axis: int | None = None) -> Tensor:
    """``compose(syn, aug)`` for ``(ndim, *spatial)`` fields; with ``slice_axis`` (both fields
    slice-wise along it) slice by slice, exactly in-plane."""
    if slice_axis is not None:
        axis = check_slice_axis(syn, slice_axis)
        check_slice_axis(aug, axis)
        composed = compose(field_to_slices(syn, axis), field_to_slices(aug, axis))
        return slices_to_field(composed, axis)
    return compose(syn[None], aug[None])[0]


def synthesize_pair(
    sampler_aug: FieldSampler | None,
    sampler_syn: FieldSampler,
    image: np.ndarray | Tensor,
    labels: Sequence[np.ndarray | Tensor] = (),
    generator: torch.Generator | None = None,
    slice_axis: SliceAxis = "auto",
    spacing: Sequence[float] | None = None,
    label_method: LabelMethod = "onehot",
    *,
    interpolation: ImageMode = "linear",
    padding: Padding = "zeros",
    channel_first: bool = False,
    device: torch.device | str | None = None,
) -> SynthesisResult:
    """One registration training triple from an image (paper Algorithm 4).

    ``phi_aug`` is sampled for ``I0`` by ``sampler_aug`` (``None``: no augmentation, the moving
    image is ``I0``), the moving image is ``phi_aug(I0)``; ``phi_syn`` is sampled for the moving
    image by ``sampler_syn``; the fixed image is ``<phi_syn o phi_aug>(I0)``, ONE warp of ``I0``
    by ``compose(phi_syn, phi_aug)`` (never a warp of the warped moving image). Then
    ``fixed ≈ warp(moving, phi_syn)``: see :class:`SynthesisResult` for the exact convention.
    Arguments as in :func:`deform_volume`; fields are in voxels of the volume's grid, with a
    zero through-plane component when slice-wise.
    """
    if generator is None:
        generator = fresh_generator()
    dev = torch.device(device) if device is not None else None
    x = image_tensor(image, channel_first, dev)
    labs = [label_tensor(lab, tuple(x.shape[1:]), i, x.device) for i, lab in enumerate(labels)]
    if sampler_aug is None:
        aug = x.new_zeros((x.dim() - 1, *x.shape[1:]))
        aug_axis = None
        moving, moving_labels = x, list(labs)
    else:
        aug, aug_axis = sample_field_tensor(sampler_aug, x, generator, slice_axis, spacing)
        warped, moving_labels = warp_tensors(
            x, labs, aug, label_method, interpolation, padding, aug_axis
        )
        assert warped is not None
        moving = warped
    syn, axis = sample_field_tensor(sampler_syn, moving, generator, slice_axis, spacing)
    # slice by slice when both fields are slice-wise along one axis (no aug: a zero field is)
    both = axis if sampler_aug is None or aug_axis == axis else None
    fixed_field = compose_fields(syn, aug, both)
    fixed, fixed_labels = warp_tensors(
        x, labs, fixed_field, label_method, interpolation, padding, both
    )
    assert fixed is not None
    return SynthesisResult(
        moving=_output_image(moving, image, channel_first),
        fixed=_output_image(fixed, image, channel_first),
        moving_labels=_labels_numpy(moving_labels, labels),
        fixed_labels=_labels_numpy(fixed_labels, labels),
        ddf_syn=syn.float().cpu().numpy(),
        ddf_aug=aug.float().cpu().numpy(),
        ddf_fixed=fixed_field.float().cpu().numpy(),
        slice_axis=axis if axis is not None else aug_axis,
    )
