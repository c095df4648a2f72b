"""Typed, frozen configs of the downstream experiments (round-trip to YAML/JSON via
:mod:`drdm.config`; change one with ``dataclasses.replace``).

The defaults are CPU settings for the built-in phantoms (measured on the project's 2-vCPU
machine with one thread: 423 s for segmentation, 276 s for registration);
``configs/experiments/*.yaml`` hold these and the paper-scale settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import BATCH_METHODS
from ..config import Config
from ..errors import InputError
from ..pipelines.registry import DEFAULT_LEVELS

__all__ = ["RegistrationConfig", "SegmentationConfig"]


def _check_common(name: str, cfg: object) -> None:
    for key in ("image_size", "steps", "batch_size"):
        value = getattr(cfg, key, None)
        if value is not None and value < 1:
            raise InputError(f"{name}: {key} must be >= 1, got {value}")
    seeds = getattr(cfg, "seeds", ())
    if not seeds:
        raise InputError(f"{name}: at least one seed is needed")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{name}: seeds repeat: {list(seeds)}")


@dataclass(frozen=True)
class SegmentationConfig(Config):
    """Few-shot segmentation with augmentation (paper Section 4).

    Data: ``data`` is ``"phantoms"`` (built-in cardiac phantoms) or an ACDC-style folder;
    ``test_data`` an optional separate folder of test subjects. ``train_subjects`` labelled
    training subjects are chosen per seed (or ``train_fraction`` of the training pool);
    ``test_subjects`` subjects are held out (phantoms: test images; folders: ``0`` = half).
    Augmentation: every method makes ``copies`` augmented copies of every training image
    offline (Algorithm 3); the training pool is the originals plus the copies. Every method
    trains the same network for the same ``steps`` with the same batches of pool indices.
    Levels of ``drdm`` without ``@`` come from ``drdm_levels``.
    """

    data: str = "phantoms"
    test_data: str | None = None
    image_size: int = 64
    phantom_fov_mm: float = 192.0
    train_subjects: int = 2
    train_fraction: float | None = None
    test_subjects: int = 20
    data_seed: int = 1000
    methods: tuple[str, ...] = ("none", "elastic", "bigaug", "drdm", "drdm+bigaug")
    copies: int = 32
    model: str = "default"
    drdm_levels: tuple[int, ...] = DEFAULT_LEVELS  # (32, 48), as drdm augment
    seeds: tuple[int, ...] = (0, 1, 2)
    widths: tuple[int, ...] = (8, 16, 32, 64)
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    lr_decay: float = 0.5
    threshold: float = 0.5
    device: str = "auto"
    threads: int | None = None

    def validate(self) -> None:
        """Raise :class:`InputError` for inconsistent values."""
        _check_common("segmentation config", self)
        if self.copies < 0:
            raise InputError(f"copies must be >= 0, got {self.copies}")
        if self.train_fraction is not None and not 0 < self.train_fraction <= 1:
            raise InputError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.train_subjects < 1:
            raise InputError(f"train_subjects must be >= 1, got {self.train_subjects}")
        if not self.methods:
            raise InputError("at least one method is needed")
        m = 2 ** (len(self.widths) - 1)
        if self.image_size % m:
            raise InputError(f"image_size {self.image_size} must be a multiple of {m}")
        if not 0 < self.lr_decay <= 1:
            raise InputError(f"lr_decay must be in (0, 1], got {self.lr_decay}")


@dataclass(frozen=True)
class RegistrationConfig(Config):
    """Registration with synthetic pre-training (paper Section 5).

    Data: ``data`` is ``"phantoms"`` (2D cardiac phantoms), ``"thorax"`` (3D thorax CT
    phantoms) or a Learn2Reg-style lung CT folder. ``train_subjects`` training images per seed
    are the source of the synthetic triples (``copies`` per image, Algorithm 4, with the level
    pairs ``(drdm_levels_aug[k], drdm_levels_syn[k])`` cycled) and of the real pairs used for
    unsupervised fine-tuning; ``test_subjects`` held-out subjects form the labelled test pairs
    ``(k, k+1 mod n)``. Every table row is one (synthetic method, fine-tuned) combination; the
    ``none`` method without fine-tuning is the identity (the initial alignment).
    """

    data: str = "phantoms"
    image_size: int = 64
    phantom_fov_mm: float = 192.0
    train_subjects: int = 8
    test_subjects: int = 10
    data_seed: int = 2000
    methods: tuple[str, ...] = ("mrbs", "drdm")
    copies: int = 8
    model: str = "default"
    drdm_levels_aug: tuple[int, ...] = (8,)
    drdm_levels_syn: tuple[int, ...] = (24,)
    slice_axis: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    widths: tuple[int, ...] = (8, 16, 16, 16)
    pretrain_steps: int = 300
    finetune: bool = True
    finetune_steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    lambda_mse: float = 1.0
    lambda_grad: float = 1.0
    similarity: str = "ncc"
    smooth_weight: float = 1.0
    distance_units: str = "voxel"
    device: str = "auto"
    threads: int | None = None
    method_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`InputError` for inconsistent values."""
        _check_common("registration config", self)
        for key in ("pretrain_steps", "finetune_steps", "copies"):
            if getattr(self, key) < 0:
                raise InputError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.train_subjects < 1 or self.test_subjects < 2:
            raise InputError("need >= 1 training subject and >= 2 test subjects")
        bad = [m for m in self.methods if m not in BATCH_METHODS]
        if bad:
            raise InputError(f"unknown synthetic method(s): {', '.join(bad)}")
        if len(self.drdm_levels_aug) != len(self.drdm_levels_syn) or not self.drdm_levels_syn:
            raise InputError("drdm_levels_aug and drdm_levels_syn must have the same length >= 1")
        if self.similarity not in ("mse", "ncc"):
            raise InputError(f"similarity must be mse or ncc, got {self.similarity!r}")
        if self.distance_units not in ("voxel", "mm"):
            raise InputError(f"distance_units must be voxel or mm, got {self.distance_units!r}")
        m = 2 ** (len(self.widths) - 1)
        if self.image_size % m:
            raise InputError(f"image_size {self.image_size} must be a multiple of {m}")
