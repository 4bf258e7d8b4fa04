"""transformers classes for TIPSv2 inside ``LlavaForConditionalGeneration``, and their registration.

Two small subclasses fill the gaps of stock HF Llava, which only knows the feature strategies
``"default"`` (drop one token) and ``"full"`` and only the ``mlp2x_gelu`` projector:

* ``Tipsv2LlavaVisionModel`` (``model_type="tipsv2_llava_vision"``): transformers' own
  ``Tipsv2VisionModel`` (same weights, same keys) whose outputs keep only the tokens named by
  ``config.feature_select``. Llava runs it with ``vision_feature_select_strategy="full"``, so the
  image-token count is exactly what this tower emits.
* ``Tipsv2LlavaForConditionalGeneration`` (``model_type="tipsv2_llava"``): Llava with any projector
  type of ``connectors.projectors`` (``linear``, ``mlp{N}x_gelu``, ``identity``, ``+cls``).

``build_llava`` uses these only when the stock classes cannot express the request: ``cls2_patch``
and ``full`` run on the stock ``tipsv2_vision_model`` and ``mlp2x_gelu`` on the stock projector.

``register()`` adds both model types to transformers' Auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForImageTextToText``). It is idempotent and does nothing else; ``import
tipsv2_sdk.connectors`` calls it so that ``AutoModelForImageTextToText.from_pretrained`` on a saved
model needs no other code in a fresh process.
"""
from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    LlavaConfig,
    PreTrainedConfig,
    Tipsv2VisionConfig,
    Tipsv2VisionModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import LlavaForConditionalGeneration, LlavaModel, LlavaPreTrainedModel
from transformers.utils.generic import can_return_tuple

from .features import check_feature_select, num_feature_layers, num_prefix_kept, select_tokens
from .projectors import MultiModalProjector, parse_projector

VISION_MODEL_TYPE = "tipsv2_llava_vision"
LLAVA_MODEL_TYPE = "tipsv2_llava"
NATIVE_VISION_MODEL_TYPE = "tipsv2_vision_model"


@strict
class Tipsv2LlavaVisionConfig(Tipsv2VisionConfig):
    """``Tipsv2VisionConfig`` plus ``feature_select`` (``patch`` | ``cls_patch`` | ``cls2_patch`` | ``full``)."""

    model_type = VISION_MODEL_TYPE
    feature_select: str = "patch"

    def validate_architecture(self):
        """Part of ``@strict`` validation: refuse unknown ``feature_select`` names on construction."""
        super().validate_architecture()
        check_feature_select(self.feature_select)


class Tipsv2LlavaVisionModel(Tipsv2VisionModel):
    """``Tipsv2VisionModel`` whose ``last_hidden_state`` and ``hidden_states`` keep the selected tokens.

    ``pooler_output`` stays CLS1 after the final layer norm, as in the stock model.
    """

    config_class = Tipsv2LlavaVisionConfig
    config: Tipsv2LlavaVisionConfig

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        flag = kwargs.get("output_hidden_states")
        if type(flag) is int and flag == 0:  # layer index 0 would read as "record nothing"
            kwargs["output_hidden_states"] = [0]
        out = super().forward(pixel_values, bool_masked_pos=bool_masked_pos, attention_mask=attention_mask, **kwargs)
        select, registers = self.config.feature_select, self.config.num_register_tokens
        hidden_states = out.hidden_states
        if hidden_states is not None:
            hidden_states = tuple(None if h is None else select_tokens(h, select, registers) for h in hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=select_tokens(out.last_hidden_state, select, registers),
            pooler_output=out.pooler_output,
            hidden_states=hidden_states,
            attentions=out.attentions,
        )


@strict
class Tipsv2LlavaConfig(LlavaConfig):
    """``LlavaConfig`` plus ``projector_type`` (any name ``connectors.projectors`` accepts)."""

    model_type = LLAVA_MODEL_TYPE
    projector_type: str = "mlp2x_gelu"

    def validate_architecture(self):
        """Part of ``@strict`` validation: refuse unknown projector names on construction."""
        super().validate_architecture()
        parse_projector(self.projector_type)


