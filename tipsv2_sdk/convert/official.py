"""``convert_official``: official TIPS / TIPSv2 ``.npz`` checkpoints → an HF-format directory."""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckpointError, TipsV2Error
from ..registry import ModelSpec, get_spec, make_config
from .keys import TEMPERATURE_KEYS, Rule, check_keys, text_rules, vision_rules
from .layout import (
    VisionLayout,
    check_text_variant,
    check_vision_variant,
    read_text_layout,
    read_vision_layout,
    spec_for_grid,
)
from .npz import NpzCheckpoint

if TYPE_CHECKING:
    from transformers import Tipsv2Config, Tipsv2Model

    from ..tokenizer import TipsTokenizer

# Seed of the towers left at random initialisation in a vision-only or text-only conversion.
RANDOM_TOWER_SEED = 0


def convert_official(
    vision_npz: str | os.PathLike | None = None,
    text_npz: str | os.PathLike | None = None,
    tokenizer_model: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    variant: str | ModelSpec = "tipsv2-b14",
) -> Path:
    """Convert the official checkpoints of one variant into a directory ``tips.load`` reads.

    The output (``config.json``, ``model.safetensors``, ``tokenizer.model`` + config, preprocessor
    config, ``tipsv2_sdk.json``) also loads with ``transformers.AutoModel.from_pretrained``.

    Args:
        vision_npz: the vision ``.npz`` (reference PyTorch state dict), or ``None`` for text only.
        text_npz: the text ``.npz`` (with its temperature), or ``None`` for vision only.
        tokenizer_model: the SentencePiece ``tokenizer.model``; required with ``text_npz``.
        out_dir: the directory to write; an existing model directory there is replaced atomically.
        variant: registry name (``tipsv2-b14``, ``tips-l14`` ...) or a ``ModelSpec``.

    A tower whose checkpoint is not given keeps a seeded random initialisation; ``tipsv2_sdk.json``
    lists it under ``random_towers``. Every key and shape is checked before anything is written.

    Raises:
        CheckpointError: a file does not fit the variant (naming the keys, shapes or the right variant).
        FileNotFoundError: an input file does not exist.
    """
    spec = variant if isinstance(variant, ModelSpec) else get_spec(variant)
    if vision_npz is None and text_npz is None:
        raise CheckpointError("nothing to convert: give a vision checkpoint, a text checkpoint, or both")
    if text_npz is not None and tokenizer_model is None:
        raise CheckpointError("the text tower needs its SentencePiece tokenizer.model (--tokenizer)")
    if out_dir is None:
        raise ValueError("out_dir is required")
    inputs = [Path(p) for p in (vision_npz, text_npz, tokenizer_model) if p is not None]
    out = _check_out_dir(Path(out_dir), inputs)
    with contextlib.ExitStack() as stack:
        vision = text = layout = None
        if vision_npz is not None:
            vision = stack.enter_context(NpzCheckpoint(vision_npz, "vision"))
            layout = read_vision_layout(vision)
        # The position grid fixes the image size (a TIPS v1 high-res export has a 448-px grid).
        config = make_config(spec_for_grid(spec, layout.grid) if layout is not None else spec)
        shapes = _target_shapes(config)
        version = spec.version
        if vision is not None:
            version = _check_vision(vision, layout, spec, shapes)
        if text_npz is not None:
            text = stack.enter_context(NpzCheckpoint(text_npz, "text"))
            _check_text(text, spec, config, shapes)
        tokenizer = _load_tokenizer(tokenizer_model, spec, config) if tokenizer_model is not None else None
        model = _build_model(config, random=vision is None or text is None)
        params = dict(model.named_parameters())
        with torch.no_grad():
            if vision is not None:
                _copy(vision, vision_rules(spec.depth, spec.swiglu), params)
            temperature = None
            if text is not None:
                _copy(text, text_rules(spec.text_depth), params)
                temperature = _temperature(text)
                if temperature is not None:
                    model.temperature.fill_(temperature)
    meta = _meta(spec, version, vision, text, tokenizer_model, temperature)
    meta["image_size"] = int(config.vision_config.image_size)
    from ..model import TipsV2

    return TipsV2(model, tokenizer, name=spec.name, source="converted", meta=meta).save_pretrained(out)


