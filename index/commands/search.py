"""``tipsv2 search``: text, image and image-region queries against an index directory."""
from __future__ import annotations

import os
from pathlib import Path

import click

from tipsv2_sdk.cli.common import UserError, apply_encoding, device_option, echo_json, fast_options, info, load_model, user_errors
from .common import warn_untrained


@click.command()
@click.argument("index_path", type=click.Path(path_type=Path))
@click.argument("queries", nargs=-1)
@click.option("--image", type=click.Path(dir_okay=False), default=None, help="Query image.")
@click.option("--box", default=None, help="Region of the query image: x0,y0,x1,y1 in its pixels.")
@click.option("--regions", is_flag=True, help="Return regions (image + patch) instead of images.")
@click.option("--maxsim", is_flag=True, help="Image queries: late interaction over patches (ColBERT-style MaxSim).")
@click.option("-k", "--k", "k", default=10, show_default=True, type=click.IntRange(1), help="Results per query.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML page of the results.")
@click.option("--heatmaps", is_flag=True, help="Include patch heatmaps in the JSON output.")
@click.option("--nprobe", type=click.IntRange(1), default=None, help="IVF lists to visit (default: the index's own).")
@click.option("--model", "-m", "model_name", default=None, help="Default: the model the index was built with.")
@fast_options
@device_option
@user_errors
def search(index_path, queries, image, box, regions, maxsim, k, as_json, html_path, heatmaps, nprobe, model_name,
           device, precision="fp32", compile_model=False, threads=None):
    """Search INDEX with text QUERIES ("a red car") or an --image (optionally a --box on it)."""
    from ..collection import locate
    from ..search import Query, Searcher, parse_box, resolve_model_ref

    if box is not None and image is None:
        raise UserError("--box needs --image: it is a region of the query image")
    if not queries and image is None:
        raise UserError("give a text query or --image")
    if any(not q.strip() for q in queries):
        raise UserError("empty text query: give some words to search for (quote them: \"a red car\")")
    if image is not None and not os.path.isfile(image):
        raise UserError(f"--image: no such file: {image}")
    the_box = parse_box(box) if box is not None else None
    collection = locate(index_path)
    model = apply_encoding(load_model(resolve_model_ref(collection, model_name), device=device), precision,
                           compile_model, threads)
    searcher = Searcher(collection, model, nprobe=nprobe)
    for warning in searcher.warnings:  # e.g. an interrupted `index add`: those images are not searched
        info(f"warning: {warning}")
    asked = [Query(text=q, regions=regions) for q in queries]
    if image is not None:
        asked.append(Query(image=os.path.abspath(image), box=the_box, regions=regions, maxsim=maxsim))
    entries = [searcher.run(q, k, heatmaps=heatmaps or html_path is not None) for q in asked]
    report = searcher.report(entries, k)
    if html_path is not None:
        from ..html import write_html

        write_html(html_path, report)
        info(f"wrote {html_path}")
    if not heatmaps:
        for entry in report["queries"]:
            for hit in entry["results"]:
                hit.pop("heatmap", None)
    if as_json:
        echo_json(report)
    else:
        warn_untrained(model)
        print_results(report)


def print_results(report: dict) -> None:
    """Human-readable results of a search report."""
    for entry in report["queries"]:
        label = f'"{entry["text"]}"' if entry["text"] is not None else entry["image"]
        if entry.get("box"):
            label += " [" + ",".join(f"{v:g}" for v in entry["box"]) + "]"
        what = {"text": "text", "image": "image", "box": "image region"}[entry["type"]]
        click.echo(f"{what} {label} → {entry['mode']} ({entry['method']})")
        for hit in entry["results"]:
            region = hit.get("region")
            where = f"  patch ({region['row']},{region['col']})" if region else ""
            caption = (hit.get("meta") or {}).get("caption")  # tar / parquet samples carry their caption
            quoted = f'  "{caption}"' if caption else ""
            click.echo(f"  {hit['rank']:>3}  {hit['score']:+.4f}  id {hit['id']:<6}{where}  {hit['path']}{quoted}")
        if not entry["results"]:
            click.echo("  (no results)")



__all__ = ["print_results", "search"]