def feature_select_of(config: PreTrainedConfig) -> str:
    """The ``feature_select`` a Llava config (or its model) realises with a TIPSv2 tower."""
    vision = config.vision_config
    if vision.model_type == VISION_MODEL_TYPE:
        if config.vision_feature_select_strategy != "full":
            raise ValueError(
                f"a {VISION_MODEL_TYPE} tower selects its own tokens and needs "
                f"vision_feature_select_strategy='full', not {config.vision_feature_select_strategy!r}"
            )
        return vision.feature_select
    if vision.model_type == NATIVE_VISION_MODEL_TYPE:
        # Stock Llava drops exactly one token under "default": CLS1 goes, CLS2 stays.
        return "cls2_patch" if config.vision_feature_select_strategy == "default" else "full"
    raise ValueError(f"this Llava model has a {vision.model_type!r} vision tower, not TIPSv2")


def projector_in_dim(config: PreTrainedConfig) -> int:
    """Width of the features entering the projector: tower width times concatenated layers."""
    return config.vision_config.hidden_size * num_feature_layers(config.vision_feature_layer)


def projector_type_of(config: PreTrainedConfig) -> str:
    """``projector_type`` of a ``tipsv2_llava`` config; stock Llava is ``mlp2x_gelu``."""
    return getattr(config, "projector_type", None) or "mlp2x_gelu"


def build_hf_projector(config: Tipsv2LlavaConfig) -> MultiModalProjector:
    """The HF-layout projector described by a ``tipsv2_llava`` config."""
    prefix = num_prefix_kept(feature_select_of(config), config.vision_config.num_register_tokens)
    return MultiModalProjector(
        config.projector_type,
        projector_in_dim(config),
        config.text_config.hidden_size,
        num_prefix_tokens=prefix,
        bias=config.multimodal_projector_bias,
    )


class Tipsv2LlavaModel(LlavaModel):
    """``LlavaModel`` with a configurable projector (``config.projector_type``)."""

    config_class = Tipsv2LlavaConfig
    config: Tipsv2LlavaConfig

    def __init__(self, config: Tipsv2LlavaConfig):
        # Same three children as LlavaModel, only the projector class differs.
        LlavaPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = build_hf_projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()


class Tipsv2LlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """``LlavaForConditionalGeneration`` with a configurable projector (``config.projector_type``)."""

    config_class = Tipsv2LlavaConfig
    config: Tipsv2LlavaConfig

    def __init__(self, config: Tipsv2LlavaConfig):
        LlavaPreTrainedModel.__init__(self, config)
        self.model = Tipsv2LlavaModel(config)
        self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


def register() -> None:
    """Make both model types known to transformers' Auto classes (idempotent, no other effect)."""
    AutoConfig.register(VISION_MODEL_TYPE, Tipsv2LlavaVisionConfig, exist_ok=True)
    AutoModel.register(Tipsv2LlavaVisionConfig, Tipsv2LlavaVisionModel, exist_ok=True)
    AutoConfig.register(LLAVA_MODEL_TYPE, Tipsv2LlavaConfig, exist_ok=True)
    AutoModel.register(Tipsv2LlavaConfig, Tipsv2LlavaModel, exist_ok=True)
    AutoModelForImageTextToText.register(Tipsv2LlavaConfig, Tipsv2LlavaForConditionalGeneration, exist_ok=True)


__all__ = [
    "Tipsv2LlavaVisionConfig",
    "Tipsv2LlavaVisionModel",
    "Tipsv2LlavaConfig",
    "Tipsv2LlavaModel",
    "Tipsv2LlavaForConditionalGeneration",
    "feature_select_of",
    "projector_in_dim",
    "projector_type_of",
    "build_hf_projector",
    "register",
]
