"""TIPSv2 as the vision tower of the original LLaVA code base (haotian-liu/LLaVA, PyPI ``llava-torch``).

``TipsV2VisionTower`` has the members LLaVA's ``CLIPVisionTower`` has, so LLaVA's training, eval
and serving code drive it unchanged. Nothing here imports ``llava`` except ``register_with_llava``.

Tower names (``--vision_tower`` / ``config.mm_vision_tower``)::

    [tipsv2:]<registry name | TIPSv2 directory>[@<image size>]

    tipsv2-b14                 registry name (tipsv2_sdk.list_models()), native size (448)
    tipsv2-l14@224             the same at 224 px: 16 x 16 = 256 patch tokens instead of 1024
    tipsv2:/ckpt/my-tips@336   a directory written by `tipsv2 convert` / `pretrain` / save_pretrained

The ``tipsv2:`` prefix is optional for registry names and for directories that hold a TIPSv2
``config.json``; it makes the choice explicit (LLaVA treats any other existing path as CLIP). The
name is stored in the LLM's ``config.json`` and resolved again when LLaVA reloads the model.

``mm_vision_select_feature`` takes ``patch`` (both CLS tokens dropped: patches only),
``cls_patch`` (CLS1 + patches), ``cls2_patch`` (CLS2 + patches) or ``full`` (everything). Note
that LLaVA's ``cls_patch`` means "keep all tokens" for CLIP; with TIPSv2 that is ``full``.
``mm_vision_select_layer`` may be an int (LLaVA) or a list of ints (concatenated on channels).

Shims for transformers 5 (``register_with_llava(compat=True)``, the default; code and details in
``connectors/llava_compat.py``): llava-torch 1.2.2.post1 pins transformers 4.36.2, but its model
code imports and runs on transformers 5. Three API changes need shims, each a no-op where the
installed transformers still has the old API, and all removed by ``unregister_from_llava()``:

* ``generate``: LLaVA's causal LM ``forward`` methods take no ``**kwargs``; 5.x passes ``cache``
  (and ``cache_position`` / ``logits_to_keep``). Mapped to ``past_key_values`` / dropped.
* ``llava.train`` imports ``ALL_LAYERNORM_LAYERS``, ``get_parameter_names`` and ``has_length``
  from ``transformers.trainer``; they are re-exported there from their 5.x homes.
* ``LLaVATrainer``: ``tokenizer=`` becomes ``processing_class=``, ``_get_train_sampler`` accepts
  the dataset argument, ``_save_checkpoint`` drops ``metrics``.

With these, LLaVA's own ``train()`` (projector pre-training and LoRA fine-tuning),
``load_pretrained_model``, ``process_images`` and ``generate`` run with a TIPSv2 tower. LLaVA's
training code still needs its own optional dependency ``deepspeed`` (``maybe_zero_3``).
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .features import (
    check_feature_select,
    grid_size,
    normalize_feature_layer,
    num_feature_layers,
    num_prefix_kept,
    select_features,
)
from .projectors import CLS_SUFFIX, build_llava_projector, parse_projector

logger = logging.getLogger(__name__)

TOWER_PREFIX = "tipsv2:"
_SIZE_SUFFIX = re.compile(r"^(.*)@(\d+)$")


@dataclass(frozen=True)
class TowerName:
    """A parsed ``mm_vision_tower`` value."""

    source: str  # registry name or directory
    image_size: int | None  # None = the model's own size


def parse_tower_name(name: str) -> TowerName:
    """Split ``[tipsv2:]<source>[@<size>]``."""
    body = name[len(TOWER_PREFIX):] if name.startswith(TOWER_PREFIX) else name
    match = _SIZE_SUFFIX.match(body)
    if match:
        return TowerName(match.group(1), int(match.group(2)))
    return TowerName(body, None)


def _is_tipsv2_dir(path: str) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "tipsv2"
    except (OSError, ValueError):
        return False


def is_tipsv2_tower(name: Any) -> bool:
    """Whether a ``mm_vision_tower`` value names a TIPSv2 tower (see the module docstring)."""
    from tipsv2_sdk.registry import list_models

    if not isinstance(name, str):
        return False
    if name.startswith(TOWER_PREFIX):
        return True
    source = parse_tower_name(name).source
    return source in list_models() or _is_tipsv2_dir(source)


def _vision_config(source: str):
    """The vision config of a registry name or directory, without loading weights."""
    from transformers import Tipsv2Config

    from tipsv2_sdk.loading import resolve_source
    from tipsv2_sdk.registry import get_spec, make_config

    kind, path = resolve_source(source)
    if path is not None:
        return Tipsv2Config.from_pretrained(path).vision_config
    return make_config(get_spec(os.fspath(source))).vision_config


class TipsV2ImageProcessor:
    """The parts of ``CLIPImageProcessor`` that LLaVA reads, doing TIPSv2 preprocessing.

    Images are resized to ``image_size`` squared (bilinear) and scaled to [0, 1]; no mean/std.
    ``image_mean`` is (0, 0, 0), TIPSv2's true normalisation mean. LLaVA pads non-square images
    ("pad" aspect ratio) with ``image_mean * 255`` so that, for CLIP, padding becomes 0 after
    normalisation; with TIPSv2 the padding is black, which is likewise an input of exactly 0.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 448, patch_size: int = 14):
        grid_size(image_size, patch_size)
        self.image_size = image_size
        self.image_mean = [0.0, 0.0, 0.0]
        self.image_std = [1.0, 1.0, 1.0]
        self.do_normalize = False
        self.rescale_factor = 1 / 255
        self.crop_size = {"height": image_size, "width": image_size}
        self.size = {"shortest_edge": image_size, "height": image_size, "width": image_size}

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> dict:
        """One image or a list → ``{"pixel_values": (N, 3, S, S)}`` (torch for ``"pt"``, else numpy)."""
        from transformers import BatchFeature

        from tipsv2_sdk.images import load_pixels

        batch = images if isinstance(images, (list, tuple)) else [images]
        pixels = np.stack([load_pixels(image, self.image_size) for image in batch])
        return BatchFeature({"pixel_values": torch.from_numpy(pixels) if return_tensors == "pt" else pixels})

    __call__ = preprocess

    def __repr__(self) -> str:
        return f"TipsV2ImageProcessor(image_size={self.image_size})"


