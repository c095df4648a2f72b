"""Knowledge distillation: a trained DRDM network as a teacher for the recovery of *our*
forward process's steps.

A teacher (for example the authors' published checkpoint, imported with
``drdm import-official``) was trained on its own forward process, whose fields differ from
ours in magnitude per timestep and in their split into step and cumulative field. Its raw
prediction on one of our images is therefore not a target in our units. The conversion has
two parts, both measured, never assumed:

1. **Timestep.** Our ``I_t`` is shown to the teacher at the timestep ``t_T`` at which the
   teacher's own cumulative field has the mean magnitude of ours at ``t`` (in fractions of the
   image size): the teacher then sees deformations of the size it was trained on.
2. **Magnitude.** The teacher's step at ``t_T`` is a different share of the cumulative field
   from our step at ``t``. Its prediction (resized to the student's grid, voxels) is scaled
   by the least-squares factor ``a(t) = sum <psi_t, -p> / sum |p|^2`` that best maps it onto
   our true steps, fitted per band of timesteps on draws of the training images.

The target of the student at ``t`` is then ``a(t) * resize(teacher(I_t^hi, t_T(t)))``, where
``I_t^hi`` is the same deformation applied to the training image at the teacher's resolution
(the field upsampled), so the teacher sees a sharp image. :func:`distill_loss` is the mean
distance to that target relative to the mean step length, so its weight compares with the
distance term of Eq. 14.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion.forward import ForwardDiffusion, ForwardProcess
from ..errors import InputError
from ..io.files import atomic_path
from ..spatial import resize_ddf, warp

if TYPE_CHECKING:
    from ..model import DRDM

__all__ = [
    "DistillPool",
    "TeacherCalibration",
    "TeacherTargets",
    "build_pool",
    "distill_loss",
    "load_teacher",
]


def load_teacher(path: str | Path, device: torch.device) -> DRDM:
    """A :class:`drdm.DRDM` teacher from a model folder or from the authors' ``.pth``
    (converted in memory as ``drdm import-official`` converts it, with their forward-process
    preset)."""
    from ..card import ModelCard
    from ..model import DRDM
    from ..nn import RecursiveUNet
    from ..official_weights import convert_official_state_dict, load_official_state_dict

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such teacher (distill.teacher)")
    try:
        if path.is_file() and path.suffix == ".pth":
            config, converted = convert_official_state_dict(load_official_state_dict(path))
            network = RecursiveUNet(config)
            network.load_state_dict(converted, strict=True)
            model = DRDM.from_card(network, ModelCard.official(config.ndim, config.num_steps))
        else:
            model = DRDM.from_pretrained(path)
    except InputError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: cannot load the teacher ({first})") from None
    model.network.to(device).eval()
    for p in model.network.parameters():
        p.requires_grad_(False)
    return model


@dataclass(frozen=True)
class TeacherCalibration:
    """The measured conversion of a teacher's predictions to our process.

    Attributes:
        teacher_timestep: ``(T,)`` long, ``t_T`` for our ``t = 1..T`` (index ``t - 1``).
        scale: ``(T,)`` float, ``a(t)``.
        ours_cumulative, teacher_cumulative: ``(T,)`` mean ``|phi_{t:1}|`` in fractions of
            the image size, the curves matched for ``t_T``.
    """

    teacher_timestep: Tensor
    scale: Tensor
    ours_cumulative: Tensor
    teacher_cumulative: Tensor

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """Plain lists (JSON), e.g. for the run's summary and the model card."""
        return {
            "teacher_timestep": [int(v) for v in self.teacher_timestep.tolist()],
            "scale": [round(float(v), 5) for v in self.scale.tolist()],
            "ours_cumulative": [round(float(v), 6) for v in self.ours_cumulative.tolist()],
            "teacher_cumulative": [round(float(v), 6) for v in self.teacher_cumulative.tolist()],
        }


