"""Training DRDM networks (paper Algorithm 1): typed configs, data, augmentation, the loop.

Entry points: :func:`train` (library) and ``drdm train --config FILE.yaml`` (command line);
configs are read with :func:`load_train_config`. See :mod:`drdm.training.trainer` for what a
step does and which files a run writes.
"""

from .augment import augment_batch, random_affine
from .config import (
    AugmentConfig,
    DataConfig,
    OptimConfig,
    OutputConfig,
    PhantomConfig,
    TrainConfig,
    load_train_config,
    save_train_config,
)
from .data import TrainingData, build_training_data
from .history import plot_losses
from .trainer import TrainingDivergedError, TrainResult, tensors_sha256, train

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "OptimConfig",
    "OutputConfig",
    "PhantomConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "TrainingDivergedError",
    "augment_batch",
    "build_training_data",
    "load_train_config",
    "plot_losses",
    "random_affine",
    "save_train_config",
    "tensors_sha256",
    "train",
]
