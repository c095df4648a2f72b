"""Tests of the typed model card (drdm.card.ModelCard): JSON round trips, the checkpoints
written before it (packaged models, plain imports of the authors' weights) and its writers."""

from __future__ import annotations

import json

import pytest

from drdm.card import ModelCard
from drdm.diffusion import ForwardDiffusionConfig
from drdm.diffusion.official_process import OfficialProcessConfig
from drdm.pretrained import PRETRAINED_NAMES, is_available, pretrained_dir
from drdm.sampling import SamplerConfig, official_sampler_config
from helpers import tiny_model


def test_json_round_trip_is_exact():
    card = ModelCard(
        preset="drdm",
        forward=ForwardDiffusionConfig(ndim=3, num_steps=20),
        image_size=[16, 16, 8],
        sampler=SamplerConfig(),
        training={"data": "phantoms", "steps": 3},
        source={"imported_from": "elsewhere"},
    )
    assert card.image_size == (16, 16, 8)
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert again.to_dict() == card.to_dict()
    json.dumps(card.to_dict(), allow_nan=False)


def test_optional_fields_are_left_out_of_the_dict():
    card = ModelCard("drdm", ForwardDiffusionConfig(ndim=2, num_steps=10), (32, 32))
    assert list(card.to_dict()) == ["preset", "forward", "image_size", "training"]
    assert ModelCard.from_dict(card.to_dict()) == card


@pytest.mark.parametrize("name", [n for n in PRETRAINED_NAMES if is_available(n)])
def test_the_packaged_checkpoints_cards_round_trip(name):
    extra = json.loads((pretrained_dir(name) / "config.json").read_text())["extra"]
    card = ModelCard.from_dict(extra)
    assert card.to_dict() == extra


def test_a_plain_import_of_the_authors_weights_reads_as_the_official_card():
    card = ModelCard.from_dict({"source": {"imported_from": "official"}}, ndim=2, num_steps=80)
    assert card.preset == "official" and card.image_size == (256, 256)
    assert card.forward == OfficialProcessConfig(ndim=2, num_steps=80)
    assert card.source == {"imported_from": "official"}


def test_the_official_card():
    card = ModelCard.official(2, 80, [128, 128])
    assert card.preset == "official" and card.image_size == (128, 128)
    assert card.sampler == official_sampler_config()
    assert ModelCard.from_dict(card.to_dict()) == card


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        ({"training": {}}, ValueError, "no forward-process config"),
        ({"preset": "other", "forward": {}, "image_size": [8, 8]}, ValueError, "unknown"),
        ({"preset": "drdm", "forward": {"bogus": 1}, "image_size": [8, 8]}, ValueError, "bogus"),
        ([1, 2], TypeError, "JSON object"),
    ],
)
def test_bad_cards_are_refused(extra, error, match):
    with pytest.raises(error, match=match):
        ModelCard.from_dict(extra)


def test_a_process_config_of_the_other_preset_is_refused():
    with pytest.raises(TypeError, match="OfficialProcessConfig"):
        ModelCard("official", ForwardDiffusionConfig(ndim=2, num_steps=10), (32, 32))


def test_the_model_saves_and_reloads_its_card(tmp_path):
    from drdm import DRDM

    model = tiny_model()
    model.source = {"imported_from": "test"}
    model.save_pretrained(tmp_path / "m")
    loaded = DRDM.from_pretrained(tmp_path / "m")
    assert loaded.card == model.card
    assert loaded.card.training == {"note": "unit test"}
    extra = json.loads((tmp_path / "m" / "config.json").read_text())["extra"]
    assert extra == model.card.to_dict() == model.extra_config()


@pytest.mark.parametrize("official", [False, True])
def test_the_preset_comes_from_the_process_through_one_map(official):
    from drdm.card import PRESETS

    model = tiny_model(official=official)
    assert model.preset == model.process.preset == ("official" if official else "drdm")
    assert model.preset in PRESETS
    rebuilt = model.card.process()
    assert type(rebuilt) is type(model.process) and rebuilt.config == model.process.config
