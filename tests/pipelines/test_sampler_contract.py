"""The contract every field sampler of the package keeps (the
:class:`drdm.pipelines.FieldSampler` protocol): one test class that each sampler inherits, as
every diffusers scheduler inherits ``SchedulerCommonTest`` and every Kornia operator a
``BaseTester``. Parametrised over device (CPU; CUDA when present), dtype (float32, float64)
and dimensionality, on tiny grids.

The five samplers: :class:`~drdm.pipelines.DRDMSampler` (a tiny network),
:class:`~drdm.pipelines.core.ForwardProcessSampler`, :class:`~drdm.baselines.ElasticSampler`,
:class:`~drdm.baselines.MRBSSampler` and BigAug's spatial part
(:meth:`drdm.baselines.BigAug.field_sampler`, every transform applied).

What a sampler promises: ``sample_ddf((B, C, *spatial), generator)`` gives ``(B, ndim,
*spatial)`` finite displacements on the images' device, in their floating dtype (float32 for
integer images), for any number of channels; all randomness from the generator (same seed:
same field bit for bit, another seed: another field, torch's global generator untouched);
every image its own field, which does not depend on the other images of the batch; images of
the wrong rank are refused.
"""

from __future__ import annotations

import pytest
import torch

from drdm.baselines import BigAug, ElasticSampler, MRBSSampler
from drdm.diffusion import ForwardDiffusion, ForwardDiffusionConfig
from drdm.pipelines import DRDMSampler, FieldSampler
from drdm.pipelines.core import ForwardProcessSampler
from helpers import tiny_model

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
DTYPES = [torch.float32, torch.float64]
#: tiny image grids (deliberately not square, not powers of two)
SIZES = {2: (14, 11), 3: (9, 8, 7)}
BATCH = 2


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rng_states() -> list[torch.Tensor]:
    states = [torch.random.get_rng_state()]
    if torch.cuda.is_available():
        states += torch.cuda.get_rng_state_all()
    return states


def images_for(
    ndim: int,
    seed: int = 7,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels: int = 1,
) -> torch.Tensor:
    """A batch of smooth-ish random images in [0, 1]."""
    x = torch.rand(BATCH, channels, *SIZES[ndim], generator=gen(seed), dtype=torch.float64)
    return x.to(device=device, dtype=dtype)


class FieldSamplerContract:
    """The shared tests; a subclass provides :meth:`make`. ``content_free``: the sampler's
    fields do not depend on what the images hold (all but DRDM's)."""

    content_free = True

    def make(self, ndim: int) -> FieldSampler:
        raise NotImplementedError

    # ------------------------------------------------------------------ smoke
    @pytest.mark.parametrize("ndim", [2, 3])
    def test_protocol(self, ndim):
        sampler = self.make(ndim)
        assert isinstance(sampler, FieldSampler)
        assert sampler.ndim == ndim
        assert isinstance(repr(sampler), str)

    # ------------------------------------------------------------------ shapes, dtype, device
    @pytest.mark.parametrize("ndim", [2, 3])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("device", DEVICES)
    def test_shape_dtype_device_and_finite(self, ndim, dtype, device):
        images = images_for(ndim, device=device, dtype=dtype)
        ddf = self.make(ndim).sample_ddf(images, gen(0))
        assert ddf.shape == (BATCH, ndim, *SIZES[ndim])
        assert ddf.dtype == dtype and ddf.device.type == device
        assert bool(torch.isfinite(ddf).all())
        assert bool(ddf.abs().amax() > 0)

    def test_integer_images_give_float32_fields(self):
        images = (images_for(2) * 200).to(torch.int16)
        ddf = self.make(2).sample_ddf(images, gen(0))
        assert ddf.dtype == torch.float32 and ddf.shape == (BATCH, 2, *SIZES[2])

    def test_any_number_of_channels(self):
        ddf = self.make(2).sample_ddf(images_for(2, channels=3), gen(0))
        assert ddf.shape == (BATCH, 2, *SIZES[2])

    # ------------------------------------------------------------------ randomness
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("device", DEVICES)
    def test_same_seed_same_field_other_seed_other_field(self, dtype, device):
        sampler = self.make(2)
        images = images_for(2, device=device, dtype=dtype)
        a, b, c = (sampler.sample_ddf(images, gen(seed)) for seed in (3, 3, 4))
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)

    @pytest.mark.parametrize("device", DEVICES)
    def test_the_global_generator_is_untouched(self, device):
        sampler = self.make(2)
        images = images_for(2, device=device)
        before = rng_states()
        sampler.sample_ddf(images, gen(0))
        after = rng_states()
        assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))

    # ------------------------------------------------------------------ batch independence
    def test_every_image_gets_its_own_field(self):
        same = images_for(2)[:1].expand(BATCH, -1, -1, -1).contiguous()
        ddf = self.make(2).sample_ddf(same, gen(0))
        assert not torch.allclose(ddf[0], ddf[1])

    def test_a_field_does_not_depend_on_the_other_images_of_the_batch(self):
        sampler = self.make(2)
        images = images_for(2)
        other = images.clone()
        other[1] = 1.0 - other[1]
        a, b = sampler.sample_ddf(images, gen(5)), sampler.sample_ddf(other, gen(5))
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)

    def test_content_dependence(self):
        sampler = self.make(2)
        a = sampler.sample_ddf(images_for(2, seed=1), gen(5))
        b = sampler.sample_ddf(images_for(2, seed=2), gen(5))
        assert torch.equal(a, b) == self.content_free

    # ------------------------------------------------------------------ exceptions
    def test_images_of_the_wrong_rank_are_refused(self):
        with pytest.raises(ValueError):
            self.make(2).sample_ddf(images_for(3), gen(0))
        with pytest.raises(ValueError):
            self.make(3).sample_ddf(images_for(2), gen(0))


class TestDRDMSampler(FieldSamplerContract):
    content_free = False

    def make(self, ndim: int) -> DRDMSampler:
        model = tiny_model(ndim, size=16)
        model.engine = "torch"
        return DRDMSampler(model, level=3)


class TestForwardProcessSampler(FieldSamplerContract):
    def make(self, ndim: int) -> ForwardProcessSampler:
        config = ForwardDiffusionConfig(ndim=ndim, num_steps=12, grid_size=8)
        return ForwardProcessSampler(ForwardDiffusion(config), t=6)


class TestElasticSampler(FieldSamplerContract):
    def make(self, ndim: int) -> ElasticSampler:
        return ElasticSampler(ndim)


class TestMRBSSampler(FieldSamplerContract):
    def make(self, ndim: int) -> MRBSSampler:
        return MRBSSampler(ndim)


class TestBigAugFieldSampler(FieldSamplerContract):
    def make(self, ndim: int) -> FieldSampler:
        return BigAug(ndim, probability=1.0).field_sampler()
