"""``tipsv2 pretrain``: train, count training parameters, run the ablation ladder, evaluate on the
synthetic data, probe patch features.

``tipsv2 pretrain --config CFG [key=value ...]`` is short for ``tipsv2 pretrain train ...``.
"""
from __future__ import annotations

from pathlib import Path

import click

from tipsv2_sdk.cli.common import UserError, echo_json, info, load_model, model_option, user_errors


class DefaultGroup(click.Group):
    """A group that runs ``train`` when the first argument is not a subcommand."""

    default_command = "train"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        elif not args:
            args = [self.default_command]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
def pretrain() -> None:
    """Train TIPSv2 models (default command: train)."""


def _load(config_path, overrides):
    from .config import ConfigError, load_config

    try:
        return load_config(config_path, list(overrides))
    except ConfigError as exc:
        raise UserError(str(exc)) from None


@pretrain.command("train")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (see pretrain/configs/); omitted = all defaults.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint of this run.")
@click.option("--resume-from", type=click.Path(file_okay=False, exists=True), default=None,
              help="Continue from this checkpoint directory.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as JSON and exit.")
@click.argument("overrides", nargs=-1)
@user_errors
def train_command(config_path, resume, resume_from, print_config, overrides) -> None:
    """Train with CONFIG and dotted KEY=VALUE overrides (e.g. optim.lr=3e-4 schedule.steps=200)."""
    # The config file and the shape of the overrides are checked before the config module (which
    # imports torch) loads.
    if config_path is not None and not Path(config_path).is_file():
        raise UserError(f"config file {config_path} not found")
    for item in overrides:
        if "=" not in item:
            hint = " (a config file goes after --config)" if item.endswith((".yaml", ".yml")) else ""
            raise UserError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4){hint}")
    from .config import ConfigError

    cfg = _load(config_path, overrides)
    if print_config:
        echo_json(cfg.to_dict())
        return
    from .trainer import train

    try:
        result = train(cfg, resume=resume_from or resume)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if result.export_dir is not None:
        state = "stopped at the time budget" if result.stopped_early else "finished"
        info(f"{state} after {result.steps} steps ({result.elapsed_s / 60:.1f} min); model: {result.export_dir}")
        echo_json({"steps": result.steps, "export_dir": str(result.export_dir), "elapsed_s": result.elapsed_s,
                   "stopped_early": result.stopped_early, "bad_images": result.bad_images,
                   "metrics_file": str(result.metrics_file), "final": result.last})


@pretrain.command("params")
@click.option("--variant", default="tipsv2-b14", show_default=True, help="Registry name to count.")
@click.option("--prototypes", type=int, default=65536, show_default=True,
              help="Prototypes per head for the whole-process count (`reduction`).")
@click.option("--paper-prototypes", type=int, default=8192, show_default=True,
              help="Prototypes per head for the paper's image-side accounting (`paper_reduction`).")
@click.option("--paper-shared-head", is_flag=True,
              help="Paper accounting with one head shared by CLS and patch tokens (e.g. with --paper-prototypes 32768).")
@click.option("--paper-count-text", is_flag=True, help="Paper accounting: count the student text tower too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def params_command(variant, prototypes, paper_prototypes, paper_shared_head, paper_count_text, as_json) -> None:
    """Parameters held for training with head-only vs full EMA (counted on the meta device).

    `reduction` counts everything a training process holds (both towers, two heads of --prototypes);
    `paper_reduction` counts the image side only (encoder + heads + EMA copies), which with
    8,192-prototype heads gives the paper's ~42% for ViT-B.
    """
    from tipsv2_sdk.registry import get_spec
    from .params import paper_parameter_counts, training_parameter_counts

    get_spec(variant)  # unknown names -> one-line error
    for name, value in (("--prototypes", prototypes), ("--paper-prototypes", paper_prototypes)):
        if value < 1:
            raise UserError(f"{name} must be a positive number of prototypes, got {value}")
    counts = training_parameter_counts(variant, prototypes=prototypes)
    paper = paper_parameter_counts(variant, prototypes=paper_prototypes, shared_head=paper_shared_head,
                                   include_text=paper_count_text)
    counts.update(paper_reduction=paper["reduction"], paper=paper)
    if as_json:
        echo_json(counts)
        return
    click.echo(f"{variant}: full EMA {counts['full_ema']:,} / head-only EMA {counts['head_ema']:,} parameters "
               f"-> {100 * counts['reduction']:.1f}% fewer")
    click.echo(f"counted: {counts['counted']}")
    click.echo(f"paper accounting: full EMA {paper['full_ema']:,} / head-only EMA {paper['head_ema']:,} "
               f"-> {100 * paper['reduction']:.1f}% fewer (the paper: ~42% for ViT-B)")
    click.echo(f"counted: {paper['counted']}")
    for teacher in ("full_ema", "head_ema"):
        terms = " + ".join(f"{k} {v:,}" for k, v in paper["terms"][teacher].items())
        click.echo(f"  {teacher}: {terms}")


@pretrain.command("ablate")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/ablation", show_default=True,
              help="Directory for the runs and results.json.")
@click.option("--docs", "docs_file", type=click.Path(dir_okay=False), default=None,
              help="Markdown file receiving the table and plot (default: <out>/ablation.md).")
