from __future__ import annotations

import os
from pathlib import Path

# Two CPU cores: OpenMP busy-waiting stalls 2-thread ops on these machines. Set before torch
# initialises OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; skips when absent (users' clones)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not available")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved tiny 2D DRDM model on a 32 x 32 grid (random weights), for command tests."""
    from helpers import tiny_model

    path = tmp_path_factory.mktemp("model")
    tiny_model(size=32).save_pretrained(path)
    return path


def smooth_field(shape, amplitude, generator, dtype=torch.float64):
    """A smooth random displacement field (B, ndim, *spatial) in voxels."""
    batch, ndim, *size = shape
    coarse = torch.randn(batch, ndim, *[4] * ndim, generator=generator, dtype=dtype)
    mode = "bilinear" if ndim == 2 else "trilinear"
    field = torch.nn.functional.interpolate(coarse, size=size, mode=mode, align_corners=True)
    return field * amplitude


def smooth_image(size, generator, dtype=torch.float64):
    """A smooth random image (1, 1, *size)."""
    return smooth_field((1, len(size), *size), 1.0, generator, dtype)[:, :1]


def write_nifti(path, array, affine=None):
    """Save ``array`` as NIfTI (default affine: 1.5 x 1.5 x 8 mm voxels); return the path."""
    affine = np.diag([1.5, 1.5, 8.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path
