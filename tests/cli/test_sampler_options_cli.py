"""--stride and --engine of drdm augment / synth / generate: passed to the sampler, recorded in
the run's settings (stride) and checked at the boundary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_nifti
from drdm import DRDM
from drdm.cli.main import main
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.errors import InputError
from drdm.nn import NetworkConfig, RecursiveUNet
from drdm.pipelines.core import DRDMSampler


def tiny_model() -> DRDM:
    config = NetworkConfig(
        widths=(4, 8, 8), bottleneck_width=4, num_steps=20, embed_dim=8, output_init_std=2e-3
    )
    network = RecursiveUNet(config, generator=torch.Generator().manual_seed(0))
    return DRDM(network, ForwardDiffusion(ForwardDiffusionConfig(num_steps=20)), (32, 32))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_model().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def image(tmp_path):
    y, x = np.mgrid[:40, :36]
    array = np.exp(-((y - 20) ** 2 + (x - 18) ** 2) / 80.0).astype(np.float32)
    return write_nifti(tmp_path / "img.nii.gz", array)


def test_drdm_sampler_passes_stride_and_recursions_to_generate():
    model = tiny_model()
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))

    def field(**kwargs):
        sampler = DRDMSampler(model, 12, **kwargs)
        return sampler.sample_ddf(images, torch.Generator().manual_seed(0))

    expected = model.generate(
        images, 12, generator=torch.Generator().manual_seed(0), normalize=True, stride=1
    ).ddf
    torch.testing.assert_close(field(stride=1), expected)
    assert (field(stride=1) - field()).abs().max() > 1e-4  # the default stride is not 1
    assert (field(recursions=1, stride=1) - field(stride=1)).abs().max() > 1e-4
    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="stride"):
            DRDMSampler(model, 12, stride=bad)


def test_augment_stride_is_a_setting_of_the_run(tmp_path, image, checkpoint, capsys):
    base = ["augment", "--image", str(image), "--model", str(checkpoint), "--levels", "12"]
    base += ["--per-level", "1", "--stack", "none", "--quiet", "--no-figure"]
    base += ["--ddf-format", "npy", "--device", "cpu"]
    literal, default = tmp_path / "literal", tmp_path / "default"
    assert main([*base, "--out", str(literal), "--stride", "1", "--engine", "torch"]) == 0
    assert main([*base, "--out", str(default)]) == 0
    a = np.load(next(literal.rglob("*_ddf.npy")))
    b = np.load(next(default.rglob("*_ddf.npy")))
    assert np.abs(a - b).max() > 1e-4  # other network calls, other field
    settings = json.loads((literal / "run.json").read_text())
    assert "stride" in json.dumps(settings)
    capsys.readouterr()
    # the same folder with another stride is another run: refused, nothing mixed
    assert main([*base, "--out", str(literal), "--stride", "4"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--stride", "0"], "stride"),
        (["--method", "elastic", "--stride", "2"], "stride 2: only method drdm"),
    ],
)
def test_augment_refuses_impossible_sampler_options(
    tmp_path, image, checkpoint, capsys, extra, message
):
    out = tmp_path / "out"
    args = ["augment", "--image", str(image), "--model", str(checkpoint), "--levels", "5"]
    args += ["--out", str(out), "--quiet", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_generate_takes_stride_and_engine(tmp_path, image, checkpoint):
    outs = []
    for stride, engine in (("1", "torch"), ("1", "auto"), ("5", "torch")):
        out = tmp_path / f"s{stride}-{engine}"
        args = ["generate", str(image), "--level", "10", "--out", str(out), "--model"]
        args += [str(checkpoint), "--stride", stride, "--engine", engine, "--quiet"]
        args += ["--ddf-format", "npy", "--device", "cpu"]
        assert main(args) == 0
        outs.append(np.load(next(out.glob("*_ddf.npy"))))
    # engines agree up to float32 rounding, which the loop can amplify at a few points of this
    # random model's folded fields; strides give other fields
    engines, strides = np.abs(outs[0] - outs[1]), np.abs(outs[0] - outs[2])
    assert np.median(engines) <= 1e-2
    assert np.median(strides) > 10 * np.median(engines)