@click.option("--steps", type=int, default=None, help="Optimizer steps per rung (default: the ladder's).")
@click.option("--minutes", type=float, default=None, help="Wall-clock budget per rung instead of/besides steps.")
@click.option("--seeds", type=int, default=1, show_default=True, help="Seeds per rung.")
@click.option("--smoke", is_flag=True, help="Seconds-long version with tiny sizes (for CI).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Base config of every rung (default: tiny_shapes.yaml; tiny_test.yaml with --smoke).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds of a rung trained at once, one process each (use one per core).")
@click.argument("overrides", nargs=-1)
@user_errors
def ablate_command(out_dir, docs_file, steps, minutes, seeds, smoke, config_file, jobs, overrides) -> None:
    """Train the TIPS -> TIPSv2 ladder (+ distillation) with a fixed budget each and tabulate."""
    from .ablate import run_ladder
    from .config import ConfigError

    try:
        results = run_ladder(out_dir, docs_file=docs_file, steps=steps, minutes=minutes, seeds=seeds, smoke=smoke,
                             overrides=list(overrides), config=config_file, jobs=jobs)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    echo_json(results)


@pretrain.command("probe")
@model_option
@click.option("--dataset", type=click.Choice(["shapes", "scenes"]), default="shapes", show_default=True,
              help="Synthetic generator the probe scenes come from.")
@click.option("--n-train", type=click.IntRange(min=1), default=600, show_default=True,
              help="Training-split scenes the probe is fitted on.")
@click.option("--n-val", type=click.IntRange(min=1), default=200, show_default=True, help="Held-out scenes it is scored on.")
@click.option("--size", type=click.IntRange(min=14), default=None, help="Image size (default: the model's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def probe_command(model_name, dataset, n_train, n_val, size, as_json) -> None:
    """Linear probe of patch features -> object class on held-out synthetic scenes.

    Tells whether the patch tokens encode the objects at all (high probe, low zero-shot mIoU: the
    text side is the problem; probe near chance: the encoder never learned the classes).
    """
    from .probe import patch_shape_probe

    model = load_model(model_name)
    try:
        result = patch_shape_probe(model, n_train=n_train, n_val=n_val, dataset=dataset, size=size)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(f"patch probe ({dataset}, {result.n_train_patches:,} train / {result.n_val_patches:,} held-out object "
               f"patches, {result.grid[0]}x{result.grid[1]} grid): accuracy {100 * result.accuracy:.1f}% "
               f"(chance {100 * result.chance:.1f}%), balanced {100 * result.balanced_accuracy:.1f}% "
               f"(chance {100 * result.balanced_chance:.1f}%)")
    for name, acc in result.per_class.items():
        click.echo(f"  {name}: {100 * acc:.1f}%")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


@pretrain.command("evaluate")
@model_option
@click.option("--dataset", type=click.Choice(["shapes", "scenes"]), default="shapes", show_default=True,
              help="Synthetic generator the held-out scenes come from.")
@click.option("--n-val", type=click.IntRange(min=1), default=200, show_default=True, help="Held-out scenes scored.")
@click.option("--n-train", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Training-split scenes in the k-NN memory bank.")
@click.option("--size", type=click.IntRange(min=14), default=None, help="Image size (default: the model's).")
@click.option("--drawn/--no-drawn", default=True, show_default=True,
              help="Also score the fixed shapes drawn by anyone (flat colours on plain pages).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def evaluate_command(model_name, dataset, n_val, n_train, size, drawn, as_json) -> None:
    """Zero-shot segmentation, retrieval and k-NN of a model on held-out synthetic scenes."""
    from .drawn import evaluate_drawn
    from .evaluate import evaluate_shapes

    model = load_model(model_name)
    scores = evaluate_shapes(model, n_val=n_val, n_train=n_train, size=size, dataset=dataset).to_dict()
    drawn_scores = evaluate_drawn(model, size=size).to_dict() if drawn else None
    if as_json:
        echo_json({"model": model_name, **scores, **({"drawn": drawn_scores} if drawn else {})})
        return
    click.echo(f"{model_name} on {n_val} held-out {dataset} scenes:")
    rows = [("zero-shot segmentation mIoU, by shape (9 classes)", scores["seg_miou"], None),
            ("zero-shot segmentation mIoU, by colour (object pixels)", scores["seg_miou_color"], None),
            ("text -> image recall@1 (long captions vs CLS2)", scores["t2i_r1_long_cls2"], scores["chance_r1"]),
            ("image -> text recall@1 (CLS2 vs long captions)", scores["i2t_r1_long_cls2"], scores["chance_r1"]),
            ("text -> image recall@1 (alt-text vs CLS1)", scores["t2i_r1_alt_cls1"], scores["chance_r1"]),
            (f"k-NN (k=10, {n_train} scenes) dominant shape from CLS1", scores["knn_acc_cls1"], scores["chance_knn"])]
    if drawn:
        rows += [(f"drawn shapes ({drawn_scores['n_cases']}): mIoU by shape", drawn_scores["miou"], None),
                 ("drawn shapes: object IoU of the drawn shape", drawn_scores["object_iou"], None),
                 ("drawn shapes: foreground IoU", drawn_scores["foreground_iou"], None),
                 ("drawn shapes: object pixels given their colour", drawn_scores["color_accuracy"], 1 / 8),
                 ("drawn: red circle on white, object IoU", drawn_scores["red_circle_on_white"], None)]
    width = max(len(name) for name, _, _ in rows)
    for name, value, chance in rows:
        suffix = f"  (chance {_pct(chance)})" if chance is not None else ""
        click.echo(f"  {name:<{width}}  {_pct(value):>6}{suffix}")


__all__ = ["pretrain"]
