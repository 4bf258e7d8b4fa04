"""Build a transformers ``LlavaForConditionalGeneration`` around a TIPSv2 vision tower.

    from transformers import LlamaConfig
    from tipsv2_sdk.connectors import build_llava, build_llava_processor, num_image_tokens

    model = build_llava("tipsv2-b14", "path/to/llama", image_size=336)   # patches only, mlp2x_gelu
    processor = build_llava_processor(model, tokenizer)                  # "<image>" -> 576 tokens
    num_image_tokens(model)                                              # 576

The tower emits exactly the tokens named by ``feature_select`` and the processor expands each
``<image>`` to that many tokens; ``check_processor`` / ``check_inputs`` raise a clear error before
a mismatch could reach ``forward``.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .features import check_feature_select, grid_size, normalize_feature_layer, num_prefix_kept, tokens_per_image
from .hf_modeling import (
    Tipsv2LlavaConfig,
    Tipsv2LlavaForConditionalGeneration,
    Tipsv2LlavaVisionConfig,
    Tipsv2LlavaVisionModel,
    feature_select_of,
    projector_in_dim,
    projector_type_of,
    register,
)
from .keymap import load_state_file, to_hf_projector_state
from .projectors import check_projector_dims, parse_projector

IMAGE_TOKEN = "<image>"
IMAGE_SIZE_KEY = "tipsv2_image_size"  # default input size, stored in the Llava config.json
NATIVE_SELECTS = ("cls2_patch", "full")  # what stock Llava strategies give with the stock tower


def _int(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _vision_model(vision: Any) -> nn.Module:
    """A transformers ``Tipsv2VisionModel`` from a name, a directory, a ``TipsV2`` or an HF model."""
    from transformers import Tipsv2Model, Tipsv2VisionModel

    from tipsv2_sdk.model import TipsV2

    if isinstance(vision, (str, os.PathLike)):
        import tipsv2_sdk

        vision = tipsv2_sdk.load(vision)
    if isinstance(vision, TipsV2):
        return vision.hf_model.vision_model
    if isinstance(vision, Tipsv2Model):
        return vision.vision_model
    if isinstance(vision, Tipsv2VisionModel):
        return vision
    raise TypeError(
        f"vision must be a registry name, a TIPSv2 directory, a TipsV2 or a transformers Tipsv2Model, "
        f"not {type(vision).__name__}"
    )


def _language_model(language_model: Any) -> nn.Module:
    """A causal LM from a config, a pretrained path / hub id or a model."""
    from transformers import AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

    if isinstance(language_model, PreTrainedConfig):
        # A copy: adding the image token grows vocab_size, which must not leak into the caller's config.
        return AutoModelForCausalLM.from_config(copy.deepcopy(language_model))
    if isinstance(language_model, (str, os.PathLike)):
        return AutoModelForCausalLM.from_pretrained(os.fspath(language_model))
    if isinstance(language_model, PreTrainedModel):
        if language_model.get_output_embeddings() is None:
            raise TypeError(
                f"language_model must be a causal LM with an output head (e.g. LlamaForCausalLM), "
                f"not {type(language_model).__name__}"
            )
        return language_model
    raise TypeError(
        f"language_model must be a transformers config, a pretrained path or a causal LM model, "
        f"not {type(language_model).__name__}"
    )


def _tower_config(vision_config, feature_select: str):
    from transformers import Tipsv2VisionConfig

    data = {k: v for k, v in vision_config.to_dict().items() if k not in ("model_type", "architectures")}
    if feature_select in NATIVE_SELECTS:
        return Tipsv2VisionConfig.from_dict(data)
    return Tipsv2LlavaVisionConfig.from_dict({**data, "feature_select": feature_select})


def build_llava(
    vision: Any,
    language_model: Any,
    *,
    image_token_id: int | None = None,
    projector: str = "mlp2x_gelu",
    feature_layer: int | Sequence[int] = -2,
    feature_select: str = "patch",
    image_size: int | None = None,
    projector_weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
):
    """Build ``LlavaForConditionalGeneration`` with a TIPSv2 vision tower.

    Args:
        vision: registry name, TIPSv2 directory, ``TipsV2`` or transformers ``Tipsv2Model``; its
            vision weights are copied.
        language_model: a transformers config (random weights), a pretrained path / hub id, or a
            causal LM. A model passed in is *shared*, not copied (no second copy of a large LM).
        image_token_id: id of ``<image>`` in the LM vocabulary. ``None`` appends a new token (id =
            the LM's vocab size; the embeddings grow by one row).
        projector: ``linear``, ``mlp{N}x_gelu``, ``identity`` or any of them with ``+cls``.
        feature_layer: tower layer(s) fed to the projector; -2 as in LLaVA-1.5; a list concatenates.
        feature_select: ``patch``, ``cls_patch``, ``cls2_patch`` or ``full``.
        image_size: default input size (any multiple of the patch size); ``None`` = the tower's own.
        projector_weights: projector state (path or dict, LLaVA ``mm_projector`` or HF keys) to load.

    ``cls2_patch`` / ``full`` with ``mlp2x_gelu`` give a stock ``LlavaForConditionalGeneration``
    with the stock ``tipsv2_vision_model``; the other choices use the registered classes of
    ``hf_modeling``. Every inconsistency raises ``ValueError`` here, not inside ``forward``.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, Tipsv2VisionModel
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    register()
    check_feature_select(feature_select)
    parse_projector(projector)
    source = _vision_model(vision)
    vcfg = source.config
    patch = _int(vcfg.patch_size)
    size = _int(vcfg.image_size) if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"image_size must be an int (square inputs), not {image_size!r}")
    grid_size(size, patch)
    layers = normalize_feature_layer(feature_layer, vcfg.num_hidden_layers)
    lm = _language_model(language_model)
    text_config = lm.config
    vocab = int(text_config.vocab_size)
    if image_token_id is not None and not 0 <= image_token_id < vocab:
        raise ValueError(f"image_token_id {image_token_id} is outside the language model vocabulary (0 .. {vocab - 1})")

    tower_config = _tower_config(vcfg, feature_select)
    strategy = "default" if feature_select == "cls2_patch" else "full"
    kwargs = dict(
        vision_config=tower_config,
        text_config=text_config,
        image_token_index=vocab if image_token_id is None else image_token_id,
        vision_feature_layer=layers,
        vision_feature_select_strategy=strategy,
        image_seq_length=tokens_per_image(size, feature_select, patch, vcfg.num_register_tokens),
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        **{IMAGE_SIZE_KEY: size},
    )
    stock_projector = projector == "mlp2x_gelu"
    config = LlavaConfig(**kwargs) if stock_projector else Tipsv2LlavaConfig(projector_type=projector, **kwargs)
    check_projector_dims(
        projector,
        projector_in_dim(config),
        text_config.hidden_size,
        num_prefix_kept(feature_select, vcfg.num_register_tokens),
    )

    model_class = LlavaForConditionalGeneration if stock_projector else Tipsv2LlavaForConditionalGeneration
    with torch.device("meta"):  # every child is replaced below; skip allocating a throw-away LM
        model = model_class(config)
    tower_class = Tipsv2VisionModel if feature_select in NATIVE_SELECTS else Tipsv2LlavaVisionModel
    tower = tower_class(tower_config)
    tower.load_state_dict(source.state_dict())
    model.model.vision_tower = tower
    if stock_projector:
        model.model.multi_modal_projector = LlavaMultiModalProjector(config)
    else:
        from .hf_modeling import build_hf_projector

        model.model.multi_modal_projector = build_hf_projector(config)
    model.model.language_model = lm.base_model
    model.lm_head = lm.get_output_embeddings()
    dtype = next(lm.parameters()).dtype
    model.model.vision_tower.to(dtype)
    model.model.multi_modal_projector.to(dtype)
    leftovers = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"internal error: parts of the Llava model were not built: {leftovers[:5]}")
    if image_token_id is None:
        model.resize_token_embeddings(vocab + 1)
    if projector_weights is not None:
        load_projector(model, projector_weights)
    return model.eval()


