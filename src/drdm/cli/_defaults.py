"""The library's defaults that the command line offers and states in its help, in one place.

The library defines each of them in a module that imports torch, which ``drdm --help`` must
not load (tests/cli/test_help_imports.py), so they are repeated here, once each, with the
library name they stand for. tests/cli/test_defaults.py checks every value against the
library, and every default of every command's options against this module. The
vocabularies the options choose from are :mod:`drdm.choices`' (the library's own).
"""

from __future__ import annotations

# shared by several commands
#: ``seed`` of :class:`drdm.batch.BatchOptions`, :func:`drdm.batch.generate_file`,
#: :func:`drdm.batch.diffuse_file` and :class:`drdm.training.adapt.AdaptConfig`
SEED = 0
#: ``model`` of :class:`~drdm.batch.BatchOptions` and :func:`~drdm.batch.generate_file`;
#: ``init`` of :class:`~drdm.training.adapt.AdaptConfig`
MODEL = "default"
#: ``device`` of the batch functions, :func:`drdm.training.adapt.adapt` and
#: :func:`drdm.training.train`
DEVICE = "auto"
#: ``engine`` of :class:`~drdm.batch.BatchOptions` and :func:`~drdm.batch.generate_file`
ENGINE = "auto"
#: :data:`drdm.sampling.DEFAULT_STRIDE`, the stride of a model whose card names none
STRIDE = 4
#: ``slice_axis`` of :class:`~drdm.batch.BatchOptions` and the single-image functions
SLICE_AXIS = "auto"
#: ``ddf_format`` of :class:`~drdm.batch.BatchOptions` and the single-image functions
DDF_FORMAT = "nifti"
#: ``num_steps`` (T) of :class:`drdm.diffusion.ForwardDiffusionConfig` and the packaged models
NUM_STEPS = 80

# drdm augment and drdm synth (:class:`drdm.batch.BatchOptions`)
METHOD = "drdm"
#: ``ndim`` of a baseline method
BATCH_NDIM = 2
LABEL_INTERP = "onehot"
#: :func:`drdm.batch.augment_files`'s ``per_level`` and ``stack``
PER_LEVEL = 16
STACK = "auto"
#: :data:`drdm.pipelines.registry.DEFAULT_LEVEL_FRACTIONS` of T and
#: :data:`~drdm.pipelines.registry.DEFAULT_LEVELS` (for T = 80)
LEVEL_FRACTIONS = (0.4, 0.6)
LEVELS = (32, 48)
#: :func:`drdm.batch.synthesize_files`'s ``per_pair``
PER_PAIR = 1

# drdm generate and drdm diffuse
#: :func:`drdm.batch.generate_file`'s ``n``
N = 1
#: :func:`drdm.batch.diffuse_file`'s ``ndim``
DIFFUSE_NDIM = "auto"

# drdm demo: the ``size`` of :func:`drdm.data.phantoms.cardiac_phantom_2d` and
# :func:`~drdm.data.phantoms.thorax_phantom_3d`
SIZE_2D = 256
SIZE_3D = 64

# drdm adapt (:class:`drdm.training.adapt.AdaptConfig`)
ADAPT_TIME_LIMIT = 1200.0
ADAPT_HOLDOUT = 0.2
ADAPT_LR = 3e-4
ADAPT_BATCH_SIZE = 8
ADAPT_EVAL_DRAWS = 4

# drdm import-official: :data:`drdm.card.OFFICIAL_IMAGE_SIZE`
OFFICIAL_IMAGE_SIZE = 256

# drdm show: ``max_rows`` of :func:`drdm.viz.overview_figure`
MAX_ROWS = 6
