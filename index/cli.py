"""``tipsv2 embed``, ``tipsv2 index build|add|remove|info|merge``, ``tipsv2 search`` and ``tipsv2 demo``.

Human-readable results go to stdout, progress bars and status lines to stderr; ``--json`` prints
one JSON document on stdout (schemas in docs/index.md). Input mistakes exit with code 2 and one line.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from ..cli.common import UserError, device_option, echo_json, info, load_model, model_option, user_errors

KIND_CHOICES = ("cls1", "cls2", "concat", "mean_patch", "patch", "both")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(value: str | None) -> int | None:
    """``"4G"``, ``"512M"``, ``"1000000"`` → bytes."""
    if value is None:
        return None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in _UNITS else ""
    try:
        number = float(text[: len(text) - len(unit)])
    except ValueError:
        raise UserError(f"--memory-budget {value!r}: expected a size such as 512M or 4G") from None
    return int(number * _UNITS[unit])


def model_ref(name: str) -> str:
    """How to load the model again later: an absolute directory, or the registry name."""
    return os.path.abspath(name) if os.path.isdir(name) else name


def rank_device(device: str, shard: str | None, env) -> str:
    """Under ``--shard auto``, ``--device cuda`` means this rank's GPU (``LOCAL_RANK``), as torchrun expects."""
    if device == "cuda" and shard is not None and shard.strip().lower() == "auto" and "LOCAL_RANK" in env:
        return f"cuda:{int(env['LOCAL_RANK'])}"
    return device


def _shard_out(out: Path, shard) -> Path:
    """``{shard}`` in OUT becomes the shard number, so one command line serves every rank."""
    if "{shard}" not in str(out):
        return out
    if shard is None:
        raise UserError(f"OUT {out} contains {{shard}} but no --shard is given")
    return Path(str(out).replace("{shard}", str(shard.index)))


def _kinds(kind: str, patches: bool) -> tuple[str | None, bool]:
    if kind == "patch":
        return None, True
    if kind == "both":
        return "cls1", True
    return kind, patches


def _print_report(report) -> None:
    counts = ", ".join(f"{name} {n}" for name, n in report.counts.items())
    shard = f" (shard {report.shard})" if report.shard else ""
    click.echo(f"{report.out}{shard}: +{report.added} added, -{report.removed} removed, {report.unchanged} unchanged "
               f"→ {counts} images; {report.seconds:.1f} s, {report.images_per_second:.1f} img/s")
    if report.resumed_chunks:
        click.echo(f"resumed an interrupted build after {report.resumed_chunks} finished chunks")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} unreadable files (listed in {Path(report.out) / 'skipped.jsonl'}):")
        for row in report.skipped:
            click.echo(f"  {row['path']}: {row['reason']}")


# ---------------------------------------------------------------------------------------------- embed
@click.command()
@click.argument("inputs", nargs=-1)
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .npy file; the ids go to the same name with .ids.json.")
@click.option("--text", "texts", multiple=True, help="A text to embed (repeatable) instead of images.")
@click.option("--texts-file", type=click.Path(dir_okay=False, path_type=Path), help="Texts to embed, one per line.")
@click.option("--kind", type=click.Choice(["cls1", "cls2", "concat", "mean_patch", "patches"]), default="cls1",
              show_default=True, help="Image embedding to write; `patches` writes (N, h, w, D).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Image decoding threads.")
