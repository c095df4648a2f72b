"""The library's batch engine: deform users' files with their geometry (paper Algorithms 2-4).

* :func:`augment_files` / :func:`synthesize_files` (:mod:`drdm.batch.runner`): many inputs,
  levels and samples, with seeds and shards (:mod:`drdm.batch.jobs`), manifests and resume
  (:mod:`drdm.batch.manifest`) and one run per folder (:mod:`drdm.batch.run_folder`);
* :func:`generate_file` / :func:`diffuse_file` (:mod:`drdm.batch.single`): one image with a
  trained model or the random forward process;
* :mod:`drdm.batch.inputs`: an input paired (:func:`find_pairs`), listed (:func:`list_inputs`)
  and read (:func:`load_input`); :mod:`drdm.batch.method`: the method registry lookup;
  :mod:`drdm.batch.outputs`: output names, field statistics and the writer they all share.

The ``drdm`` commands parse their options, call one of these and print the report.
"""

from .inputs import InputItem, LoadedInput, find_pairs, list_inputs, load_input
from .jobs import BatchReport, Job
from .manifest import AUGMENT_COLUMNS, SYNTH_COLUMNS, merge_manifests
from .method import BATCH_METHODS, MIN_VOXELS, Method, load_method
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
    "find_pairs",
    "generate_file",
    "list_inputs",
    "load_input",
    "load_method",
    "merge_manifests",
    "parse_level_pairs",
    "synthesize_files",
]
