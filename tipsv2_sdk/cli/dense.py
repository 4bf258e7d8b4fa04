"""``tipsv2 depth``, ``tipsv2 normals`` and ``tipsv2 segment --dpt``: DPT heads on image files.

Arguments are checked before torch is imported. One image writes the ``-o`` PNG (and, with
``--npy``, the raw array next to it under the same name); several images write
``<stem>_<task>.png`` (and ``.npy``) into the ``-o`` directory. A file that cannot be decoded is
skipped and reported, the others are still written, and the exit code is then 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .common import UserError, device_option, echo_json, info, user_errors

PICTURE_SUFFIX = ".png"


def model_option(func):
    return click.option("--model", "-m", "model_name", required=True,
                        help="DPT model: a name such as tipsv2-b14-dpt, a hub id (org/name[@revision]) or a "
                             "Tipsv2Dpt directory (`tipsv2 convert --dpt` output).")(func)


def dense_options(func):
    """The options every dense command shares (besides the model and the output)."""
    for option in reversed([
        click.option("--npy", is_flag=True, help="Also write each raw output as .npy next to its PNG."),
        click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Images per forward pass."),
        click.option("--image-size", type=click.IntRange(min=1), default=None,
                     help="Square network input (multiple of 14); default: the model's own. Outputs are "
                          "resized back to each image's size."),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout."),
    ]):
        func = option(func)
    return device_option(func)


# ---------------------------------------------------------------------- argument checks (no torch)
def check_images(images: Sequence[Path]) -> list[Path]:
    """Refuse a missing path or a directory among the inputs, naming it."""
    if not images:
        raise UserError("no IMAGE given")
    for image in images:
        if not image.exists():
            raise UserError(f"no such image file: {image}")
        if image.is_dir():
            raise UserError(f"{image} is a directory, not an image file")
    return list(images)


def output_paths(images: Sequence[Path], output: Path, task: str) -> list[Path]:
    """The PNG path of each image: ``output`` itself for one image, else unique names inside it."""
    single = len(images) == 1 and not output.is_dir() and output.suffix != ""
    if single:
        if output.suffix.lower() != PICTURE_SUFFIX:
            raise UserError(f"-o {output}: the picture is written as PNG; use a name ending in .png")
        return [output]
    if output.exists() and not output.is_dir():
        raise UserError(f"-o {output}: {len(images)} images need an output directory, and {output} is a file")
    if output.suffix.lower() == PICTURE_SUFFIX:
        raise UserError(f"-o {output}: {len(images)} images need an output directory, not a .png name")
    names: list[Path] = []
    taken: set[str] = set()
    for image in images:
        stem, n = f"{image.stem}_{task}", 1
        name = stem
        while name in taken:  # same file name in different folders
            n += 1
            name = f"{image.stem}-{n}_{task}"
        taken.add(name)
        names.append(output / f"{name}{PICTURE_SUFFIX}")
    return names


def check_local_model(model_name: str, task: str) -> None:
    """For a directory, refuse a non-DPT model or a missing head now (names are resolved on loading)."""
    from ..dense import directory_tasks

    if Path(model_name).is_dir():
        tasks = directory_tasks(model_name)
        if task not in tasks:
            raise UserError(f"-m {model_name}: this DPT model has no trained {task} head (it has: {', '.join(tasks)})")


# ---------------------------------------------------------------------- running
def run_dense(task: str, images: Sequence[Path], output: Path, model_name: str, npy: bool, batch_size: int,
              image_size: int | None, as_json: bool, device: str, labels: Sequence[str] | None = None,
              alpha: float = 0.55) -> None:
    """Validate, load, predict batch by batch, write every picture (and array) as it comes."""
    images = check_images(images)
    pictures = output_paths(images, output, task)
    check_local_model(model_name, task)
    from ..dense import load_dense, split_revision

    name, revision = split_revision(model_name)
    model = load_dense(name, task=task, device=device, revision=revision)
    names = _label_names(model, labels) if task == "segmentation" else []
    try:
        size = model.check_image_size(image_size)
    except ValueError as exc:
        raise UserError(f"--image-size: {exc}") from None
    if not as_json:
        click.echo(f"model {model.name} ({task})")
    rows, skipped = [], []
    for item in model.iter_predict([str(p) for p in images], task, batch_size=batch_size, image_size=size,
                                   progress=True, on_error="skip"):
        if not hasattr(item, "size"):  # a SkippedImage
            info(f"skipped {item.source}: {item.reason}")
            skipped.append(item.to_dict())
            continue
        row = _write(task, item, images[item.index], pictures[item.index], npy, names, alpha)
        rows.append(row)
        if not as_json:
            click.echo(_line(task, row))
    if as_json:
        echo_json({"model": model.name, "task": task, "image_size": size, "outputs": rows, "skipped": skipped})
    if skipped:
        info(f"{len(skipped)} of {len(images)} images could not be read")
        click.get_current_context().exit(1)


def _label_names(model, labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return model.labels
    if len(labels) != len(model.labels):
        raise UserError(f"--labels: {len(labels)} names given but the segmentation head has {len(model.labels)} classes")
    return list(labels)


def _write(task: str, item, image: Path, picture: Path, npy: bool, labels: Sequence[str], alpha: float) -> dict[str, Any]:
    from ..dense_viz import class_fractions, depth_image, depth_range, normals_image, segmentation_image
    from ..io import save_npy
    from ..viz import load_rgb, save_png

    value = getattr(item, task)
    height, width = item.size
    row: dict[str, Any] = {"image": str(image), "png": str(picture), "height": height, "width": width}
    if task == "depth":
        save_png(depth_image(value), picture)
        near, far = depth_range(value)
        row.update(near=near, far=far, mean=float(value.mean()))
    elif task == "normals":
        save_png(normals_image(value), picture)
    else:
        save_png(segmentation_image(load_rgb(image), value, labels, alpha=alpha), picture)
        row["classes"] = class_fractions(value, labels)[:10]
    if npy:
        array_path = picture.with_suffix(".npy")
        save_npy(array_path, value)
        row["npy"] = str(array_path)
    return row


def _line(task: str, row: dict[str, Any]) -> str:
    size = f"{row['width']}x{row['height']}"
    extra = ""
    if task == "depth":
        extra = f", depth {row['near']:.3g}-{row['far']:.3g} m"
    elif task == "segmentation":
        extra = ", " + ", ".join(f"{c['label']} {100 * c['fraction']:.0f}%" for c in row["classes"][:3])
    arrays = f" + {row['npy']}" if "npy" in row else ""
    return f"wrote {row['png']}{arrays} ({row['image']}, {size}{extra})"


# ---------------------------------------------------------------------- commands
@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="PNG file for one image; a directory for several.")
@model_option
@dense_options
@user_errors
def depth(images: tuple[Path, ...], output: Path, model_name: str, npy: bool, batch_size: int,
          image_size: int | None, as_json: bool, device: str) -> None:
    """Metric depth of each IMAGE (any size) with a DPT head; writes colour-mapped PNGs (near = bright).

    --npy also writes the depth in metres, (H, W) float32, at the image's resolution.
    """
    run_dense("depth", images, output, model_name, npy, batch_size, image_size, as_json, device)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="PNG file for one image; a directory for several.")
@model_option
@dense_options
@user_errors
def normals(images: tuple[Path, ...], output: Path, model_name: str, npy: bool, batch_size: int,
            image_size: int | None, as_json: bool, device: str) -> None:
    """Surface normals of each IMAGE (any size) with a DPT head; writes normal-map PNGs, rgb = (n + 1) / 2.

    --npy also writes the unit normals, (H, W, 3) float32, at the image's resolution.
    """
    run_dense("normals", images, output, model_name, npy, batch_size, image_size, as_json, device)


def segment_dpt(ctx: click.Context, images: Sequence[Path], labels_text: str | None, output: Path, model_name: str,
                npy: bool, batch_size: int, image_size: int | None, alpha: float, as_json: bool, device: str) -> None:
    """``tipsv2 segment --dpt``: the trained segmentation head instead of zero-shot labels."""
    from click.core import ParameterSource

    if ctx.get_parameter_source("model_name") == ParameterSource.DEFAULT:
        raise UserError("--dpt needs -m/--model naming a DPT model (e.g. -m tipsv2-b14-dpt or a directory)")
    for name in ("mode", "features", "templates", "background_threshold"):
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
            raise UserError(f"--{name.replace('_', '-')} applies to zero-shot segmentation, not to --dpt")
    labels = None
    if labels_text is not None:
        from .visual import parse_labels

        labels = parse_labels(labels_text)
    run_dense("segmentation", images, output, model_name, npy, batch_size, image_size, as_json, device,
              labels=labels, alpha=alpha)


def convert_dpt(out_dir: Path, vision_npz: Path | None, text_npz: Path | None, tokenizer_model: Path | None,
                decoders: Sequence[Path], variant: str, as_json: bool) -> None:
    """``tipsv2 convert --vision V.npz --dpt D.zip [--dpt ...]``: the official DPT decoders."""
    import json

    if text_npz is not None or tokenizer_model is not None:
        raise UserError("--dpt converts the vision tower and its DPT decoders only; convert --text/--tokenizer "
                        "in a separate `tipsv2 convert` run")
    if vision_npz is None:
        raise UserError("--dpt needs --vision: the decoders read the features of that vision checkpoint")
    for label, path in (("--vision", vision_npz), *(("--dpt", p) for p in decoders)):
        if not path.is_file():
            raise UserError(f"{label}: no such file: {path}")
    from ..convert.dpt import convert_official_dpt

    out = convert_official_dpt(vision_npz, list(decoders), out_dir, variant=variant)
    meta = json.loads((out / "tipsv2_sdk.json").read_text())
    if as_json:
        echo_json({"out_dir": str(out), **meta})
        return
    random = f"; random {' + '.join(meta['random_heads'])} head" if meta["random_heads"] else ""
    click.echo(f"wrote {out} ({meta['variant']} DPT: {', '.join(meta['tasks'])}{random})")


__all__ = ["depth", "normals", "segment_dpt", "convert_dpt", "run_dense", "output_paths", "check_images"]
