"""The library's batch engine: deform users' files with their geometry (paper Algorithms 2-4).

* :func:`augment_files` / :func:`synthesize_files` (:mod:`drdm.batch.runner`): many inputs,
  levels and samples, with manifests, seeds, shards, resume and one run per folder
  (:mod:`drdm.batch.jobs`);
* :func:`generate_file` / :func:`diffuse_file` (:mod:`drdm.batch.single`): one image with a
  trained model or the random forward process;
* :mod:`drdm.batch.inputs`: the method registry lookup, reading and checking one input, output
  names, field statistics and the writer they all share.

The ``drdm`` commands parse their options, call one of these and print the report.
"""

from .inputs import BATCH_METHODS, MIN_VOXELS, LoadedInput, Method, load_input, load_method
from .jobs import (
    AUGMENT_COLUMNS,
    SYNTH_COLUMNS,
    BatchReport,
    InputItem,
    Job,
    list_inputs,
    merge_manifests,
)
from .runner import BatchOptions, RunReport, augment_files, parse_level_pairs, synthesize_files
from .single import SingleReport, diffuse_file, generate_file

__all__ = [
    "AUGMENT_COLUMNS",
    "BATCH_METHODS",
    "MIN_VOXELS",
    "SYNTH_COLUMNS",
    "BatchOptions",
    "BatchReport",
    "InputItem",
    "Job",
    "LoadedInput",
    "Method",
    "RunReport",
    "SingleReport",
    "augment_files",
    "diffuse_file",
    "generate_file",
    "list_inputs",
    "load_input",
    "load_method",
    "merge_manifests",
    "parse_level_pairs",
    "synthesize_files",
]
