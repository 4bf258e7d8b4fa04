"""``tips.load``: the one factory (open_clip-style) for every way of naming a model."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import hub
from .errors import ModelUnavailableError, UnknownModelError
from .hf_utils import quiet_transformers
from .registry import get_spec, list_models
from .tokenizer import load_tokenizer

if TYPE_CHECKING:  # torch and the model are imported when a model loads, so resolve_source stays light
    import torch

    from .model import TipsV2

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def cache_dir() -> Path:
    """Where converted models are looked up by registry name (hub downloads go to the HF cache).

    ``$TIPSV2_HOME`` if set, else ``~/.cache/tipsv2_sdk``; a model named ``tipsv2-b14`` is found at
    ``<cache>/tipsv2-b14`` (for instance the output of ``tipsv2 convert``).
    """
    return Path(os.environ.get("TIPSV2_HOME") or Path.home() / ".cache" / "tipsv2_sdk")


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(names)}")
    return names[dtype]


def load_directory(directory: str | os.PathLike, device: str | torch.device = "cpu", dtype=None,
                   name: str | None = None) -> TipsV2:
    """Load an HF-format TIPSv2 directory: config.json + model.safetensors [+ tokenizer].

    The tokenizer is transformers' ``Tipsv2Tokenizer`` when the directory has a ``tokenizer.json``,
    else SentencePiece from ``tokenizer.model``, else none (vision-only).
    """
    import torch
    from transformers import Tipsv2Model

    from .model import SDK_CONFIG_FILE, TipsV2

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UnknownModelError(f"{directory} is not a model directory: config.json is missing")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type != "tipsv2":
        hint = hub.dense_hint(model_type, os.fspath(directory))
        raise UnknownModelError(
            f"{directory} holds a {model_type!r} config, not a transformers-native TIPSv2 model"
            + (hint or "; convert official checkpoints with `tipsv2 convert`")
        )
    if "vision_config" not in config:
        raise UnknownModelError(
            f"{directory} holds the remote-code TIPSv2 config (no vision_config), not the transformers-native "
            "format; load a native revision (revision=...) or convert the official checkpoint with `tipsv2 convert`"
        )
    with quiet_transformers():
        hf_model = Tipsv2Model.from_pretrained(directory, dtype=_parse_dtype(dtype) or torch.float32)
    hf_model.to(device)
    tokenizer = load_tokenizer(directory)
    meta_path = directory / SDK_CONFIG_FILE
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return TipsV2(hf_model, tokenizer, name=name or meta.get("name") or directory.name,
                  source=str(directory), meta=meta, weights_dir=directory)


def hub_id_of(name_or_path: str) -> str | None:
    """The hub id a name loads from: a registry name's ``hub_id``, or an ``org/name`` id itself."""
    if name_or_path in list_models():
        return get_spec(name_or_path).hub_id
    return name_or_path if hub.is_hub_id(name_or_path) else None


def _registry_name_of(repo_id: str) -> str | None:
    """``google/tipsv2-b14`` → ``tipsv2-b14`` (the registry entry with that hub id), else ``None``."""
    for name in list_models():
        if get_spec(name).hub_id == repo_id:
            return name
    return None


def resolve_source(name_or_path: str | os.PathLike, revision: str | None = None) -> tuple[str, Path | None]:
    """Where a name would load from, without loading or downloading anything.

    Returns ``(kind, path)``: ``"directory"`` (a local HF-format directory), ``"embedded"`` (inside
    the package), ``"cache"`` (converted into ``$TIPSV2_HOME``), ``"hub-cache"`` (a complete
    snapshot in the HF cache), ``"hub"`` (downloadable when online; path ``None``) or
    ``"missing"`` (a registry name with no local copy and no hub id).
    """
    path = Path(name_or_path)
    if path.is_dir():
        if revision is not None:
            raise UnknownModelError(f"revision={revision!r} applies to hub ids, not to the local directory {path}")
        return "directory", path
    name = os.fspath(name_or_path)
    if name in list_models():
        spec = get_spec(name)
        if spec.embedded and revision is None:
            return "embedded", ASSETS_DIR / spec.name
        cached = cache_dir() / spec.name
        if cached.is_dir() and revision is None:
            return "cache", cached
        if spec.hub_id is None:
            if revision is not None:
                raise UnknownModelError(f"revision={revision!r} applies to hub ids; {name!r} has none")
            return "missing", None
        repo_id = spec.hub_id
    elif hub.is_hub_id(name):
        repo_id = name
    else:
        from .dense import DENSE_MODEL_TYPE, dense_names

        if name in dense_names():
            raise UnknownModelError(f"{name!r} names a {DENSE_MODEL_TYPE!r} model, not a TIPSv2 image-text model"
                                    + hub.dense_hint(DENSE_MODEL_TYPE, name))
        raise UnknownModelError(f"unknown model {name!r}: not a directory, not a hub id (org/name) and not a "
                                f"registered name (known: {', '.join(list_models())})")
    snapshot = hub.cached_snapshot(repo_id, revision)
    return ("hub-cache", snapshot) if snapshot is not None else ("hub", None)


def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
         dtype: torch.dtype | str | None = None, *, revision: str | None = None) -> TipsV2:
    """Load a TIPS / TIPSv2 model.

    Args:
        name_or_path: one of
            * an HF-format directory (written by transformers, ``tipsv2 convert``, ``tipsv2 pretrain``
              or ``TipsV2.save_pretrained``);
            * a registry name (``tips.list_models()``): the embedded default ``tipsv2-tiny``, a
              converted copy in ``$TIPSV2_HOME/<name>``, else its hub id (``tipsv2-b14`` →
              ``google/tipsv2-b14``);
            * a hub id ``org/name`` whose config is ``model_type: tipsv2``.
        device: torch device for the weights.
        dtype: weight dtype (``torch.float32`` default, ``"bf16"``, ``"fp16"``).
        revision: hub branch, tag or commit (hub ids and registry names only).

    A complete snapshot in the HF cache is used without any network call; otherwise the model is
    downloaded only when online (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` unset). Offline with
    no copy, ``ModelUnavailableError`` names the hub id, the cache directory and ``tipsv2 convert``.
    """
    kind, path = resolve_source(name_or_path, revision=revision)
    name = os.fspath(name_or_path)
    if kind == "missing":
        raise ModelUnavailableError(
            f"model {name!r} is not available locally ({cache_dir() / name} does not exist) and has no hub id; "
            f"convert the official checkpoint with `tipsv2 convert --variant {name} ... {cache_dir() / name}`"
        )
    if kind in ("hub", "hub-cache"):
        repo_id = hub_id_of(name)
        registry_name = name if name in list_models() else _registry_name_of(repo_id)
        if path is None:
            path = hub.resolve(repo_id, revision, convert_hint=registry_name)
        else:
            hub.check_tipsv2_config(json.loads((path / "config.json").read_text()), repo_id, revision)
        model = load_directory(path, device=device, dtype=dtype, name=registry_name or repo_id)
        model.source = f"{kind}:{repo_id}@{path.name}:{path}"
        return model
    if kind == "embedded" and not (path / "config.json").is_file():
        raise UnknownModelError(f"the embedded model {name!r} is missing from this installation ({path})")
    model = load_directory(path, device=device, dtype=dtype, name=None if kind == "directory" else name)
    model.source = f"{kind}:{path}"
    return model


__all__ = ["load", "load_directory", "list_models", "cache_dir", "resolve_source", "hub_id_of"]