@click.option("--image-size", type=int, default=None, help="Square input size (multiple of 14); default: the model's.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@model_option
@device_option
@user_errors
def embed(inputs, out, texts, texts_file, kind, dtype, batch_size, workers, image_size, as_json, model_name, device):
    """Embed images (folders, list files, globs) or texts into a .npy file plus an ids JSON file."""
    from ..io import save_npy, write_json
    from .inputs import collect_inputs

    if texts_file is not None:
        if not texts_file.is_file():
            raise UserError(f"--texts-file: no such file: {texts_file}")
        texts = tuple(texts) + tuple(t for t in texts_file.read_text(encoding="utf-8").splitlines() if t.strip())
    if bool(texts) == bool(inputs):
        raise UserError("give either image inputs or --text/--texts-file, not both and not neither")
    ids_path = out.with_name(out.name.removesuffix(".npy") + ".ids.json")
    model = load_model(model_name, device=device)
    skipped: list[dict] = []
    if texts:
        vectors = model.encode_texts(list(texts), batch_size=batch_size)
        items = [{"id": i, "text": t} for i, t in enumerate(texts)]
        kind = "text"
    else:
        paths = collect_inputs(inputs).paths
        if not paths:
            raise UserError(f"found no image files in {', '.join(inputs)}")
        emb = model.encode_images(paths, batch_size=batch_size, image_size=image_size, on_error="skip",
                                  with_patches=kind in ("patches", "mean_patch"), workers=workers)
        vectors = emb.patches if kind == "patches" else emb.select(kind)
        items = [{"id": int(i), "path": paths[i]} for i in emb.indices]
        skipped = [{"id": s.index, "path": s.source, "reason": s.reason} for s in emb.skipped]
    vectors = vectors.astype(dtype)
    save_npy(out, vectors)
    doc = {"model": model.name, "kind": kind, "dim": int(vectors.shape[-1]), "shape": list(vectors.shape),
           "dtype": dtype, "items": items, "skipped": skipped}
    write_json(ids_path, doc)
    summary = {"vectors": str(out), "ids": str(ids_path), "count": len(items), "shape": list(vectors.shape),
               "kind": kind, "skipped": skipped}
    if as_json:
        echo_json(summary)
        return
    click.echo(f"wrote {len(items)} {kind} vectors {tuple(vectors.shape)} {dtype} to {out}; ids in {ids_path}")
    for row in skipped:
        click.echo(f"skipped {row['path']}: {row['reason']}")


# ---------------------------------------------------------------------------------------------- index
@click.group("index")
def index_group() -> None:
    """Build, update, inspect and merge image indexes."""


@index_group.command("build")
@click.argument("inputs", nargs=-1, required=True)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KIND_CHOICES), default="cls1", show_default=True,
              help="Global embedding to index; `patch` = patch index only, `both` = cls1 + patch.")
@click.option("--patches", is_flag=True, help="Also build the patch index (regions, MaxSim) in the same pass.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Image decoding threads.")
@click.option("--chunk-size", type=click.IntRange(1), default=None,
              help="Images per checkpointed chunk (default 8 batches).")
@click.option("--image-size", type=int, default=None, help="Square input size (multiple of 14); default: the model's.")
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
@model_option
@device_option
@user_errors
def build(inputs, out, kind, patches, batch_size, workers, chunk_size, image_size, index_type, patch_index_type,
          memory_budget, dtype, pooling, pq, template, shard, restart, autocast, quiet, as_json, model_name, device):
    """Embed the images in INPUTS (folders, list files, globs) and index them into OUT.

    Rerunning the same command resumes an interrupted build, or updates a finished one with new and
    removed files. Unreadable files are skipped and listed in OUT/skipped.jsonl.
    """
    from .builder import BuildOptions, build_index
    from .inputs import collect_inputs
    from .shard import parse_shard

    global_kind, want_patches = _kinds(kind, patches)
    options = BuildOptions(kind=global_kind, patches=want_patches, batch_size=batch_size, workers=workers,
                           chunk_size=chunk_size, image_size=image_size, index_type=index_type,
                           patch_index_type=patch_index_type, memory_budget=parse_bytes(memory_budget), dtype=dtype,
                           pooling=pooling, pq=pq, template=os.fspath(template) if template else None,
                           restart=restart, progress=not quiet, autocast=autocast)
    the_shard = parse_shard(shard)
    out = _shard_out(out, the_shard)
    collected = collect_inputs(list(inputs))  # input mistakes surface before the model loads
    model = load_model(model_name, device=rank_device(device, shard, os.environ))
    report = build_index(model, collected, out, options, shard=the_shard, model_ref=model_ref(model_name))
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_report(report)
        _warn_untrained(model)


