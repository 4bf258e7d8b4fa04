"""``convert_official_dpt``: the official vision ``.npz`` + DPT decoder checkpoints → a transformers directory.

The result is a ``Tipsv2DptFor{DepthEstimation,NormalEstimation,SemanticSegmentation}`` directory
when one decoder is given, and a ``Tipsv2DptForDensePrediction`` directory (one shared backbone,
three heads) otherwise. ``tips.load_dense`` and transformers' own ``from_pretrained`` read it.

Decisions taken from the official PyTorch decoders (``pytorch/decoders.py``, google-deepmind/tips):

* the ViT features are the outputs of four blocks after the final norm, ``(CLS, patches)`` per
  block; the official notebook takes blocks ``[2, 5, 8, 11]`` (B), ``[5, 11, 17, 23]`` (L),
  ``[6, 13, 20, 26]`` (SO400m) and ``[9, 19, 29, 39]`` (g), which is ``ceil(depth * k / 4) - 1``
  for k = 1..4 (``dpt_layers``); transformers counts the embeddings as stage 0, hence ``+ 1``.
* no activation after the decoder's 3x3 ``project`` conv (the reference sets
  ``output_activation=False``), while transformers' config default puts a ReLU there for depth:
  converted configs say ``depth_decoder_activation="linear"`` (the identity).
* depth: 256-bin classification between 0.001 and 10 m (ReLU, + min depth, normalise, expectation).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from ..registry import ModelSpec, get_spec, make_config
from .dpt_keys import TASKS, DecoderLayout, check_decoder_keys, decoder_rules, read_decoder_arrays, read_decoder_layout
from .keys import check_keys, vision_rules
from .layout import check_vision_variant, read_vision_layout, spec_for_grid
from .npz import NpzCheckpoint
from .official import _check_out_dir

if TYPE_CHECKING:
    import torch
    from transformers import Tipsv2DptConfig

# Seed of heads left at random initialisation (a DensePrediction model converted from two decoders).
RANDOM_HEAD_SEED = 0
SINGLE_TASK_CLASSES = {
    "depth": "Tipsv2DptForDepthEstimation",
    "normals": "Tipsv2DptForNormalEstimation",
    "segmentation": "Tipsv2DptForSemanticSegmentation",
}
DENSE_CLASS = "Tipsv2DptForDensePrediction"


def dpt_layers(depth: int) -> tuple[int, ...]:
    """The four transformers backbone stages (1-based block outputs) the official DPT heads read."""
    return tuple(math.ceil(depth * k / 4) for k in range(1, 5))


def target_prefixes(task: str, dense: bool) -> tuple[str, str]:
    """The neck and decoder prefixes of ``task``'s parameters in the model class being built."""
    return (f"{task}_neck.", f"{task}_decoder.") if dense else ("neck.", "decoder.")


