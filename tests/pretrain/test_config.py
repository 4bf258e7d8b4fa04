"""Training config: YAML loading, typed dotted overrides, clear errors naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from tipsv2_sdk.pretrain.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    config_reference,
    load_config,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "pretrain" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.schedule.steps > 0


def test_defaults_are_the_paper_setting():
    cfg = load_config(None)
    assert (cfg.objective.clip_weight, cfg.objective.dino_weight, cfg.objective.ibot_weight) == (0.5, 1.0, 2.0)
    assert cfg.objective.teacher == "head_ema" and cfg.objective.ibot_all_tokens
    assert (cfg.data.global_crop_size, cfg.data.local_crop_size, cfg.data.num_local_crops) == (224, 98, 6)


def test_overrides_are_typed():
    cfg = apply_overrides(TrainConfig(), [
        "optim.lr=3e-4", "schedule.steps=7", "data.global_scale=[0.3, 0.9]", "optim.grad_clip=null",
        "optim.bf16=true", "objective.teacher=full_ema", "model.tokenizer=some/path.model", "optim.name=adafactor",
        "objective.caption_probs=0.2,0.8",
    ])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.schedule.steps == 7
    assert cfg.data.global_scale == (0.3, 0.9)
    assert cfg.optim.grad_clip is None and cfg.optim.bf16 is True
    assert cfg.objective.teacher == "full_ema" and cfg.optim.name == "adafactor"
    assert cfg.model.tokenizer == "some/path.model"
    assert cfg.objective.caption_probs == (0.2, 0.8)


def test_overrides_do_not_mutate_the_input():
    cfg = TrainConfig()
    apply_overrides(cfg, ["optim.lr=0.5"])
    assert cfg.optim.lr == OptimConfig().lr


@pytest.mark.parametrize("override, needle", [
    ("optim.lrr=1", "'optim.lrr'"),
    ("nosuch.key=1", "'nosuch'"),
    ("optim.lr=abc", "'optim.lr' expects a float"),
    ("schedule.steps=1.5", "'schedule.steps' expects an int"),
    ("optim.bf16=maybe", "'optim.bf16'"),
    ("optim.name=sgd", "'optim.name'"),
    ("optim=3", "'optim' is a section"),
    ("optim.lr.x=1", "'optim.lr' is not a section"),
    ("data.global_scale=[1, 2, 3]", "'data.global_scale' expects 2 values"),
    ("objective.teacher=nobody", "teacher"),
    ("no_equals_sign", "key=value"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=None) as info:
        apply_overrides(TrainConfig(), [override])
    assert needle in str(info.value)


def test_yaml_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  batch_size: 8\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"'data\.bogus'"):
        load_config(path)
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"'optim\.lr' expects a float"):
        load_config(path)
    path.write_text("data: 3\n")
    with pytest.raises(ConfigError, match=r"'data' is a section"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_save_and_load_round_trip(tmp_path):
    cfg = apply_overrides(TrainConfig(), ["optim.lr=0.01", "data.local_scale=[0.1, 0.2]", "schedule.max_minutes=3"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_every_trainer_field_is_documented():
    rows = config_reference()
    keys = [key for key, _, _ in rows]
    assert "optim.lr" in keys and "objective.ibot_all_tokens" in keys
    for cls in (ModelConfig, DataConfig, OptimConfig):
        for key, _, help_text in config_reference(cls):
            assert help_text, f"{cls.__name__}.{key} has no help text"
