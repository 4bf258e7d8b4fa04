"""The training configuration: nested dataclasses read from YAML, with ``key=value`` overrides.

Every field carries a one-line ``help`` (``config_reference()`` prints them all). Loading checks
types and names: an unknown key or a value of the wrong type raises ``ConfigError`` naming the
dotted key, e.g. ``optim.lr``.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tipsv2_sdk.errors import TipsV2Error
from .distill import DistillConfig
from .objective import ObjectiveConfig


class ConfigError(TipsV2Error, ValueError):
    """A configuration file or override is wrong; the message names the dotted key."""


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a help string (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """Which network to train."""

    variant: str = _f("tipsv2-tiny", "registry name whose architecture is trained (see `tipsv2 info --list`)")
    width: int | None = _f(None, "override the variant's width (vision and text towers)")
    depth: int | None = _f(None, "override the number of vision blocks")
    heads: int | None = _f(None, "override the number of attention heads")
    mlp_ratio: float | None = _f(None, "override the MLP expansion ratio")
    text_depth: int | None = _f(None, "override the number of text blocks")
    image_size: int | None = _f(None, "override the position-grid size in pixels (grid = image_size / patch)")
    vocab_size: int | None = _f(None, "override the text vocabulary size (a trained tokenizer gets this size)")
    max_text_len: int | None = _f(None, "override the maximum number of text tokens")
    init_from: str | None = _f(None, "HF-format model directory to start from instead of random weights")
    tokenizer: str | None = _f(None, "SentencePiece tokenizer.model; null = train one on the dataset captions")
    tokenizer_corpus: int = _f(5000, "examples whose captions train the tokenizer when none is given")
    # CLIP's from-scratch value. The architecture default (0.00507, a logit scale of ~197) is the released
    # checkpoints' *learned* end point; a random model started there collapses to ln(batch).
    scaled_token_init: bool = _f(True, "fresh text tower: token embeddings N(0, 1/width), unit variance after the "
                                 "tower's sqrt(width) scaling (false = transformers' N(0, 0.02))")
    temperature_init: float | None = _f(0.07, "initial contrastive temperature of a model trained from scratch; "
                                        "null = the architecture default (0.00507); init_from keeps its own")


@dataclass
class DataConfig:
    """Where examples come from and how they are cropped and batched."""

    source: Literal["shapes", "scenes", "folder"] = _f("shapes", "'shapes' (synthetic scenes), 'scenes' (richer synthetic "
                                                      "scenes with grounded captions) or 'folder' (images + JSONL)")
    captions: str | None = _f(None, "folder source: JSONL file, one {image, alt_text, captions} object per line")
    root: str | None = _f(None, "folder source: directory that relative image paths start from (default: the JSONL's)")
    shapes_size: int = _f(112, "shapes/scenes source: rendered image side in pixels")
    shapes_length: int | None = _f(None, "shapes/scenes source: number of distinct scenes; null = infinite stream")
    shapes_max_objects: int = _f(3, "shapes/scenes source: at most this many objects per scene")
    shapes_seed: int = _f(0, "shapes/scenes source: scene seed (the evaluation uses other splits)")
    batch_size: int = _f(64, "global batch per optimizer step, split over ranks and accumulation steps")
    num_workers: int = _f(1, "data-loading processes per rank (0 = load in the training process)")
    prefetch: int = _f(2, "micro-batches each worker prepares ahead")
    global_crop_size: int = _f(224, "side of the global crop (a multiple of the patch size)")
    local_crop_size: int = _f(98, "side of the local crops (a multiple of the patch size)")
    num_local_crops: int = _f(6, "local crops per image (M); 0 disables the DINO term's inputs")
    global_scale: tuple[float, float] = _f((0.4, 1.0), "area fraction range of the global random-resized crop")
    local_scale: tuple[float, float] = _f((0.05, 0.4), "area fraction range of the local random-resized crops")
    flip: bool = _f(True, "random horizontal flips")


@dataclass
class OptimConfig:
    """Optimizer, learning-rate and weight-decay schedules, clipping, accumulation, precision."""

    name: Literal["adamw", "adafactor"] = _f("adamw", "'adamw' or 'adafactor' (the paper's optimizer)")
    lr: float = _f(1e-3, "peak learning rate, reached after warm-up")
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine decay")
    warmup_steps: int = _f(100, "linear warm-up steps from 0 to lr")
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    adafactor_beta2_decay: float = _f(-0.8, "Adafactor second-moment decay exponent")
    weight_decay: float = _f(0.04, "weight decay at step 0 (groups the objective marks as decayed)")
    weight_decay_end: float = _f(0.2, "weight decay at the last step (cosine schedule in between)")
    grad_clip: float | None = _f(3.0, "clip the global gradient norm to this; null = no clipping")
    accum_steps: int = _f(1, "micro-batches accumulated per optimizer step")
    bf16: bool = _f(False, "bf16 autocast for forward/backward (ignored where unsupported)")


@dataclass
class ScheduleConfig:
    """How long to train, and the optional high-resolution second stage."""

    steps: int = _f(1000, "optimizer steps of stage 1 (low resolution)")
    max_minutes: float | None = _f(None, "wall-clock budget; training stops gracefully (and exports) when spent")
    hires_steps: int = _f(0, "optimizer steps of stage 2 (high-resolution adaptation); 0 = single stage")
    hires_global_crop_size: int = _f(448, "stage 2 global crop side")
    hires_local_crop_size: int = _f(140, "stage 2 local crop side")
    hires_batch_size: int | None = _f(None, "stage 2 global batch; null = data.batch_size")
    hires_resize_grid: bool = _f(True, "stage 2: resize the position-embedding grid to the new crop size")

    @property
    def total_steps(self) -> int:
        return self.steps + self.hires_steps


@dataclass
class CheckpointConfig:
    """Periodic training checkpoints (safetensors + JSON) for ``--resume``."""

    every_steps: int = _f(0, "save every N optimizer steps; 0 = only at the end")
    keep: int = _f(2, "most recent checkpoints kept on disk")
    dir: str | None = _f(None, "checkpoint directory; null = <output_dir>/checkpoints")


@dataclass
class LoggingConfig:
    """Progress bar and metrics file."""

    every_steps: int = _f(1, "write a metrics line every N steps")
    metrics_file: str | None = _f(None, "JSON Lines metrics; null = <output_dir>/metrics.jsonl")
    progress: bool = _f(True, "show a tqdm progress bar on stderr")


@dataclass
class DistributedConfig:
    """Multi-process training (launched by ``torchrun``; single process otherwise)."""

    strategy: Literal["ddp", "fsdp"] = _f("ddp", "'ddp' or 'fsdp' (sharded parameters) when WORLD_SIZE > 1")
    backend: str | None = _f(None, "torch.distributed backend; null = nccl on CUDA, gloo on CPU")


@dataclass
class DistillSection(DistillConfig):
    """Distillation from a frozen teacher: the loss knobs of ``DistillConfig`` plus where the teacher is.

    With ``enabled`` the network of ``model`` is the (randomly initialised) student, the
    ``objective`` section is ignored and these fields drive the loss; the caption settings here
    also drive the CLS2 caption sampling.
    """

    enabled: bool = _f(False, "train by distillation from `teacher` instead of the TIPSv2 objective")
    teacher: str | None = _f(None, "frozen teacher: an HF-format model directory or a registry name")
    teacher_heads_from: str | None = _f(None, "training checkpoint of the teacher whose teacher_heads start ours")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.enabled and not self.teacher:
            raise ValueError("distill.enabled needs distill.teacher (a model directory or registry name)")


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    output_dir: str = _f("runs/pretrain", "where the exported model, metrics and checkpoints go")
    seed: int = _f(0, "seed of weights, crops and caption sampling")
    device: str = _f("auto", "'auto' (CUDA when available), 'cpu' or 'cuda'")
    threads: int | None = _f(None, "torch intra-op threads per process; null = torch's default")
    export_name: str = _f("model", "sub-directory of output_dir that receives the final HF-format model")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "network"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "data"})
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig, metadata={"help": "losses (TIPSv2 objective)"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "optimizer"})
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig, metadata={"help": "length and stages"})
    distill: DistillSection = field(default_factory=DistillSection, metadata={"help": "distillation"})
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"help": "checkpoints"})
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"help": "logs"})
    distributed: DistributedConfig = field(default_factory=DistributedConfig, metadata={"help": "multi-process"})

    def to_dict(self) -> dict:
        """Plain JSON/YAML-serialisable form (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------------- loading
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "a list"
    names = {float: "a float", int: "an int", bool: "true or false", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in the field's type."""
    origin = typing.get_origin(tp)
    wrong = ConfigError(f"config key {key!r} expects {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise wrong
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise wrong
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"config key {key!r} expects {len(args)} values, got {len(value)}")
        item_types = [args[0]] * len(value) if (not args or args[-1] is Ellipsis or origin is list) else list(args)
        items = [_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_types))] if args else list(value)
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} is a section; expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise wrong


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + str(key)!r} (known: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid config section {prefix.rstrip('.') or '<root>'!r}: {exc}") from None


def _parse_scalar(raw: str, tp: Any, key: str) -> Any:
    """Read an override's text as the field's type (YAML for lists, plain text for strings)."""
    import yaml

    if raw.strip().lower() in ("null", "none", "~"):
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _parse_scalar(raw, args[0], key)
    if tp is str or (origin is Literal and all(isinstance(a, str) for a in typing.get_args(tp))):
        return raw
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects a float, got {raw!r}") from None
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects an int, got {raw!r}") from None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"config key {key!r}: cannot parse {raw!r}") from None
    if origin in (tuple, list) and isinstance(value, str):
        value = [yaml.safe_load(part) for part in value.split(",")]
    return value


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (type-checked)."""
    cfg = _deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4)")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        target = cfg
        for depth, name in enumerate(parts):
            known = [f.name for f in dataclasses.fields(target)]
            path = ".".join(parts[: depth + 1])
            if name not in known:
                raise ConfigError(f"unknown config key {path!r} (known: {', '.join(known)})")
            tp = _hints(type(target))[name]
            if depth < len(parts) - 1:
                target = getattr(target, name)
                if not dataclasses.is_dataclass(target):
                    raise ConfigError(f"config key {path!r} is not a section")
                continue
            if dataclasses.is_dataclass(getattr(target, name)):
                raise ConfigError(f"config key {path!r} is a section; set one of its keys, e.g. {path}.<key>=...")
            setattr(target, name, _coerce(_parse_scalar(raw, tp, path), tp, path))
    _revalidate(cfg)
    return cfg


def _deepcopy(cfg: Any) -> Any:
    import copy

    return copy.deepcopy(cfg)


def _revalidate(cfg: Any) -> None:
    """Run ``__post_init__`` checks again after overrides changed fields."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _revalidate(value)
    post = getattr(cfg, "__post_init__", None)
    if post is not None:
        try:
            post()
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"invalid configuration: {exc}") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (``None`` = all defaults) and apply ``key=value`` overrides."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    cfg = from_dict(TrainConfig, data)
    return apply_overrides(cfg, list(overrides or []))


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (atomic); ``load_config`` reads it back to an equal config."""
    import yaml

    from tipsv2_sdk.io import atomic_write

    with atomic_write(path, "w") as handle:
        yaml.safe_dump(cfg.to_dict(), handle, sort_keys=False)


def config_reference(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, default, help)`` for every field, depth first."""
    rows = []
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(config_reference(type(value), prefix + f.name + "."))
        else:
            rows.append((prefix + f.name, repr(_plain(value)), f.metadata.get("help", "")))
    return rows


__all__ = [
    "ConfigError", "TrainConfig", "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig",
    "CheckpointConfig", "LoggingConfig", "DistillSection", "DistributedConfig", "load_config", "apply_overrides",
    "save_config", "from_dict", "config_reference",
]