def convert_official_dpt(
    vision_npz: str | os.PathLike,
    decoders: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    variant: str | ModelSpec = "tipsv2-b14",
    *,
    layers: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Convert the official vision encoder and DPT decoder checkpoints into a transformers directory.

    Args:
        vision_npz: the official vision ``.npz`` (the backbone the decoders were trained on).
        decoders: one to three official DPT decoder checkpoints (Scenic ``.npz``/``.zip``); each one's
            task (depth, normals, segmentation) is recognised from its head's key.
        out_dir: the directory to write; an existing model directory there is replaced atomically.
        variant: registry name of the backbone (``tipsv2-b14`` ...) or a ``ModelSpec``.
        layers: the four backbone stages (1-based) the heads read; default ``dpt_layers(depth)``.
        labels: class names of the segmentation head (``config.id2label``); default ``LABEL_i``.

    Every key and shape of every file is checked before anything is written. With two decoders the
    third head of the ``Tipsv2DptForDensePrediction`` is seeded random and listed in
    ``tipsv2_sdk.json`` under ``random_heads``.

    Raises:
        CheckpointError: a file does not fit (naming missing/unexpected keys, shapes, or the task).
        FileNotFoundError: an input file does not exist.
    """
    spec = variant if isinstance(variant, ModelSpec) else get_spec(variant)
    if not decoders:
        raise CheckpointError("no DPT decoder checkpoint given (--dpt)")
    out = _check_out_dir(Path(out_dir), [Path(vision_npz), *map(Path, decoders)])
    with contextlib.ExitStack() as stack:
        vision = stack.enter_context(NpzCheckpoint(vision_npz, "vision"))
        vision_layout = read_vision_layout(vision)
        heads = {}
        for path in decoders:
            ckpt = stack.enter_context(NpzCheckpoint(path, "DPT"))
            layout = read_decoder_layout(ckpt)
            if layout.task in heads:
                raise CheckpointError(f"{heads[layout.task][0].name} and {ckpt.name} are both {layout.task} decoders")
            heads[layout.task] = (ckpt, layout)
        layouts = [layout for _, layout in heads.values()]
        _check_decoders_agree(heads, vision_layout.width)
        backbone_spec = spec_for_grid(spec, vision_layout.grid)
        stages = tuple(layers) if layers is not None else dpt_layers(spec.depth)
        config = build_config(backbone_spec, layouts, stages, labels)
        dense = len(heads) > 1
        cls_name = DENSE_CLASS if dense else SINGLE_TASK_CLASSES[layouts[0].task]
        shapes = _target_shapes(cls_name, config)
        _check_vision(vision, vision_layout, spec, shapes)
        rules = {task: decoder_rules(layout.head, *target_prefixes(task, dense)) for task, (_, layout) in heads.items()}
        for task, (ckpt, _) in heads.items():
            check_decoder_keys(ckpt, rules[task], shapes, where=f"{task} DPT checkpoint {ckpt.name} ({spec.name})")
        random_heads = [task for task in TASKS if dense and task not in heads]
        _assert_complete(shapes, vision_rules(spec.depth, spec.swiglu, prefix="backbone."), rules, random_heads)
        model = _build_model(cls_name, config, random=bool(random_heads))
        _fill(model, vision, vision_rules(spec.depth, spec.swiglu, prefix="backbone."),
              {task: (heads[task][0], rules[task]) for task in heads})
    meta = _meta(spec, vision, {task: ckpt for task, (ckpt, _) in heads.items()}, random_heads, stages)
    return _save(model, out, meta, int(config.backbone_config.image_size))


# ---------------------------------------------------------------------- config and checks
def build_config(backbone: ModelSpec, layouts: Sequence[DecoderLayout], stages: Sequence[int],
                 labels: Sequence[str] | None = None) -> Tipsv2DptConfig:
    """The ``Tipsv2DptConfig`` of ``backbone`` with heads of the given layouts reading ``stages``."""
    from transformers import Tipsv2DptConfig

    if len(stages) != 4 or sorted(set(stages)) != list(stages) or stages[0] < 1 or stages[-1] > backbone.depth:
        raise CheckpointError(f"layers {list(stages)}: expected four increasing block numbers in 1..{backbone.depth}")
    # The backbone stages are the final-normed (CLS, register, patch) tokens of the chosen blocks.
    backbone_config = make_config(backbone, out_indices=list(stages), apply_layernorm=True,
                                  reshape_hidden_states=False).vision_config
    first = layouts[0]
    by_task = {layout.task: layout for layout in layouts}
    kwargs: dict[str, Any] = {}
    if "depth" in by_task:
        kwargs["num_depth_bins"] = by_task["depth"].out_channels
    if "segmentation" in by_task:
        classes = by_task["segmentation"].out_channels
        names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(classes)]
        if len(names) != classes:
            raise CheckpointError(f"{len(names)} labels given but the segmentation head has {classes} classes")
        kwargs["id2label"] = dict(enumerate(names))
        kwargs["label2id"] = {name: i for i, name in enumerate(names)}
    elif labels is not None:
        raise CheckpointError("labels were given but no segmentation decoder")
    if "normals" in by_task and by_task["normals"].out_channels != 3:
        raise CheckpointError(f"the normals head has {by_task['normals'].out_channels} outputs, expected 3")
    return Tipsv2DptConfig(
        backbone_config=backbone_config,
        neck_hidden_sizes=list(first.neck_sizes),
        fusion_hidden_size=first.fusion_size,
        reassemble_factors=[4, 2, 1, 0.5],
        readout_activation="gelu_pytorch_tanh",
        depth_decoder_activation="linear",
        **kwargs,
    )


def _check_decoders_agree(heads: dict[str, tuple[NpzCheckpoint, DecoderLayout]], width: int) -> None:
    # transformers' Tipsv2DptConfig has one set of neck sizes for all three heads.
    for ckpt, layout in heads.values():
        if layout.embed_dim != width:
            raise CheckpointError(
                f"DPT checkpoint {ckpt.name} reads {layout.embed_dim}-dim features but the vision checkpoint has "
                f"width {width}: they belong to different model sizes"
            )
    sizes = {(layout.neck_sizes, layout.fusion_size) for _, layout in heads.values()}
    if len(sizes) > 1:
        listed = "; ".join(f"{ckpt.name}: neck {list(layout.neck_sizes)}, fusion {layout.fusion_size}"
                           for ckpt, layout in heads.values())
        raise CheckpointError(f"the DPT decoders have different sizes ({listed}); one model needs equal sizes")


def _target_shapes(cls_name: str, config: Tipsv2DptConfig) -> dict[str, tuple[int, ...]]:
    import torch
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, cls_name)(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _check_vision(ckpt: NpzCheckpoint, layout, spec: ModelSpec, shapes: dict[str, tuple[int, ...]]) -> None:
    ffn = "gate_proj" if spec.swiglu else "fc1"
    mlp_hidden = shapes[f"backbone.encoder.layer.0.mlp.{ffn}.weight"][0]
    check_vision_variant(layout, spec, mlp_hidden, ckpt.name)
    check_keys(vision_rules(spec.depth, spec.swiglu, prefix="backbone."), {k: ckpt.shape(k) for k in ckpt.keys()},
               shapes, where=f"vision checkpoint {ckpt.name} ({spec.name})")


def _assert_complete(shapes: dict[str, tuple[int, ...]], vision, rules: dict[str, list], random_heads: list[str]) -> None:
    # Guards against a transformers release renaming a parameter: nothing may stay uninitialised.
    targets = {t for rule in vision for t in rule.targets} | {r.target for rs in rules.values() for r in rs}
    left = {name for name in shapes if not any(name.startswith(p) for task in random_heads
                                               for p in target_prefixes(task, True))}
    uncovered, unknown = sorted(left - targets), sorted(targets - set(shapes))
    if uncovered or unknown:
        raise RuntimeError(f"DPT conversion rules do not fit this transformers version: uncovered {uncovered}, "
                           f"unknown {unknown}")


# ---------------------------------------------------------------------- building and writing
def _build_model(cls_name: str, config: Tipsv2DptConfig, random: bool) -> torch.nn.Module:
    import torch
    import transformers

    from ..hf_utils import quiet_transformers

    cls = getattr(transformers, cls_name)
    with quiet_transformers():
        if not random:
            from transformers.initialization import no_init_weights

            with no_init_weights():
                return cls(config).eval()
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG state
            torch.manual_seed(RANDOM_HEAD_SEED)
            return cls(config).eval()


def _fill(model: torch.nn.Module, vision: NpzCheckpoint, vision_rules_: list, decoders: dict[str, tuple]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for rule in vision_rules_:
            value = torch.from_numpy(vision.array(rule.source))
            for target, chunk in zip(rule.targets, value.chunk(len(rule.targets), dim=0)):
                params[target].copy_(chunk)
        for ckpt, rules in decoders.values():
            for target, array in read_decoder_arrays(ckpt, rules).items():
                params[target].copy_(torch.from_numpy(array))


def _meta(spec: ModelSpec, vision: NpzCheckpoint, decoders: dict[str, NpzCheckpoint], random_heads: list[str],
          stages: Sequence[int]) -> dict[str, Any]:
    tasks = [task for task in TASKS if task in decoders]
    description = f"{spec.name} DPT ({', '.join(tasks)}) converted from the official checkpoints"
    if random_heads:
        description += f"; {' and '.join(random_heads)} head randomly initialised (not converted)"
    return {
        "name": f"{spec.name}-dpt",
        "variant": spec.name,
        "trained": True,
        "tasks": tasks,
        "random_heads": random_heads,
        "layers": list(stages),
        "description": description,
        "converted_from": {"vision": vision.name, **{task: decoders[task].name if task in decoders else None
                                                     for task in TASKS}},
    }


def _save(model: torch.nn.Module, out: Path, meta: dict[str, Any], image_size: int) -> Path:
    from ..hf_utils import quiet_transformers
    from ..image_processor import make_image_processor
    from ..io import atomic_directory
    from ..model import SDK_CONFIG_FILE

    with atomic_directory(out) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        make_image_processor(image_size).save_pretrained(tmp)
        (tmp / SDK_CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


__all__ = ["convert_official_dpt", "dpt_layers", "build_config", "target_prefixes", "SINGLE_TASK_CLASSES",
           "DENSE_CLASS"]
