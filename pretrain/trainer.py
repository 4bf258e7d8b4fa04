"""The training loop: config -> data -> objective -> optimizer steps -> metrics -> HF export.

``train(cfg)`` runs one job (one process, or one rank of a ``torchrun`` launch) and returns a
``TrainResult``. Each optimizer step: set the scheduled LR / weight decay, run ``accum_steps``
micro-batches forward/backward (bf16 autocast if configured), clip, step, update the EMA teacher,
log a JSON line, checkpoint when due, and stop early when ``schedule.max_minutes`` is spent. At the
end rank 0 writes an HF-format directory that ``tipsv2_sdk.load`` opens.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tipsv2_sdk.io import write_json
from tipsv2_sdk.model import TipsV2
from tipsv2_sdk.registry import ModelSpec
from tipsv2_sdk.tokenizer import TipsTokenizer
from . import build, launch
from .checkpoint import TrainState, latest_checkpoint, load_checkpoint, read_state, save_checkpoint
from .config import ConfigError, TrainConfig, save_config
from .data.collate import MicroBatches, make_loader
from .optim import apply_schedules, autocast, build_optimizer, clip_gradients
from .stages import maybe_resize_grid


@dataclass
class TrainResult:
    """Summary of a finished (or time-budget-stopped) run."""

    steps: int
    export_dir: Path | None
    metrics_file: Path
    elapsed_s: float
    stopped_early: bool
    bad_images: int
    last: dict[str, float] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0


class MetricsWriter:
    """JSON Lines on rank 0 (line "step" = steps done); on resume, lines of steps to be re-run are dropped."""

    def __init__(self, path: Path, start_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if start_step > 0 and path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
        from tipsv2_sdk.io import atomic_write

        with atomic_write(path, "w") as handle:
            handle.write("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True)


def parameter_counts(objective: torch.nn.Module) -> dict[str, int]:
    """Parameters updated by the optimizer vs all parameters the run holds (EMA copies, frozen teacher)."""
    params = list(objective.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "held": sum(p.numel() for p in params)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB); a fresh process gives the run's own peak."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _export(cfg: TrainConfig, network, tokenizer, spec, out: Path, step: int, summary: dict) -> Path:
    meta = {"trained": True, "steps": step, "variant": spec.name, "config": cfg.to_dict(), "train_summary": summary}
    name = cfg.model.variant if spec.name == cfg.model.variant else spec.name
    return TipsV2(network, tokenizer, name=name, source="pretrain", meta=meta).save_pretrained(out)


def train(cfg: TrainConfig, resume: bool | str | Path = False) -> TrainResult:
    """Run (or continue, with ``resume``) the training job described by ``cfg``.

    ``resume=True`` continues from the newest checkpoint in the checkpoint directory (starting
    fresh if there is none); a path names a checkpoint directory explicitly.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = launch.init_distributed(cfg.device, cfg.distributed)
    try:
        return _train(cfg, env, resume)
    finally:
        launch.shutdown(env)


@dataclass
class _Run:
    """Everything the loop needs, built by ``_prepare``."""

    spec: ModelSpec
    tokenizer: TipsTokenizer
    objective: torch.nn.Module
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    state: TrainState
    batches: MicroBatches
    counts: dict
    out: Path
    ckpt_dir: Path
    metrics_path: Path


def _checkpoint_to_resume(resume, ckpt_dir: Path) -> Path | None:
    if not resume:
        return None
    ckpt = Path(resume) if not isinstance(resume, bool) else latest_checkpoint(ckpt_dir)
    if ckpt is not None and not (ckpt / "state.json").is_file():
        raise ConfigError(f"--resume: {ckpt} is not a checkpoint directory")
    return ckpt


def _prepare(cfg: TrainConfig, env: launch.DistEnv, resume) -> _Run:
    """Validate the config, build data, network, tokenizer, objective, optimizer; load a checkpoint."""
    out = Path(cfg.output_dir)
    ckpt_dir = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else out / "checkpoints"
    metrics_path = Path(cfg.logging.metrics_file) if cfg.logging.metrics_file else out / "metrics.jsonl"
    spec = build.model_spec(cfg.model)
    build.check_sizes(cfg, spec)
    sharded = env.distributed and cfg.distributed.strategy == "fsdp"
    if sharded and cfg.schedule.hires_steps > 0 and cfg.schedule.hires_resize_grid:
        raise ConfigError("schedule.hires_resize_grid cannot change sharded (FSDP) parameters mid-run; set it to "
                          "false (position embeddings are then interpolated on the fly)")
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    dataset = build.build_dataset(cfg)
    network = build.build_network(cfg, spec)
    teacher = build.load_teacher(cfg, env.device) if cfg.distill.enabled else None
    if teacher is not None and cfg.model.tokenizer is None and teacher.tokenizer is not None:
        tokenizer = teacher.tokenizer  # the student reads text the way its teacher does
    else:
        tokenizer = build.build_tokenizer(cfg, spec, dataset, out, env.is_main, barrier=lambda: launch.barrier(env))
    if tokenizer.vocab_size > network.config.text_config.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} pieces but the text tower only "
                          f"{network.config.text_config.vocab_size}; raise model.vocab_size")
    objective = build.build_objective(cfg, network, cfg.schedule.total_steps, teacher).to(env.device).train()
    counts = parameter_counts(objective)  # before any sharding

    ckpt = _checkpoint_to_resume(resume, ckpt_dir)
    if ckpt is not None:
        maybe_resize_grid(objective, cfg, int(read_state(ckpt)["step"]))  # stage-2 shapes before loading
    # Wrap first: FSDP replaces the parameters, and the optimizer must hold the ones it trains.
    module = launch.wrap(objective, env, cfg.distributed.strategy)
    optimizer = build_optimizer(objective.parameter_groups(cfg.optim.weight_decay), cfg.optim)
    state = load_checkpoint(ckpt, module, optimizer) if ckpt is not None else TrainState(step=0, data_position=0)
    batches = build.micro_batches(cfg, dataset, tokenizer, spec, env.rank, env.world_size)
    return _Run(spec, tokenizer, objective, module, optimizer, state, batches, counts, out, ckpt_dir, metrics_path)