def _core(model: Any):
    """The ``LlavaModel`` inside a Llava model, also through a PEFT wrapper."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.model


def _config(model_or_config: Any):
    return getattr(model_or_config, "config", model_or_config)


def default_image_size(model_or_config: Any) -> int:
    """The input size the model was built for (falls back to the tower's own size)."""
    config = _config(model_or_config)
    return int(getattr(config, IMAGE_SIZE_KEY, None) or _int(config.vision_config.image_size))


def num_image_tokens(model: Any, image_size: int | Sequence[int] | None = None) -> int:
    """Tokens one ``<image>`` occupies for ``image_size`` (int or ``(h, w)``; ``None`` = default)."""
    config = _config(model)
    vision = config.vision_config
    size = default_image_size(config) if image_size is None else image_size
    return tokens_per_image(size, feature_select_of(config), _int(vision.patch_size), vision.num_register_tokens)


def _tokens_by_processor(processor, height: int, width: int) -> int:
    count = (height // processor.patch_size) * (width // processor.patch_size) + processor.num_additional_image_tokens
    return count - 1 if processor.vision_feature_select_strategy == "default" else count


def _output_size(image_processor: Any) -> tuple[int, int]:
    """Height and width of the pixel arrays an image processor produces (square resize or crop)."""

    def read(size: Any, key: str) -> Any:
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

    size = image_processor.size
    if getattr(image_processor, "do_center_crop", False):
        size = image_processor.crop_size
    height, width = read(size, "height"), read(size, "width")
    if height is None or width is None:  # "shortest_edge" resizing without a crop: size varies per image
        raise ValueError(
            "the processor's image processor does not produce a fixed size; use "
            "tipsv2_sdk.connectors.build_llava_processor(model, tokenizer)"
        )
    return int(height), int(width)


def check_processor(model: Any, processor: Any) -> None:
    """Raise ``ValueError`` if ``processor`` would expand ``<image>`` differently from what ``model`` emits."""
    config = _config(model)
    height, width = _output_size(processor.image_processor)
    patch = _int(config.vision_config.patch_size)
    grid_size((height, width), patch)
    if processor.patch_size != patch:
        raise ValueError(f"processor patch_size {processor.patch_size} differs from the tower's {patch}")
    expected = num_image_tokens(config, (height, width))
    got = _tokens_by_processor(processor, height, width)
    if got != expected:
        raise ValueError(
            f"image-token count mismatch: the processor expands <image> to {got} tokens at {height}x{width}, "
            f"but the tower emits {expected} ({feature_select_of(config)!r}); build the processor with "
            "tipsv2_sdk.connectors.build_llava_processor(model, tokenizer)"
        )
    if processor.image_token_id != config.image_token_id:
        raise ValueError(
            f"the processor's image token id {processor.image_token_id} differs from the model's "
            f"image_token_id {config.image_token_id}"
        )


def build_llava_processor(model: Any, tokenizer: Any, image_size: int | None = None):
    """A ``LlavaProcessor`` whose ``<image>`` expansion equals the tower's output for ``model``.

    ``<image>`` is added to ``tokenizer`` when missing; it must then get ``model.config.image_token_id``
    (true when the model was built with ``image_token_id=None`` from an LM whose vocabulary is the
    tokenizer's). The image processor resizes to ``image_size`` (``None`` = the model's default),
    rescales to [0, 1] and applies no mean/std, as TIPSv2 expects.
    """
    from transformers import LlavaProcessor

    from tipsv2_sdk.image_processor import make_image_processor

    config = _config(model)
    size = default_image_size(config) if image_size is None else image_size
    patch = _int(config.vision_config.patch_size)
    grid_size(size, patch)
    token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([token], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id != config.image_token_id:
        raise ValueError(
            f"the tokenizer gives {token!r} id {token_id} but the model expects image_token_id "
            f"{config.image_token_id}; build the model with image_token_id={token_id}"
        )
    feature_select = feature_select_of(config)
    strategy = config.vision_feature_select_strategy
    extra = num_prefix_kept(feature_select, config.vision_config.num_register_tokens) + (strategy == "default")
    processor = LlavaProcessor(
        image_processor=make_image_processor(size),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra,
        image_token=token,
    )
    check_processor(config, processor)
    return processor


def check_inputs(model: Any, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``input_ids`` hold one full block of image tokens per image."""
    config = _config(model)
    height, width = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
    per_image = num_image_tokens(config, (height, width))
    found = int((input_ids == config.image_token_id).sum())
    expected = per_image * int(pixel_values.shape[0])
    if found != expected:
        raise ValueError(
            f"image-token count mismatch: input_ids hold {found} image tokens, but {pixel_values.shape[0]} "
            f"image(s) of {height}x{width} need {expected} ({per_image} each); expand prompts with "
            "build_llava_processor(...) or num_image_tokens(model, image_size)"
        )


def load_projector(
    model: Any, weights: str | os.PathLike | Mapping[str, torch.Tensor], projector_type: str | None = None
) -> None:
    """Load projector weights (LLaVA ``mm_projector`` keys or HF keys, dict or file) into ``model``.

    Shapes are checked against the model first, so a projector trained for another language
    model or tower fails here with the expected and found sizes.
    """
    state = load_state_file(weights) if isinstance(weights, (str, os.PathLike, Path)) else dict(weights)
    state = to_hf_projector_state(state)
    projector = _core(model).multi_modal_projector
    config = _config(model)
    own = projector.state_dict()
    if set(state) != set(own):
        raise ValueError(
            f"projector weights do not fit this model's {projector_type or projector_type_of(config)!r} projector: "
            f"got keys {sorted(state)}, expected {sorted(own)}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"projector weight {key} has shape {tuple(value.shape)} but this model needs {tuple(own[key].shape)} "
                f"(vision features {projector_in_dim(config)} -> language model hidden size "
                f"{config.text_config.hidden_size})"
            )
    projector.load_state_dict(state)


__all__ = [
    "build_llava",
    "num_image_tokens",
    "default_image_size",
    "build_llava_processor",
    "check_processor",
    "check_inputs",
    "load_projector",
    "IMAGE_TOKEN",
]
