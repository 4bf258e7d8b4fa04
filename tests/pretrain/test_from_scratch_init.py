"""A model trained from scratch starts where it can learn: temperature 0.07, unit-variance text tokens."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tipsv2_sdk.pretrain import build
from tipsv2_sdk.pretrain.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "pretrain" / "configs"
TINY = CONFIGS / "tiny_test.yaml"


def network(*overrides: str):
    cfg = load_config(TINY, ["output_dir=unused", *overrides])
    return build.build_network(cfg, build.model_spec(cfg.model))


def test_fresh_models_start_at_clip_temperature_unless_told_otherwise():
    from transformers import Tipsv2Config

    assert network().temperature.item() == pytest.approx(0.07)
    assert network("model.temperature_init=0.2").temperature.item() == pytest.approx(0.2)
    # null = the architecture default, the released checkpoints' learned end point (logit scale ~197)
    released = Tipsv2Config().temperature_init_value
    assert network("model.temperature_init=null").temperature.item() == pytest.approx(released)
    assert 1 / released > 190
    with pytest.raises(ConfigError, match="temperature_init"):
        network("model.temperature_init=0")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_from_scratch_config_starts_at_0_07(path):
    cfg = load_config(path, ["output_dir=unused"])
    if cfg.model.init_from is None:
        assert cfg.model.temperature_init == pytest.approx(0.07), path.name


def test_text_tokens_start_with_unit_variance_after_the_towers_scaling():
    fresh = network().text_model.embeddings.token_embedding.weight
    width = fresh.shape[1]
    # the tower multiplies token embeddings by sqrt(width): unit variance, like its sinusoidal positions
    assert (fresh * math.sqrt(width)).std().item() == pytest.approx(1.0, rel=0.1)
    generic = network("model.scaled_token_init=false").text_model.embeddings.token_embedding.weight
    assert generic.std().item() == pytest.approx(0.02, rel=0.1)


def test_init_from_keeps_the_loaded_models_temperature(tmp_path):
    net = network("model.temperature_init=0.3")
    net.save_pretrained(tmp_path / "start")
    loaded = network(f"model.init_from={tmp_path / 'start'}")
    assert loaded.temperature.item() == pytest.approx(0.3)
    assert torch.equal(loaded.text_model.embeddings.token_embedding.weight,
                       net.text_model.embeddings.token_embedding.weight)
