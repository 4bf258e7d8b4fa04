"""``tips.load`` given a DPT dense model (directory, hub id, short name) points to ``tips.load_dense``.

The DPT config is written by transformers' own ``Tipsv2DptConfig``; the hub cache is a fake one
under tmp, offline (the online case monkeypatches the download functions).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import tipsv2_sdk as tips
from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.errors import ModelUnavailableError, UnknownModelError
from tipsv2_sdk.testing import fake_hub_cache

REPO = "google/tipsv2-b14-dpt"


@pytest.fixture(scope="module")
def dpt_dir(tmp_path_factory) -> Path:
    """A ``tipsv2_dpt`` directory as transformers writes its config (the weights file is not read)."""
    from transformers import Tipsv2DptConfig, Tipsv2VisionConfig

    out = tmp_path_factory.mktemp("dpt") / "tipsv2-b14-dpt"
    backbone = Tipsv2VisionConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=56,
                                  patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    Tipsv2DptConfig(backbone_config=backbone).save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "tipsv2_dpt"
    (out / "model.safetensors").write_bytes(b"")
    return out


def _points_to_load_dense(message: str, name: str) -> None:
    assert "\n" not in message
    assert "'tipsv2_dpt'" in message
    assert f"tips.load_dense({name!r})" in message
    assert "tipsv2 depth" in message and "segment --dpt" in message


def test_a_dpt_directory(dpt_dir, hub_env):
    with pytest.raises(UnknownModelError) as info:
        tips.load(dpt_dir)
    _points_to_load_dense(str(info.value), str(dpt_dir))
    assert "tipsv2 convert" not in str(info.value)  # converting would not help: it is the wrong loader


def test_a_cached_dpt_hub_id(dpt_dir, hub_env):
    fake_hub_cache(hub_env, REPO, dpt_dir)
    with pytest.raises(UnknownModelError) as info:
        tips.load(REPO)
    assert not isinstance(info.value, ModelUnavailableError)
    _points_to_load_dense(str(info.value), REPO)
    assert str(info.value).startswith(f"{REPO} is not a TIPSv2 model")


def test_a_dpt_short_name(hub_env):
    with pytest.raises(UnknownModelError) as info:
        tips.load("tipsv2-b14-dpt")
    _points_to_load_dense(str(info.value), "tipsv2-b14-dpt")
    assert "tipsv2-b14-dpt" in tips.dense_names()


def test_the_cli_says_it_in_one_line(dpt_dir, hub_env):
    fake_hub_cache(hub_env, REPO, dpt_dir)
    for ref in (REPO, str(dpt_dir)):
        result = CliRunner().invoke(cli, ["info", ref])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output
        assert "tips.load_dense(" in lines[0] and "tipsv2 depth" in lines[0]


def test_online_the_dpt_repo_is_refused_before_its_weights_move(dpt_dir, hub_env, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append(filename)
        return str(dpt_dir / filename)

    real_snapshot = huggingface_hub.snapshot_download

    def snapshot_download(*args, **kwargs):
        if kwargs.get("local_files_only"):  # the cache look-up (empty cache: nothing found)
            return real_snapshot(*args, **kwargs)
        pytest.fail("no weights download expected")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(UnknownModelError) as info:
        tips.load("google/tipsv2-l14-dpt")
    _points_to_load_dense(str(info.value), "google/tipsv2-l14-dpt")
    assert calls == ["config.json"]


def test_encoders_get_no_dense_hint(hub_env, tmp_path):
    other = tmp_path / "clip"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(UnknownModelError) as info:
        tips.load(other)
    assert "load_dense" not in str(info.value) and "tipsv2 convert" in str(info.value)
