"""Knowledge distillation (drdm.training.distill) and the trainer options around it:
a teacher's calibration to our process, the pool of targets, init_from and --time-limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from drdm import DRDM
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.errors import InputError
from drdm.training import TrainConfig, train
from drdm.training.distill import (
    DistillPool,
    TeacherTargets,
    build_pool,
    distill_loss,
    downsample,
    load_teacher,
)
from helpers import gen, tiny_model

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def _smoke(tmp_path: Path, **sections) -> tuple:
    data = yaml.safe_load(SMOKE.read_text())
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return TrainConfig.from_dict(data), tmp_path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny teacher (T = 10) saved as a model folder; the smoke student has T = 20."""
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    tiny_model(size=32, seed=3).save_pretrained(path)
    return path


def test_distill_loss_is_relative_distance_to_the_target():
    step = torch.ones(2, 2, 8, 8)
    target = torch.zeros(2, 2, 8, 8)
    assert float(distill_loss(target, target, step)) == 0.0
    psi_hat = torch.zeros(2, 2, 8, 8)
    psi_hat[:, 0] = 3.0  # |psi_hat - target| = 3, |step| = sqrt(2)
    expected = 3.0 / (2**0.5 + 1e-3)
    assert float(distill_loss(psi_hat, target, step)) == pytest.approx(expected, rel=1e-6)


