"""The TIPSv2 ablation ladder in miniature (the paper's Table 4) on the synthetic shapes data.

Cumulative rungs, each trained with the same budget from scratch and evaluated with
``evaluate_shapes`` (zero-shot segmentation mIoU, retrieval recall@1 both ways, k-NN):

1. TIPS baseline: CLIP x2 + DINO + iBOT (masked tokens only), full-model EMA, one synthetic caption;
2. + iBOT++ (patch loss on every token);
3. + multi-granularity captions (CLS2 alternates short / long captions);
4. + head-only EMA (= TIPSv2);
5. distillation of a half-width student from rung 4, frozen teacher, no masking.

Each rung runs in its own process by default, so its peak memory is its own. Results go to
``<out>/results.json`` and a markdown table + PNG plot to the docs file.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tipsv2_sdk.io import write_json
from .config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parent / "configs"
METRICS = ("seg_miou", "seg_pixel_acc", "seg_miou_color", "seg_pixel_acc_color", "t2i_r1_long_cls2", "i2t_r1_long_cls2", "t2i_r1_alt_cls1", "knn_acc_cls1")
# ADE150 zero-shot mIoU of the paper's Table 4 (ViT-g, 100k steps); distillation has no Table-4 row.
PAPER_ADE150 = {"tips": 3.5, "ibot_pp": 17.6, "captions": 18.1, "tipsv2": 19.1}


@dataclass(frozen=True)
class Rung:
    """One row of the ladder: config overrides on top of the base config."""

    key: str
    label: str
    overrides: tuple[str, ...]


LADDER = (
    Rung("tips", "TIPS (iBOT, full EMA, 1 caption)",
         ("objective.ibot_all_tokens=false", "objective.teacher=full_ema", "objective.multi_granularity=false")),
    Rung("ibot_pp", "+ iBOT++",
         ("objective.ibot_all_tokens=true", "objective.teacher=full_ema", "objective.multi_granularity=false")),
    Rung("captions", "+ multi-granularity captions",
         ("objective.ibot_all_tokens=true", "objective.teacher=full_ema", "objective.multi_granularity=true")),
    Rung("tipsv2", "+ head-only EMA (= TIPSv2)",
         ("objective.ibot_all_tokens=true", "objective.teacher=head_ema", "objective.multi_granularity=true")),
)


def student_overrides(cfg, teacher_dir: Path) -> tuple[str, ...]:
    """Half-width student (a multiple of the head count) distilled from ``teacher_dir``, with the
    pre-training run's head sizes and EMA schedule."""
    from .build import model_spec

    spec = model_spec(cfg.model)
    student = max(spec.heads * 8, (spec.width // 2) // spec.heads * spec.heads)
    o = cfg.objective
    return (f"model.width={student}", "distill.enabled=true", f"distill.teacher={teacher_dir}",
            f"model.tokenizer={teacher_dir / 'tokenizer.model'}", f"distill.head_prototypes={o.head_prototypes}",
            f"distill.head_hidden={o.head_hidden}", f"distill.head_bottleneck={o.head_bottleneck}",
            f"distill.head_layers={o.head_layers}", f"distill.ema_momentum_start={o.ema_momentum_start}")


def _run_rung(base: Path, overrides: list[str], out: Path, isolate: bool) -> dict:
    """Train one rung; returns its ``train_summary.json``."""
    args = [f"output_dir={out}", *overrides]
    if isolate:
        cmd = [sys.executable, "-m", "tipsv2_sdk.pretrain", "train", "--config", str(base), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if proc.returncode != 0:
            raise RuntimeError(f"rung {out.name} failed:\n{proc.stderr[-4000:]}")
    else:
        from .trainer import train

        train(load_config(base, args))
    return json.loads((out / "train_summary.json").read_text())


def _evaluate(model_dir: Path, smoke: bool) -> dict:
    """The same held-out scenes for every rung and seed."""
    from tipsv2_sdk.loading import load
    from .evaluate import evaluate_shapes

    n_val, n_train = (16, 32) if smoke else (200, 1000)
    return evaluate_shapes(load(model_dir), n_val=n_val, n_train=n_train, seed=0).to_dict()


def _row(summary: dict, scores: dict, seed: int) -> dict:
    steps, elapsed = summary["steps"], max(summary["elapsed_s"], 1e-9)
    return {"seed": seed, **scores, "steps": steps, "elapsed_s": elapsed, "steps_per_s": steps / elapsed,
            "peak_rss_mb": summary["peak_rss_mb"], "trainable_params": summary["parameters"]["trainable"],
            "held_params": summary["parameters"]["held"], "final_loss": summary["final"].get("loss")}


def _mean(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "seed" and isinstance(rows[0][k], (int, float))]
    out = {k: statistics.fmean(r[k] for r in rows) for k in keys}
    if len(rows) > 1:
        out.update({f"{k}_std": statistics.stdev(r[k] for r in rows) for k in METRICS})
    return out


def run_ladder(out_dir: str | os.PathLike, *, docs_file: str | os.PathLike | None = None, steps: int | None = None,
               minutes: float | None = None, seeds: int = 1, smoke: bool = False, overrides: list[str] | None = None,
               config: str | os.PathLike | None = None, isolate: bool | None = None, jobs: int = 1) -> dict:
    """Train and evaluate every rung (``seeds`` times each); write results.json, the table and the plot.

    ``jobs`` > 1 trains that many seeds of a rung at once, each in its own process (the rungs stay
    in order: the distilled student needs the TIPSv2 rung of its seed).
    """
    out = Path(out_dir)
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    isolate = (not smoke or jobs > 1) if isolate is None else isolate
    if jobs > 1 and not isolate:
        raise ConfigError("jobs > 1 needs one process per run (isolate=True): in-process runs share torch's threads")
    base = Path(config) if config else CONFIGS / ("tiny_test.yaml" if smoke else "tiny_shapes.yaml")
    budget = [f"schedule.steps={steps or (3 if smoke else 500)}",
              f"schedule.max_minutes={minutes if minutes else 'null'}", "checkpoint.every_steps=0",
              "logging.progress=false", *(overrides or [])]
    cfg = load_config(base, budget)  # validates the overrides once, before any training
    docs = Path(docs_file) if docs_file else out / "ablation.md"
    check_report_target(docs)  # before the runs: a report that cannot be written must not cost the ladder
    results: dict = {"base_config": base.name, "budget": {"steps": cfg.schedule.steps, "max_minutes": minutes},
                     "seeds": seeds, "smoke": smoke, "paper_ade150_zero_shot": PAPER_ADE150, "rungs": []}
    rungs = [*LADDER, Rung("distill", "distilled half-width student (from TIPSv2)", ())]

    def run_seed(rung: Rung, seed: int) -> dict:
        run_dir = out / f"{rung.key}-seed{seed}"
        extra = list(rung.overrides)
        if rung.key == "distill":
            extra = list(student_overrides(cfg, out / f"tipsv2-seed{seed}" / "model"))
        seeds_ = [f"seed={seed}", f"objective.seed={seed}", f"distill.seed={seed}"]  # init, crops, masks
        summary = _run_rung(base, [*budget, *seeds_, *extra], run_dir, isolate)
        return _row(summary, _evaluate(run_dir / "model", smoke), seed)

    # Import the evaluation's modules once here: transformers' lazy first import is not thread-safe,
    # and two seeds finishing together would otherwise race on it (ImportError of Tipsv2Model).
    import importlib

    getattr(importlib.import_module("transformers"), "Tipsv2Model")
    importlib.import_module("tipsv2_sdk.loading")
    importlib.import_module(f"{__package__}.evaluate")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for rung in rungs:
            rows = list(pool.map(lambda seed: run_seed(rung, seed), range(seeds)))
            results["rungs"].append({"key": rung.key, "label": rung.label, "overrides": list(rung.overrides),
                                     "runs": rows, "mean": _mean(rows)})
            write_json(out / "results.json", results)  # partial results survive an interrupted ladder
    write_report(results, docs)
    results["docs"] = str(docs)
    return results


REPORT_BEGIN = "<!-- ablation table: written by `tipsv2 pretrain ablate`, edit outside these markers -->"
REPORT_END = "<!-- end of ablation table -->"


def check_report_target(docs: Path) -> None:
    """Refuse a markdown file that exists but has no generated-block markers (its text would be lost)."""
    if docs.is_file():
        text = docs.read_text(encoding="utf-8")
        if REPORT_BEGIN not in text or REPORT_END not in text:
            raise ConfigError(f"{docs} exists and has no ablation-table markers; add the two lines\n{REPORT_BEGIN}\n"
                             f"{REPORT_END}\nwhere the table goes, or pass another --docs file")


def write_report(results: dict, docs: Path) -> None:
    """Markdown table (ours next to the paper's) and a PNG bar plot beside it.

    A new file gets just the generated block; an existing one keeps everything outside the markers
    (hand-written analysis), so rerunning the ladder refreshes the numbers without losing the text.
    """
    from tipsv2_sdk.io import atomic_write

    check_report_target(docs)

    docs.parent.mkdir(parents=True, exist_ok=True)
    png = docs.with_suffix(".png")
    plot(results, png)
    lines = [
        "| rung | zero-shot seg mIoU (shape) | pixel acc | zero-shot seg mIoU (colour) | pixel acc | T→I R@1 (long, CLS2) | I→T R@1 (long, CLS2) | T→I R@1 (alt, CLS1) "
        "| k-NN acc | trainable params | held params | peak RSS MB | steps/s | paper ADE150-ZS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rung in results["rungs"]:
        m = rung["mean"]

        def cell(k: str) -> str:
            std = m.get(f"{k}_std")
            return f"{100 * m[k]:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")

        paper = PAPER_ADE150.get(rung["key"])
        lines.append(
            f"| {rung['label']} | {cell('seg_miou')} | {cell('seg_pixel_acc')} | {cell('seg_miou_color')} "
            f"| {cell('seg_pixel_acc_color')} | {cell('t2i_r1_long_cls2')} "
            f"| {cell('i2t_r1_long_cls2')} | {cell('t2i_r1_alt_cls1')} | {cell('knn_acc_cls1')} "
            f"| {m['trainable_params']:,.0f} | {m['held_params']:,.0f} | {m['peak_rss_mb']:.0f} "
            f"| {m['steps_per_s']:.2f} | {paper if paper is not None else '-'} |"
        )
    first = results["rungs"][0]["mean"]
    chance = (f"Chance: R@1 = {100 * first['chance_r1']:.1f}%, k-NN majority class = {100 * first['chance_knn']:.1f}%.")
    body = [f"Budget per rung: {results['budget']['steps']} steps"
            + (f" (at most {results['budget']['max_minutes']} min)" if results["budget"]["max_minutes"] else "")
            + f", {results['seeds']} seed(s), base config `{results['base_config']}`. Scores in %.", "",
            *lines, "", chance, "", *agreement(results), "", f"![ablation ladder]({png.name})"]
    block = "\n".join([REPORT_BEGIN, *body, REPORT_END])
    if docs.is_file():
        text = docs.read_text(encoding="utf-8")
        head, rest = text.split(REPORT_BEGIN, 1)
        block = head + block + rest.split(REPORT_END, 1)[1]
    else:
        block += "\n"
    with atomic_write(docs, "w") as handle:
        handle.write(block)


def agreement(results: dict) -> list[str]:
    """One line per rung change and segmentation target: our zero-shot mIoU delta against the
    paper's direction, and whether it exceeds the seed-to-seed spread (the larger std of the two)."""
    by_key = {r["key"]: r["mean"] for r in results["rungs"]}
    keys = [k for k in ("tips", "ibot_pp", "captions", "tipsv2") if k in by_key]
    lines = []
    for a, b in zip(keys, keys[1:]):
        paper = PAPER_ADE150[b] - PAPER_ADE150[a]
        parts = []
        for metric, name in (("seg_miou", "shape"), ("seg_miou_color", "colour")):
            ours = 100 * (by_key[b][metric] - by_key[a][metric])
            verdict = "agrees" if (ours > 0) == (paper > 0) else "disagrees"
            spread = max(by_key[a].get(f"{metric}_std", 0.0), by_key[b].get(f"{metric}_std", 0.0)) * 100
            beyond = "" if f"{metric}_std" not in by_key[a] else (
                f", {'beyond' if abs(ours) > spread else 'within'} the seed spread of {spread:.1f}")
            parts.append(f"{name} {ours:+.1f} ({verdict}{beyond})")
        lines.append(f"- {a} → {b}: zero-shot mIoU {'; '.join(parts)} points here, {paper:+.1f} in the paper.")
    return lines


def plot(results: dict, path: Path) -> None:
    """Grouped bars of the main scores per rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("seg_miou", "seg_miou_color", "t2i_r1_long_cls2", "i2t_r1_long_cls2", "knn_acc_cls1")
    names = ("zero-shot seg mIoU (shape)", "zero-shot seg mIoU (colour)", "T→I R@1", "I→T R@1", "k-NN acc")
    rungs = results["rungs"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(shown)
    for i, (key, name) in enumerate(zip(shown, names)):
        xs = [j + (i - (len(shown) - 1) / 2) * width for j in range(len(rungs))]
        ax.bar(xs, [100 * r["mean"][key] for r in rungs], width, label=name)
    ax.set_xticks(range(len(rungs)), [r["key"] for r in rungs])
    ax.set_ylabel("%")
    ax.set_title("TIPSv2 ablation ladder on synthetic shapes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["LADDER", "Rung", "run_ladder", "write_report", "agreement", "plot", "PAPER_ADE150", "ConfigError"]
