"""TIPSv2 as the vision tower of LLaVA-style multimodal LLMs (installed as ``tipsv2_sdk.connectors``).

* HF Llava: ``build_llava``, ``num_image_tokens``, ``build_llava_processor``, ``check_processor``,
  ``check_inputs``, ``load_projector`` (``hf_llava``); the model classes in ``hf_modeling``.
* Original LLaVA: ``tipsv2_sdk.connectors.llava_original`` (``TipsV2VisionTower``,
  ``register_with_llava``).
* Projectors and their key mapping: ``projectors``, ``keymap``.
* Token selection: ``features`` (``feature_select``: patch | cls_patch | cls2_patch | full).
* PEFT helpers: ``peft_utils``.

Importing this package calls ``register()``: it adds the two model types of ``hf_modeling``
(``tipsv2_llava_vision``, ``tipsv2_llava``) to transformers' Auto classes, so that a saved model
loads with ``AutoModelForImageTextToText.from_pretrained`` after ``import tipsv2_sdk.connectors``
and nothing else. Registering is idempotent and changes nothing for other model types.
"""
from __future__ import annotations

from tipsv2_sdk.lazy import lazy_exports

from .hf_modeling import register

register()

_EXPORTS = {
    "build_llava": "hf_llava",
    "build_llava_processor": "hf_llava",
    "num_image_tokens": "hf_llava",
    "default_image_size": "hf_llava",
    "check_processor": "hf_llava",
    "check_inputs": "hf_llava",
    "load_projector": "hf_llava",
    "FEATURE_SELECTS": "features",
    "tokens_per_image": "features",
    "select_tokens": "features",
    "parse_projector": "projectors",
    "build_llava_projector": "projectors",
    "MultiModalProjector": "projectors",
    "llava_to_hf": "keymap",
    "hf_to_llava": "keymap",
    "language_lora_targets": "peft_utils",
    "vision_lora_targets": "peft_utils",
    "freeze_vision_tower": "peft_utils",
    "unfreeze_last_n_blocks": "peft_utils",
    "TipsV2VisionTower": "llava_original",
    "register_with_llava": "llava_original",
    "unregister_from_llava": "llava_original",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = sorted([*_EXPORTS, "register"])
