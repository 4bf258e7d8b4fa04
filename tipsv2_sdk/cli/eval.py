"""``tipsv2 eval``: dataset-level benchmarks (zero-shot segmentation / classification / retrieval,
linear-probe segmentation and depth). See docs/eval.md.

Every command lists and checks its dataset and options before torch is imported or a model is
loaded, so a wrong ``--root`` fails in a fraction of a second with one line (exit 2).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..eval.datasets import SEGMENTATION_DATASETS, DatasetError
from .common import UserError, device_option, echo_json, info, load_model, model_option, user_errors

RANDOM_NOTE = "RANDOM WEIGHTS: not trained, the scores are chance level"
POSITIVE = click.IntRange(min=1)


def _common(func: Callable) -> Callable:
    """Options every eval command has: model, device, limit, batch size, JSON, output file, progress."""
    for option in reversed([
        model_option,
        device_option,
        click.option("--limit", type=POSITIVE, default=None,
                     help="Evaluate only N items (quick runs): the first N, spread over the classes for classification."),
        click.option("--batch-size", type=POSITIVE, default=16, show_default=True,
                     help="Images (segmentation: windows) per forward pass."),
        click.option("--bf16", "autocast", is_flag=True, help="Run the towers under bf16 autocast (GPU)."),
        click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON on stdout."),
        click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Also write the JSON report to this file (atomically)."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr."),
    ]):
        func = option(func)
    return user_errors(func)


def _probe_options(func: Callable) -> Callable:
    for option in reversed([
        click.option("--epochs", type=POSITIVE, default=10, show_default=True, help="Probe training epochs."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True),
        click.option("--probe-batch-size", type=POSITIVE, default=16, show_default=True, help="Images per probe step."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--train-limit", type=POSITIVE, default=None,
                     help="Train on N images spread evenly over the training split."),
        click.option("--image-size", type=POSITIVE, default=None, help="Square encoder input (multiple of the patch)."),
        click.option("--target-size", type=POSITIVE, default=None, help="Training-target side (default 4x the grid)."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Where the memory-mapped training features go (default: the system temp dir)."),
    ]):
        func = option(func)
    return func


def _open(reader: Callable[[], Any]) -> Any:
    try:
        return reader()
    except DatasetError as exc:
        raise UserError(str(exc)) from None


def _model(model_name: str, device: str, image_size: int | None = None):
    """Load the model, check ``--image-size`` against its patch, then warn if its weights are random."""
    model = load_model(model_name, device=device)
    try:
        model.check_image_size(image_size)
    except ValueError as exc:
        raise UserError(f"--image-size: {exc}") from None
    if not model.meta.get("trained", True):
        info(f"warning: {model.name}: {RANDOM_NOTE}")
    return model


def _finish(result: dict, as_json: bool, output: Path | None, lines: list[str]) -> None:
    if output is not None:
        from ..io import write_json

        write_json(output, result)
    for entry in result.get("skipped", [])[:10]:
        info(f"skipped {entry['source']}: {entry['reason']}")
    if len(result.get("skipped", [])) > 10:
        info(f"... and {len(result['skipped']) - 10} more skipped")
    if as_json:
        echo_json(result)
        return
    model = result["model"]
    click.echo(f"model {model['name']}" + ("" if model["trained"] else f"  ({RANDOM_NOTE})"))
    for line in lines:
        click.echo(line)
    if output is not None:
        click.echo(f"wrote {output}")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _per_class_lines(table: dict[str, float | None], title: str) -> list[str]:
    width = max((len(name) for name in table), default=0)
    return [title] + [f"  {name:<{width}}  {_fmt(value):>6}" for name, value in table.items()]


@click.group(name="eval")
def eval_group() -> None:
    """Benchmark a model on standard datasets as they ship (segmentation, classification, retrieval, depth)."""


@eval_group.command("segmentation")
@click.option("--dataset", "-d", "dataset_key", type=click.Choice(list(SEGMENTATION_DATASETS)), required=True)
@click.option("--root", required=True, type=click.Path(path_type=Path), help="Where the dataset lies (see docs/eval.md).")
@click.option("--split", default=None, help="Split to evaluate (default: the benchmark's val split).")
@click.option("--mode", type=click.Choice(["slide", "whole"]), default="slide", show_default=True,
              help="slide: TCL sliding windows; whole: one pass over the resized image.")
@click.option("--short-side", type=POSITIVE, default=None, help="Resize the shorter side to this (default: model size).")
@click.option("--window", type=POSITIVE, default=None, help="Sliding-window side (default: --short-side).")
@click.option("--stride", type=POSITIVE, default=None, help="Sliding-window stride (default: 3/4 of the window).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Per-window softmax(cos / T); 1.0 = the reference notebook.")
@click.option("--features", type=click.Choice(["value", "patch"]), default="value", show_default=True)
@click.option("--templates", default="tcl", show_default=True, help="Prompt set: tcl, imagenet, imagenet7, simple.")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Prompt names, one per line in class order (default: the dataset's standard names).")
@click.option("--background-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="voc21/pc60: do not prompt background; pixels below this probability are background.")
@_common
def segmentation(dataset_key: str, root: Path, split: str | None, mode: str, short_side: int | None,
                 window: int | None, stride: int | None, temperature: float, features: str, templates: str,
                 class_names: Path | None, background_threshold: float | None, model_name: str, device: str,
                 limit: int | None, batch_size: int, autocast: bool, as_json: bool, output: Path | None,
                 progress: bool) -> None:
    """Zero-shot semantic segmentation mIoU (TIPS / TCL protocol) on VOC, PASCAL Context, ADE20K or COCO-Stuff."""
    from ..eval.datasets import open_segmentation
    from ..templates import TEMPLATE_SETS

    dataset = _open(lambda: open_segmentation(dataset_key, root, split))
    if templates not in TEMPLATE_SETS:
        raise UserError(f"--templates: unknown set {templates!r} (known: {', '.join(sorted(TEMPLATE_SETS))})")
    names = None
    if class_names is not None:
        names = [line.strip() for line in class_names.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != dataset.num_classes:
            raise UserError(f"--class-names: {class_names} has {len(names)} names; {dataset_key} has {dataset.num_classes} classes")
    if background_threshold is not None and dataset.classes[0] != "background":
        raise UserError(f"--background-threshold: {dataset_key} has no background class (use voc21 or pc60)")

    from ..eval.segmentation import ZeroShotSegSettings, evaluate_zero_shot_segmentation

    model = _model(model_name, device)
    settings = ZeroShotSegSettings(mode=mode, short_side=short_side, window=window, stride=stride,
                                   temperature=temperature, features=features, templates=templates,
                                   background_threshold=background_threshold, batch_size=batch_size, autocast=autocast)
    result = evaluate_zero_shot_segmentation(model, dataset, settings, class_names=names, limit=limit,
                                             progress=progress)
    s = result["settings"]
    lines = [f"{dataset_key} {dataset.split}: mIoU {_fmt(result['miou'])}  pixel acc {_fmt(result['pixel_accuracy'])}  "
             f"mean acc {_fmt(result['mean_accuracy'])}  ({result['num_images']} images, {len(result['skipped'])} skipped)",
             f"protocol: {s['mode']}, short side {s['short_side']}, window {s['window']}, stride {s['stride']}, "
             f"{s['features']} features, {s['templates']} templates, temperature {s['temperature']}"]
    _finish(result, as_json, output, lines + _per_class_lines(result["per_class_iou"], "IoU per class:"))


@eval_group.command("classification")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="Folder with one sub-folder per class.")
@click.option("--class-names", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=".txt (one per line, sorted folder order, or FOLDER<TAB>NAME) or .json; default: folder names.")
@click.option("--templates", default="imagenet", show_default=True, help="Prompt set: imagenet, imagenet7, tcl, simple.")
@click.option("--embedding", type=click.Choice(["cls1", "cls2", "mean"]), default="cls1", show_default=True)
@click.option("--image-size", type=POSITIVE, default=None, help="Square encoder input (default: the model's).")
@_common
def classification(root: Path, class_names: Path | None, templates: str, embedding: str, image_size: int | None,
                   model_name: str, device: str, limit: int | None, batch_size: int, autocast: bool, as_json: bool,
                   output: Path | None, progress: bool) -> None:
    """Zero-shot top-1 / top-5 accuracy on an ImageNet-style folder with prompt ensembles."""
    from ..eval.datasets import image_folder_dataset
    from ..templates import TEMPLATE_SETS

    dataset = _open(lambda: image_folder_dataset(root, class_names))
    if templates not in TEMPLATE_SETS:
        raise UserError(f"--templates: unknown set {templates!r} (known: {', '.join(sorted(TEMPLATE_SETS))})")

    from ..eval.classification import evaluate_classification

    model = _model(model_name, device, image_size)
    result = evaluate_classification(model, dataset, templates=templates, embedding=embedding, batch_size=batch_size,
                                     image_size=image_size, limit=limit, progress=progress, autocast=autocast)
    lines = [f"top-1 {_fmt(result['top1'])}  top-5 {_fmt(result['top5'])}  mean per-class {_fmt(result['mean_per_class_accuracy'])}"
             f"  ({result['num_images']} images, {result['num_classes']} classes, {embedding}, {templates} templates)"]
    _finish(result, as_json, output, lines)


@eval_group.command("retrieval")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="Folder the images are found under.")
@click.option("--annotations", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Karpathy split file (default: dataset_coco.json / dataset_flickr30k.json in --root or its parent).")
@click.option("--split", default="test", show_default=True, help="Karpathy split: test, val, train or restval.")
@click.option("--embedding", type=click.Choice(["cls1", "cls2", "mean"]), default="cls1", show_default=True,
              help="Image vector: CLS1 (alt-text token), CLS2 (synthetic-caption token) or both similarities averaged.")
@click.option("--max-captions", type=POSITIVE, default=None, help="Use at most N captions per image (default: all).")
@click.option("--image-size", type=POSITIVE, default=None, help="Square encoder input (default: the model's).")
@_common
def retrieval(root: Path, annotations: Path | None, split: str, embedding: str, max_captions: int | None,
              image_size: int | None, model_name: str, device: str, limit: int | None, batch_size: int,
              autocast: bool, as_json: bool, output: Path | None, progress: bool) -> None:
    """Image↔text recall@1/5/10 on a COCO / Flickr30k Karpathy split."""
    from ..eval.datasets import karpathy_dataset

    dataset = _open(lambda: karpathy_dataset(root, annotations, split, max_captions))
    if dataset.missing:
        info(f"warning: {len(dataset.missing)} {split} image(s) of {dataset.annotations.name} not found under {root} "
             f"(first: {dataset.missing[0]}); they are left out")

    from ..eval.retrieval import evaluate_retrieval

    model = _model(model_name, device, image_size)
    result = evaluate_retrieval(model, dataset, embedding=embedding, batch_size=batch_size, image_size=image_size,
                                limit=limit, progress=progress, autocast=autocast)
    r = result
    lines = [f"{r['dataset']} {split}: {r['num_images']} images, {r['num_texts']} captions, {embedding}",
             f"  image->text  R@1 {_fmt(r['image_to_text_r1'])}  R@5 {_fmt(r['image_to_text_r5'])}  R@10 {_fmt(r['image_to_text_r10'])}",
             f"  text->image  R@1 {_fmt(r['text_to_image_r1'])}  R@5 {_fmt(r['text_to_image_r5'])}  R@10 {_fmt(r['text_to_image_r10'])}"]
    _finish(result, as_json, output, lines)


@eval_group.command("linear-seg")
@click.option("--dataset", "-d", "dataset_key", type=click.Choice(list(SEGMENTATION_DATASETS)), required=True)
@click.option("--root", required=True, type=click.Path(path_type=Path), help="Where the dataset lies (see docs/eval.md).")
@click.option("--train-split", default=None, help="Split the probe is trained on (default: train).")
@click.option("--split", default=None, help="Split to evaluate (default: val).")
@_probe_options
@_common
def linear_seg(dataset_key: str, root: Path, train_split: str | None, split: str | None, epochs: int, lr: float,
               weight_decay: float, probe_batch_size: int, seed: int, train_limit: int | None, image_size: int | None,
               target_size: int | None, cache_dir: Path | None, model_name: str, device: str, limit: int | None,
               batch_size: int, autocast: bool, as_json: bool, output: Path | None, progress: bool) -> None:
    """Linear probe on frozen patch features: train on the train split, mIoU on val."""
    from ..eval.datasets import open_segmentation

    train = _open(lambda: open_segmentation(dataset_key, root, train_split, train=True))
    val = _open(lambda: open_segmentation(dataset_key, root, split))

    from ..eval.linear_seg import evaluate_linear_segmentation
    from ..eval.probe import ProbeConfig

    model = _model(model_name, device, image_size)
    config = ProbeConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=probe_batch_size, seed=seed)
    result = evaluate_linear_segmentation(
        model, train, val, config=config, image_size=image_size, target_size=target_size, train_limit=train_limit,
        limit=limit, batch_size=batch_size, cache_dir=cache_dir, progress=progress, autocast=autocast)
    lines = [f"{dataset_key} {val.split} (linear probe, {result['num_train_images']} training images, {epochs} epochs): "
             f"mIoU {_fmt(result['miou'])}  pixel acc {_fmt(result['pixel_accuracy'])}  ({result['num_images']} images)"]
    _finish(result, as_json, output, lines + _per_class_lines(result["per_class_iou"], "IoU per class:"))


@eval_group.command("depth")
@click.option("--probe", type=click.Choice(["linear"]), default="linear", show_default=True, help="Probe head.")
@click.option("--root", required=True, type=click.Path(path_type=Path),
              help="NYU Depth v2: mmseg layout (images/, annotations/) or a folder with nyu_train.txt / nyu_test.txt.")
@click.option("--train-list", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="BTS-style training list (RGB DEPTH [FOCAL] per line, relative to --root).")
@click.option("--test-list", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="BTS-style test list.")
@click.option("--bins", type=click.IntRange(min=2), default=256, show_default=True, help="Depth bins of the head.")
@click.option("--min-depth", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--max-depth", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--eigen-crop/--no-eigen-crop", default=True, show_default=True, help="Evaluate inside the Eigen crop.")
@_probe_options
@_common
def depth(probe: str, root: Path, train_list: Path | None, test_list: Path | None, bins: int, min_depth: float,
          max_depth: float, eigen_crop: bool, epochs: int, lr: float, weight_decay: float, probe_batch_size: int,
          seed: int, train_limit: int | None, image_size: int | None, target_size: int | None, cache_dir: Path | None,
          model_name: str, device: str, limit: int | None, batch_size: int, autocast: bool, as_json: bool,
          output: Path | None, progress: bool) -> None:
    """NYU Depth v2 with a linear probe on frozen patch features: RMSE, AbsRel, delta1."""
    from ..eval.datasets import open_depth

    if min_depth >= max_depth:
        raise UserError(f"--min-depth ({min_depth}) must be below --max-depth ({max_depth})")
    train = _open(lambda: open_depth(root, "train", train_list))
    test = _open(lambda: open_depth(root, "test", test_list))

    from ..eval.depth import evaluate_depth
    from ..eval.probe import ProbeConfig

    model = _model(model_name, device, image_size)
    config = ProbeConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=probe_batch_size, seed=seed)
    result = evaluate_depth(
        model, train, test, config=config, image_size=image_size, target_size=target_size, bins=bins,
        min_depth=min_depth, max_depth=max_depth, eigen_crop=eigen_crop, train_limit=train_limit, limit=limit,
        batch_size=batch_size, cache_dir=cache_dir, progress=progress, autocast=autocast)
    r = result
    lines = [f"nyuv2 test ({probe} probe, {r['num_train_images']} training images, {epochs} epochs, {r['num_images']} test images):",
             f"  RMSE {_fmt(r['rmse'], 4)} m  AbsRel {_fmt(r['abs_rel'], 4)}  delta1 {_fmt(r['delta1'], 4)}  "
             f"delta2 {_fmt(r['delta2'], 4)}  delta3 {_fmt(r['delta3'], 4)}"]
    _finish(result, as_json, output, lines)


__all__ = ["eval_group"]
