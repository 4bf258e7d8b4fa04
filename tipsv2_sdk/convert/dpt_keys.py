"""The key layout of the official DPT decoder checkpoints and its mapping to transformers' ``Tipsv2Dpt*``.

The official decoders are released as Scenic (Flax) parameter trees flattened into ``.npz``/``.zip``
archives, one per task, with ``/``-separated keys, optionally under ``decoder/`` and ``dpt/``::

    dpt/reassemble_blocks/readout_projects_{i}/{kernel,bias}    Dense (2D -> D), GELU-tanh after it
    dpt/reassemble_blocks/out_projection_{i}/{kernel,bias}      1x1 conv D -> C_i
    dpt/reassemble_blocks/resize_layers_{0,1}/{kernel,bias}     ConvTranspose k=s=4 and k=s=2
    dpt/reassemble_blocks/resize_layers_3/{kernel,bias}         3x3 conv, stride 2 (stage 2 is identity)
    dpt/convs_{i}/kernel                                        3x3 conv C_i -> F, no bias
    dpt/fusion_blocks_{i}/PreActResidualConvUnit_{0,1}/conv{1,2}/kernel   (block 0 has one unit)
    dpt/fusion_blocks_{i}/Conv_0/{kernel,bias}                  1x1 conv after the 2x upsampling
    dpt/project/{kernel,bias}                                   3x3 conv F -> F
    pixel_depth_classif | pixel_normals | pixel_segmentation/{kernel,bias}   Dense F -> outputs

Flax kernels are (H, W, in, out); PyTorch convs want (out, in, H, W), transposed convs
(in, out, H, W) and linears (out, in). Flax's ``ConvTranspose`` does not flip its kernel while
PyTorch's does, so transposed-conv kernels are also rotated by 180 degrees. In a fusion block with a
residual input, unit 0 refines the residual (transformers' ``residual_layer1``) and unit 1 the sum
(``residual_layer2``); block 0 has no residual input, so its only unit is ``residual_layer2``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError
from .keys import raise_key_problems
from .npz import NpzCheckpoint

TASKS = ("depth", "normals", "segmentation")
# Scenic head name -> task. The regression depth head has no transformers counterpart (see below).
HEADS = {
    "pixel_depth_classif": "depth",
    "pixel_normals": "normals",
    "pixel_segmentation": "segmentation",
    "segmentation_head": "segmentation",
}
REGRESSION_HEAD = "pixel_depth_regress"
NUM_STAGES = 4  # transformers' reassemble factors (4, 2, 1, 0.5) fix four stages


@dataclass(frozen=True)
class DecoderLayout:
    """What one decoder checkpoint's keys and header shapes say about it."""

    task: str
    head: str  # the Scenic name of its task head
    embed_dim: int  # width of the ViT features it reads
    neck_sizes: tuple[int, ...]  # channels of the four reassembled maps
    fusion_size: int  # channels of the fusion blocks
    out_channels: int  # depth bins, 3 normal components, or classes


@dataclass(frozen=True)
class KernelRule:
    """One Scenic tensor, the transformers parameter it becomes, and how its axes move."""

    source: str  # normalised key (without ``decoder/`` and ``dpt/``)
    target: str
    kind: str  # "conv" | "conv_transpose" | "dense" | "bias"


