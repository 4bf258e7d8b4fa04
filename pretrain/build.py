"""Build the pieces of a run from its config: network, tokenizer, dataset, objective, data stream."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tipsv2_sdk.errors import TipsV2Error
from tipsv2_sdk.registry import ModelSpec, get_spec, make_config
from tipsv2_sdk.tokenizer import TOKENIZER_FILE, TipsTokenizer, train_sentencepiece
from .captions import CaptionSampler
from .config import ConfigError, ModelConfig, TrainConfig
from .data.collate import BatchBuilder, MicroBatches, Stage, StagePlan

SPEC_OVERRIDES = ("width", "depth", "heads", "mlp_ratio", "text_depth", "image_size", "vocab_size", "max_text_len")


def model_spec(cfg: ModelConfig) -> ModelSpec:
    """The registry entry of ``cfg.variant`` with the config's size overrides applied."""
    try:
        spec = get_spec(cfg.variant)
    except TipsV2Error as exc:
        raise ConfigError(f"model.variant: {exc}") from None
    changes = {k: getattr(cfg, k) for k in SPEC_OVERRIDES if getattr(cfg, k) is not None}
    if "width" in changes:
        changes.setdefault("text_width", None)
        changes.setdefault("text_mlp", None)
    if changes:
        spec = dataclasses.replace(spec, name=f"{spec.name}-custom", hub_id=None, embedded=False, **changes)
    if spec.width % spec.heads:
        raise ConfigError(f"model.width={spec.width} is not divisible by model.heads={spec.heads}")
    return spec


def build_dataset(cfg: TrainConfig):
    """The training dataset named by ``data.source``."""
    data = cfg.data
    if data.source == "shapes":
        from .data.shapes import ShapesDataset

        return ShapesDataset("train", size=data.shapes_size, seed=data.shapes_seed, length=data.shapes_length,
                             max_objects=data.shapes_max_objects)
    if data.source == "scenes":
        from .data.scenes import SceneDataset

        return SceneDataset("train", size=data.shapes_size, seed=data.shapes_seed, length=data.shapes_length,
                            max_objects=data.shapes_max_objects)
    if data.captions is None:
        raise ConfigError("data.source='folder' needs data.captions (a JSONL file)")
    from .data.folder import ImageCaptionFolder

    return ImageCaptionFolder(data.captions, root=data.root)


def caption_corpus(cfg: TrainConfig, dataset) -> list[str]:
    """Captions that train the tokenizer when the config names none."""
    limit = cfg.model.tokenizer_corpus
    if cfg.data.source == "shapes":
        from .data.shapes import caption_corpus as shapes_corpus

        return shapes_corpus(n=limit, seed=cfg.data.shapes_seed, size=56)
    if cfg.data.source == "scenes":
        from .data.scenes import scene_corpus

        return scene_corpus(n=limit, seed=cfg.data.shapes_seed, size=56)
    return dataset.caption_corpus(limit)


def build_tokenizer(cfg: TrainConfig, spec: ModelSpec, dataset, out_dir: Path, is_main: bool = True,
                    barrier=None) -> TipsTokenizer:
    """The configured tokenizer, or one trained on the dataset captions (rank 0 trains, others wait)."""
    if cfg.model.tokenizer is not None:
        return TipsTokenizer(cfg.model.tokenizer, max_length=spec.max_text_len)
    path = out_dir / "tokenizer" / TOKENIZER_FILE
    if is_main and not path.is_file():
        train_sentencepiece(caption_corpus(cfg, dataset), path, vocab_size=spec.vocab_size)
    if barrier is not None:
        barrier()
    return TipsTokenizer(path, max_length=spec.max_text_len)


def build_network(cfg: TrainConfig, spec: ModelSpec):
    """A fresh ``Tipsv2Model`` (seeded by ``cfg.seed``) or the weights of ``model.init_from``.

    A fresh model starts at ``model.temperature_init`` (0.07 unless told otherwise); ``init_from``
    keeps the loaded model's temperature.
    """
    from transformers import Tipsv2Model

    from tipsv2_sdk.hf_utils import quiet_transformers

    if cfg.model.init_from is not None:
        from tipsv2_sdk.loading import load_directory

        return load_directory(cfg.model.init_from).hf_model.train()
    config = make_config(spec)
    if cfg.model.temperature_init is not None:
        if not cfg.model.temperature_init > 0:
            raise ConfigError(f"model.temperature_init must be positive, got {cfg.model.temperature_init}")
        config.temperature_init_value = cfg.model.temperature_init
    torch.manual_seed(cfg.seed)
    with quiet_transformers():
        network = Tipsv2Model(config).train()
    if cfg.model.scaled_token_init:
        # The text tower multiplies token embeddings by sqrt(width) and adds sinusoidal positions of unit
        # amplitude (the Transformer convention, which assumes N(0, 1/width) embeddings). transformers'
        # generic N(0, 0.02) init leaves tokens 1/(0.02 sqrt(width)) times weaker than positions, so a fresh
        # tower first encodes mostly caption length; this init makes both of unit variance.
        embedding = network.text_model.embeddings.token_embedding.weight
        with torch.no_grad():
            embedding.normal_(0.0, embedding.shape[1] ** -0.5)
    return network


