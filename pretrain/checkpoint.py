"""Training checkpoints as safetensors + JSON (never pickle), written atomically.

One checkpoint is a directory ``step_00001234/`` holding:

* ``objective.safetensors``: the objective's full state (student model, heads, EMA teacher, centres);
* ``optimizer.safetensors``: every optimizer state tensor, flattened to ``state/<param name>/<key>``;
* ``optimizer.json``: the parameter groups (hyper-parameters, parameter names) and scalar states;
* ``rng.safetensors``: torch CPU (and CUDA) generator states;
* ``state.json``: the step to continue from, the data position, elapsed time, counters, numpy and
  Python RNG states and the config.

Parameters are named by their fully-qualified names (``torch.distributed.checkpoint.state_dict``),
so the same files load under DDP, FSDP (gathered to full tensors) or a single process.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tipsv2_sdk.errors import CheckpointError
from tipsv2_sdk.io import atomic_directory

STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass
class TrainState:
    """What the loop needs besides tensors to continue exactly where it stopped."""

    step: int  # next optimizer step to run
    data_position: int  # examples consumed so far (a function of step; stored for inspection)
    elapsed_s: float = 0.0
    bad_images: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _state_dicts(module: torch.nn.Module, optimizer: torch.optim.Optimizer):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _flatten_optimizer(osd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, state in osd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{name}/{key}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, rest = key.split("/", 1)
        name, sub = rest.rsplit("/", 1)
        state.setdefault(name, {})[sub] = value
    for name, values in meta["scalars"].items():
        state.setdefault(name, {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def _python_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}


def save_checkpoint(directory: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState, config: dict, keep: int = 2, write: bool = True) -> Path:
    """Write ``<directory>/step_<state.step>`` atomically and prune all but the ``keep`` newest.

    Every rank must call this (FSDP gathers full tensors collectively); only ``write=True`` ranks
    touch the disk.
    """
    msd, osd = _state_dicts(module, optimizer)
    directory = Path(directory)
    target = directory / f"step_{state.step:08d}"
    if not write:
        return target
    opt_tensors, opt_meta = _flatten_optimizer(osd)
    with atomic_directory(target) as tmp:
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in msd.items()}, str(tmp / "objective.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta, indent=1, sort_keys=True) + "\n")
        save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
        body = {"step": state.step, "data_position": state.data_position, "elapsed_s": state.elapsed_s,
                "bad_images": state.bad_images, "extra": state.extra, "rng": _python_states(), "config": config}
        (tmp / "state.json").write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def read_state(path: str | Path) -> dict:
    """The ``state.json`` of a checkpoint directory."""
    path = Path(path)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{path} is not a training checkpoint (state.json is missing)")
    return json.loads((path / "state.json").read_text())


def load_checkpoint(path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    restore_rng: bool = True) -> TrainState:
    """Load a checkpoint into ``module`` / ``optimizer`` (in place) and return its ``TrainState``."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    path = Path(path)
    body = read_state(path)
    msd = load_file(str(path / "objective.safetensors"))
    osd = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")),
                               json.loads((path / "optimizer.json").read_text()))
    try:
        set_model_state_dict(module, msd, options=StateDictOptions(full_state_dict=True, strict=True))
        # Parameters that never received a gradient (e.g. an unused mask token) have no optimizer state.
        set_optimizer_state_dict(module, optimizer, osd, options=StateDictOptions(full_state_dict=True, strict=False))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} does not match this run's model/optimizer: {exc}") from None
    if restore_rng:
        rng = load_file(str(path / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        kind, keys, pos, has_gauss, cached = body["rng"]["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        version, internal, gauss = body["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
    return TrainState(step=int(body["step"]), data_position=int(body["data_position"]),
                      elapsed_s=float(body["elapsed_s"]), bad_images=int(body["bad_images"]),
                      extra=dict(body.get("extra", {})))


__all__ = ["TrainState", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "read_state"]
