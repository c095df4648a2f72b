"""Tests of the overview montage (drdm.viz.overview_figure) and ``drdm show``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import smooth_field, smooth_image, write_nifti
from drdm.batch.manifest import AUGMENT_COLUMNS
from drdm.cli.main import main
from drdm.pipelines.core import deform_volume, synthesize_pair
from drdm.viz import OverviewRow, overview_figure, rows_from_manifest


class SmoothSampler:
    def __init__(self, ndim=2, amplitude=2.0):
        self.ndim = ndim
        self.amplitude = amplitude

    def sample_ddf(self, images, generator):
        shape = (images.shape[0], self.ndim, *images.shape[2:])
        return smooth_field(shape, self.amplitude, generator, dtype=images.dtype)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def write_manifest(path, columns, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def case(shape, seed):
    image = smooth_image(shape, gen(seed))[0, 0].float().numpy()
    label = (image > np.median(image)).astype(np.uint8) + (image > np.quantile(image, 0.8))
    return image, label.astype(np.uint8)


@pytest.fixture
def augment_run(tmp_path):
    """A run folder as ``drdm augment`` writes it: a 2D image and a 3D stack, 3 samples."""
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    rows = []
    for name, shape in (("slice", (32, 28)), ("stack", (24, 20, 4))):
        image, label = case(shape, len(rows) + 1)
        write_nifti(src / f"{name}.nii.gz", image)
        write_nifti(src / f"{name}_label.nii.gz", label)
        for sample in range(2 if name == "slice" else 1):
            res = deform_volume(SmoothSampler(), image, [label], gen(sample))
            prefix = f"{name}/L030_s{sample:03d}"
            (out / name).mkdir(exist_ok=True)
            write_nifti(out / f"{prefix}.nii.gz", res.image)
            write_nifti(out / f"{prefix}_label.nii.gz", res.labels[0])
            np.save(out / f"{prefix}_ddf.npy", res.ddf)
            rows.append(
                {
                    "image": f"{prefix}.nii.gz",
                    "label": f"{prefix}_label.nii.gz",
                    "ddf": f"{prefix}_ddf.npy",
                    "source_image": str(src / f"{name}.nii.gz"),
                    "source_label": str(src / f"{name}_label.nii.gz"),
                    "level": 30,
                    "sample": sample,
                    "seed": sample,
                    "max_disp_pct": "",  # computed from the field when missing
                    "mean_disp_pct": "",
                    "fold_pct": "",
                }
            )
    write_manifest(out / "manifest.csv", AUGMENT_COLUMNS, rows)
    return out


def test_show_command_writes_png(augment_run, tmp_path):
    png = tmp_path / "figs" / "montage.png"
    png.parent.mkdir()
    assert main(["show", str(augment_run), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in png.parent.iterdir()) == ["montage.png"]  # no temp files
    # default output beside the manifest; the manifest file itself is accepted too
    assert main(["show", str(augment_run / "manifest.csv"), "--max-rows", "2"]) == 0
    assert (augment_run / "overview.png").is_file()


def test_show_errors_name_the_flag_only_when_given(augment_run, tmp_path, capsys):
    (augment_run / "overview.png").unlink(missing_ok=True)
    (augment_run / "overview.png").mkdir()  # the default output is taken by a folder
    assert main(["show", str(augment_run)]) == 2
    assert "the default output " in capsys.readouterr().err
    (tmp_path / "taken.png").mkdir()
    assert main(["show", str(augment_run), "--out", str(tmp_path / "taken.png")]) == 2
    assert f"--out {tmp_path / 'taken.png'}: is a folder" in capsys.readouterr().err


def test_rows_and_figure_content(augment_run):
    rows = rows_from_manifest(augment_run)
    assert len(rows) == 3
    assert rows[0].title.startswith("slice: level 30, sample 0")
    assert rows[2].original.shape == (24, 20, 4) and rows[2].ddf.shape == (3, 24, 20, 4)
    assert rows[0].original_label is not None and rows[0].deformed_label.dtype == np.uint8
    two = rows_from_manifest(augment_run, max_rows=2)  # evenly spread: first and last
    assert [r.title for r in two] == [rows[0].title, rows[2].title]
    fig = overview_figure(rows)
    image_axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(image_axes) == 12
    titles = [ax.get_title() for ax in image_axes]
    assert any("folds" in t for t in titles) and any("max |φ|" in t for t in titles)
    # the 3D stack is shown across its slice axis (2: the field's zero component)
    assert "slice 2 along axis 2" in titles[8]


def test_overview_of_rows_in_process(tmp_path):
    image, label = case((24, 24), 5)
    res = deform_volume(SmoothSampler(amplitude=6.0), image, [label], gen(3))
    row = OverviewRow(image, res.image, res.ddf, label, res.labels[0], title="in-process")
    png = tmp_path / "o.png"
    fig = overview_figure([row] * 8, png, max_rows=3)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sum(1 for ax in fig.axes if ax.get_title()) == 12  # at most max_rows rows


def test_show_synth_manifest(tmp_path):
    image, label = case((28, 28), 7)
    res = synthesize_pair(SmoothSampler(), SmoothSampler(), image, [label], gen(1))
    write_nifti(tmp_path / "src.nii.gz", image)
    write_nifti(tmp_path / "mv.nii.gz", res.moving)
    write_nifti(tmp_path / "fx.nii.gz", res.fixed)
    write_nifti(tmp_path / "mv_label.nii.gz", res.moving_labels[0])
    np.save(tmp_path / "ddf.npy", res.ddf_syn)
    columns = ["moving", "fixed", "ddf", "moving_label", "fixed_label", "source_image"]
    columns += ["source_label", "level_aug", "level_syn", "sample", "seed"]
    row = {c: "" for c in columns}
    row.update(moving="mv.nii.gz", fixed="fx.nii.gz", ddf="ddf.npy", moving_label="mv_label.nii.gz")
    row.update(source_image="src.nii.gz", level_aug=30, level_syn=20, sample=0)
    write_manifest(tmp_path / "manifest.csv", columns, [row])
    (shown,) = rows_from_manifest(tmp_path)
    assert shown.title == "mv: T'aug 30, T'syn 20, sample 0"
    assert shown.deformed_label is None
    np.testing.assert_allclose(shown.ddf, res.ddf_syn)
    assert main(["show", str(tmp_path)]) == 0


def test_nifti_displacement_fields(augment_run):
    io_image = pytest.importorskip("drdm.io.image")
    if not hasattr(io_image, "write_displacement"):
        pytest.skip("drdm.io.image.write_displacement is not available")
    rows = list(csv.DictReader(open(augment_run / "manifest.csv")))
    like = io_image.read_image(augment_run / rows[0]["image"])
    ddf = np.load(augment_run / rows[0]["ddf"])
    io_image.write_displacement(augment_run / "field.nii.gz", ddf, like)
    rows = rows[:1]
    rows[0]["ddf"] = "field.nii.gz"
    write_manifest(augment_run / "manifest.csv", AUGMENT_COLUMNS, rows)
    (row,) = rows_from_manifest(augment_run)
    np.testing.assert_allclose(row.ddf, ddf, atol=1e-4)


def test_bad_input(tmp_path, augment_run, capsys):
    assert main(["show", str(tmp_path / "nothing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["show", str(empty)]) == 2
    assert "no manifest.csv" in capsys.readouterr().err
    other = write_manifest(tmp_path / "other.csv", ["a", "b"], [{"a": 1, "b": 2}])
    assert main(["show", str(other)]) == 2
    assert "not a drdm augment/synth manifest" in capsys.readouterr().err
    assert main(["show", str(augment_run), "--max-rows", "0"]) == 2
    assert main(["show", str(augment_run), "--out", str(tmp_path / "x.jpg")]) == 2
    (augment_run / "slice" / "L030_s000_ddf.npy").unlink()
    assert main(["show", str(augment_run)]) == 2
    assert "L030_s000_ddf.npy" in capsys.readouterr().err


def test_4d_source_read_at_the_runs_frame(tmp_path):
    pytest.importorskip("drdm.io.image")
    series = np.stack([case((24, 20, 3), 11)[0], case((24, 20, 3), 12)[0]], axis=-1)
    write_nifti(tmp_path / "cine.nii.gz", series)
    res = deform_volume(SmoothSampler(), series[..., 1], [], gen(0))
    write_nifti(tmp_path / "out.nii.gz", res.image)
    np.save(tmp_path / "ddf.npy", res.ddf)
    row = {c: "" for c in AUGMENT_COLUMNS}
    row.update(image="out.nii.gz", ddf="ddf.npy", source_image="cine.nii.gz", level=0, sample=0)
    write_manifest(tmp_path / "manifest.csv", AUGMENT_COLUMNS, [row])
    (tmp_path / "run.json").write_text('{"command": "augment", "settings": {"frame": 1}}')
    (shown,) = rows_from_manifest(tmp_path)
    np.testing.assert_allclose(shown.original, series[..., 1], rtol=1e-6)