def test_downsample_averages_and_keeps_matching_sizes():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert downsample(x, (4, 4)) is x
    assert torch.allclose(downsample(x, (2, 2)), torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_calibration_matches_timesteps_by_magnitude_and_fits_the_scale(teacher_dir):
    teacher = load_teacher(teacher_dir, torch.device("cpu"))
    student = ForwardDiffusion(ForwardDiffusionConfig(ndim=2, num_steps=20))
    targets = TeacherTargets(teacher, student, (32, 32), (32, 32))
    images = torch.rand(6, 1, 32, 32, generator=gen(0))

    def draw_batch(n):
        pick = torch.randint(0, 6, (n,), generator=gen(n))
        return images[pick], images[pick]

    cal = targets.calibrate(draw_batch, gen(1), torch.device("cpu"), batches_per_band=2)
    t_teacher = cal.teacher_timestep
    assert t_teacher.shape == (20,) and int(t_teacher.min()) >= 1 and int(t_teacher.max()) <= 10
    # the curves it matched increase with t, and so (up to the draws' noise) does the mapping
    assert float(cal.ours_cumulative[-1]) > float(cal.ours_cumulative[0])
    assert int(t_teacher[-1]) > int(t_teacher[0])
    # each chosen teacher step is the closest in mean cumulative magnitude
    for t in (1, 10, 20):
        gap = (cal.teacher_cumulative - cal.ours_cumulative[t - 1]).abs()
        assert gap[t_teacher[t - 1] - 1] == gap.min()
    assert torch.isfinite(cal.scale).all()
    # targets are the teacher's prediction times the fitted scale
    t = torch.tensor([3, 17])
    fields = student.sample_fields((32, 32), t, generator=gen(2))
    raw = targets.predict(images[:2], fields.cumulative, t_teacher[t - 1])
    got = targets(images[:2], fields.cumulative, t)
    expected = raw * cal.scale[t - 1].float().view(-1, 1, 1, 1)
    assert got.shape == (2, 2, 32, 32) and torch.allclose(got, expected)
    assert set(cal.to_dict()) == {
        "teacher_timestep",
        "scale",
        "ours_cumulative",
        "teacher_cumulative",
    }


def test_scale_is_the_least_squares_factor():
    """With a teacher that always predicts -step/2 (a stand-in network reading the step from
    a side channel), the fitted scale is 2 and the targets are exactly -step."""

    class Echo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.field: torch.Tensor | None = None

        def forward(self, image, t):
            return -0.5 * self.field

    class FakeTeacher:
        def __init__(self, process):
            self.network = Echo()
            self.process = process

    process = ForwardDiffusion(ForwardDiffusionConfig(ndim=2, num_steps=6))
    teacher = FakeTeacher(process)
    targets = TeacherTargets(teacher, process, (16, 16), (16, 16))
    images = torch.rand(4, 1, 16, 16, generator=gen(0))
    original_sample = process.sample

    def sample(batch, t, generator=None, perturb=False):
        out = original_sample(batch, t, generator=generator, perturb=perturb)
        teacher.network.field = out.step
        return out

    process.sample = sample  # type: ignore[method-assign]
    cal = targets.calibrate(lambda n: (images[:n], images[:n]), gen(1), torch.device("cpu"))
    assert torch.allclose(cal.scale, torch.full((6,), 2.0, dtype=torch.float64), atol=1e-5)


def test_pool_round_trip(tmp_path, teacher_dir):
    teacher = load_teacher(teacher_dir, torch.device("cpu"))
    student = ForwardDiffusion(ForwardDiffusionConfig(ndim=2, num_steps=20))
    targets = TeacherTargets(teacher, student, (16, 16), (32, 32))
    images = torch.rand(3, 1, 32, 32, generator=gen(0))

    def draw_batch(n):
        hi = images[torch.arange(n) % 3]
        return hi, downsample(hi, (16, 16))

    targets.calibrate(draw_batch, gen(1), torch.device("cpu"), batches_per_band=1)
    pool = build_pool(targets, draw_batch, 5, gen(2), chunk=2, progress=False)
    assert len(pool) == 5 and pool.images.shape == (5, 1, 16, 16)
    assert pool.step.shape == pool.target.shape == (5, 2, 16, 16)
    assert int(pool.t.min()) >= 1 and int(pool.t.max()) <= 20
    pool.save(tmp_path / "pool.safetensors")
    again = DistillPool.load(tmp_path / "pool.safetensors")
    assert all(torch.equal(getattr(pool, k), getattr(again, k)) for k in ("images", "step", "t"))
    assert not list(tmp_path.glob(".*"))


def test_training_with_a_teacher_pool_and_time_limit(tmp_path, teacher_dir):
    config, _ = _smoke(
        tmp_path,
        optim={"steps": 50, "batch_size": 4},
        distill={
            "teacher": str(teacher_dir),
            "teacher_size": [64, 64],
            "pool_size": 6,
            "pool_fraction": 0.5,
        },
    )
    out = tmp_path / "run"
    result = train(config, tmp_path, out, quiet=True, time_limit=1e-6)
    assert result.finished and result.step == 1  # stopped by the time limit after one step
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_time_limit"] is True and summary["steps"] == 1
    card = json.loads((out / "model" / "config.json").read_text())["extra"]["training"]
    distill = card["distillation"]
    assert card["steps"] == 1 and distill["teacher"] == "teacher"
    assert len(distill["teacher_sha256"]) == 64 and distill["pool_size"] == 6
    assert len(distill["calibration"]["scale"]) == 20
    assert (out / "distill_pool.safetensors").is_file()
    assert result.losses[0]["distill"] > 0  # the pool's half of the batch is distilled
    model = DRDM.from_pretrained(out / "model")
    assert tuple(model.image_size) == (32, 32)  # the student's grid, not the teacher's


def test_init_from_starts_from_given_weights(tmp_path):
    config, _ = _smoke(tmp_path, optim={"steps": 1, "lr": 1e-12})
    first = train(config, tmp_path, tmp_path / "a", quiet=True)
    start = DRDM.from_pretrained(first.model_dir).network.state_dict()
    config2, _ = _smoke(
        tmp_path, optim={"steps": 1, "lr": 1e-12}, seed=5, init_from=str(first.model_dir)
    )
    second = train(config2, tmp_path, tmp_path / "b", quiet=True)
    after = DRDM.from_pretrained(second.model_dir).network.state_dict()
    card = json.loads((second.model_dir / "config.json").read_text())["extra"]["training"]
    assert card["init_from"] == str(first.model_dir)  # the card says where it started
    # seed 5 alone would start elsewhere; one step at lr 1e-12 barely moves the weights
    assert all(torch.allclose(start[k], after[k], atol=1e-6) for k in start)
    bad, _ = _smoke(tmp_path, init_from="default")  # the packaged 64 x 64 paper-size network
    with pytest.raises(InputError, match="init_from 'default'"):
        train(bad, tmp_path, tmp_path / "c", quiet=True)


def test_distill_config_errors(tmp_path):
    with pytest.raises(ValueError, match="teacher_size"):
        _smoke(tmp_path, distill={"teacher": "x", "teacher_size": [16, 16]})
    with pytest.raises(ValueError, match="pool_fraction"):
        _smoke(tmp_path, distill={"pool_fraction": 0})
    config, _ = _smoke(tmp_path, distill={"teacher": "missing.pth"})
    with pytest.raises(InputError, match="missing.pth: no such teacher"):
        train(config, tmp_path, tmp_path / "run", quiet=True)
    with pytest.raises(InputError, match="time_limit must be > 0"):
        train(_smoke(tmp_path)[0], tmp_path, tmp_path / "run2", quiet=True, time_limit=0)
