"""The command-line options of the engines and of container inputs, shared by ``embed`` and ``index build``.

They are checked before any heavy import or model load, like every other option.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable

import click

from tipsv2_sdk.cli.common import UserError

from ..sources.records import SourceOptions
from . import ENGINES, EngineOptions


def engine_options(func: Callable) -> Callable:
    """``--engine``, ``--ray-address``, ``--ray-actors``."""
    func = click.option("--ray-actors", type=click.IntRange(1), default=None,
                        help="Ray actor pool size, one model each (default: one per GPU, else the CPUs less one).")(func)
    func = click.option("--ray-address", default=None,
                        help="Ray cluster to use, e.g. `auto` inside `ray job submit` (default: start a local Ray).")(func)
    return click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                        help="Who embeds the chunks: this process, or a Ray Data actor pool.")(func)


def source_options(func: Callable) -> Callable:
    """``--image-column``, ``--caption-column``, ``--key-column``, ``--meta-column`` for parquet inputs."""
    func = click.option("--meta-column", "meta_columns", multiple=True,
                        help="Parquet column copied into each record's metadata (repeatable).")(func)
    func = click.option("--key-column", default=None,
                        help="Parquet column of unique sample keys (default: `key` if present, else the row number).")(func)
    func = click.option("--caption-column", default=None,
                        help="Parquet column with the caption (default: `caption` if present).")(func)
    return click.option("--image-column", default=None,
                        help="Parquet column with image bytes or paths (default: the first of image, jpg, png, ...).")(func)


def make_engine_options(engine: str, ray_address: str | None, ray_actors: int | None) -> EngineOptions:
    """Check the engine options (Ray installed?) before anything is loaded."""
    if engine != "ray" and (ray_address or ray_actors):
        raise UserError("--ray-address and --ray-actors need --engine ray")
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise UserError("--engine ray needs Ray Data: pip install 'tipsv2-sdk[ray]'")
    return EngineOptions(engine, ray_address, ray_actors)


def make_source_options(image_column: str | None, caption_column: str | None, key_column: str | None,
                        meta_columns: tuple[str, ...]) -> SourceOptions:
    return SourceOptions(image_column or None, caption_column or None, key_column or None, tuple(meta_columns))


__all__ = ["engine_options", "make_engine_options", "make_source_options", "source_options"]
