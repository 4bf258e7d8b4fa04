"""``tipsv2 embed``, ``tipsv2 index build|add|remove|info|merge``, ``tipsv2 search`` and ``tipsv2 demo``.

Human-readable results go to stdout, progress bars and status lines to stderr; ``--json`` prints
one JSON document on stdout (schemas in docs/index.md). Input mistakes exit with code 2 and one line.

The commands live in ``index/commands/`` (one module per command family); this module assembles
the ``index`` group and is what ``tipsv2_sdk/cli/app.py`` points at.
"""
from __future__ import annotations

import click

from .commands.build import add, build
from .commands.common import KIND_CHOICES, model_ref, parse_bytes, rank_device
from .commands.demo import demo
from .commands.embed import embed
from .commands.manage import index_info, merge, remove
from .commands.search import print_results, search


@click.group("index")
def index_group() -> None:
    """Build, update, inspect and merge image indexes."""


for _command in (build, add, remove, index_info, merge):
    index_group.add_command(_command)


__all__ = ["KIND_CHOICES", "add", "build", "demo", "embed", "index_group", "index_info", "merge", "model_ref",
           "parse_bytes", "print_results", "rank_device", "remove", "search"]
