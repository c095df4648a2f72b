"""The user-facing DRDM model: a network, a forward process, the model's image size and its
model card (:class:`~drdm.card.ModelCard`).

>>> model = DRDM.from_pretrained("path/to/checkpoint")          # doctest: +SKIP
>>> out = model.generate(image, level=55, num_samples=8,        # doctest: +SKIP
...                      generator=torch.Generator().manual_seed(0))
>>> out.ddf.shape, out.images.shape                             # doctest: +SKIP

Conventions (as in :mod:`drdm.spatial`): images ``(B, C, *spatial)`` with the spatial axes in
the array order of the file, displacement fields ``(B, ndim, *spatial)`` in voxels of the grid
they live on, pull-back warping ``warp(I, u)(x) = I(x + u(x))``.

Any input size is accepted: the images are resized (linearly, edge-aligned, i.e.
``align_corners=False``) to the model's ``image_size``, Algorithm 2 runs there
(:func:`drdm.sampling.recover`), the generated field is resized back with
:func:`drdm.spatial.resize_ddf` (same edge-aligned convention, values rescaled to the input's
voxels), and the deformed image is ONE warp of the original input at its native resolution.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .card import ModelCard
from .checkpoint import CheckpointError, load_pretrained, save_pretrained
from .choices import check_choice
from .diffusion import ForwardDiffusion
from .diffusion.official_process import OfficialForwardProcess
from .diffusion.schedule import check_timesteps
from .errors import InputError
from .nn import RecursiveUNet
from .nn.engine import ENGINES, Engine, OnnxRuntimeUNet, resolve_engine
from .pretrained import resolve_model
from .sampling import SamplerConfig, official_sampler_config, recover
from .spatial import resize_ddf, warp

__all__ = ["DRDM", "DRDMOutput", "ModelCard", "RecoveryStep", "official_extra_config"]


def official_extra_config(
    ndim: int = 2, num_steps: int = 80, image_size: Sequence[int] | None = None
) -> dict[str, Any]:
    """The dict form of :meth:`ModelCard.official <drdm.card.ModelCard.official>` (the card
    that runs imported authors' weights as the authors do)."""
    return ModelCard.official(ndim, num_steps, image_size).to_dict()


@dataclass
class DRDMOutput:
    """Result of :meth:`DRDM.generate` for ``B`` input images and ``N`` samples each.

    Samples are image-major: row ``i * N + j`` is sample ``j`` of input image ``i``.

    Attributes:
        ddf: the generated fields ``phi``, ``(B * N, ndim, *spatial)`` in voxels of the input
            grid; ``images = warp(input, ddf)``.
        images: the deformed inputs, ``(B * N, C, *spatial)``, one warp of the original.
        initial_ddf: the random fields ``phi_{T':1}`` the recovery started from, same shape
            and units as ``ddf``.
        level: the deformation level ``T'``.
        trajectory_images: with ``return_trajectory=True``, ``(J + 1, B * N, C, *model)`` on
            the model's grid for ``J`` network calls (``J = T'`` at stride 1): entry ``j`` is
            the image after ``j`` calls (entry 0 the randomly deformed image, the last the
            recovered one); else ``None``.
        trajectory_ddfs: likewise ``(J + 1, B * N, ndim, *model)``, voxels of the model grid.
    """

    ddf: Tensor
    images: Tensor
    initial_ddf: Tensor
    level: int
    trajectory_images: Tensor | None = None
    trajectory_ddfs: Tensor | None = None


class RecoveryStep(NamedTuple):
    """One forward step of the model's process and the network's answer, on the model grid
    (:meth:`DRDM.recovery_step`).

    Attributes:
        images: ``I_t = phi_{t:1}(I_0)``, ``(B, C, *image_size)``.
        step: the forward step ``psi_t``, ``(B, ndim, *image_size)`` voxels.
        estimate: the network's ``psi_hat_t`` (Eq. 12), same shape and units; a network that
            recovers has ``compose(estimate, step) ~ 0``
            (:func:`drdm.losses.unrecovered_fraction`).
        t: the timesteps, ``(B,)`` int64.
    """

    images: Tensor
    step: Tensor
    estimate: Tensor
    t: Tensor


class DRDM:
    """Deformation-Recovery Diffusion Model: generate plausible deformations of images.

    Args:
        network: the trained ``D_theta`` (:class:`~drdm.nn.RecursiveUNet`), output in voxels.
        process: the forward process the network was trained with: the package's
            :class:`~drdm.diffusion.ForwardDiffusion` or the authors' preset
            :class:`~drdm.diffusion.official_process.OfficialForwardProcess`.
        image_size: the grid the network works on (``ndim`` ints, multiples of
            ``network.config.size_multiple``), e.g. ``(256, 256)``.
        sampler: padding and interpolation of the recovery loop; defaults to the preset's
            (``SamplerConfig()`` for ours, :func:`~drdm.sampling.official_sampler_config` for
            the authors').
        training: free-form JSON-serialisable description of how the network was trained
            (data, epochs, ...), stored in checkpoints.
        source: JSON-serialisable provenance of imported weights (kept in checkpoints).
        engine: how the network runs inside :meth:`generate`: ``"auto"`` (ONNX Runtime on the
            CPU in float32 when installed, else PyTorch), ``"torch"`` or ``"onnxruntime"``
            (:mod:`drdm.nn.engine`; same outputs within float32 rounding).
    """

    def __init__(
        self,
        network: RecursiveUNet,
        process: ForwardDiffusion | OfficialForwardProcess,
        image_size: Sequence[int],
        sampler: SamplerConfig | None = None,
        training: Mapping[str, Any] | None = None,
        engine: Engine = "auto",
        source: Mapping[str, Any] | None = None,
    ) -> None:
        cfg = network.config
        check_choice("engine", engine, ENGINES)
        image_size = tuple(int(s) for s in image_size)
        if process.config.ndim != cfg.ndim or len(image_size) != cfg.ndim:
            raise ValueError(
                f"network is {cfg.ndim}D, process {process.config.ndim}D, image_size "
                f"{image_size}: all must agree"
            )
        if process.config.num_steps != cfg.num_steps:
            raise ValueError(
                f"network has T = {cfg.num_steps} steps, process {process.config.num_steps}"
            )
        m = cfg.size_multiple
        if min(image_size) < m or any(s % m for s in image_size):
            raise ValueError(f"image_size {image_size} must be positive multiples of {m}")
        self.network = network.eval()
        self.process = process
        self.image_size = image_size
        self.preset = process.preset
        if sampler is None:
            sampler = official_sampler_config() if self.preset == "official" else SamplerConfig()
        self.sampler = sampler
        self.training: dict[str, Any] = dict(training or {})
        self.source: dict[str, Any] | None = dict(source) if source is not None else None
        self.engine: Engine = engine
        self._onnx: tuple[tuple[int, ...], OnnxRuntimeUNet | None] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        """After unpickling (spawned DataLoader workers, ``copy.deepcopy``) an exported ONNX
        engine still belongs to the weights it travelled with: record their new tensor
        versions so that it is reused instead of exported again."""
        self.__dict__.update(state)
        onnx = state.get("_onnx")
        if onnx is not None and onnx[1] is not None:
            self._onnx = (tuple(p._version for p in self.network.parameters()), onnx[1])

    def inference_network(self, engine: Engine | None = None) -> Callable[..., Tensor]:
        """The network as the recovery loop calls it, ``f(image, t, recursions=None)``, run
        by ``engine`` (default :attr:`engine`) on the network's device and dtype.

        The ONNX Runtime engine is built on first use (one export per grid size) and rebuilt
        when the weights change; if it cannot be built, a warning is given and PyTorch runs.
        """
        requested = engine or self.engine
        name = resolve_engine(requested, self.device, self.dtype)
        if name == "torch":
            return self.network
        version = tuple(p._version for p in self.network.parameters())
        failed = self._onnx is not None and self._onnx[1] is None
        if self._onnx is None or self._onnx[0] != version or (failed and requested != "auto"):
            onnx: OnnxRuntimeUNet | None = OnnxRuntimeUNet(self.network)
            try:
                onnx.session(self.image_size)  # type: ignore[union-attr]
            except Exception as err:  # noqa: BLE001 - any exporter/runtime failure: fall back
                if requested == "onnxruntime":
                    raise
                warnings.warn(
                    f"ONNX Runtime engine unavailable ({type(err).__name__}: {err}); using PyTorch",
                    RuntimeWarning,
                    stacklevel=2,
                )
                onnx = None  # remembered for these weights: no retry, no second warning
            self._onnx = (version, onnx)
        return self.network if self._onnx[1] is None else self._onnx[1]

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        """Spatial dimensionality (2 or 3)."""
        return self.network.config.ndim

    @property
    def num_steps(self) -> int:
        """``T``: valid levels are ``1..T``."""
        return self.network.config.num_steps

    @property
    def in_channels(self) -> int:
        """Image channels the network takes."""
        return self.network.config.in_channels

    @property
    def device(self) -> torch.device:
        """Device of the network's parameters."""
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the network's parameters (the computation dtype)."""
        return next(self.network.parameters()).dtype

    def to(self, device: torch.device | str) -> DRDM:
        """Move the network to ``device`` (in place); returns ``self``."""
        self.network.to(device)
        return self

    def __repr__(self) -> str:
        return (
            f"DRDM(preset={self.preset!r}, ndim={self.ndim}, image_size={self.image_size}, "
            f"T={self.num_steps}, device={self.device})"
        )

    # ------------------------------------------------------------------ generation
    def _as_batch(self, images: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(images) if isinstance(images, np.ndarray) else images
        if not isinstance(x, Tensor):
            raise TypeError(
                f"images must be a torch.Tensor or numpy array, got {type(images).__name__}"
            )
        nd = self.ndim
        if x.dim() == nd:
            x = x[None, None]
        elif x.dim() == nd + 1:
            x = x[None]
        elif x.dim() != nd + 2:
            raise ValueError(
                f"images must be (B, C, *spatial), (C, *spatial) or (*spatial) with {nd} spatial "
                f"axes, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"images have {x.shape[1]} channel(s), the network takes {self.in_channels} "
                f"(shape {tuple(x.shape)})"
            )
        if min(x.shape[2:]) < 2 or x.shape[0] < 1:
            raise ValueError(
                f"images need >= 1 image and >= 2 voxels per axis, got {tuple(x.shape)}"
            )
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"images must be real numbers, got {x.dtype}")
        x = x.to(self.device, self.dtype)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("images contain NaN or Inf values")
        return x

    def _to_model_grid(self, x: Tensor) -> Tensor:
        if tuple(x.shape[2:]) == self.image_size:
            return x
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        return F.interpolate(x, size=self.image_size, mode=mode, align_corners=False)

    def generate(
        self,
        images: Tensor | np.ndarray,
        level: int,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
        progress: bool = False,
        normalize: bool = False,
        *,
        stride: int | None = None,
        recursions: int | None = None,
        sampler: SamplerConfig | None = None,
        engine: Engine | None = None,
    ) -> DRDMOutput:
        """Generate ``num_samples`` deformations of every image (Algorithm 2).

        Args:
            images: ``(B, C, *spatial)``, one image ``(C, *spatial)`` or ``(*spatial)``, any
                spatial size (``ndim`` axes), tensor or array; intensities as the network was
                trained on (the paper: linearly normalised to ``[0, 1]``).
            level: the deformation level ``T'`` in ``1..T``: larger levels deform more.
            num_samples: deformations per image ``N`` (batched, no loop over samples).
            generator: the only source of randomness; the same seed gives the same output bit
                for bit on the CPU. ``None`` uses PyTorch's global generator.
            return_trajectory: also return the intermediate images and fields (model grid).
            progress: show a tqdm progress bar over the recovery steps.
            normalize: min-max rescale each image to ``[0, 1]`` for the network only (the
                output images keep the input's intensities).
            stride: call the network every ``stride``-th timestep (``None``: the model's
                sampler setting, :attr:`sampler`); 1 is the literal Algorithm 2.
            recursions: ``K`` of Eq. 12 at sampling (``None``: the model's sampler setting,
                else the network's own).
            sampler: a whole :class:`~drdm.sampling.SamplerConfig` to use instead of
                :attr:`sampler` (``stride`` and ``recursions`` still override it).
            engine: run the network with this engine instead of :attr:`engine`.

        Returns:
            :class:`DRDMOutput` on the network's device, float of the network's dtype, with
            ``B * N`` rows (image-major).
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                f"{generator!r} (e.g. torch.Generator().manual_seed(0))"
            )
        if isinstance(images, Tensor) and images.device.type == "meta":
            raise ValueError(
                f"images is a meta-device tensor of shape {tuple(images.shape)}: it holds no "
                "data; pass a CPU or CUDA tensor"
            )
        config = self.sampler if sampler is None else sampler
        overrides: dict[str, Any] = {}
        if stride is not None:
            overrides.update(stride=stride, schedule=None)
        if recursions is not None:
            overrides["recursions"] = recursions
        config = dataclasses.replace(config, **overrides) if overrides else config
        x = self._as_batch(images)
        native = tuple(x.shape[2:])
        with torch.inference_mode():
            model_x = self._to_model_grid(x)
            if normalize:  # in float64: hi - lo of float32 intensities can overflow
                wide = model_x.double()
                flat = wide.flatten(1)
                lo = flat.amin(1).view(-1, *([1] * (model_x.dim() - 1)))
                hi = flat.amax(1).view(-1, *([1] * (model_x.dim() - 1)))
                wide = (wide - lo) / (hi - lo).clamp_min(torch.finfo(torch.float64).tiny)
                model_x = wide.to(model_x.dtype)
            if num_samples > 1:
                model_x = model_x.repeat_interleave(num_samples, dim=0)
            result = recover(
                self.inference_network(engine),
                self.process,
                model_x,
                level,
                generator,
                config=config,
                return_trajectory=return_trajectory,
                progress=progress,
            )
            if not bool(torch.isfinite(result.ddf).all()):
                peak = float(x.abs().max())
                raise ValueError(
                    f"the network's deformation is not finite (NaN/Inf) for images with "
                    f"intensities up to {peak:.3g}: it expects them as it was trained (e.g. in "
                    "[0, 1]); rescale the images or pass normalize=True"
                )
            ddf = resize_ddf(result.ddf, native)
            initial = resize_ddf(result.initial_ddf, native)
            originals = x.repeat_interleave(num_samples, dim=0) if x.shape[0] > 1 else x
            deformed = warp(originals, ddf, mode=config.image_mode, padding=config.image_padding)
        return DRDMOutput(
            ddf=ddf,
            images=deformed,
            initial_ddf=initial,
            level=int(level),
            trajectory_images=result.trajectory_images,
            trajectory_ddfs=result.trajectory_ddfs,
        )

    def recovery_step(
        self,
        images: Tensor | np.ndarray,
        t: Tensor | int,
        generator: torch.Generator | None = None,
        perturb: bool = True,
        recursions: int | None = None,
    ) -> RecoveryStep:
        """Draw one forward step of the model's process for every image and let the network
        estimate its inverse (Algorithm 1, lines 4-7, without the loss): what training
        optimises and what ``benchmarks/recovery_eval.py`` and ``drdm adapt`` measure.

        Args:
            images: ``I_0``, ``(B, C, *spatial)``, ``(C, *spatial)`` or ``(*spatial)`` at any
                size; resized to the model grid as in :meth:`generate`.
            t: 1-based timesteps in ``1..T``: an int for all images or ``(B,)``.
            generator: the only source of randomness (forward fields).
            perturb: apply the training perturbation (3.3) to ``phi_{t:1}``, as in training.
            recursions: ``K`` of Eq. 12 (``None``: the network's own).

        Returns:
            :class:`RecoveryStep` on the model grid (PyTorch engine, no gradients).
        """
        x = self._as_batch(images)
        steps = check_timesteps(t, x.shape[0], 1, self.num_steps, self.device)
        with torch.inference_mode():
            model_x = self._to_model_grid(x)
            fwd = self.process.sample(model_x, steps, generator, perturb)
            estimate = self.network(fwd.images, steps, recursions)
        return RecoveryStep(images=fwd.images, step=fwd.step, estimate=estimate, t=steps)

    # ------------------------------------------------------------------ checkpoints
    @property
    def card(self) -> ModelCard:
        """The model card (:class:`~drdm.card.ModelCard`) :meth:`save_pretrained` stores."""
        return ModelCard(
            preset=self.preset,
            forward=self.process.config,
            image_size=self.image_size,
            sampler=self.sampler,
            training=self.training,
            source=self.source,
        )

    @classmethod
    def from_card(cls, network: RecursiveUNet, card: ModelCard, engine: Engine = "auto") -> DRDM:
        """The model of ``network`` as ``card`` describes it."""
        return cls(
            network,
            card.process(),
            card.image_size,
            sampler=card.sampler,
            training=card.training,
            engine=engine,
            source=card.source,
        )

    def extra_config(self) -> dict[str, Any]:
        """The ``extra`` dict stored in ``config.json`` (:attr:`card` as a dict)."""
        return self.card.to_dict()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (network and :attr:`card`: process,
        image size, sampler, training description, provenance) to ``directory``; reload with
        :meth:`from_pretrained`."""
        return save_pretrained(self.network, directory, extra_config=self.card.to_dict())

    @classmethod
    def from_pretrained(
        cls, name_or_dir: str | Path = "default", device: torch.device | str | None = None
    ) -> DRDM:
        """Load a model: a packaged name (``"default"``, ``"default-3d"``) or a checkpoint
        directory (:mod:`drdm.checkpoint` format). Never unpickles, never downloads.

        ``device``: ``None`` (CPU), ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
        Raises :class:`~drdm.errors.InputError` (one line) for a missing model, a packaged
        model whose weights are not installed yet, or an unreadable checkpoint.
        """
        directory = resolve_model(name_or_dir)
        if device == "auto":
            from .device import resolve_device

            device = resolve_device("auto")
        try:
            network = load_pretrained(directory, device=device)
        except (FileNotFoundError, CheckpointError) as err:
            raise InputError(f"model {str(name_or_dir)!r}: {err}") from None
        config = network.config
        try:
            card = ModelCard.from_dict(
                network.checkpoint_info.extra, ndim=config.ndim, num_steps=config.num_steps
            )
        except ValueError as err:
            if "no forward-process config" not in str(err):
                raise InputError(
                    f"model {str(name_or_dir)!r}: invalid config in {directory}: {err}"
                ) from None
            raise InputError(
                f"model {str(name_or_dir)!r}: {directory / 'config.json'} has no forward-process "
                "config ('extra' needs 'preset', 'forward' and 'image_size'); save it with "
                "DRDM.save_pretrained or import the authors' weights with 'drdm import-official'"
            ) from None
        except TypeError as err:
            raise InputError(
                f"model {str(name_or_dir)!r}: invalid config in {directory}: {err}"
            ) from None
        try:
            return cls.from_card(network, card)
        except (TypeError, ValueError) as err:
            raise InputError(
                f"model {str(name_or_dir)!r}: invalid config in {directory}: {err}"
            ) from None
