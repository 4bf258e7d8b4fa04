"""LoRA targets and freezing helpers for TIPSv2 towers inside LLaVA-style models.

The trap: transformers' TIPSv2 vision blocks name their attention projections ``q_proj``,
``k_proj``, ``v_proj``, ``o_proj`` (MLP: ``fc1``/``fc2``, SwiGLU: ``gate_proj``/``up_proj``/
``down_proj``), exactly like Llama-style language models. A PEFT config with
``target_modules=["q_proj", "v_proj"]`` therefore adapts the vision tower *and* the LM. These
helpers return full module names restricted to one part, which PEFT matches exactly:

    LoraConfig(target_modules=language_lora_targets(model))    # LM only (LLaVA stage 2)
    LoraConfig(target_modules=vision_lora_targets(model))      # TIPSv2 tower only

They work on HF ``LlavaForConditionalGeneration``, original LLaVA models holding a
``TipsV2VisionTower``, bare ``Tipsv2VisionModel`` / ``Tipsv2Model`` and ``TipsV2`` objects (and
on PEFT-wrapped versions: names are relative to the base model, as PEFT expects).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from torch import nn

from .features import normalize_feature_layer

TIPSV2_ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
TIPSV2_MLP_MODULES = ("fc1", "fc2", "gate_proj", "up_proj", "down_proj")
LM_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROJECTOR_NAMES = ("multi_modal_projector", "mm_projector")
_BLOCK = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def _root(model: nn.Module) -> nn.Module:
    """The module PEFT sees: unwrap ``TipsV2`` and PEFT wrappers."""
    from tipsv2_sdk.model import TipsV2

    if isinstance(model, TipsV2):
        return model.hf_model
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def vision_towers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, Tipsv2VisionModel)`` for every TIPSv2 vision tower in ``model`` (outermost only)."""
    from transformers import Tipsv2VisionModel

    towers: list[tuple[str, nn.Module]] = []
    for name, module in _root(model).named_modules():
        if isinstance(module, Tipsv2VisionModel) and not any(name.startswith(f"{t}.") for t, _ in towers):
            towers.append((name, module))
    if not towers:
        raise ValueError(f"no TIPSv2 vision tower found in {type(model).__name__}")
    return towers


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _num_blocks(tower: nn.Module) -> int:
    return len(tower.encoder.layer)


def vision_lora_targets(
    model: nn.Module, *, attention: bool = True, mlp: bool = True, last_n_blocks: int | None = None
) -> list[str]:
    """Full names of the TIPSv2 tower's linear layers to adapt (attention and/or MLP).

    ``last_n_blocks`` limits the targets to the last n blocks of the tower.
    """
    wanted = (TIPSV2_ATTENTION_MODULES if attention else ()) + (TIPSV2_MLP_MODULES if mlp else ())
    if not wanted:
        raise ValueError("nothing to target: attention and mlp are both False")
    names = []
    for prefix, tower in vision_towers(model):
        first = 0 if last_n_blocks is None else max(0, _num_blocks(tower) - last_n_blocks)
        for name, module in tower.named_modules():
            block = _BLOCK.search(name)
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in wanted and block:
                if int(block.group(1)) >= first:
                    names.append(_join(prefix, name))
    return names


def language_lora_targets(model: nn.Module, modules: Iterable[str] = LM_LORA_MODULES) -> list[str]:
    """Full names of the language model's linear layers to adapt (never the tower or projector)."""
    wanted = set(modules)
    root = _root(model)
    towers = [name for name, _ in vision_towers(root)] if _has_tower(root) else []
    names = []
    for name, module in root.named_modules():
        if not isinstance(module, nn.Linear) or name.rsplit(".", 1)[-1] not in wanted:
            continue
        if any(name == t or name.startswith(f"{t}.") for t in towers):
            continue
        if any(part in PROJECTOR_NAMES for part in name.split(".")):
            continue
        names.append(name)
    if not names:
        raise ValueError(f"no language-model modules named {sorted(wanted)} found in {type(model).__name__}")
    return names


def _has_tower(model: nn.Module) -> bool:
    try:
        vision_towers(model)
    except ValueError:
        return False
    return True


def freeze_vision_tower(model: nn.Module) -> int:
    """Set ``requires_grad=False`` on every TIPSv2 tower parameter; returns how many tensors."""
    count = 0
    for _, tower in vision_towers(model):
        for param in tower.parameters():
            param.requires_grad_(False)
            count += 1
    return count


def _feature_layer_of(model: nn.Module) -> int | Sequence[int] | None:
    root = _root(model)
    config = getattr(root, "config", None)
    if config is not None and hasattr(config, "vision_feature_layer"):
        return config.vision_feature_layer
    for module in root.modules():
        if hasattr(module, "select_layer") and hasattr(module, "vision_tower_name"):  # LLaVA tower
            return module.select_layer
    return None


def unfreeze_last_n_blocks(
    model: nn.Module, n: int, *, feature_layer: int | Sequence[int] | None = None, final_norm: bool = False
) -> list[str]:
    """Make the last ``n`` tower blocks that feed the selected features trainable; returns their names.

    Blocks after the deepest selected layer never receive gradients (with LLaVA's default -2 the
    final block is unused), so counting starts at that layer. ``feature_layer`` defaults to the
    model's own (Llava ``vision_feature_layer``, LLaVA ``mm_vision_select_layer``), else the last
    block. ``final_norm`` also unfreezes the final layer norm (only used by ``last_hidden_state``).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    feature_layer = _feature_layer_of(model) if feature_layer is None else feature_layer
    names = []
    for prefix, tower in vision_towers(model):
        depth = _num_blocks(tower)
        layers = normalize_feature_layer(-1 if feature_layer is None else feature_layer, depth)
        deepest = max(layer % (depth + 1) for layer in ([layers] if isinstance(layers, int) else layers))
        for index in range(max(0, deepest - n), deepest):  # hidden_states[k] is the output of block k-1
            for name, param in tower.encoder.layer[index].named_parameters():
                param.requires_grad_(True)
                names.append(_join(prefix, f"encoder.layer.{index}.{name}"))
        if final_norm:
            for name, param in tower.layernorm.named_parameters():
                param.requires_grad_(True)
                names.append(_join(prefix, f"layernorm.{name}"))
    return names


__all__ = [
    "TIPSV2_ATTENTION_MODULES",
    "TIPSV2_MLP_MODULES",
    "LM_LORA_MODULES",
    "vision_towers",
    "vision_lora_targets",
    "language_lora_targets",
    "freeze_vision_tower",
    "unfreeze_last_n_blocks",
]
