"""``tipsv2 segment`` (zero-shot segmentation overlay) and ``tipsv2 pca`` (patch-feature PCA picture)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import (UserError, check_model_name, device_option, echo_json, info, load_model, model_option,
                     user_errors)

RANDOM_NOTE = "RANDOM WEIGHTS: not trained, the picture shows no real semantics"


def _check_image(image: Path) -> None:
    if not image.exists():
        raise UserError(f"no such image file: {image}")
    if image.is_dir():
        raise UserError(f"{image} is a directory, not an image file")


def parse_labels(text: str) -> list[str]:
    """Split ``"sky, tree,road"`` into names; refuse an empty list or duplicates (as a ``UserError``)."""
    labels = [part.strip() for part in text.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise UserError("--labels: no class names given (use e.g. --labels \"sky,tree,road\")")
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise UserError(f"--labels: {', '.join(dupes)} given more than once")
    return labels


def _size(model, image_size: int | None) -> int:
    try:
        return model.check_image_size(image_size)
    except ValueError as exc:
        raise UserError(f"--image-size: {exc}") from None


def _model_line(model) -> str:
    trained = model.meta.get("trained", True)
    return f"model {model.name}" + ("" if trained else f"  ({RANDOM_NOTE})")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--labels", "-l", "labels_text", default=None,
              help='Comma-separated class names, e.g. "sky,tree,road" (required; with --dpt optional: names for '
                   'the head\'s classes).')
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="PNG file for the overlay with its legend (with --dpt and several images: a directory).")
@model_option
@click.option("--dpt", is_flag=True, help="Use the trained segmentation head of a DPT model (-m) instead of zero-shot "
                                          "labels; any number of images (docs/dense.md).")
@click.option("--npy", is_flag=True, help="With --dpt: also write each label map (H, W) int32 as .npy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="With --dpt: images per forward pass.")
@click.option("--mode", type=click.Choice(["sliding", "whole"]), default="sliding", show_default=True,
              help="sliding: the TIPS protocol (short side to the model size, 3/4-overlapping windows); "
                   "whole: one square pass.")
@click.option("--features", type=click.Choice(["value", "patch"]), default="value", show_default=True,
              help="value: last-block value embeddings (the protocol); patch: final patch tokens.")
@click.option("--image-size", type=int, default=None, help="Window / short-side size (multiple of 14); default: the model's.")
@click.option("--templates", default="tcl", show_default=True, help="Prompt template set: tcl, imagenet, imagenet7, simple.")
@click.option("--background-threshold", type=float, default=None,
              help="Mark pixels whose best probability is below this as unassigned.")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.55, show_default=True, help="Overlay opacity.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@device_option
@user_errors
def segment(images: tuple[Path, ...], labels_text: str | None, output: Path, model_name: str, dpt: bool, npy: bool,
            batch_size: int, mode: str, features: str, image_size: int | None, templates: str,
            background_threshold: float | None, alpha: float, as_json: bool, device: str) -> None:
    """Zero-shot segmentation of IMAGE into the given labels; writes a colour overlay PNG.

    With --dpt: the trained segmentation head of a DPT model on each IMAGE.
    """
    if dpt:
        from .dense import segment_dpt

        return segment_dpt(click.get_current_context(), images, labels_text, output, model_name, npy, batch_size,
                           image_size, alpha, as_json, device)
    if len(images) != 1:
        raise UserError(f"zero-shot segmentation takes one IMAGE, not {len(images)} (several work with --dpt)")
    if labels_text is None:
        raise UserError('--labels is required: comma-separated class names, e.g. --labels "sky,tree,road"')
    if npy:
        raise UserError("--npy applies to --dpt")
    if output.is_dir():
        raise UserError(f"-o {output} is a directory; give the PNG file to write")
    image = images[0]
    from ..templates import TEMPLATE_SETS
    from ..viz import load_rgb, save_segmentation

    _check_image(image)
    labels = parse_labels(labels_text)
    if templates not in TEMPLATE_SETS:
        raise UserError(f"--templates: unknown set {templates!r} (known: {', '.join(sorted(TEMPLATE_SETS))})")
    check_model_name(model_name)
    rgb = load_rgb(image)  # decoded once, before the model loads, for the model and the overlay
    from ..segmentation import zero_shot_segment  # torch: only after the arguments are checked

    model = load_model(model_name, device=device)
    size = _size(model, image_size)
    if as_json and not model.meta.get("trained", True):
        info(f"warning: {model.name}: {RANDOM_NOTE}")
    result = zero_shot_segment(model, rgb, labels, mode=mode, features=features, templates=templates,
                               image_size=size, background_threshold=background_threshold)
    save_segmentation(output, rgb, result.label_map, result.labels, alpha=alpha)
    summary = result.summary()
    height, width = result.size
    if as_json:
        echo_json({"model": model.name, "trained": bool(model.meta.get("trained", True)), "image": str(image),
                   "output": str(output), "height": height, "width": width, "mode": mode, "features": features,
                   "image_size": size, "windows": result.windows, "templates": templates,
                   "unassigned": float((result.label_map < 0).mean()), "labels": summary})
        return
    click.echo(_model_line(model))
    click.echo(f"segmented {image} ({width}x{height}) in {result.windows} window(s), mode {mode}, {features} features")
    width_col = max(len(row["label"]) for row in summary)
    for row in summary:
        click.echo(f"  {row['label']:<{width_col}}  {100 * row['fraction']:5.1f}%  mean p {row['mean_prob']:.3f}")
    click.echo(f"wrote {output}")


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file for the PCA picture.")
@model_option
@click.option("--image-size", type=int, default=None, help="Square encoder input size (multiple of 14); default: the model's.")
@click.option("--side-by-side", is_flag=True, help="Put the image itself left of its PCA colours.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@device_option
@user_errors
def pca(image: Path, output: Path, model_name: str, image_size: int | None, side_by_side: bool, as_json: bool,
        device: str) -> None:
    """Colour IMAGE's patch features by their first three principal components; writes a PNG."""
    from ..viz import load_rgb, pca_image, save_png
    from ..viz import side_by_side as join

    _check_image(image)
    rgb = load_rgb(image)
    model = load_model(model_name, device=device)
    size = _size(model, image_size)
    if as_json and not model.meta.get("trained", True):
        info(f"warning: {model.name}: {RANDOM_NOTE}")
    emb = model.encode_images([rgb], image_size=size, progress=False)
    picture = pca_image(emb.patches[0], rgb.size)
    if side_by_side:
        picture = join([rgb, picture])
    save_png(picture, output)
    grid_h, grid_w = emb.grid
    if as_json:
        echo_json({"model": model.name, "trained": bool(model.meta.get("trained", True)), "image": str(image),
                   "output": str(output), "image_size": size, "grid": [grid_h, grid_w],
                   "width": picture.width, "height": picture.height})
        return
    click.echo(_model_line(model))
    click.echo(f"PCA of {grid_h}x{grid_w} patch features at {size} px -> {picture.width}x{picture.height}")
    click.echo(f"wrote {output}")
