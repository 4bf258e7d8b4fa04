"""``tipsv2 index build`` and ``tipsv2 index add``."""
from __future__ import annotations

import os
from pathlib import Path

import click

from tipsv2_sdk.cli.common import (UserError, apply_encoding, device_option, echo_json, fast_options, load_model, model_option,
                            user_errors)
from ..engines.options import engine_options, make_engine_options, make_source_options, source_options
from .common import (KIND_CHOICES, image_size_option, model_ref, parse_bytes, print_report, rank_device, shard_out,
                     split_kinds, wait_option, warn_untrained)


@click.command("build")
@click.argument("inputs", nargs=-1, required=True)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KIND_CHOICES), default="cls1", show_default=True,
              help="Global embedding to index; `patch` = patch index only, `both` = cls1 + patch.")
@click.option("--patches", is_flag=True, help="Also build the patch index (regions, MaxSim) in the same pass.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Image decoding threads.")
@click.option("--chunk-size", type=click.IntRange(1), default=None,
              help="Images per checkpointed chunk (default 8 batches).")
@image_size_option
@click.option("--index-type", default=None, help="FAISS factory string for the global index (default: automatic).")
@click.option("--patch-index-type", default=None, help="FAISS factory string for the patch index.")
@click.option("--memory-budget", default=None, help="Index memory budget for the automatic choice, e.g. 4G.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Stored vectors.")
@click.option("--pooling", default=1, show_default=True, type=click.IntRange(1), help="Patch pooling p (p x p).")
@click.option("--pq", type=click.IntRange(1), default=None, help="PQ bytes per patch vector (default: automatic).")
@click.option("--template", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index directory whose trained quantizer the shards share.")
@click.option("--shard", default=None,
              help="Build shard i/n of the input (0-based), or `auto` (RANK/WORLD_SIZE); `{shard}` in OUT becomes i.")
@click.option("--restart", is_flag=True, help="Discard an interrupted build in OUT instead of resuming it.")
@click.option("--autocast", is_flag=True, help="Run the model under bf16 autocast.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
@engine_options
@source_options
@wait_option
@fast_options
@model_option
@device_option
@user_errors
def build(inputs, out, kind, patches, batch_size, workers, chunk_size, image_size, index_type, patch_index_type,
          memory_budget, dtype, pooling, pq, template, shard, restart, autocast, quiet, as_json, wait, model_name,
          device, engine, ray_address, ray_actors, image_column, caption_column, key_column, meta_columns,
          precision="fp32", compile_model=False, threads=None):
    """Embed the images in INPUTS (folders, list files, globs, tar shards, parquet tables) and index them into OUT.

    Rerunning the same command resumes an interrupted build, or updates a finished one with new and
    removed files (images added or removed by hand with `index add` / `index remove` stay as they
    are). Unreadable files are skipped and listed in OUT/skipped.jsonl.
    """
    from ..builder import BuildOptions, build_index
    from ..shard import parse_shard
    from ..sources import collect_sources

    global_kind, want_patches = split_kinds(kind, patches)
    options = BuildOptions(kind=global_kind, patches=want_patches, batch_size=batch_size, workers=workers,
                           chunk_size=chunk_size, image_size=image_size, index_type=index_type,
                           patch_index_type=patch_index_type, memory_budget=parse_bytes(memory_budget), dtype=dtype,
                           pooling=pooling, pq=pq, template=os.fspath(template) if template else None,
                           restart=restart, progress=not quiet, autocast=autocast,
                           engine=make_engine_options(engine, ray_address, ray_actors),
                           sources=make_source_options(image_column, caption_column, key_column, meta_columns))
    the_shard = parse_shard(shard)
    out = shard_out(out, the_shard)
    collected = collect_sources(list(inputs), options.sources)  # input mistakes surface before the model loads
    model = apply_encoding(load_model(model_name, device=rank_device(device, shard, os.environ)), precision,
                           compile_model, threads)
    report = build_index(model, collected, out, options, shard=the_shard, model_ref=model_ref(model_name), wait=wait)
    if as_json:
        echo_json(report.to_dict())
    else:
        print_report(report)
        warn_untrained(model)


@click.command("add")
@click.argument("index_path", type=click.Path(file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "-m", "model_name", default=None, help="Default: the model the index was built with.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--restart", is_flag=True, help="Discard an interrupted build or add in INDEX_PATH instead of finishing it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@wait_option
@device_option
@user_errors
def add(index_path, inputs, model_name, batch_size, workers, restart, quiet, as_json, wait, device):
    """Add images to a built index (paths already indexed are left alone).

    An interrupted `index add` is finished by rerunning it; an add of other inputs is refused until
    then (or pass --restart to discard the interrupted one).
    """
    from ..builder import BuildOptions, build_index
    from ..collection import locate

    collection = locate(index_path)
    record = collection.build
    if not record:
        raise UserError(f"{index_path} was not written by `tipsv2 index build`; add with the Python API instead")
    from ..search import resolve_model_ref

    ref = resolve_model_ref(collection, model_name)
    model = load_model(ref, device=device)
    options = BuildOptions(kind=record.get("kind"), patches=bool(record.get("patches")), batch_size=batch_size,
                           workers=workers, image_size=record.get("image_size"), dtype=record.get("dtype", "float16"),
                           restart=restart, progress=not quiet)
    report = build_index(model, list(inputs), index_path, options, mode="add", model_ref=model_ref(ref), wait=wait)
    if as_json:
        echo_json(report.to_dict())
    else:
        print_report(report)



__all__ = ["add", "build"]
