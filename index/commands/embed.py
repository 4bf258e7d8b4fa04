"""``tipsv2 embed``: images or texts to a .npy file plus an ids JSON file."""
from __future__ import annotations

import os
from pathlib import Path

import click

from tipsv2_sdk.cli.common import (UserError, apply_encoding, device_option, echo_json, fast_options, info, load_model,
                            model_option, user_errors)
from ..engines.options import engine_options, make_engine_options, make_source_options, source_options
from .common import image_size_option, model_ref, plural, printable


@click.command()
@click.argument("inputs", nargs=-1)
@click.option("--out", "-o", "out", required=True, type=click.Path(),
              help="Output .npy file; the ids go to the same name with .ids.json.")
@click.option("--text", "texts", multiple=True, help="A text to embed (repeatable) instead of images.")
@click.option("--texts-file", type=click.Path(dir_okay=False, path_type=Path), help="Texts to embed, one per line.")
@click.option("--kind", type=click.Choice(["cls1", "cls2", "concat", "mean_patch", "patches"]), default="cls1",
              show_default=True, help="Image embedding to write; `patches` writes (N, h, w, D).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1), help="Image decoding threads.")
@image_size_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@engine_options
@source_options
@fast_options
@model_option
@device_option
@user_errors
def embed(inputs, out, texts, texts_file, kind, dtype, batch_size, workers, image_size, as_json, model_name, device,
          engine, ray_address, ray_actors, image_column, caption_column, key_column, meta_columns, precision="fp32",
          compile_model=False, threads=None):
    """Embed images (folders, list files, globs, tar shards, parquet tables) or texts into a .npy file plus an
    ids JSON file. An interrupted image run resumes when rerun with the same arguments."""
    from tipsv2_sdk.io import save_npy, write_json
    from ..sources import collect_sources

    if texts_file is not None:
        if not texts_file.is_file():
            raise UserError(f"--texts-file: no such file: {texts_file}")
        texts = tuple(texts) + tuple(t for t in texts_file.read_text(encoding="utf-8").splitlines() if t.strip())
    if bool(texts) == bool(inputs):
        raise UserError("give either image inputs or --text/--texts-file, not both and not neither")
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        # Path("dir/") is Path("dir"): without this a file named "dir" would be written.
        raise UserError(f"--out {out}: is a folder; give a file name such as {os.path.join(out, 'vectors.npy')}")
    out = Path(out)
    ids_path = out.with_name(out.name.removesuffix(".npy") + ".ids.json")
    engine_opts = make_engine_options(engine, ray_address, ray_actors)
    sources = make_source_options(image_column, caption_column, key_column, meta_columns)
    if texts and engine != "local":
        raise UserError("--engine ray embeds images; texts are embedded locally")
    if not texts:
        collected = collect_sources(list(inputs), sources)  # input mistakes surface before the model loads
        for row in collected.problems:
            info(f"not read: {printable(row['path'])}: {row['reason']}")
        if not collected.paths:
            raise UserError(f"found no image files in {', '.join(inputs)}")
    model = apply_encoding(load_model(model_name, device=device), precision, compile_model, threads)
    skipped: list[dict] = []
    if texts:
        vectors = model.encode_texts(list(texts), batch_size=batch_size)
        items = [{"id": i, "text": t} for i, t in enumerate(texts)]
        kind = "text"
        vectors = vectors.astype(dtype)
        doc = {"model": model.name, "kind": kind, "dim": int(vectors.shape[-1]), "shape": list(vectors.shape),
               "dtype": dtype, "items": items, "skipped": skipped}
    from ..update import write_errors

    with write_errors(out):  # a full disk: one line, and no half-written file (atomic writes)
        if texts:
            save_npy(out, vectors)
            write_json(ids_path, doc)
        else:  # chunked, resumable, by either engine (index/engines/embed.py)
            from ..engines.embed import embed_records

            doc = embed_records(model, collected.paths, out, kind=kind, dtype=dtype, batch_size=batch_size,
                                workers=workers, image_size=image_size, engine=engine_opts,
                                model_ref=model_ref(model_name), sources=sources, progress=not as_json)
    items, skipped, shape = doc["items"], doc["skipped"], doc["shape"]
    summary = {"vectors": str(out), "ids": str(ids_path), "count": len(items), "shape": shape,
               "kind": kind, "skipped": skipped}
    if as_json:
        echo_json(summary)
        return
    click.echo(f"wrote {plural(len(items), kind + ' vector')} {tuple(shape)} {dtype} to {printable(out)}; "
               f"ids in {printable(ids_path)}")
    for row in skipped:
        click.echo(f"skipped {printable(row['path'])}: {row['reason']}")



__all__ = ["embed"]
