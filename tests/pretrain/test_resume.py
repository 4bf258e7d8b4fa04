"""Checkpoints: k steps + resume + k steps is bit-for-bit the same as 2k steps straight."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tipsv2_sdk.errors import CheckpointError
from tipsv2_sdk.pretrain.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, read_state
from tipsv2_sdk.pretrain.config import load_config
from tipsv2_sdk.pretrain.trainer import train

TINY = Path(__file__).resolve().parents[2] / "pretrain" / "configs" / "tiny_test.yaml"
K = 3
TERMS = ("loss", "clip_cls1", "clip_cls2", "dino", "ibot", "temperature", "lr", "ema_momentum", "grad_norm")


def cfg(out: Path, *extra: str):
    # batch 8: these tests are about exact resumption, not learning (tiny_test itself trains at 32)
    return load_config(TINY, [f"output_dir={out}", f"schedule.steps={2 * K}", "data.batch_size=8", *extra])


def losses(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: r[k] for k in ("step", *TERMS)} for r in rows]


@pytest.mark.parametrize("extra", [(), ("optim.name=adafactor", "objective.teacher=full_ema", "optim.accum_steps=2")],
                         ids=["adamw-head_ema", "adafactor-full_ema-accum"])
def test_resume_is_bit_exact(tmp_path, extra):
    straight = train(cfg(tmp_path / "a", "checkpoint.every_steps=100", *extra))  # saves only the final step
    train(cfg(tmp_path / "b", f"checkpoint.every_steps={K}", "checkpoint.keep=5", *extra))
    ckpts = list_checkpoints(tmp_path / "b" / "checkpoints")
    assert [p.name for p in ckpts] == [f"step_{K:08d}", f"step_{2 * K:08d}"]
    # Throw away everything after step K, as if the job had died there, and resume.
    shutil.rmtree(ckpts[-1])
    shutil.rmtree(tmp_path / "b" / "model")
    resumed = train(cfg(tmp_path / "b", f"checkpoint.every_steps={K}", "checkpoint.keep=5", *extra), resume=True)
    assert resumed.steps == 2 * K

    a = load_file(str(latest_checkpoint(tmp_path / "a" / "checkpoints") / "objective.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "b" / "checkpoints") / "objective.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("teacher_heads.") for k in a)
    for key in a:  # student, heads, EMA teacher, centres: exactly equal
        assert torch.equal(a[key], b[key]), key
    assert losses(straight.metrics_file) == losses(resumed.metrics_file)
    ma = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    mb = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_checkpoint_contents_and_pruning(tmp_path):
    train(cfg(tmp_path, "checkpoint.every_steps=1", "checkpoint.keep=2"))
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == [f"step_{2 * K - 1:08d}", f"step_{2 * K:08d}"]
    names = sorted(p.name for p in ckpts[-1].iterdir())
    assert names == ["objective.safetensors", "optimizer.json", "optimizer.safetensors", "rng.safetensors", "state.json"]
    state = read_state(ckpts[-1])
    assert state["step"] == 2 * K and state["data_position"] == 2 * K * 8
    assert state["config"]["schedule"]["steps"] == 2 * K
    opt = load_file(str(ckpts[-1] / "optimizer.safetensors"))
    assert any(k.endswith("/exp_avg") for k in opt)


def test_mismatched_checkpoint_is_refused(tmp_path):
    train(cfg(tmp_path / "a", "checkpoint.every_steps=100", "schedule.steps=1"))
    other = load_config(TINY, [f"output_dir={tmp_path / 'b'}", "model.width=48"])
    from tipsv2_sdk.pretrain import build
    from tipsv2_sdk.pretrain.optim import build_optimizer

    spec = build.model_spec(other.model)
    objective = build.build_objective(other, build.build_network(other, spec), 2)
    optimizer = build_optimizer(objective.parameter_groups(0.04), other.optim)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"), objective, optimizer)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        read_state(tmp_path)
