"""Shims that let llava-torch 1.2.2.post1 (written for transformers 4.36) run on transformers 5.

LLaVA's model code (``llava.model.*``, ``llava.mm_utils``, ``llava.conversation``) imports and runs
unchanged; what breaks is the glue to newer transformers APIs:

1. Generation: ``LlavaLlamaForCausalLM.forward`` (and the Mistral / MPT variants) has no
   ``**kwargs``, and ``generate`` now passes ``cache`` (4.38+: ``cache_position``;
   5.x: ``cache``, ``logits_to_keep``). The shim maps ``cache`` to LLaVA's ``past_key_values``
   and drops the two optimisation-only arguments.
2. Training script imports: ``llava/train/llava_trainer.py`` imports ``ALL_LAYERNORM_LAYERS``,
   ``get_parameter_names`` and ``has_length`` from ``transformers.trainer``, where transformers 5
   no longer re-exports them. The shim adds those three names there (from
   ``transformers.pytorch_utils``, ``trainer_pt_utils`` and ``trainer_utils``), only if missing.
3. ``LLaVATrainer`` overrides written for the 4.x ``Trainer``: ``__init__(tokenizer=...)`` (5.x:
   ``processing_class``), ``_get_train_sampler(self)`` (5.x passes the dataset) and
   ``_save_checkpoint(model, trial, metrics)`` (5.x: ``(model, trial)``). The shims adapt the calls.

Each shim checks the installed signatures and is a no-op where nothing changed; every patched
attribute keeps its original in ``_tipsv2_original`` so ``restore()`` puts it back.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

CAUSAL_LMS = (
    ("llava.model.language_model.llava_llama", "LlavaLlamaForCausalLM"),
    ("llava.model.language_model.llava_mistral", "LlavaMistralForCausalLM"),
    ("llava.model.language_model.llava_mpt", "LlavaMptForCausalLM"),
)
TRAINER_ALIASES = {
    "ALL_LAYERNORM_LAYERS": "transformers.pytorch_utils",
    "get_parameter_names": "transformers.trainer_pt_utils",
    "has_length": "transformers.trainer_utils",
}
_ADDED = "_tipsv2_added_aliases"


def _mark(wrapper: Callable, original: Callable) -> Callable:
    wrapper._tipsv2_original = original
    return wrapper


def install(owner: Any, attr: str, wrap: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.attr`` by ``wrap(owner.attr)`` once (a second call changes nothing)."""
    current = getattr(owner, attr)
    if hasattr(current, "_tipsv2_original"):
        return
    wrapper = _mark(wrap(current), current)
    wrapper._tipsv2_inherited = attr not in vars(owner)  # e.g. __init__ that LLaVATrainer inherits
    setattr(owner, attr, wrapper)


def restore(owner: Any, attr: str) -> None:
    """Undo ``install``: put the original back (or drop the override of an inherited one)."""
    current = getattr(owner, attr)
    if not hasattr(current, "_tipsv2_original"):
        return
    if current._tipsv2_inherited:
        delattr(owner, attr)
    else:
        setattr(owner, attr, current._tipsv2_original)


def forward_shim(original: Callable) -> Callable:
    """Accept ``cache`` / ``cache_position`` / ``logits_to_keep`` in LLaVA's causal LM ``forward``."""

    @functools.wraps(original)
    def forward(self, *args: Any, cache: Any = None, cache_position: Any = None, logits_to_keep: Any = None, **kwargs):
        if cache is not None and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = cache
        return original(self, *args, **kwargs)

    return _mark(forward, original)


def _trainer_accepts(name: str, parameter: str) -> bool:
    from transformers import Trainer

    return parameter in inspect.signature(getattr(Trainer, name)).parameters


def init_shim(original: Callable) -> Callable:
    """``LLaVATrainer(tokenizer=...)`` → ``processing_class=...`` where ``Trainer`` dropped ``tokenizer``."""

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any):
        if "tokenizer" in kwargs and not _trainer_accepts("__init__", "tokenizer"):
            kwargs.setdefault("processing_class", kwargs.pop("tokenizer"))
        original(self, *args, **kwargs)

    return _mark(__init__, original)


def sampler_shim(original: Callable) -> Callable:
    """Let ``_get_train_sampler`` take the dataset argument newer ``Trainer`` versions pass."""

    @functools.wraps(original)
    def _get_train_sampler(self, train_dataset: Any = None):
        return original(self)  # LLaVA's version reads self.train_dataset, the same dataset

    return _mark(_get_train_sampler, original)


def checkpoint_shim(original: Callable) -> Callable:
    """Drop the ``metrics`` argument that ``Trainer._save_checkpoint`` no longer takes."""

    @functools.wraps(original)
    def _save_checkpoint(self, model: Any, trial: Any, metrics: Any = None):
        if _trainer_accepts("_save_checkpoint", "metrics"):
            return original(self, model, trial, metrics)
        if getattr(self.args, "tune_mm_mlp_adapter", False):
            return original(self, model, trial)  # LLaVA's projector-only branch never calls super()
        from transformers import Trainer

        return Trainer._save_checkpoint(self, model, trial)

    return _mark(_save_checkpoint, original)


def add_trainer_aliases() -> None:
    """Re-export the three helpers ``llava_trainer`` imports from ``transformers.trainer``."""
    trainer = importlib.import_module("transformers.trainer")
    added = getattr(trainer, _ADDED, [])
    for name, home in TRAINER_ALIASES.items():
        if not hasattr(trainer, name):
            setattr(trainer, name, getattr(importlib.import_module(home), name))
            added.append(name)
    setattr(trainer, _ADDED, added)


def remove_trainer_aliases() -> None:
    trainer = sys.modules.get("transformers.trainer")
    for name in getattr(trainer, _ADDED, []):
        delattr(trainer, name)
    if trainer is not None and hasattr(trainer, _ADDED):
        delattr(trainer, _ADDED)


def patch_targets(import_missing: bool = True) -> list[tuple[Any, str, Callable[[Callable], Callable]]]:
    """``(owner, attribute, wrapper factory)`` for every shim; imports llava modules if asked."""

    def find(module_name: str) -> Any:
        if not import_missing:
            return sys.modules.get(module_name)
        try:
            return importlib.import_module(module_name)
        except ImportError:  # a variant absent from this llava release, or the training extras missing
            return None

    targets = []
    for module_name, class_name in CAUSAL_LMS:
        cls = getattr(find(module_name), class_name, None)
        if cls is not None:
            targets.append((cls, "forward", forward_shim))
    if import_missing:
        add_trainer_aliases()
    trainer = getattr(find("llava.train.llava_trainer"), "LLaVATrainer", None)
    if trainer is not None:
        targets += [
            (trainer, "__init__", init_shim),
            (trainer, "_get_train_sampler", sampler_shim),
            (trainer, "_save_checkpoint", checkpoint_shim),
        ]
    return targets


__all__ = [
    "install",
    "restore",
    "forward_shim",
    "init_shim",
    "sampler_shim",
    "checkpoint_shim",
    "add_trainer_aliases",
    "remove_trainer_aliases",
    "patch_targets",
]
