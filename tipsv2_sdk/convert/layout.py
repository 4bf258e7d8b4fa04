"""Recognise what an official checkpoint holds and check it against the requested variant.

The layout is read from key names and header shapes only: width from the class token, depth from
the block indices, SwiGLU from ``mlp.w12``, and the TIPS version from the position grid.

Grids: TIPSv2 checkpoints carry a 32x32 grid (448 px at patch 14). TIPS v1 was trained with a
16x16 grid (224 px); its low-resolution release keeps it, so a 16x16 grid is certainly TIPS v1.
The v1 high-resolution PyTorch releases are exported at 448 px (the reference builds them with
``img_size=448`` and loads them strictly), so a 32x32 grid is TIPSv2 *or* TIPS v1 high-res: there
the variant name decides. The converted config takes its image size from the checkpoint's grid.
"""
from __future__ import annotations

import math
import re
import dataclasses
from dataclasses import dataclass

from ..errors import CheckpointError
from ..registry import ModelSpec, get_spec, list_models
from .npz import NpzCheckpoint

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.")


@dataclass(frozen=True)
class VisionLayout:
    """What a vision checkpoint's keys and shapes say about its architecture."""

    width: int
    depth: int
    grid: int  # side of the position-embedding grid
    swiglu: bool
    mlp_hidden: int  # fc1 rows, or half the rows of the fused SwiGLU w12


@dataclass(frozen=True)
class TextLayout:
    """What a text checkpoint's keys and shapes say about its architecture."""

    width: int
    depth: int
    vocab_size: int
    mlp_hidden: int


def _depth(keys: list[str], pattern: re.Pattern) -> int:
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def _need(ckpt: NpzCheckpoint, key: str, hint: str) -> tuple[int, ...]:
    if key not in ckpt:
        raise CheckpointError(f"{ckpt.role} checkpoint {ckpt.path} has no {key!r}: {hint}")
    return ckpt.shape(key)


def read_vision_layout(ckpt: NpzCheckpoint) -> VisionLayout:
    """Infer width, depth, grid and FFN type of an official vision checkpoint."""
    keys = ckpt.keys()
    if "token_embedding.weight" in ckpt and "pos_embed" not in ckpt:
        raise CheckpointError(
            f"{ckpt.path} is a text checkpoint (it has token_embedding.weight); pass it as the text file"
        )
    hint = "not an official TIPS vision checkpoint"
    pos = _need(ckpt, "pos_embed", hint)
    if len(pos) != 3 or pos[0] != 1:
        raise CheckpointError(
            f"vision checkpoint {ckpt.path}: pos_embed has shape {pos}, expected (1, 1 + grid**2, width)"
        )
    grid = math.isqrt(max(pos[1] - 1, 0))
    if grid < 1 or grid * grid != pos[1] - 1:
        raise CheckpointError(
            f"vision checkpoint {ckpt.path}: pos_embed holds {pos[1] - 1} positions, not a square grid"
        )
    depth = _depth(keys, _BLOCK)
    if depth == 0:
        raise CheckpointError(f"vision checkpoint {ckpt.path} has no blocks.N.* keys: {hint}")
    swiglu = "blocks.0.mlp.w12.weight" in ckpt
    if swiglu:
        mlp_hidden = ckpt.shape("blocks.0.mlp.w12.weight")[0] // 2
    else:
        mlp_hidden = _need(ckpt, "blocks.0.mlp.fc1.weight", "no fc1 (GELU MLP) nor w12 (SwiGLU) in block 0")[0]
    return VisionLayout(width=int(pos[2]), depth=depth, grid=grid, swiglu=swiglu, mlp_hidden=int(mlp_hidden))


def read_text_layout(ckpt: NpzCheckpoint) -> TextLayout:
    """Infer width, depth, vocabulary and MLP size of an official text checkpoint."""
    if "pos_embed" in ckpt and "token_embedding.weight" not in ckpt:
        raise CheckpointError(f"{ckpt.path} is a vision checkpoint (it has pos_embed); pass it as the vision file")
    emb = _need(ckpt, "token_embedding.weight", "not an official TIPS text checkpoint")
    depth = _depth(ckpt.keys(), _RESBLOCK)
    if depth == 0:
        raise CheckpointError(f"text checkpoint {ckpt.path} has no transformer.resblocks.N.* keys")
    mlp = _need(ckpt, "transformer.resblocks.0.mlp.c_fc.weight", "block 0 has no MLP")
    return TextLayout(width=int(emb[1]), depth=depth, vocab_size=int(emb[0]), mlp_hidden=int(mlp[0]))


