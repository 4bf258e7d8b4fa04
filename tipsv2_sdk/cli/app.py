"""The root ``tipsv2`` group. Subcommands live next to the code they drive and load lazily."""
from __future__ import annotations

import importlib

import click

# command name -> "module:attribute"; importing torch/faiss happens only for the command run.
COMMANDS = {
    "info": "tipsv2_sdk.cli.core:info",
    "convert": "tipsv2_sdk.cli.core:convert",
    "segment": "tipsv2_sdk.cli.visual:segment",
    "pca": "tipsv2_sdk.cli.visual:pca",
    "depth": "tipsv2_sdk.cli.dense:depth",
    "normals": "tipsv2_sdk.cli.dense:normals",
    "embed": "tipsv2_sdk.index.cli:embed",
    "index": "tipsv2_sdk.index.cli:index_group",
    "search": "tipsv2_sdk.index.cli:search",
    "demo": "tipsv2_sdk.index.cli:demo",
    "pretrain": "tipsv2_sdk.pretrain.cli:pretrain",
    "eval": "tipsv2_sdk.cli.eval:eval_group",
    "serve": "tipsv2_sdk.index.server.command:serve",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tipsv2-sdk", prog_name="tipsv2")
def cli() -> None:
    """TIPSv2 image-text encoders: embed, index, search, segment, convert and train."""


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