class TipsV2VisionTower(nn.Module):
    """A TIPSv2 tower with LLaVA's ``CLIPVisionTower`` interface.

    Args:
        vision_tower: the tower name (see the module docstring).
        args: LLaVA's ``ModelArguments`` or the LLM config; reads ``mm_vision_select_layer``
            (default -2) and ``mm_vision_select_feature`` (default ``patch``).
        delay_load: keep only the config (LLaVA's reload path) until ``load_model()``.

    ``forward`` runs without gradients unless some tower parameter requires them (an unfrozen
    tower, or LoRA adapters), so PEFT on the tower works while the default stays LLaVA's frozen one.
    """

    def __init__(self, vision_tower: str, args: Any, delay_load: bool = False):
        super().__init__()
        self.is_loaded = False
        self.vision_tower_name = vision_tower
        name = parse_tower_name(vision_tower)
        self.source = name.source
        self.select_feature = check_feature_select(getattr(args, "mm_vision_select_feature", "patch"))
        base = _vision_config(self.source)
        self.select_layer = getattr(args, "mm_vision_select_layer", -2)
        normalize_feature_layer(self.select_layer, base.num_hidden_layers)  # validates only
        self.patch_size = int(base.patch_size)
        self.image_size = int(base.image_size) if name.image_size is None else name.image_size
        grid_size(self.image_size, self.patch_size)
        self.cfg_only = self._with_image_size(base)
        if not delay_load or getattr(args, "unfreeze_mm_vision_tower", False):
            self.load_model()

    def _with_image_size(self, vision_config):
        # LLaVA reads config.image_size as the tower's input size (anyres tiles, num_patches); the
        # weights keep their own position grid and are interpolated to this size.
        config = copy.deepcopy(vision_config)
        config.image_size = self.image_size
        return config

    def load_model(self, device_map: Any = None) -> None:
        """Load the weights (once), freeze them and set ``image_processor``."""
        if self.is_loaded:
            logger.info("%s is already loaded, `load_model` called again, skipping.", self.vision_tower_name)
            return
        import tipsv2_sdk

        self.vision_tower = tipsv2_sdk.load(self.source).hf_model.vision_model
        self.vision_tower.requires_grad_(False)
        if isinstance(device_map, (str, torch.device)) and str(device_map) != "auto":
            self.vision_tower.to(device_map)
        self.image_processor = TipsV2ImageProcessor(self.image_size, self.patch_size)
        self.cfg_only = self._with_image_size(self.vision_tower.config)
        self.is_loaded = True

    def _require_loaded(self) -> nn.Module:
        if not self.is_loaded:
            raise RuntimeError(f"vision tower {self.vision_tower_name!r} is not loaded; call load_model() first")
        return self.vision_tower

    def feature_select(self, image_forward_outs: Any) -> torch.Tensor:
        """The selected layer(s) and tokens of a ``Tipsv2VisionModel`` output with hidden states."""
        registers = self.cfg_only.num_register_tokens
        return select_features(image_forward_outs.hidden_states, self.select_layer, self.select_feature, registers)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        grid_size((int(height), int(width)), self.patch_size)
        model = self._require_loaded()
        outs = model(pixel_values=images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        return self.feature_select(outs).to(images.dtype)

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """``(B, 3, H, W)`` → ``(B, T, D)``; a list of ``(3, H, W)`` → a list of ``(1, T, D)``."""
        trainable = any(p.requires_grad for p in self._require_loaded().parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            if isinstance(images, list):
                return [self._encode(image.unsqueeze(0)) for image in images]
            return self._encode(images)

    @property
    def dummy_feature(self) -> torch.Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return next(self._require_loaded().parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self._require_loaded().parameters()).device

    @property
    def config(self):
        return self.cfg_only

    @property
    def hidden_size(self) -> int:
        """Feature width LLaVA stores as ``mm_hidden_size``: tower width times selected layers."""
        return int(self.cfg_only.hidden_size) * num_feature_layers(self.select_layer)

    @property
    def num_patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2

    @property
    def num_tokens(self) -> int:
        """Tokens per image this tower emits: ``num_patches`` plus the kept CLS tokens."""
        return self.num_patches + num_prefix_kept(self.select_feature, self.cfg_only.num_register_tokens)


# --------------------------------------------------------------------------- LLaVA registration


def _tower_builder(original: Callable) -> Callable:
    @functools.wraps(original)
    def build_vision_tower(vision_tower_cfg: Any, **kwargs: Any):
        name = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
        if is_tipsv2_tower(name):
            return TipsV2VisionTower(name, args=vision_tower_cfg, **kwargs)
        return original(vision_tower_cfg, **kwargs)

    build_vision_tower._tipsv2_original = original
    return build_vision_tower


def _projector_builder(original: Callable) -> Callable:
    @functools.wraps(original)
    def build_vision_projector(config: Any, delay_load: bool = False, **kwargs: Any):
        projector_type = getattr(config, "mm_projector_type", "linear")
        if projector_type == "identity" or projector_type.endswith(CLS_SUFFIX):
            parse_projector(projector_type)
            prefix = num_prefix_kept(getattr(config, "mm_vision_select_feature", "patch"))
            return build_llava_projector(projector_type, config.mm_hidden_size, config.hidden_size, prefix)
        return original(config, delay_load=delay_load, **kwargs)

    return build_vision_projector


def _patch_targets(compat: bool, import_missing: bool = True) -> list[tuple[Any, str, Callable]]:
    import llava.model.llava_arch as arch
    import llava.model.multimodal_encoder.builder as encoder_builder
    import llava.model.multimodal_projector.builder as projector_builder

    targets = [
        (arch, "build_vision_tower", _tower_builder),
        (encoder_builder, "build_vision_tower", _tower_builder),
        (arch, "build_vision_projector", _projector_builder),
        (projector_builder, "build_vision_projector", _projector_builder),
    ]
    if compat:
        from . import llava_compat

        targets += llava_compat.patch_targets(import_missing=import_missing)
    return targets


def register_with_llava(compat: bool = True) -> Callable[[], None]:
    """Let LLaVA build ``TipsV2VisionTower`` for TIPSv2 tower names; returns ``unregister_from_llava``.

    Patches ``build_vision_tower`` and ``build_vision_projector`` in ``llava.model.llava_arch`` (the
    names ``LlavaMetaModel`` calls) and in their builder modules; other tower names and projector
    types go to LLaVA's own builders. The projector hook adds ``<type>+cls`` projectors and a clear
    error for an ``identity`` projector whose widths differ. ``compat`` adds the transformers-5
    shims described in the module docstring. Idempotent; ``unregister_from_llava()`` undoes everything.
    """
    from .llava_compat import install

    for owner, attr, wrap in _patch_targets(compat):
        install(owner, attr, wrap)
    return unregister_from_llava


def unregister_from_llava() -> None:
    """Restore LLaVA's own builders, methods and ``transformers.trainer``'s namespace."""
    from . import llava_compat

    llava_compat.remove_trainer_aliases()
    if "llava.model.llava_arch" not in sys.modules:  # never registered: nothing else to undo
        return
    for owner, attr, _ in _patch_targets(compat=True, import_missing=False):
        llava_compat.restore(owner, attr)


__all__ = [
    "TOWER_PREFIX",
    "TowerName",
    "parse_tower_name",
    "is_tipsv2_tower",
    "TipsV2ImageProcessor",
    "TipsV2VisionTower",
    "register_with_llava",
    "unregister_from_llava",
]
