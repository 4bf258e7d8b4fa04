"""Shared pieces of the click app: user errors, the --model option, JSON output."""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
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
    from ..loading import load

    name, revision = split_revision(name)
    try:
        return load(name, device=device, revision=revision)
    except TipsV2Error as exc:
        raise UserError(" ".join(str(exc).split())) from None


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


__all__ = ["UserError", "model_option", "device_option", "load_model", "echo_json", "user_errors", "info", "sys"]