def _train(cfg: TrainConfig, env: launch.DistEnv, resume) -> TrainResult:
    run = _prepare(cfg, env, resume)
    objective, module, optimizer, state, batches = run.objective, run.module, run.optimizer, run.state, run.batches
    total = cfg.schedule.total_steps
    accum = cfg.optim.accum_steps
    loader = iter(make_loader(batches, state.step * accum, cfg.data.num_workers, cfg.data.prefetch))
    metrics = MetricsWriter(run.metrics_path, state.step, env.is_main)
    bar = _progress(total, state.step, cfg.logging.progress and env.is_main)

    t_start, elapsed_before = time.perf_counter(), state.elapsed_s
    budget = cfg.schedule.max_minutes * 60.0 if cfg.schedule.max_minutes else None
    step, stopped_early, first, last = state.step, False, {}, {}
    bad_images = state.bad_images
    while step < total:
        if maybe_resize_grid(objective, cfg, step, optimizer):
            module = launch.wrap(launch.unwrap(module), env, cfg.distributed.strategy)
        t0 = time.perf_counter()
        lr, wd = apply_schedules(optimizer, cfg.optim, step, total)
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        n_images = 0
        for micro in range(accum):
            batch = next(loader)
            bad_images += int(batch.pop("bad_images"))
            batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
            n_images += int(batch["global_crops"].shape[0])
            with launch.no_sync(module, micro < accum - 1), autocast(cfg.optim.bf16, env.device):
                output = module(batch, step)
            (output.loss / accum).backward()
            for k, v in output.terms.items():
                sums[k] = sums.get(k, 0.0) + v / accum
        trained = [p for g in optimizer.param_groups for p in g["params"]]
        launch.reduce_replicated_grads(trained, env, cfg.distributed.strategy)
        grad_norm = clip_gradients(trained, cfg.optim.grad_clip)
        optimizer.step()
        momentum = objective.update_teacher(step)
        step += 1
        step_s = time.perf_counter() - t0
        elapsed = elapsed_before + time.perf_counter() - t_start

        if step % cfg.logging.every_steps == 0 or step == total or step == 1:
            terms = launch.mean_over_ranks(sums, env)
            record = {"step": step, **terms, "lr": lr, "weight_decay": wd, "ema_momentum": momentum,
                      "grad_norm": grad_norm, "step_s": step_s, "images_per_s": n_images * env.world_size / step_s,
                      "elapsed_s": elapsed, "bad_images": bad_images}
            metrics.write(record)
            first = first or record
            last = record
            bar.set_postfix(loss=f"{terms.get('loss', float('nan')):.3f}", s_step=f"{step_s:.2f}", refresh=False)
        bar.update(1)

        stopped_early = budget is not None and launch.any_rank(elapsed >= budget, env) and step < total
        state = TrainState(step=step, data_position=batches.plan.first_position(step), elapsed_s=elapsed,
                           bad_images=bad_images)
        every = cfg.checkpoint.every_steps
        if every and (step % every == 0 or step == total or stopped_early):
            save_checkpoint(run.ckpt_dir, module, optimizer, state, cfg.to_dict(), cfg.checkpoint.keep, env.is_main)
        if stopped_early:
            break
    bar.close()

    export_dir = None
    summary = {"steps": step, "elapsed_s": state.elapsed_s, "stopped_early": stopped_early,
               "bad_images": bad_images, "final": {k: v for k, v in last.items() if isinstance(v, float)},
               "parameters": run.counts, "peak_rss_mb": peak_rss_mb(), "world_size": env.world_size}
    network = launch.export_network(module, env, cfg.distributed.strategy)
    if env.is_main:
        export_dir = _export(cfg, network, run.tokenizer, run.spec, run.out / cfg.export_name, step, summary)
        write_json(run.out / "train_summary.json", summary)
    launch.barrier(env)
    return TrainResult(steps=step, export_dir=export_dir, metrics_file=run.metrics_path, elapsed_s=state.elapsed_s,
                       stopped_early=stopped_early, bad_images=bad_images, last=last, first=first,
                       parameters=run.counts, peak_rss_mb=summary["peak_rss_mb"])


__all__ = ["train", "TrainResult", "MetricsWriter", "parameter_counts", "peak_rss_mb"]
