"""Hugging Face hub ids and the local HF cache: find a TIPSv2 snapshot, download it only when allowed.

Rules (docs/getting_models.md):

* A complete snapshot already in the HF cache is used as is (``local_files_only=True``): no
  network call, online or not.
* Offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) nothing is downloaded; a missing model
  is one ``ModelUnavailableError`` line naming the hub id, the cache directory and ``tipsv2 convert``.
* Online and not cached, ``snapshot_download`` fetches the model files with the hub's own
  progress bar, after checking on the hub's ``config.json`` that the repo is a TIPSv2 model.

The cache location and the offline switch are read from the environment at every call
(``HF_HUB_CACHE``, ``HF_HOME``, ...), the way ``huggingface_hub`` reads them at import time.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ModelUnavailableError, UnknownModelError

# The files a TIPSv2 model needs; remote-code .py files and other formats are never fetched.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "on", "yes", "true"}


def is_hub_id(name: str) -> bool:
    """``org/name`` as the hub spells repo ids (one slash, no ``..``, no leading dot)."""
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name


def split_revision(name: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` (or ``"tipsv2-b14@rev"``) → ``(name, "rev")``; anything else unchanged.

    An existing local directory is never split, whatever its name.
    """
    from .registry import list_models

    base, sep, revision = name.rpartition("@")
    if sep and revision and (is_hub_id(base) or base in list_models()) and not os.path.isdir(name):
        return base, revision
    return name, None


def offline_reason() -> str | None:
    """The environment variable that turns the hub off (``"HF_HUB_OFFLINE=1"``), or ``None``."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var, "")
        if value.strip().lower() in _TRUE:
            return f"{var}={value}"
    return None


def is_offline() -> bool:
    """Whether downloads are disabled (read from the environment now, not at import)."""
    return offline_reason() is not None


def hub_cache_dir() -> Path:
    """The HF hub cache: ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``,
    else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def missing_files(snapshot: Path) -> list[str]:
    """What a snapshot still lacks to be loaded: ``config.json`` and the weights (all shards)."""
    missing = [] if (snapshot / "config.json").is_file() else ["config.json"]
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing += [s for s in shards if not (snapshot / s).is_file()]
    elif not (snapshot / "model.safetensors").is_file():
        missing.append("model.safetensors")
    return missing


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The complete cached snapshot of ``repo_id`` at ``revision`` (default: main), or ``None``.

    Never touches the network.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(),
                                      local_files_only=True, allow_patterns=ALLOW_PATTERNS))
    except (OSError, EntryNotFoundError, ValueError):
        return None
    return path if not missing_files(path) else None


def check_tipsv2_config(config: dict[str, Any], repo_id: str, revision: str | None) -> None:
    """Refuse a hub repo that is not a transformers-native TIPSv2 image-text model, naming what it is."""
    model_type = config.get("model_type")
    if model_type != "tipsv2":
        raise UnknownModelError(
            f"{repo_id} is not a TIPSv2 model: its config.json has model_type {model_type!r}, not 'tipsv2'"
            + dense_hint(model_type, repo_id)
        )
    if "vision_config" not in config:
        at = f" at revision {revision!r}" if revision else ""
        raise UnknownModelError(
            f"{repo_id}{at} holds the remote-code TIPSv2 config (no vision_config), not the transformers-native "
            "format; pass revision= of a native revision, or convert the official checkpoint with `tipsv2 convert`"
        )


def dense_hint(model_type: object, name: str) -> str:
    """For a DPT dense model given to ``tips.load``: where it loads instead (else ``""``)."""
    from .dense import DENSE_MODEL_TYPE

    if model_type != DENSE_MODEL_TYPE:
        return ""
    return (f" (it is a DPT dense-prediction model: load it with tips.load_dense({name!r}), "
            "or use `tipsv2 depth`, `tipsv2 normals` or `tipsv2 segment --dpt`)")


ConfigCheck = Callable[[dict, str, "str | None"], None]


def resolve(repo_id: str, revision: str | None = None, *, convert_hint: str | None = None,
            check: ConfigCheck = check_tipsv2_config, alternative: str | None = None) -> Path:
    """A local snapshot directory of ``repo_id``: from the cache, or downloaded if online.

    Args:
        repo_id: ``org/name`` on the hub.
        revision: branch, tag or commit (default: ``main``); passed through to ``huggingface_hub``.
        convert_hint: the registry name to suggest in the ``tipsv2 convert`` alternative.
        check: ``check(config, repo_id, revision)`` raises if the repo's ``config.json`` is not the
            kind of model the caller loads (default: a TIPSv2 image-text model).
        alternative: what the offline message offers instead of downloading (default: the
            ``tipsv2 convert`` command for ``convert_hint``).

    Raises:
        ModelUnavailableError: offline (or the hub unreachable) and no complete cached copy.
        UnknownModelError: the repo does not exist or ``check`` refuses it.
    """
    cache = hub_cache_dir()
    alternative = alternative or _convert_command(convert_hint)
    snapshot = cached_snapshot(repo_id, revision)
    if snapshot is not None:
        check(json.loads((snapshot / "config.json").read_text()), repo_id, revision)
        return snapshot
    reason = offline_reason()
    if reason is not None:
        raise ModelUnavailableError(_unavailable(repo_id, revision, cache, f"{reason} is set", alternative))
    return _download(repo_id, revision, cache, check, alternative)


def _download(repo_id: str, revision: str | None, cache: Path, check: ConfigCheck, alternative: str) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, RemoteEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    at = f" at revision {revision!r}" if revision else ""
    try:
        # One small file first: a repo that is not TIPSv2 is refused before any weights move.
        config_file = hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=cache)
        check(json.loads(Path(config_file).read_text()), repo_id, revision)
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=ALLOW_PATTERNS))
    except GatedRepoError:
        raise UnknownModelError(f"{repo_id} is gated on the hub: accept its terms on huggingface.co and log in "
                                "(`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise UnknownModelError(f"{repo_id} was not found on the Hugging Face hub (nor as a local directory "
                                "or a registered name)") from None
    except RevisionNotFoundError:
        raise UnknownModelError(f"{repo_id} has no revision {revision!r} on the hub") from None
    except RemoteEntryNotFoundError:
        raise UnknownModelError(f"{repo_id}{at} has no config.json: it is not a transformers model") from None
    except (EntryNotFoundError, OSError) as exc:
        # No network (or the hub is down) and nothing cached: the same one line as offline.
        why = f"the hub could not be reached ({_first_line(exc)})"
        raise ModelUnavailableError(_unavailable(repo_id, revision, cache, why, alternative)) from None
    missing = missing_files(path)
    if missing:
        raise UnknownModelError(f"{repo_id}{at} has no {', '.join(missing)}: it is not a loadable "
                                "transformers-native TIPSv2 model")
    return path


def _convert_command(variant: str | None) -> str:
    from .loading import cache_dir

    variant = variant or "VARIANT"
    return (f"convert the official checkpoint: tipsv2 convert --variant {variant} --vision VISION.npz "
            f"--text TEXT.npz --tokenizer tokenizer.model {cache_dir() / variant}")


def _unavailable(repo_id: str, revision: str | None, cache: Path, why: str, alternative: str) -> str:
    at = f"@{revision}" if revision else ""
    return (f"model {repo_id}{at} is not a local directory and not in the Hugging Face cache ({cache}), and {why}; "
            f"download it once with network access, or {alternative}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["ALLOW_PATTERNS", "is_hub_id", "split_revision", "offline_reason", "is_offline", "hub_cache_dir",
           "missing_files", "cached_snapshot", "check_tipsv2_config", "dense_hint", "resolve"]
