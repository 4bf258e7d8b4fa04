"""``tipsv2 embed``: images or texts to a .npy file plus an ids JSON file."""
from __future__ import annotations

from pathlib import Path

import click

from ...cli.common import UserError, device_option, echo_json, load_model, model_option, user_errors


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
    from ...io import save_npy, write_json
    from ..inputs import collect_inputs

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



__all__ = ["embed"]