def _normalise(key: str) -> str:
    """``decoder/dpt/x/Conv_0/kernel`` and ``x/out_conv/kernel`` both become ``x/Conv_0/kernel``."""
    for prefix in ("decoder/", "dpt/"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.replace("/out_conv/", "/Conv_0/")


def normalised_keys(ckpt: NpzCheckpoint) -> dict[str, str]:
    """Normalised key -> the key as spelled in the file; a key present twice is refused."""
    keys: dict[str, str] = {}
    for key in ckpt.keys():
        norm = _normalise(key)
        if norm in keys:
            raise CheckpointError(f"DPT checkpoint {ckpt.name} holds {keys[norm]!r} and {key!r}: the same tensor twice")
        keys[norm] = key
    return keys


def _shape(ckpt: NpzCheckpoint, keys: Mapping[str, str], key: str, what: str) -> tuple[int, ...]:
    if key not in keys:
        raise CheckpointError(f"DPT checkpoint {ckpt.name} has no {key!r} ({what})")
    return ckpt.shape(keys[key])


def read_decoder_layout(ckpt: NpzCheckpoint) -> DecoderLayout:
    """Recognise the task and the sizes of an official DPT decoder checkpoint from its keys."""
    names = ckpt.keys()
    if "pos_embed" in ckpt or "token_embedding.weight" in ckpt:
        raise CheckpointError(f"{ckpt.path} is an encoder checkpoint, not a DPT decoder; pass it as --vision")
    if names and not any("/" in k for k in names):
        raise CheckpointError(
            f"DPT checkpoint {ckpt.path} has PyTorch-style keys ({sorted(names)[0]!r}); tipsv2 convert reads the "
            "official Scenic decoder checkpoints (keys such as decoder/dpt/reassemble_blocks/out_projection_0/kernel)"
        )
    keys = normalised_keys(ckpt)
    tops = {k.split("/")[0] for k in keys}
    if REGRESSION_HEAD in tops:
        raise CheckpointError(
            f"DPT checkpoint {ckpt.name} has a regression depth head ({REGRESSION_HEAD}); transformers' "
            "Tipsv2Dpt predicts depth by 256-bin classification (pixel_depth_classif) only"
        )
    heads = sorted(t for t in tops if t in HEADS)
    if len(heads) != 1:
        found = f"several task heads ({', '.join(heads)})" if heads else "no task head"
        raise CheckpointError(
            f"DPT checkpoint {ckpt.name} has {found}; expected exactly one of {', '.join(sorted(HEADS))}"
        )
    head = heads[0]
    if not any(k.startswith("reassemble_blocks/readout_projects_") for k in keys):
        raise CheckpointError(
            f"DPT checkpoint {ckpt.name} has no reassemble_blocks/readout_projects_*: only the 'project' readout "
            "(class token concatenated and projected) exists in transformers' Tipsv2Dpt"
        )
    readout = _shape(ckpt, keys, "reassemble_blocks/readout_projects_0/kernel", "readout projection")
    if len(readout) != 2 or readout[0] != 2 * readout[1]:
        raise CheckpointError(
            f"DPT checkpoint {ckpt.name}: readout_projects_0/kernel has shape {readout}, expected (2 * width, width)"
        )
    stages = sorted(
        int(k.split("/")[1].rsplit("_", 1)[1]) for k in keys
        if k.startswith("reassemble_blocks/out_projection_") and k.endswith("/kernel")
    )
    if stages != list(range(NUM_STAGES)):
        raise CheckpointError(
            f"DPT checkpoint {ckpt.name} has reassemble stages {stages}; transformers' Tipsv2Dpt has exactly "
            f"{list(range(NUM_STAGES))}"
        )
    neck = tuple(_shape(ckpt, keys, f"reassemble_blocks/out_projection_{i}/kernel", "projection")[-1]
                 for i in range(NUM_STAGES))
    fusion = _shape(ckpt, keys, "convs_0/kernel", "first fusion input conv")[-1]
    out = _shape(ckpt, keys, f"{head}/kernel", "task head")
    return DecoderLayout(task=HEADS[head], head=head, embed_dim=int(readout[1]), neck_sizes=tuple(map(int, neck)),
                         fusion_size=int(fusion), out_channels=int(out[-1]))


def decoder_rules(head: str, neck: str = "neck.", decoder: str = "decoder.") -> list[KernelRule]:
    """The rules of one decoder; ``neck``/``decoder`` are the target prefixes (``depth_neck.`` ...)."""
    rules: list[KernelRule] = []

    def pair(src: str, dst: str, kind: str, bias: bool = True) -> None:
        rules.append(KernelRule(f"{src}/kernel", f"{dst}.weight", kind))
        if bias:
            rules.append(KernelRule(f"{src}/bias", f"{dst}.bias", "bias"))

    stage = f"{neck}reassemble_stage"
    for i in range(NUM_STAGES):
        pair(f"reassemble_blocks/readout_projects_{i}", f"{stage}.readout_projects.{i}.layers.0", "dense")
        pair(f"reassemble_blocks/out_projection_{i}", f"{stage}.layers.{i}.projection", "conv")
        pair(f"convs_{i}", f"{neck}convs.{i}", "conv", bias=False)
    for i, kind in ((0, "conv_transpose"), (1, "conv_transpose"), (3, "conv")):  # stage 2 keeps its size
        pair(f"reassemble_blocks/resize_layers_{i}", f"{stage}.layers.{i}.resize", kind)
    for i in range(NUM_STAGES):
        block, layer = f"fusion_blocks_{i}", f"{neck}fusion_stage.layers.{i}"
        units = {0: "residual_layer2"} if i == 0 else {0: "residual_layer1", 1: "residual_layer2"}
        for unit, name in units.items():
            for conv in ("conv1", "conv2"):
                convolution = conv.replace("conv", "convolution")
                pair(f"{block}/PreActResidualConvUnit_{unit}/{conv}", f"{layer}.{name}.{convolution}", "conv",
                     bias=False)
        pair(f"{block}/Conv_0", f"{layer}.projection", "conv")
    pair("project", f"{decoder}project", "conv")
    pair(head, f"{decoder}head", "dense")
    return rules


def to_torch(array: np.ndarray, kind: str) -> np.ndarray:
    """A Flax-layout array in the layout of the PyTorch parameter it becomes."""
    if kind == "conv":  # (H, W, in, out) -> (out, in, H, W)
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if kind == "conv_transpose":  # rotate 180 degrees, then (H, W, in, out) -> (in, out, H, W)
        return np.ascontiguousarray(array[::-1, ::-1].transpose(2, 3, 0, 1))
    if kind == "dense":  # (in, out) -> (out, in)
        return np.ascontiguousarray(array.T)
    return array


def source_shape(target_shape: Sequence[int], kind: str) -> tuple[int, ...]:
    """The Flax shape that becomes a parameter of ``target_shape`` (inverse of ``to_torch``)."""
    s = tuple(int(d) for d in target_shape)
    if kind == "conv":
        return (s[2], s[3], s[1], s[0])
    if kind == "conv_transpose":
        return (s[2], s[3], s[0], s[1])
    if kind == "dense":
        return (s[1], s[0])
    return s


def check_decoder_keys(ckpt: NpzCheckpoint, rules: Sequence[KernelRule],
                       target_shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Refuse a decoder checkpoint whose keys or shapes differ from ``rules``; every problem is named.

    Keys are named as the file spells them (``decoder/dpt/...``) when they exist, else normalised.
    """
    keys = normalised_keys(ckpt)
    wanted = {rule.source for rule in rules}
    missing = [rule.source for rule in rules if rule.source not in keys]
    unexpected = sorted(keys[k] for k in keys if k not in wanted)
    wrong = []
    for rule in rules:
        if rule.source in keys:
            expected = source_shape(target_shapes[rule.target], rule.kind)
            actual = tuple(ckpt.shape(keys[rule.source]))
            if actual != expected:
                wrong.append(f"{keys[rule.source]} {actual} (expected {expected})")
    raise_key_problems(where, missing, unexpected, wrong)


def read_decoder_arrays(ckpt: NpzCheckpoint, rules: Sequence[KernelRule]) -> dict[str, np.ndarray]:
    """Target parameter name -> array in PyTorch layout, for every rule (keys already checked)."""
    keys = normalised_keys(ckpt)
    return {rule.target: to_torch(ckpt.array(keys[rule.source]), rule.kind) for rule in rules}


__all__ = ["TASKS", "HEADS", "DecoderLayout", "KernelRule", "read_decoder_layout", "decoder_rules", "to_torch",
           "source_shape", "check_decoder_keys", "read_decoder_arrays", "normalised_keys"]
