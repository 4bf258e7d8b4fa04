"""Shared pieces of the click app: user errors, the --model option, JSON output, start-up checks.

Start-up pattern (every command): check the arguments with the torch-free helpers below
(``require_file``, ``require_dir``, ``check_model_name``, ``check_image_size``, click types) *first*,
and import torch / transformers / faiss or load a model only inside the command body after them,
so a mistake costs a fraction of a second instead of the heavy imports.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..registry import EMBEDDED_DEFAULT


class UserError(click.ClickException):
    """A mistake in the command's input: exit code 2 and one line on stderr, no traceback."""

    exit_code = 2


def model_option(func: Callable) -> Callable:
    """``--model NAME_OR_DIR`` defaulting to the embedded model."""
    return click.option(
        "--model", "-m", "model_name", default=EMBEDDED_DEFAULT, show_default=True,
        help="Registry name (see `tipsv2 info --list`), hub id (org/name, optionally org/name@revision) "
             "or an HF-format model directory.",
    )(func)


def device_option(func: Callable) -> Callable:
    return click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")(func)


def load_model(name: str, device: str = "cpu"):
    """Load a model for a command; every ``-m/--model`` goes through here.

    ``org/name@revision`` pins a hub revision. A bad name, a model missing offline or a repo that
    is not TIPSv2 becomes a ``UserError`` (exit 2, one line).
    """
    from ..errors import TipsV2Error
    from ..hub import split_revision

    check_model_name(name)  # before the import below pulls in torch and transformers
    from ..loading import load

    name, revision = split_revision(name)
    try:
        return load(name, device=device, revision=revision)
    except TipsV2Error as exc:
        raise UserError(" ".join(str(exc).split())) from None


def check_model_name(name: str) -> None:
    """Refuse a model name that cannot load, without importing torch (``UserError``, loading's wording).

    Accepted: an existing directory holding ``config.json``, a registry name, or a hub id
    (``org/name``, optionally ``@revision``); whether a hub model is reachable is left to loading.
    """
    from ..hub import is_hub_id, split_revision
    from ..registry import list_models

    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise UserError(f"{name} is not a model directory: config.json is missing")
        return
    bare, _ = split_revision(name)
    if bare in list_models() or is_hub_id(bare):
        return
    raise UserError(f"unknown model {bare!r}: not a directory, not a hub id (org/name) and not a "
                    f"registered name (known: {', '.join(list_models())})")


def require_file(path: str | os.PathLike, option: str) -> Path:
    """The path as a ``Path`` if it is an existing file, else a ``UserError`` naming ``option``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{option}: no such file: {path}")
    if path.is_dir():
        raise UserError(f"{option}: {path} is a directory, not a file")
    return path


def require_dir(path: str | os.PathLike, option: str) -> Path:
    """The path as a ``Path`` if it is an existing directory, else a ``UserError`` naming ``option``."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{option}: no such directory: {path}" if not path.exists()
                        else f"{option}: {path} is a file, not a directory")
    return path


def check_image_size(size: int | None, option: str = "--image-size", patch: int = 14) -> int | None:
    """``None`` or a positive multiple of the patch size (every TIPS model uses 14), else a ``UserError``."""
    if size is not None and (size <= 0 or size % patch):
        raise UserError(f"{option} {size}: not a positive multiple of the patch size {patch}")
    return size


def fast_options(func: Callable) -> Callable:
    """``--precision``, ``--compile`` and ``--threads`` for commands that encode (see tipsv2_sdk.fast)."""
    options = [
        click.option("--precision", type=click.Choice(["fp32", "bf16", "int8", "auto"]), default="fp32",
                     show_default=True,
                     help="fp32: exact; bf16 / int8 (CPU): faster, checked to keep cosine >= 0.99 to fp32; "
                          "auto: the fastest for the device."),
        click.option("--compile", "compile_model", is_flag=True,
                     help="torch.compile the towers (first run compiles; the cache makes later runs start faster)."),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="torch threads for the forward passes (default: torch's own setting)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def apply_encoding(model, precision: str = "fp32", compile_model: bool = False, threads: int | None = None):
    """Make ``model``'s later ``encode_*`` calls use the command's ``--precision/--compile/--threads``."""
    from ..errors import TipsV2Error

    try:
        return model.set_encoding(precision=precision, compile=compile_model, threads=threads)
    except TipsV2Error as exc:
        raise UserError(str(exc)) from None


def echo_json(data: Any) -> None:
    """Print machine-readable output on stdout (one JSON document)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def user_errors(func: Callable) -> Callable:
    """Turn the package's own input errors into ``UserError`` (exit 2, one line)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import TipsV2Error

        try:
            return func(*args, **kwargs)
        except (TipsV2Error, FileNotFoundError, NotADirectoryError) as exc:
            raise UserError(str(exc)) from None

    return wrapper


def info(message: str) -> None:
    """Human progress/status lines go to stderr so stdout stays machine-readable."""
    click.echo(message, err=True)


__all__ = ["UserError", "apply_encoding", "check_image_size", "check_model_name", "device_option", "echo_json",
           "fast_options", "info", "load_model", "model_option", "require_dir", "require_file", "sys", "user_errors"]
