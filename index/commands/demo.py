"""``tipsv2 demo``: index the bundled samples and answer example queries."""
from __future__ import annotations

from pathlib import Path

import click

from tipsv2_sdk.cli.common import device_option, echo_json, load_model, model_option, user_errors
from .common import model_ref
from .search import print_results


@click.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("tipsv2-demo"),
              show_default=True, help="Folder for the demo index and results.html.")
@click.option("-k", "--k", "k", default=5, show_default=True, type=click.IntRange(1), help="Results per query.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@model_option
@device_option
@user_errors
def demo(out, k, as_json, model_name, device):
    """Index the bundled sample images, run text, image and region queries, write results.html."""
    from ..demo import run_demo

    model = load_model(model_name, device=device)
    untrained = model.meta.get("trained") is False
    if not as_json:
        click.echo(f"demo: model {model.name}" + ("  [RANDOM WEIGHTS: not trained]" if untrained else "")
                   + f"; indexing the bundled sample images into {out / 'index'}")
    report = run_demo(model, out, k=k, model_ref=model_ref(model_name), progress=not as_json)
    if as_json:
        echo_json(report)
    else:
        print_results(report)
        click.echo(f"results page: {report['html']}")
        if untrained:
            click.echo(f"RANDOM WEIGHTS: {report['model']} is a randomly initialised placeholder, so these rankings "
                       "only show the pipeline working, not TIPSv2's quality.")



__all__ = ["demo"]