# ---------------------------------------------------------------------- checks
def _check_out_dir(out: Path, inputs: list[Path]) -> Path:
    """Refuse to replace anything but a model directory, or one holding the inputs themselves."""
    if out.exists():
        if not out.is_dir():
            raise TipsV2Error(f"output {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / "config.json").is_file():
            raise TipsV2Error(f"refusing to replace {out}: it is not empty and holds no model (config.json)")
        resolved = out.resolve()
        for path in inputs:
            if resolved in path.resolve().parents:
                raise TipsV2Error(f"output {out} contains the input {path}; write the conversion elsewhere")
    return out


def _target_shapes(config: Tipsv2Config) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the model to build, from a weightless (meta-device) instance."""
    from transformers import Tipsv2Model

    with torch.device("meta"):
        model = Tipsv2Model(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _tower(shapes: dict[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in shapes.items() if k.startswith(prefix)}


def _assert_complete(rules: list[Rule], shapes: dict[str, tuple[int, ...]], prefix: str) -> None:
    # Guards against a transformers release renaming a parameter: nothing may stay uninitialised.
    targets = {t for rule in rules for t in rule.targets}
    uncovered = sorted(set(_tower(shapes, prefix)) - targets)
    unknown = sorted(targets - set(shapes))
    if uncovered or unknown:
        raise RuntimeError(f"conversion rules do not fit this transformers version: uncovered {uncovered}, "
                           f"unknown {unknown}")


def _check_vision(ckpt: NpzCheckpoint, layout: VisionLayout, spec: ModelSpec,
                  shapes: dict[str, tuple[int, ...]]) -> int:
    ffn = "gate_proj" if spec.swiglu else "fc1"
    mlp_hidden = shapes[f"vision_model.encoder.layer.0.mlp.{ffn}.weight"][0]
    version = check_vision_variant(layout, spec, mlp_hidden, ckpt.name)
    rules = vision_rules(spec.depth, spec.swiglu)
    _assert_complete(rules, shapes, "vision_model.")
    check_keys(rules, {k: ckpt.shape(k) for k in ckpt.keys()}, shapes,
               where=f"vision checkpoint {ckpt.name} ({spec.name})")
    return version


def _check_text(ckpt: NpzCheckpoint, spec: ModelSpec, config: Tipsv2Config,
                shapes: dict[str, tuple[int, ...]]) -> None:
    tc = config.text_config
    expected = {"width": tc.hidden_size, "depth": tc.num_hidden_layers, "vocab_size": tc.vocab_size,
                "mlp_hidden": tc.intermediate_size}
    check_text_variant(read_text_layout(ckpt), spec, expected, ckpt.name)
    rules = text_rules(spec.text_depth)
    _assert_complete(rules, shapes, "text_model.")
    check_keys(rules, {k: ckpt.shape(k) for k in ckpt.keys()}, shapes,
               where=f"text checkpoint {ckpt.name} ({spec.name})", ignore=TEMPERATURE_KEYS)
    for key in TEMPERATURE_KEYS:
        if key in ckpt and math.prod(ckpt.shape(key)) != 1:
            raise CheckpointError(
                f"text checkpoint {ckpt.name}: {key!r} has shape {ckpt.shape(key)}, expected a scalar"
            )


def _load_tokenizer(path: str | os.PathLike, spec: ModelSpec, config: Tipsv2Config) -> TipsTokenizer:
    from ..tokenizer import TipsTokenizer

    try:
        tokenizer = TipsTokenizer(path, max_length=spec.max_text_len)
    except (RuntimeError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"tokenizer {path} is not a SentencePiece model: {exc}") from None
    rows = config.text_config.vocab_size
    if tokenizer.vocab_size > rows:
        raise CheckpointError(
            f"tokenizer {path} has {tokenizer.vocab_size} pieces but {spec.name}'s text tower embeds only {rows}"
        )
    return tokenizer


# ---------------------------------------------------------------------- building
def _build_model(config: Tipsv2Config, random: bool) -> Tipsv2Model:
    """The model to fill; skips the (slow) random initialisation when every weight is overwritten."""
    from transformers import Tipsv2Model

    from ..hf_utils import quiet_transformers

    with quiet_transformers():
        if not random:
            from transformers.initialization import no_init_weights

            with no_init_weights():
                return Tipsv2Model(config).eval()
        # A tower without a checkpoint: seeded, and without touching the caller's RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_TOWER_SEED)
            return Tipsv2Model(config).eval()


def _copy(ckpt: NpzCheckpoint, rules: list[Rule], params: dict[str, torch.nn.Parameter]) -> None:
    """Read each official array once and copy it (split if fused) into the model's parameters."""
    for rule in rules:
        value = torch.from_numpy(ckpt.array(rule.source))
        for target, chunk in zip(rule.targets, value.chunk(len(rule.targets), dim=0)):
            params[target].copy_(chunk)


def _temperature(ckpt: NpzCheckpoint) -> float | None:
    """``temperature`` (the key the reference's PyTorch demo divides logits by), else ``temperature_contrastive``."""
    for key in TEMPERATURE_KEYS:
        if key in ckpt:
            value = float(ckpt.array(key).reshape(-1)[0])
            if not math.isfinite(value) or value <= 0:
                raise CheckpointError(f"text checkpoint {ckpt.name}: {key!r} is {value}, expected a positive number")
            return value
    return None


def _meta(spec: ModelSpec, version: int, vision: NpzCheckpoint | None, text: NpzCheckpoint | None,
          tokenizer_model: str | os.PathLike | None, temperature: float | None) -> dict[str, Any]:
    random_towers = [name for name, ckpt in (("vision", vision), ("text", text)) if ckpt is None]
    label = "TIPSv2" if version == 2 else "TIPS v1"
    description = f"{label} {spec.name} converted from the official checkpoints"
    if random_towers:
        description += f"; {' and '.join(random_towers)} tower randomly initialised (not converted)"
    return {
        "variant": spec.name,
        "version": version,
        "trained": True,
        "description": description,
        "converted_from": {
            "vision": vision.name if vision else None,
            "text": text.name if text else None,
            "tokenizer": Path(tokenizer_model).name if tokenizer_model is not None else None,
        },
        "random_towers": random_towers,
        "temperature": temperature,
    }