def version_grids(spec: ModelSpec) -> dict[str, int]:
    """Position-grid sides for ``spec``'s scale: ``full`` (448 px) and ``low`` (224 px, TIPS v1 only).

    Computed from the spec so that shrunken test specs keep the same 2:1 relation.
    """
    full = spec.grid if spec.version == 2 else spec.grid * 2
    return {"full": full, "low": full // 2}


def detect_version(layout: VisionLayout, spec: ModelSpec) -> set[int]:
    """The TIPS versions a checkpoint's position grid allows: ``{1}`` or ``{1, 2}``.

    Raises:
        CheckpointError: the grid fits no TIPS release of ``spec``'s scale.
    """
    grids = version_grids(spec)
    if layout.grid == grids["low"]:
        return {1}
    if layout.grid == grids["full"]:
        return {1, 2}
    raise CheckpointError(
        f"vision checkpoint has a {layout.grid}x{layout.grid} position grid; {spec.name} expects "
        f"{grids['full']}x{grids['full']} (TIPSv2 or TIPS v1 high-res) or {grids['low']}x{grids['low']} (TIPS v1)"
    )


def spec_for_grid(spec: ModelSpec, grid: int) -> ModelSpec:
    """``spec`` with the image size whose position grid the checkpoint carries."""
    size = grid * spec.patch_size
    return spec if size == spec.image_size else dataclasses.replace(spec, image_size=size)


def _suggest(width: int, depth: int, swiglu: bool, versions: tuple[int, ...]) -> str:
    names = [
        name for name in list_models()
        if (get_spec(name).width, get_spec(name).depth, get_spec(name).swiglu) == (width, depth, swiglu)
        and get_spec(name).version in versions
    ]
    return f"; it matches {', '.join(names)}" if names else ""


def sibling_name(spec: ModelSpec, version: int) -> str:
    """The registry name of the same size in the other TIPS version (``tipsv2-b14`` <-> ``tips-b14``)."""
    for prefix in ("tipsv2-", "tips-"):
        if spec.name.startswith(prefix):
            return ("tipsv2-" if version == 2 else "tips-") + spec.name[len(prefix):]
    return f"a TIPS v{version} variant"


def check_vision_variant(layout: VisionLayout, spec: ModelSpec, expected_mlp_hidden: int, source: str) -> int:
    """Refuse a vision checkpoint that does not fit ``spec``; return its TIPS version."""
    grids = version_grids(spec)
    problems = []
    if layout.width != spec.width:
        problems.append(f"width {layout.width} (variant: {spec.width})")
    if layout.depth != spec.depth:
        problems.append(f"{layout.depth} blocks (variant: {spec.depth})")
    if layout.swiglu != spec.swiglu:
        kinds = {True: "a SwiGLU FFN (mlp.w12/w3)", False: "a GELU MLP (mlp.fc1/fc2)"}
        problems.append(f"{kinds[layout.swiglu]} (variant: {kinds[spec.swiglu]})")
    elif layout.mlp_hidden != expected_mlp_hidden:
        problems.append(f"MLP hidden size {layout.mlp_hidden} (variant: {expected_mlp_hidden})")
    if layout.grid not in grids.values():
        problems.append(f"a {layout.grid}x{layout.grid} position grid (variant: {grids['full']}x{grids['full']}, "
                        f"or {grids['low']}x{grids['low']} for TIPS v1)")
    if problems:
        versions = (1,) if layout.grid == grids["low"] else (spec.version,)
        hint = _suggest(layout.width, layout.depth, layout.swiglu, versions)
        raise CheckpointError(
            f"vision checkpoint {source} does not match --variant {spec.name}: it has {', '.join(problems)}{hint}"
        )
    if spec.version not in detect_version(layout, spec):
        raise CheckpointError(
            f"vision checkpoint {source} is a TIPS v1 checkpoint ({layout.grid}x{layout.grid} position grid) but "
            f"--variant {spec.name} is TIPSv2; use --variant {sibling_name(spec, 1)}"
        )
    return spec.version


def check_text_variant(layout: TextLayout, spec: ModelSpec, expected: dict[str, int], source: str) -> None:
    """Refuse a text checkpoint whose width, depth, vocabulary or MLP differ from ``spec``'s text tower."""
    labels = {"width": "width", "depth": "depth", "vocab_size": "vocabulary", "mlp_hidden": "MLP hidden size"}
    problems = [
        f"{label} {getattr(layout, field)} (variant: {expected[field]})"
        for field, label in labels.items()
        if getattr(layout, field) != expected[field]
    ]
    if problems:
        matches = [
            name for name in list_models()
            if (get_spec(name).text_width or get_spec(name).width) == layout.width
            and get_spec(name).text_depth == layout.depth and get_spec(name).version == spec.version
        ]
        hint = f"; it matches {', '.join(matches)}" if matches else ""
        raise CheckpointError(
            f"text checkpoint {source} does not match --variant {spec.name}: it has {', '.join(problems)}{hint}"
        )
