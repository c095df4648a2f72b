"""Tests of the user-facing pipeline drdm.DRDM, its checkpoints and ``drdm generate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import write_nifti
from drdm import DRDM
from drdm.checkpoint import CONFIG_NAME, save_pretrained
from drdm.cli.main import main
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.errors import InputError
from drdm.io import read_displacement
from drdm.nn import NetworkConfig, RecursiveUNet
from drdm.pretrained import PRETRAINED_NAMES, is_available, pretrained_dir
from drdm.sampling import SamplerConfig
from drdm.spatial import fold_ratio, resize_ddf, warp
from helpers import T, gen, tiny_model


@pytest.fixture(scope="module")
def model2d() -> DRDM:
    return tiny_model()


def test_generate_any_size_batch_times_samples(model2d):
    images = torch.rand(2, 1, 40, 52, generator=gen(1))
    out = model2d.generate(images, level=6, num_samples=3, generator=gen(0))
    assert out.ddf.shape == (6, 2, 40, 52)
    assert out.initial_ddf.shape == (6, 2, 40, 52)
    assert out.images.shape == (6, 1, 40, 52)
    assert out.level == 6 and out.trajectory_images is None
    assert torch.isfinite(out.ddf).all() and torch.isfinite(out.images).all()
    # image-major rows; every sample different; every output ONE warp of its original
    for k in range(6):
        expected = warp(images[k // 3 : k // 3 + 1], out.ddf[k : k + 1])
        torch.testing.assert_close(out.images[k : k + 1], expected)
    assert not torch.equal(out.ddf[0], out.ddf[1])


def test_field_is_the_model_grid_field_resized(model2d):
    image = torch.rand(1, 1, 40, 52, generator=gen(2))
    out = model2d.generate(
        image, 4, num_samples=2, generator=gen(0), return_trajectory=True, stride=1
    )
    assert out.trajectory_images.shape == (5, 2, 1, 32, 32)
    assert out.trajectory_ddfs.shape == (5, 2, 2, 32, 32)
    torch.testing.assert_close(out.ddf, resize_ddf(out.trajectory_ddfs[-1], (40, 52)))
    torch.testing.assert_close(out.initial_ddf, resize_ddf(out.trajectory_ddfs[0], (40, 52)))
    # the network grid saw the input resized edge-aligned (align_corners=False)
    resized = torch.nn.functional.interpolate(image, (32, 32), mode="bilinear")
    torch.testing.assert_close(
        out.trajectory_images[0], warp(resized.expand(2, -1, -1, -1), out.trajectory_ddfs[0])
    )


def test_single_images_and_numpy(model2d):
    array = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    a = model2d.generate(array, 3, generator=gen(5))
    b = model2d.generate(torch.from_numpy(array)[None], 3, generator=gen(5))
    c = model2d.generate(torch.from_numpy(array)[None, None].double(), 3, generator=gen(5))
    assert a.ddf.shape == (1, 2, 32, 32) and a.images.shape == (1, 1, 32, 32)
    assert torch.equal(a.ddf, b.ddf) and torch.equal(a.ddf, c.ddf)
    assert a.images.dtype == torch.float32


def test_3d():
    model = tiny_model(ndim=3, size=16)
    out = model.generate(torch.rand(1, 1, 20, 16, 12, generator=gen()), 3, 2, generator=gen(1))
    assert out.ddf.shape == (2, 3, 20, 16, 12) and out.images.shape == (2, 1, 20, 16, 12)
    assert torch.isfinite(out.ddf).all()


def test_seeds_reproduce_bit_for_bit(model2d):
    image = torch.rand(1, 1, 40, 40, generator=gen(3))
    a = model2d.generate(image, 5, num_samples=2, generator=gen(11))
    b = model2d.generate(image, 5, num_samples=2, generator=gen(11))
    c = model2d.generate(image, 5, num_samples=2, generator=gen(12))
    assert torch.equal(a.ddf, b.ddf) and torch.equal(a.images, b.images)
    assert not torch.equal(a.ddf, c.ddf)


def test_normalize_only_changes_the_network_input(model2d):
    image = torch.rand(1, 1, 32, 32, generator=gen(4))
    a = model2d.generate(image, 3, generator=gen(0))
    b = model2d.generate(image * 100 + 7, 3, generator=gen(0), normalize=True)
    c = model2d.generate((image - image.min()) / (image.max() - image.min()), 3, generator=gen(0))
    torch.testing.assert_close(b.ddf, c.ddf, rtol=0, atol=1e-3)  # same up to rounding
    torch.testing.assert_close(b.images, warp(image * 100 + 7, b.ddf))
    assert a.ddf.shape == b.ddf.shape


@pytest.mark.parametrize("level", [0, T + 1])
def test_level_validation(model2d, level):
    with pytest.raises(ValueError, match=f"1..{T}"):
        model2d.generate(torch.rand(1, 1, 32, 32), level)


def test_input_validation(model2d):
    with pytest.raises(ValueError, match="num_samples"):
        model2d.generate(torch.rand(1, 1, 32, 32), 3, num_samples=0)
    with pytest.raises(ValueError, match="channel"):
        model2d.generate(torch.rand(1, 3, 32, 32), 3)
    with pytest.raises(ValueError, match="spatial axes"):
        model2d.generate(torch.rand(1, 1, 1, 32, 32, 32), 3)
    with pytest.raises(ValueError, match="NaN"):
        model2d.generate(torch.full((32, 32), float("nan")), 3)


def test_constructor_validation():
    network = RecursiveUNet(NetworkConfig(widths=(4, 8, 8), bottleneck_width=4, num_steps=T))
    with pytest.raises(ValueError, match="steps"):
        DRDM(network, ForwardDiffusion(ForwardDiffusionConfig(num_steps=T + 1)), (32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        DRDM(network, ForwardDiffusion(ForwardDiffusionConfig(num_steps=T)), (36, 32))
    with pytest.raises(ValueError, match="agree"):
        DRDM(network, ForwardDiffusion(ForwardDiffusionConfig(num_steps=T, ndim=3)), (32, 32))


@pytest.mark.parametrize("official", [False, True])
def test_save_from_pretrained_round_trip(tmp_path, official):
    model = tiny_model(official=official)
    directory = model.save_pretrained(tmp_path / "ckpt")
    extra = json.loads((directory / CONFIG_NAME).read_text())["extra"]
    assert extra["preset"] == ("official" if official else "drdm")
    assert extra["image_size"] == [32, 32] and extra["training"] == {"note": "unit test"}
    assert set(extra) >= {"forward", "preset", "image_size", "training", "sampler"}
    loaded = DRDM.from_pretrained(directory)
    assert loaded.preset == model.preset and loaded.sampler == model.sampler
    assert loaded.process.config == model.process.config
    assert loaded.image_size == model.image_size
    image = torch.rand(1, 1, 40, 40, generator=gen(6))
    a = model.generate(image, 4, num_samples=2, generator=gen(1))
    b = loaded.generate(image, 4, num_samples=2, generator=gen(1))
    assert torch.equal(a.ddf, b.ddf) and torch.equal(a.images, b.images)
    if official:
        assert loaded.sampler == SamplerConfig("zeros", "cubic", "zeros")


def test_missing_default_model_gives_a_clear_error(tmp_path, monkeypatch):
    import drdm.pretrained

    monkeypatch.setattr(drdm.pretrained, "_ROOT", tmp_path)  # a package without weights
    for name in PRETRAINED_NAMES:
        assert pretrained_dir(name).name == name
        assert not is_available(name)
        with pytest.raises(InputError, match="not available yet") as info:
            DRDM.from_pretrained(name)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_packaged_default_model_loads_and_generates():
    import drdm.pretrained

    assert is_available("default")
    directory = drdm.pretrained.pretrained_dir("default")
    assert sum(f.stat().st_size for f in directory.iterdir()) < 5 * 2**20
    model = DRDM.from_pretrained("default")
    assert model.ndim == 2 and model.preset == "drdm" and model.num_steps == 80
    image = torch.rand(1, 1, 96, 80, generator=gen(3))
    out = model.generate(image, 20, num_samples=2, generator=gen(4))
    assert out.ddf.shape == (2, 2, 96, 80) and torch.isfinite(out.ddf).all()
    assert not torch.equal(out.ddf[0], out.ddf[1])
    assert float(fold_ratio(out.ddf).max()) < 0.01


def test_packaged_3d_model_loads_and_generates():
    import drdm.pretrained

    assert is_available("default-3d")
    directory = drdm.pretrained.pretrained_dir("default-3d")
    assert sum(f.stat().st_size for f in directory.iterdir()) < 10 * 2**20
    model = DRDM.from_pretrained("default-3d")
    assert model.ndim == 3 and model.preset == "drdm" and tuple(model.image_size) == (32, 32, 32)
    image = torch.rand(1, 1, 40, 36, 32, generator=gen(3))
    out = model.generate(image, 20, num_samples=1, generator=gen(4), stride=8)
    assert out.ddf.shape == (1, 3, 40, 36, 32) and torch.isfinite(out.ddf).all()
    assert float(out.ddf.abs().max()) > 0.1  # a real deformation, not the identity
    assert float(fold_ratio(out.ddf).max()) < 0.01


def test_from_pretrained_bad_paths(tmp_path):
    with pytest.raises(InputError, match="no such checkpoint directory"):
        DRDM.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="missing config.json"):
        DRDM.from_pretrained(tmp_path / "empty")
    bare = save_pretrained(tiny_model().network, tmp_path / "bare")  # no forward config
    with pytest.raises(InputError, match="no forward-process config"):
        DRDM.from_pretrained(bare)
    # weights imported by drdm.official_weights alone fall back to the authors' setting
    net = RecursiveUNet(NetworkConfig(widths=(4, 8, 8), bottleneck_width=4, num_steps=80))
    imported = save_pretrained(net, tmp_path / "imp", {"source": {"imported_from": "official"}})
    model = DRDM.from_pretrained(imported)
    assert model.preset == "official" and model.image_size == (256, 256)
    assert model.sampler.image_mode == "cubic"


def test_import_is_light():
    code = "import sys, drdm; assert 'torch' not in sys.modules; drdm.DRDM; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ---------------------------------------------------------------- drdm generate


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_model().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def image2d(tmp_path):
    y, x = np.mgrid[:40, :36]
    array = np.exp(-((y - 20) ** 2 + (x - 18) ** 2) / 80.0).astype(np.float32)
    return write_nifti(tmp_path / "img.nii.gz", array)


def test_cli_generate_writes_images_fields_labels_figure(tmp_path, image2d, checkpoint, capsys):
    label = write_nifti(
        tmp_path / "lab.nii.gz", ((nib.load(image2d).get_fdata() > 0.5) * 3).astype(np.int16)
    )
    out = tmp_path / "out"
    args = ["generate", str(image2d), "--level", "5", "--n", "3", "--out", str(out)]
    args += ["--model", str(checkpoint), "--seed", "2", "--device", "cpu", "--quiet"]
    assert main([*args, "--label", str(label)]) == 0
    names = sorted(p.name for p in out.iterdir())
    expected = [f"img_T5_seed2_{k}_{kind}.nii.gz" for k in range(3) for kind in ("ddf", "image")]
    expected += [f"img_T5_seed2_{k}_label.nii.gz" for k in range(3)] + ["img_T5_seed2.png"]
    assert names == sorted(expected)
    source = nib.load(image2d)
    deformed = nib.load(out / "img_T5_seed2_1_image.nii.gz")
    ddf = nib.load(out / "img_T5_seed2_1_ddf.nii.gz")
    lab = nib.load(out / "img_T5_seed2_1_label.nii.gz")
    assert deformed.shape == (40, 36) and ddf.shape == (40, 36, 1, 1, 2)
    assert lab.shape == (40, 36) and set(np.unique(lab.get_fdata())) <= {0.0, 3.0}
    for img in (deformed, ddf, lab):
        np.testing.assert_allclose(img.affine, source.affine)
    # the written image is the original warped by the written field (mm on disk, voxels here)
    voxels = read_displacement(out / "img_T5_seed2_1_ddf.nii.gz")
    field = torch.as_tensor(voxels, dtype=torch.float64)[None]
    original = torch.as_tensor(source.get_fdata())[None, None]
    np.testing.assert_allclose(deformed.get_fdata(), warp(original, field)[0, 0].numpy(), atol=1e-5)
    assert "mean |u|" in capsys.readouterr().out
    # same seed, same files
    again = tmp_path / "again"
    assert (
        main(
            [
                "generate",
                str(image2d),
                "--level",
                "5",
                "--n",
                "3",
                "--out",
                str(again),
                "--model",
                str(checkpoint),
                "--seed",
                "2",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        nib.load(again / "img_T5_seed2_1_ddf.nii.gz").get_fdata(), ddf.get_fdata()
    )


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--level", "0"], "level 0: must lie in 1..10"),
        (["--level", "11"], "level 11: must lie in 1..10"),
        (["--level", "5", "--n", "0"], "n 0: must be >= 1"),
        (["--level", "5", "--model", "/no/such/model"], "no such checkpoint directory"),
        (["--level", "5", "--model", "default"], "not available yet"),
        (["--level", "5", "--device", "tpu"], "device tpu"),
    ],
)
def test_cli_generate_bad_options(
    tmp_path, image2d, checkpoint, capsys, monkeypatch, extra, message
):
    import drdm.pretrained

    monkeypatch.setattr(drdm.pretrained, "_ROOT", tmp_path / "no-packaged-models")
    out = tmp_path / "out"
    args = ["generate", str(image2d), "--out", str(out), "--model", str(checkpoint), "--quiet"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_generate_bad_files(tmp_path, image2d, checkpoint, capsys):
    out = tmp_path / "out"
    base = ["--level", "3", "--out", str(out), "--model", str(checkpoint), "--quiet"]
    assert main(["generate", str(tmp_path / "missing.nii.gz"), *base]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    series = np.random.default_rng(0).random((16, 16, 16, 3))
    vol = write_nifti(tmp_path / "series.nii.gz", series)
    assert main(["generate", str(vol), *base]) == 2
    assert "series.nii.gz" in capsys.readouterr().err
    small = write_nifti(tmp_path / "small.nii.gz", np.zeros((20, 20), np.int16))
    assert main(["generate", str(image2d), *base, "--label", str(small)]) == 2
    assert "label shape (20, 20)" in capsys.readouterr().err
    frac = write_nifti(tmp_path / "frac.nii.gz", np.full((40, 36), 0.5, np.float32))
    assert main(["generate", str(image2d), *base, "--label", str(frac)]) == 2
    assert "integers" in capsys.readouterr().err
    assert not out.exists()


def test_cli_import_official_bad_file(tmp_path, capsys):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["import-official", str(bogus), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bogus.pth" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert main(["import-official", str(tmp_path / "none.pth"), str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_unpickled_model_reuses_its_exported_engine_until_the_weights_change():
    pytest.importorskip("onnxruntime")
    import pickle

    model = DRDM.from_pretrained("default")
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    first = model.generate(x, 5, generator=torch.Generator().manual_seed(1)).ddf
    copy_ = pickle.loads(pickle.dumps(model))
    engine = copy_._onnx[1]
    assert engine is not None and copy_.inference_network() is engine  # no new export
    again = copy_.generate(x, 5, generator=torch.Generator().manual_seed(1)).ddf
    assert torch.equal(first, again)
    with torch.no_grad():
        next(copy_.network.parameters()).add_(0.1)
    assert copy_.inference_network() is not engine  # new weights: exported again
