"""The key mapping from the official PyTorch layout to transformers' ``Tipsv2Model``.

Official vision keys (DINOv2-style ViT, unchunked blocks)::

    cls_token  register_tokens  mask_token  pos_embed  patch_embed.proj.{weight,bias}  norm.*
    blocks.N.{norm1,norm2}.*  blocks.N.attn.qkv.*  blocks.N.attn.proj.*  blocks.N.ls{1,2}.gamma
    blocks.N.mlp.{fc1,fc2}.*            (GELU MLP)
    blocks.N.mlp.{w12,w3}.*             (SwiGLU, g/14: w12 = [gate; up])

Official text keys (CLIP-style transformer)::

    token_embedding.weight  ln_final.*  temperature | temperature_contrastive
    transformer.resblocks.N.{ln_1,ln_2}.*  .attn.in_proj_{weight,bias}  .attn.out_proj.*
    transformer.resblocks.N.mlp.{c_fc,c_proj}.*

A fused source tensor (``qkv``, ``in_proj``, ``w12``) is split into equal chunks along its first
axis, in the order of the target names.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import CheckpointError

TEMPERATURE_KEYS = ("temperature", "temperature_contrastive")
_MAX_LISTED = 12  # keys named per category in an error message


@dataclass(frozen=True)
class Rule:
    """One official tensor and the transformers parameter(s) it becomes."""

    source: str
    targets: tuple[str, ...]  # more than one: split into equal chunks along axis 0


def _pair(src: str, dst: str) -> list[Rule]:
    return [Rule(f"{src}.weight", (f"{dst}.weight",)), Rule(f"{src}.bias", (f"{dst}.bias",))]


def _split(src: str, dsts: Sequence[str]) -> list[Rule]:
    return [
        Rule(f"{src}.weight", tuple(f"{d}.weight" for d in dsts)),
        Rule(f"{src}.bias", tuple(f"{d}.bias" for d in dsts)),
    ]


def vision_rules(depth: int, swiglu: bool, prefix: str = "vision_model.") -> list[Rule]:
    """Rules for a vision tower of ``depth`` blocks; target names carry ``prefix``."""
    emb = f"{prefix}embeddings."
    rules = [
        Rule("cls_token", (f"{emb}cls_token",)),
        Rule("register_tokens", (f"{emb}register_tokens",)),
        Rule("mask_token", (f"{emb}mask_token",)),
        Rule("pos_embed", (f"{emb}position_embeddings",)),
        *_pair("patch_embed.proj", f"{emb}patch_embeddings.projection"),
        *_pair("norm", f"{prefix}layernorm"),
    ]
    for i in range(depth):
        src, dst = f"blocks.{i}", f"{prefix}encoder.layer.{i}"
        rules += _pair(f"{src}.norm1", f"{dst}.norm1")
        rules += _split(f"{src}.attn.qkv", [f"{dst}.attention.{p}_proj" for p in "qkv"])
        rules += _pair(f"{src}.attn.proj", f"{dst}.attention.o_proj")
        rules.append(Rule(f"{src}.ls1.gamma", (f"{dst}.layer_scale1.lambda1",)))
        rules += _pair(f"{src}.norm2", f"{dst}.norm2")
        if swiglu:
            # The reference computes silu(x1) * x2 with x1, x2 = w12(x).chunk(2): x1 is the gate.
            rules += _split(f"{src}.mlp.w12", [f"{dst}.mlp.gate_proj", f"{dst}.mlp.up_proj"])
            rules += _pair(f"{src}.mlp.w3", f"{dst}.mlp.down_proj")
        else:
            rules += _pair(f"{src}.mlp.fc1", f"{dst}.mlp.fc1")
            rules += _pair(f"{src}.mlp.fc2", f"{dst}.mlp.fc2")
        rules.append(Rule(f"{src}.ls2.gamma", (f"{dst}.layer_scale2.lambda1",)))
    return rules


def text_rules(depth: int, prefix: str = "text_model.") -> list[Rule]:
    """Rules for a text tower of ``depth`` residual blocks (temperature is handled separately)."""
    rules = [
        Rule("token_embedding.weight", (f"{prefix}embeddings.token_embedding.weight",)),
        *_pair("ln_final", f"{prefix}final_layer_norm"),
    ]
    for i in range(depth):
        src, dst = f"transformer.resblocks.{i}", f"{prefix}encoder.layers.{i}"
        rules += _pair(f"{src}.ln_1", f"{dst}.layer_norm1")
        # nn.MultiheadAttention packs [q; k; v] into in_proj_weight / in_proj_bias.
        qkv = [f"{dst}.self_attn.{p}_proj" for p in "qkv"]
        rules.append(Rule(f"{src}.attn.in_proj_weight", tuple(f"{t}.weight" for t in qkv)))
        rules.append(Rule(f"{src}.attn.in_proj_bias", tuple(f"{t}.bias" for t in qkv)))
        rules += _pair(f"{src}.attn.out_proj", f"{dst}.self_attn.out_proj")
        rules += _pair(f"{src}.ln_2", f"{dst}.layer_norm2")
        rules += _pair(f"{src}.mlp.c_fc", f"{dst}.mlp.fc1")
        rules += _pair(f"{src}.mlp.c_proj", f"{dst}.mlp.fc2")
    return rules


def expected_shape(rule: Rule, target_shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The shape the official tensor must have, derived from the target model's parameters."""
    shapes = [tuple(target_shapes[t]) for t in rule.targets]
    if len(shapes) == 1:
        return shapes[0]
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _listed(keys: Sequence[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (and {len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def raise_key_problems(where: str, missing: Sequence[str], unexpected: Sequence[str], wrong: Sequence[str]) -> None:
    """One ``CheckpointError`` naming every missing, unexpected and wrongly shaped key (if any)."""
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_listed(wrong)}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def check_keys(
    rules: Sequence[Rule],
    source_shapes: Mapping[str, tuple[int, ...]],
    target_shapes: Mapping[str, tuple[int, ...]],
    *,
    where: str,
    ignore: Sequence[str] = (),
) -> None:
    """Refuse a checkpoint whose keys or shapes differ from what ``rules`` expect.

    Args:
        rules: the mapping for the model being built.
        source_shapes: every key of the checkpoint with its shape.
        target_shapes: every parameter of the target model with its shape.
        where: names the checkpoint and variant in the message.
        ignore: checkpoint keys that are handled elsewhere (temperature).

    Raises:
        CheckpointError: naming every missing key, unexpected key and wrong shape.
    """
    wanted = {rule.source for rule in rules}
    missing = [rule.source for rule in rules if rule.source not in source_shapes]
    unexpected = sorted(k for k in source_shapes if k not in wanted and k not in ignore)
    wrong = []
    for rule in rules:
        if rule.source in source_shapes:
            expected = expected_shape(rule, target_shapes)
            if tuple(source_shapes[rule.source]) != expected:
                wrong.append(f"{rule.source} {tuple(source_shapes[rule.source])} (expected {expected})")
    raise_key_problems(where, missing, unexpected, wrong)
