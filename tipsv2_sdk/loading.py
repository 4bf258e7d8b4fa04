"""``tips.load``: the one factory (open_clip-style) for every way of naming a model."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .errors import UnknownModelError
from .hf_utils import quiet_transformers
from .model import SDK_CONFIG_FILE, TipsV2
from .registry import ModelSpec, get_spec, list_models
from .tokenizer import TOKENIZER_FILE, TipsTokenizer

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def cache_dir() -> Path:
    """Where converted or downloaded models are looked up by registry name.

    ``$TIPSV2_HOME`` if set, else ``~/.cache/tipsv2_sdk``; a model named ``tipsv2-b14`` is found at
    ``<cache>/tipsv2-b14`` (for instance the output of ``tipsv2 convert``).
    """
    return Path(os.environ.get("TIPSV2_HOME") or Path.home() / ".cache" / "tipsv2_sdk")


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(names)}")
    return names[dtype]


def load_directory(directory: str | os.PathLike, device: str | torch.device = "cpu", dtype=None,
                   name: str | None = None) -> TipsV2:
    """Load an HF-format TIPSv2 directory (config.json + model.safetensors [+ tokenizer.model])."""
    from transformers import Tipsv2Model

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UnknownModelError(f"{directory} is not a model directory: config.json is missing")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "tipsv2" or "vision_config" not in json.loads(config_path.read_text()):
        raise UnknownModelError(
            f"{directory} holds a {model_type!r} config, not a transformers-native TIPSv2 model; "
            "convert official checkpoints with `tipsv2 convert`"
        )
    with quiet_transformers():
        hf_model = Tipsv2Model.from_pretrained(directory, dtype=_parse_dtype(dtype) or torch.float32)
    hf_model.to(device)
    tokenizer = TipsTokenizer.from_pretrained(directory) if (directory / TOKENIZER_FILE).is_file() else None
    meta_path = directory / SDK_CONFIG_FILE
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return TipsV2(hf_model, tokenizer, name=name or meta.get("name") or directory.name,
                  source=str(directory), meta=meta)


def _from_hub(spec: ModelSpec, device, dtype) -> TipsV2:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if spec.hub_id is None or offline:
        where = "no hub id is known" if spec.hub_id is None else "HF_HUB_OFFLINE is set"
        raise UnknownModelError(
            f"model {spec.name!r} is not available locally ({cache_dir() / spec.name} does not exist) and {where}; "
            f"convert the official checkpoint with `tipsv2 convert ... {cache_dir() / spec.name}`"
        )
    from huggingface_hub import snapshot_download

    return load_directory(snapshot_download(spec.hub_id), device=device, dtype=dtype, name=spec.name)


def resolve_source(name_or_path: str | os.PathLike) -> tuple[str, Path | None]:
    """Where a name would load from: ``("directory"|"embedded"|"cache"|"hub", path)``."""
    path = Path(name_or_path)
    if path.is_dir():
        return "directory", path
    spec = get_spec(os.fspath(name_or_path))
    if spec.embedded:
        return "embedded", ASSETS_DIR / spec.name
    cached = cache_dir() / spec.name
    if cached.is_dir():
        return "cache", cached
    return "hub", None


def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
         dtype: torch.dtype | str | None = None) -> TipsV2:
    """Load a TIPS / TIPSv2 model.

    Args:
        name_or_path: an HF-format directory (written by ``tipsv2 convert``, ``tipsv2 pretrain`` or
            ``TipsV2.save_pretrained``), or a registry name (``tips.list_models()``): the embedded
            default ``tipsv2-tiny``, a converted copy in the cache directory, or its hub id when online.
        device: torch device for the weights.
        dtype: weight dtype (``torch.float32`` default, ``"bf16"``, ``"fp16"``).

    Nothing is downloaded unless a registry name has no local copy and the hub is reachable.
    """
    kind, path = resolve_source(name_or_path)
    name = Path(name_or_path).name if kind == "directory" else os.fspath(name_or_path)
    if kind == "hub":
        return _from_hub(get_spec(name), device, dtype)
    if kind == "embedded" and not (path / "config.json").is_file():
        raise UnknownModelError(f"the embedded model {name!r} is missing from this installation ({path})")
    model = load_directory(path, device=device, dtype=dtype, name=None if kind == "directory" else name)
    model.source = f"{kind}:{path}"
    return model


__all__ = ["load", "load_directory", "list_models", "cache_dir", "resolve_source"]
