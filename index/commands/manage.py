"""``tipsv2 index remove``, ``tipsv2 index info`` and ``tipsv2 index merge``."""
from __future__ import annotations

import os
from pathlib import Path

import click

from ...cli.common import UserError, echo_json, user_errors


@click.command("remove")
@click.argument("index_path", type=click.Path(file_okay=False, path_type=Path))
@click.argument("paths", nargs=-1)
@click.option("--id", "ids", multiple=True, type=int, help="An image id to remove (repeatable).")
@click.option("--missing-ok", is_flag=True, help="Ignore ids/paths that are not indexed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def remove(index_path, paths, ids, missing_ok, as_json):
    """Remove images from an index by path or id."""
    from ..maintenance import remove_images

    if not paths and not ids:
        raise UserError("give the paths or --id values of the images to remove")
    result = remove_images(index_path, paths=[os.path.abspath(p) for p in paths], ids=list(ids), missing_ok=missing_ok)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"removed {result['removed']} images from {index_path}; now "
                   + ", ".join(f"{k} {v}" for k, v in result["counts"].items()))


@click.command("info")
@click.argument("index_path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def index_info(index_path, as_json):
    """Show what an index holds: model, kinds, sizes, FAISS index type and expected recall."""
    from ..maintenance import describe

    data = describe(index_path)
    if as_json:
        echo_json(data)
        return
    build_rec = data["build"]
    if build_rec:
        model = build_rec.get("model", {})
        click.echo(f"index        {data['path']}")
        click.echo(f"model        {model.get('name')} (config {model.get('config_hash')})"
                   + ("" if model.get("trained", True) else "  RANDOM WEIGHTS"))
        click.echo(f"inputs       {build_rec.get('inputs', {}).get('count')} files"
                   + (f", shard {build_rec['shard']}" if build_rec.get("shard") else "")
                   + f", {data['skipped']} skipped")
    for name in ("global", "patch"):
        sub = data.get(name)
        if sub:
            m = sub
            choice = m.get("choice") or {}
            extra = f", grid {m['patch']['grid']}" if m.get("patch") else ""
            click.echo(f"{name:<12} {m['count']} images, {m['num_vectors']} vectors, kind {m['kind']}, dim {m['dim']}"
                       f"{extra}, faiss {m.get('factory')}, expected recall {choice.get('expected_recall')}")


@click.command("merge")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--strategy", type=click.Choice(["auto", "invlists", "rebuild"]), default="auto", show_default=True,
              help="invlists: merge IVF inverted lists (shared template); rebuild: re-add the stored vectors.")
@click.option("--on-disk", is_flag=True, help="Write merged IVF inverted lists to an on-disk .ivfdata file.")
@click.option("--allow-partial", is_flag=True, help="Merge even if some shards of the split are missing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print the merged build record as JSON.")
@user_errors
def merge(out, shards, strategy, on_disk, allow_partial, overwrite, as_json):
    """Merge the shard directories of a `--shard i/n` build into OUT."""
    from ..combine import merge_builds

    for shard_dir in shards:
        if not shard_dir.is_dir():
            raise UserError(f"no such shard directory: {shard_dir}")
    record = merge_builds(out, list(shards), strategy=strategy, on_disk=on_disk, allow_partial=allow_partial,
                          overwrite=overwrite)
    if as_json:
        echo_json(record)
    else:
        click.echo(f"merged {len(shards)} shards into {out}: "
                   + ", ".join(f"{k} {v}" for k, v in record["counts"].items()) + " images")



__all__ = ["index_info", "merge", "remove"]