@index_group.command("add")
@click.argument("index_path", type=click.Path(file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "-m", "model_name", default=None, help="Default: the model the index was built with.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@device_option
@user_errors
def add(index_path, inputs, model_name, batch_size, workers, quiet, as_json, device):
    """Add images to a built index (paths already indexed are left alone)."""
    from .builder import BuildOptions, build_index
    from .collection import locate

    collection = locate(index_path)
    record = collection.build
    if not record:
        raise UserError(f"{index_path} was not written by `tipsv2 index build`; add with the Python API instead")
    from .search import resolve_model_ref

    ref = resolve_model_ref(collection, model_name)
    model = load_model(ref, device=device)
    options = BuildOptions(kind=record.get("kind"), patches=bool(record.get("patches")), batch_size=batch_size,
                           workers=workers, image_size=record.get("image_size"), dtype=record.get("dtype", "float16"),
                           progress=not quiet)
    report = build_index(model, list(inputs), index_path, options, mode="add", model_ref=model_ref(ref))
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_report(report)


@index_group.command("remove")
@click.argument("index_path", type=click.Path(file_okay=False, path_type=Path))
@click.argument("paths", nargs=-1)
@click.option("--id", "ids", multiple=True, type=int, help="An image id to remove (repeatable).")
@click.option("--missing-ok", is_flag=True, help="Ignore ids/paths that are not indexed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def remove(index_path, paths, ids, missing_ok, as_json):
    """Remove images from an index by path or id."""
    from .maintenance import remove_images

    if not paths and not ids:
        raise UserError("give the paths or --id values of the images to remove")
    result = remove_images(index_path, paths=[os.path.abspath(p) for p in paths], ids=list(ids), missing_ok=missing_ok)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"removed {result['removed']} images from {index_path}; now "
                   + ", ".join(f"{k} {v}" for k, v in result["counts"].items()))


@index_group.command("info")
@click.argument("index_path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def index_info(index_path, as_json):
    """Show what an index holds: model, kinds, sizes, FAISS index type and expected recall."""
    from .maintenance import describe

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


@index_group.command("merge")
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
    from .combine import merge_builds

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


# ---------------------------------------------------------------------------------------------- search
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
@device_option
@user_errors
def search(index_path, queries, image, box, regions, maxsim, k, as_json, html_path, heatmaps, nprobe, model_name,
           device):
    """Search INDEX with text QUERIES ("a red car") or an --image (optionally a --box on it)."""
    from .collection import locate
    from .search import Query, Searcher, parse_box, resolve_model_ref

    if box is not None and image is None:
        raise UserError("--box needs --image: it is a region of the query image")
    if not queries and image is None:
        raise UserError("give a text query or --image")
    if image is not None and not os.path.isfile(image):
        raise UserError(f"--image: no such file: {image}")
    the_box = parse_box(box) if box is not None else None
    collection = locate(index_path)
    model = load_model(resolve_model_ref(collection, model_name), device=device)
    searcher = Searcher(collection, model, nprobe=nprobe)
    asked = [Query(text=q, regions=regions) for q in queries]
    if image is not None:
        asked.append(Query(image=os.path.abspath(image), box=the_box, regions=regions, maxsim=maxsim))
    entries = [searcher.run(q, k, heatmaps=heatmaps or html_path is not None) for q in asked]
    report = searcher.report(entries, k)
    if html_path is not None:
        from .html import write_html

        write_html(html_path, report)
        info(f"wrote {html_path}")
    if not heatmaps:
        for entry in report["queries"]:
            for hit in entry["results"]:
                hit.pop("heatmap", None)
    if as_json:
        echo_json(report)
    else:
        _warn_untrained(model)
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
            click.echo(f"  {hit['rank']:>3}  {hit['score']:+.4f}  id {hit['id']:<6}{where}  {hit['path']}")
        if not entry["results"]:
            click.echo("  (no results)")


def _warn_untrained(model) -> None:
    if model.meta.get("trained") is False:
        info(f"RANDOM WEIGHTS: model {model.name} is not trained; rankings are meaningless.")


# ---------------------------------------------------------------------------------------------- demo
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
    from .demo import run_demo

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


__all__ = ["add", "build", "demo", "embed", "index_group", "index_info", "merge", "parse_bytes", "remove", "search"]
