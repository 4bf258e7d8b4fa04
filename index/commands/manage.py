"""``tipsv2 index remove``, ``tipsv2 index info`` and ``tipsv2 index merge``."""
from __future__ import annotations

import os
from pathlib import Path

import click

from tipsv2_sdk.cli.common import UserError, echo_json, info, user_errors
from .common import plural, printable, wait_option


@click.command("remove")
@click.argument("index_path", type=click.Path(file_okay=False, path_type=Path))
@click.argument("paths", nargs=-1)
@click.option("--id", "ids", multiple=True, type=int, help="An image id to remove (repeatable).")
@click.option("--missing-ok", is_flag=True, help="Ignore ids/paths that are not indexed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@wait_option
@user_errors
def remove(index_path, paths, ids, missing_ok, as_json, wait):
    """Remove images from an index by path or id.

    The images stay removed when `index build` is rerun over the original inputs; `index add`
    brings one back.
    """
    from ..maintenance import remove_images

    if not paths and not ids:
        raise UserError("give the paths or --id values of the images to remove")
    result = remove_images(index_path, paths=[os.path.abspath(p) for p in paths], ids=list(ids), missing_ok=missing_ok,
                           wait=wait)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"removed {plural(result['removed'], 'image')} from {index_path}; now "
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
    for line in info_lines(data):
        click.echo(line)
    for warning in data["warnings"]:
        info(f"warning: {warning}")


def info_lines(data: dict) -> list[str]:
    """The human-readable lines of ``tipsv2 index info``."""
    lines = [f"index        {printable(data['path'])}  (generation {data['generation']})"]
    build_rec = data["build"]
    if build_rec:
        model = build_rec.get("model", {})
        weights = f", weights {model['weights_fingerprint'][:12]}" if model.get("weights_fingerprint") else ""
        lines.append(f"model        {model.get('name')} (config {model.get('config_hash')}{weights})"
                     + ("" if model.get("trained", True) else "  RANDOM WEIGHTS"))
        if model.get("ref") and model.get("ref") != model.get("name"):
            lines.append(f"model from   {printable(model['ref'])}")
    counts = ", ".join(f"{name} {data[name]['count']}" for name in ("global", "patch") if data.get(name))
    lines.append(f"images       {data['images']}" + (f" ({counts})" if counts else ""))
    if build_rec:
        manual = build_rec.get("manual") or {}
        by_hand = [f"{plural(len(manual[k]), 'image')} {k} by hand" for k in ("added", "removed") if manual.get(k)]
        sources = ", ".join(printable(s) for s in build_rec.get("sources") or [])
        lines.append(f"inputs       {plural(build_rec.get('inputs', {}).get('count') or 0, 'file')}"
                     + (f" from {sources}" if sources else "")
                     + (f", shard {build_rec['shard']}" if build_rec.get("shard") else "")
                     + "".join(f"; {x}" for x in by_hand) + f"; {data['skipped']} skipped")
        last = build_rec.get("last_run") or {}
        if last.get("command"):
            lines.append(f"last change  {last['command']}: +{last.get('added', 0)} added, -{last.get('removed', 0)} removed"
                         + (f" ({build_rec['updated']})" if build_rec.get("updated") else ""))
    for name in ("global", "patch"):
        m = data.get(name)
        if m:
            choice = m.get("choice") or {}
            extra = f", grid {m['patch']['grid']}" if m.get("patch") else ""
            lines.append(f"{name:<12} {plural(m['count'], 'image')}, {plural(m['num_vectors'], 'vector')}, "
                         f"kind {m['kind']}, dim {m['dim']}{extra}, faiss {m.get('factory')}, "
                         f"expected recall {choice.get('expected_recall')}")
    if data.get("pending"):
        from ..snapshot import describe_pending

        lines.append(f"pending      {describe_pending(data['pending'], data['path'])}")
    elif data.get("writer"):
        from ..lock import describe_holder

        lines.append(f"writer       {describe_holder(data['writer'])} is changing the index")
    return lines


@click.command("merge")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--strategy", type=click.Choice(["auto", "invlists", "rebuild"]), default="auto", show_default=True,
              help="invlists: merge IVF inverted lists (shared template); rebuild: re-add the stored vectors.")
@click.option("--on-disk", is_flag=True, help="Write merged IVF inverted lists to an on-disk .ivfdata file.")
@click.option("--allow-partial", is_flag=True, help="Merge even if some shards of the split are missing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print the merged build record as JSON.")
@wait_option
@user_errors
def merge(out, shards, strategy, on_disk, allow_partial, overwrite, as_json, wait):
    """Merge the shard directories of a `--shard i/n` build into OUT."""
    from ..combine import merge_builds

    for shard_dir in shards:
        if not shard_dir.is_dir():
            raise UserError(f"no such shard directory: {shard_dir}")
    record = merge_builds(out, list(shards), strategy=strategy, on_disk=on_disk, allow_partial=allow_partial,
                          overwrite=overwrite, wait=wait)
    if as_json:
        echo_json(record)
    else:
        images = "image" if all(v == 1 for v in record["counts"].values()) and record["counts"] else "images"
        click.echo(f"merged {plural(len(shards), 'shard')} into {out}: "
                   + ", ".join(f"{k} {v}" for k, v in record["counts"].items()) + f" {images}")



__all__ = ["index_info", "info_lines", "merge", "remove"]
