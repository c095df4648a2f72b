"""The contract every forward process of the package keeps (the
:class:`drdm.diffusion.forward.ForwardProcess` protocol): one test class that each process
inherits, as every diffusers scheduler inherits ``SchedulerCommonTest`` and every Kornia
operator a ``BaseTester``. Parametrised over device (CPU; CUDA when present), dtype (float32,
float64) and dimensionality, on tiny grids.

What a process promises: fields ``(B, ndim, *size)`` on the requested device and dtype, finite;
all randomness from the ``generator`` (same seed: same fields bit for bit, another seed: other
fields, torch's global generator untouched); every sample of a batch its own field; a CPU
generator gives the same numbers on any device; ``sample`` deforms the images by the
cumulative field it returns, whatever the images hold.
"""

from __future__ import annotations

import pytest
import torch

from drdm.card import PRESETS
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.diffusion.forward import ForwardFields, ForwardProcess
from drdm.diffusion.official_process import OfficialForwardProcess, OfficialProcessConfig
from drdm.spatial import warp

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
DTYPES = [torch.float32, torch.float64]
#: tiny image grids (deliberately not square, not powers of two)
SIZES = {2: (12, 10), 3: (8, 7, 6)}
NUM_STEPS = 12
BATCH = 2


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rng_states() -> list[torch.Tensor]:
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available():
        states += torch.cuda.get_rng_state_all()
    return states


class ForwardProcessContract:
    """The shared tests; a subclass provides :meth:`make`."""

    def make(self, ndim: int) -> ForwardProcess:
        raise NotImplementedError

    def fields(
        self,
        process: ForwardProcess,
        seed: int,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        t: int | torch.Tensor = NUM_STEPS // 2,
    ) -> ForwardFields:
        size = SIZES[process.config.ndim]
        return process.sample_fields(size, t, gen(seed), batch=BATCH, device=device, dtype=dtype)

    # ------------------------------------------------------------------ smoke
    @pytest.mark.parametrize("ndim", [2, 3])
    def test_protocol(self, ndim):
        process = self.make(ndim)
        assert process.preset in PRESETS
        assert process.config.ndim == ndim and process.config.num_steps == NUM_STEPS
        assert process.config.image_mode in ("linear", "cubic")
        t = torch.arange(1, NUM_STEPS + 1)
        units = process.step_units(t)
        assert units.shape == t.shape and bool((units >= 0).all())

    # ------------------------------------------------------------------ shapes, dtype, device
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("device", DEVICES)
    def test_shape_dtype_device_and_finite(self, ndim, dtype, device):
        out = self.fields(self.make(ndim), 0, device, dtype)
        for field in out:
            assert field.shape == (BATCH, ndim, *SIZES[ndim])
            assert field.dtype == dtype and field.device.type == device
            assert bool(torch.isfinite(field).all())
        assert bool(out.cumulative.abs().amax() > 0)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("device", DEVICES)
    def test_sample_deforms_the_images_by_its_cumulative_field(self, dtype, device):
        process = self.make(2)
        images = torch.rand(BATCH, 1, *SIZES[2], generator=gen(9), dtype=dtype).to(device)
        out = process.sample(images, NUM_STEPS // 2, gen(1))
        assert out.images.shape == images.shape and out.images.dtype == dtype
        assert out.images.device.type == device
        expected = warp(images, out.cumulative, mode=process.config.image_mode, padding="zeros")
        torch.testing.assert_close(out.images, expected)

    # ------------------------------------------------------------------ randomness
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("device", DEVICES)
    def test_same_seed_same_fields_other_seed_other_fields(self, dtype, device):
        process = self.make(2)
        a, b, c = (self.fields(process, seed, device, dtype) for seed in (3, 3, 4))
        for x, y, z in zip(a, b, c, strict=True):
            assert torch.equal(x, y)
            assert not torch.allclose(x, z)
        if device != "cpu":  # a CPU generator gives the same numbers on any device
            for x, y in zip(self.fields(process, 3, "cpu", dtype), a, strict=True):
                torch.testing.assert_close(y.cpu(), x, atol=1e-5, rtol=1e-4)

    @pytest.mark.parametrize("device", DEVICES)
    def test_the_global_generator_is_untouched(self, device):
        process = self.make(2)
        images = torch.rand(BATCH, 1, *SIZES[2], generator=gen(9)).to(device)
        before = rng_states()
        self.fields(process, 0, device)
        process.sample(images, NUM_STEPS // 2, gen(0), perturb=True)
        after = rng_states()
        assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))

    def test_every_sample_of_a_batch_gets_its_own_field(self):
        out = self.fields(self.make(2), 0)
        assert not torch.allclose(out.cumulative[0], out.cumulative[1])

    def test_per_sample_timesteps(self):
        process = self.make(2)
        t = torch.tensor([2, NUM_STEPS])
        out = self.fields(process, 0, t=t)
        assert out.cumulative.shape == (BATCH, 2, *SIZES[2])
        # a later timestep composes more steps: a larger cumulative field
        small, large = (out.cumulative[i].abs().mean() for i in range(BATCH))
        assert large > small

    def test_the_fields_do_not_depend_on_the_image_content(self):
        process = self.make(2)
        dark = torch.zeros(BATCH, 1, *SIZES[2])
        bright = torch.rand(BATCH, 1, *SIZES[2], generator=gen(5))
        a = process.sample(dark, NUM_STEPS // 2, gen(2))
        b = process.sample(bright, NUM_STEPS // 2, gen(2))
        assert torch.equal(a.cumulative, b.cumulative) and torch.equal(a.step, b.step)

    # ------------------------------------------------------------------ exceptions
    def test_a_wrong_grid_or_image_rank_is_refused(self):
        process = self.make(2)
        with pytest.raises(ValueError):
            process.sample_fields(SIZES[3], 1, gen(0), batch=1)
        with pytest.raises(ValueError):
            process.sample(torch.zeros(1, 1, *SIZES[3]), 1, gen(0))


class TestForwardDiffusion(ForwardProcessContract):
    def make(self, ndim: int) -> ForwardDiffusion:
        return ForwardDiffusion(ForwardDiffusionConfig(ndim=ndim, num_steps=NUM_STEPS, grid_size=8))


class TestOfficialForwardProcess(ForwardProcessContract):
    def make(self, ndim: int) -> OfficialForwardProcess:
        config = OfficialProcessConfig(
            ndim=ndim, num_steps=NUM_STEPS, grid_size=8, resolutions=(8, 4, 2)
        )
        return OfficialForwardProcess(config)