def stage_plan(cfg: TrainConfig) -> StagePlan:
    """Stage 1 (data.* crop sizes) and, if ``schedule.hires_steps``, stage 2 (hi-res crops)."""
    s, d = cfg.schedule, cfg.data
    stages = [Stage(0, s.steps, d.batch_size, d.global_crop_size, d.local_crop_size)]
    if s.hires_steps > 0:
        stages.append(Stage(s.steps, s.hires_steps, s.hires_batch_size or d.batch_size,
                            s.hires_global_crop_size, s.hires_local_crop_size))
    return StagePlan(stages)


def check_sizes(cfg: TrainConfig, spec: ModelSpec) -> None:
    """Crop sizes must be multiples of the patch size; steps and batches positive."""
    plan = stage_plan(cfg)
    for stage in plan.stages:
        for name, size in (("global", stage.global_size), ("local", stage.local_size)):
            if size <= 0 or size % spec.patch_size:
                raise ConfigError(f"{name} crop size {size} is not a positive multiple of the patch size {spec.patch_size}")
        if stage.batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {stage.batch_size}")
    if cfg.schedule.steps <= 0:
        raise ConfigError(f"schedule.steps must be positive, got {cfg.schedule.steps}")
    if cfg.optim.accum_steps < 1:
        raise ConfigError(f"optim.accum_steps must be >= 1, got {cfg.optim.accum_steps}")


def micro_batches(cfg: TrainConfig, dataset, tokenizer: TipsTokenizer, spec: ModelSpec, rank: int = 0,
                  world_size: int = 1) -> MicroBatches:
    """This rank's deterministic stream of micro-batches."""
    obj = caption_settings(cfg)
    sampler = CaptionSampler(obj.caption_sources, obj.caption_probs, seed=cfg.seed,
                             multi_granularity=obj.multi_granularity)
    d = cfg.data
    builder = BatchBuilder(dataset, tokenizer, sampler, seed=cfg.seed, n_local=d.num_local_crops,
                           global_scale=d.global_scale, local_scale=d.local_scale, flip=d.flip,
                           max_text_len=spec.max_text_len)
    try:
        return MicroBatches(builder, stage_plan(cfg), cfg.optim.accum_steps, rank, world_size)
    except ValueError as exc:
        raise ConfigError(f"data.batch_size: {exc}") from None


def caption_settings(cfg: TrainConfig):
    """The section whose caption sources drive CLS2 sampling (distillation or pre-training)."""
    return cfg.distill if cfg.distill.enabled else cfg.objective


def load_teacher(cfg: TrainConfig, device: torch.device):
    """The frozen distillation teacher (a ``TipsV2`` from ``tipsv2_sdk.load``)."""
    from tipsv2_sdk.loading import load

    try:
        return load(cfg.distill.teacher, device=device)
    except TipsV2Error as exc:
        raise ConfigError(f"distill.teacher: {exc}") from None


def build_objective(cfg: TrainConfig, network, total_steps: int, teacher=None) -> torch.nn.Module:
    """``TipsV2Objective``, or ``DistillObjective`` around the frozen ``teacher`` when distilling.

    Heads are seeded with ``seed + 1``, independently of the network's draws.
    """
    torch.manual_seed(cfg.seed + 1)
    if not cfg.distill.enabled:
        from .objective import TipsV2Objective

        return TipsV2Objective(network, cfg.objective, total_steps)
    from .distill import DistillObjective

    if teacher is None:
        raise ConfigError("distillation needs its teacher model (distill.teacher)")
    try:
        objective = DistillObjective(network, teacher, cfg.distill, total_steps)
    except ValueError as exc:
        raise ConfigError(f"distill: {exc}") from None
    if cfg.distill.teacher_heads_from:
        from safetensors.torch import load_file

        path = Path(cfg.distill.teacher_heads_from)
        path = path / "objective.safetensors" if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"distill.teacher_heads_from: {path} does not exist")
        objective.load_teacher_heads(load_file(str(path)))
    return objective


__all__ = ["model_spec", "build_dataset", "build_tokenizer", "build_network", "build_objective", "stage_plan",
           "micro_batches", "check_sizes", "caption_corpus", "load_teacher", "caption_settings"]