def _mean_cumulative(
    process: ForwardProcess,
    size: Sequence[int],
    num_steps: int,
    draws: int,
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """Mean ``|phi_{t:1}|`` per ``t = 1..T`` in fractions of the largest image side."""
    out = torch.zeros(num_steps, dtype=torch.float64)
    for t in range(1, num_steps + 1):
        fields = process.sample_fields(
            size, torch.full((draws,), t), generator=generator, device=device
        )
        out[t - 1] = fields.cumulative.norm(dim=1).mean().double().cpu() / max(size)
    return out


class TeacherTargets:
    """Distillation targets for the student's forward samples (see the module docstring).

    Args:
        teacher: a :class:`drdm.DRDM` (network in eval mode on ``device``).
        process: the student's forward process.
        student_size: the student's grid (voxels).
        teacher_size: the grid the teacher runs on (its training resolution).
    """

    def __init__(
        self,
        teacher: DRDM,
        process: ForwardDiffusion,
        student_size: Sequence[int],
        teacher_size: Sequence[int],
    ) -> None:
        self.teacher = teacher
        self.process = process
        self.student_size = tuple(int(s) for s in student_size)
        self.teacher_size = tuple(int(s) for s in teacher_size)
        if len(self.teacher_size) != len(self.student_size):
            raise InputError(
                f"distill.teacher_size {list(self.teacher_size)} does not match the model's "
                f"{len(self.student_size)}D image_size"
            )
        self.calibration: TeacherCalibration | None = None

    @torch.no_grad()
    def predict(self, images_hi: Tensor, cumulative: Tensor, t_teacher: Tensor) -> Tensor:
        """The teacher's unscaled prediction on the grid of ``cumulative`` (voxels).

        ``images_hi``: ``(B, 1, *teacher_size)`` undeformed images; ``cumulative``:
        ``(B, ndim, *student_size)`` the student's ``phi_{t:1}`` in voxels; ``t_teacher``:
        ``(B,)`` the teacher's timesteps."""
        field_hi = resize_ddf(cumulative, self.teacher_size)
        deformed = warp(images_hi, field_hi)
        net = self.teacher.network
        predicted = net(deformed, t_teacher.to(images_hi.device))
        return resize_ddf(predicted, self.student_size)

    @torch.no_grad()
    def calibrate(
        self,
        draw_batch: Callable[[int], tuple[Tensor, Tensor]],
        generator: torch.Generator,
        device: torch.device,
        batches_per_band: int = 4,
        band_width: int = 5,
        magnitude_draws: int = 4,
    ) -> TeacherCalibration:
        """Measure ``t_T(t)`` and ``a(t)``.

        ``draw_batch(n)`` returns ``n`` augmented training images at the teacher's size and
        the same images on the student's grid, ``((n, 1, *teacher_size), (n, 1,
        *student_size))``. ``a`` is fitted per band of ``band_width`` timesteps.
        """
        num_steps = int(self.process.config.num_steps)
        t_proc = self.teacher.process
        ours = _mean_cumulative(
            self.process, self.student_size, num_steps, magnitude_draws, generator, device
        )
        t_steps = int(t_proc.config.num_steps)
        theirs = _mean_cumulative(
            t_proc, self.teacher_size, t_steps, magnitude_draws, generator, device
        )
        teacher_t = (theirs[None, :] - ours[:, None]).abs().argmin(dim=1) + 1
        scale = torch.ones(num_steps, dtype=torch.float64)
        for lo in range(1, num_steps + 1, band_width):
            hi = min(num_steps, lo + band_width - 1)
            num = den = 0.0
            for _ in range(batches_per_band):
                images_hi, images = draw_batch(band_width)
                t = torch.randint(lo, hi + 1, (images.shape[0],), generator=generator)
                fwd = self.process.sample(
                    images, t.to(images.device), generator=generator, perturb=True
                )
                raw = self.predict(images_hi, fwd.cumulative, teacher_t[t - 1])
                num += float((fwd.step * -raw).sum())
                den += float((raw * raw).sum())
            scale[lo - 1 : hi] = num / den if den > 0 and math.isfinite(num / den) else 0.0
        self.calibration = TeacherCalibration(teacher_t, scale, ours, theirs)
        return self.calibration

    @torch.no_grad()
    def __call__(self, images_hi: Tensor, cumulative: Tensor, t: Tensor) -> Tensor:
        """The target ``a(t) * teacher(...)`` for 1-based timesteps ``t`` ``(B,)``: ``(B,
        ndim, *student_size)`` voxels."""
        if self.calibration is None:
            raise RuntimeError("TeacherTargets.calibrate must run first")
        cal = self.calibration
        index = t.cpu().long() - 1
        raw = self.predict(images_hi, cumulative, cal.teacher_timestep[index])
        scale = cal.scale[index].to(raw.device, raw.dtype)
        return raw * scale.view(-1, *([1] * (raw.dim() - 1)))


def distill_loss(psi_hat: Tensor, target: Tensor, step: Tensor, eps: float = 1e-3) -> Tensor:
    """``E|psi_hat - target| / (E|psi_t| + eps)``: the distance to the teacher's converted
    prediction relative to the mean length of the true step (all ``(B, ndim, *S)`` voxels)."""
    return (psi_hat - target).norm(dim=1).mean() / (step.norm(dim=1).mean() + eps)


def downsample(images: Tensor, size: Sequence[int]) -> Tensor:
    """Area (2D/3D average) resize of ``(B, C, *S)`` images to ``size``."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(int(s) for s in size), mode="area")


@dataclass(frozen=True)
class DistillPool:
    """Forward samples with their teacher targets, computed once (for CPU training, where the
    teacher at its full resolution costs several times a student step).

    Attributes (``N`` samples, student grid ``S``): ``images`` ``(N, 1, *S)`` deformed images
    ``I_t``; ``step`` ``(N, ndim, *S)`` the true ``psi_t`` (voxels); ``target`` the same shape,
    the converted teacher prediction; ``t`` ``(N,)`` 1-based timesteps.
    """

    images: Tensor
    step: Tensor
    target: Tensor
    t: Tensor

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def save(self, path: str | Path) -> None:
        """Write a safetensors file (to a temporary name, then renamed)."""
        from safetensors.torch import save_file

        path = Path(path)
        names = ("images", "step", "target", "t")
        tensors = {k: getattr(self, k).contiguous().cpu() for k in names}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> DistillPool:
        """Read a pool written by :meth:`save`."""
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(tensors["images"], tensors["step"], tensors["target"], tensors["t"])


@torch.no_grad()
def build_pool(
    targets: TeacherTargets,
    draw_batch: Callable[[int], tuple[Tensor, Tensor]],
    size: int,
    generator: torch.Generator,
    chunk: int = 8,
    progress: bool = True,
) -> DistillPool:
    """``size`` forward samples of our process (timesteps uniform in ``1..T``, training
    perturbation on) of images from ``draw_batch`` with their teacher targets."""
    from tqdm.auto import tqdm

    num_steps = int(targets.process.config.num_steps)
    parts: dict[str, list[Tensor]] = {"images": [], "step": [], "target": [], "t": []}
    bar = tqdm(total=size, desc="teacher targets", unit="sample", disable=not progress)
    done = 0
    while done < size:
        n = min(chunk, size - done)
        images_hi, images = draw_batch(n)
        t = torch.randint(1, num_steps + 1, (n,), generator=generator)
        fwd = targets.process.sample(images, t.to(images.device), generator=generator, perturb=True)
        parts["images"].append(fwd.images.cpu())
        parts["step"].append(fwd.step.cpu())
        parts["target"].append(targets(images_hi, fwd.cumulative, t).cpu())
        parts["t"].append(t)
        done += n
        bar.update(n)
    bar.close()
    return DistillPool(*(torch.cat(parts[k]) for k in ("images", "step", "target", "t")))
