"""The registry of named TIPS / TIPSv2 variants (timm-style: one table, configs as data).

Every entry describes the architecture of the vision and text towers. ``make_config`` turns an
entry into a ``transformers.Tipsv2Config``; ``tiny_config`` shrinks any entry's *layout* (SwiGLU,
register tokens, text depth ratio) to a size that runs in milliseconds, for tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UnknownModelError

if TYPE_CHECKING:
    from transformers import Tipsv2Config

EMBEDDED_DEFAULT = "tipsv2-tiny"


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and provenance of one named variant."""

    name: str
    version: int  # 1 = TIPS (ICLR 2025), 2 = TIPSv2 (CVPR 2026)
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    text_depth: int
    image_size: int  # the size the position grid was trained for (grid = image_size / patch)
    patch_size: int = 14
    swiglu: bool = False
    text_width: int | None = None  # defaults to width (TIPS has no projection heads)
    text_mlp: int | None = None  # defaults to 4 * text width
    text_heads: int | None = None
    vocab_size: int = 32000
    max_text_len: int = 64
    hub_id: str | None = None
    description: str = ""
    embedded: bool = False  # weights ship inside the wheel (tipsv2_sdk/assets/<name>)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> int:
        """Side of the position-embedding grid (32 for v2, 16 for v1)."""
        return self.image_size // self.patch_size


def _v2(name: str, **kw: Any) -> ModelSpec:
    return ModelSpec(name=name, version=2, image_size=448, **kw)


def _v1(name: str, **kw: Any) -> ModelSpec:
    # TIPS v1 checkpoints carry a 16x16 position grid (224 px) that is interpolated at 448 px.
    return ModelSpec(name=name, version=1, image_size=224, **kw)


_LAYOUTS: dict[str, dict[str, Any]] = {
    "s14": dict(width=384, depth=12, heads=6, mlp_ratio=4.0, text_depth=12),
    "b14": dict(width=768, depth=12, heads=12, mlp_ratio=4.0, text_depth=12),
    "l14": dict(width=1024, depth=24, heads=16, mlp_ratio=4.0, text_depth=12),
    # SO400m: MLP 4304 = 1152 * 3.7361...; its text tower mirrors the vision tower (27 layers).
    "so400m14": dict(width=1152, depth=27, heads=16, mlp_ratio=4304 / 1152, text_depth=27, text_mlp=4304),
    "g14": dict(width=1536, depth=40, heads=24, mlp_ratio=4.0, text_depth=12, swiglu=True),
}

# The TIPSv2 sizes published on the Hugging Face hub as google/tipsv2-<size> (B, L, SO400m, g).
_HUB_RELEASES = ("b14", "l14", "so400m14", "g14")

_REGISTRY: dict[str, ModelSpec] = {}
for _key, _layout in _LAYOUTS.items():
    _REGISTRY[f"tipsv2-{_key}"] = _v2(
        f"tipsv2-{_key}", hub_id=f"google/tipsv2-{_key}" if _key in _HUB_RELEASES else None,
        description=f"TIPSv2 {_key.upper()}", **_layout
    )
    _REGISTRY[f"tips-{_key}"] = _v1(f"tips-{_key}", description=f"TIPS (v1) {_key.upper()}", **_layout)

# The embedded default: a small TIPSv2 trained by this project's pretrain/ on synthetic shapes.
_REGISTRY[EMBEDDED_DEFAULT] = ModelSpec(
    name=EMBEDDED_DEFAULT,
    version=2,
    width=192,
    depth=4,
    heads=3,
    mlp_ratio=4.0,
    text_depth=2,
    image_size=112,
    vocab_size=512,
    max_text_len=32,
    embedded=True,
    description="Small TIPSv2 trained on the synthetic shapes dataset; ships inside the package.",
)


def list_models() -> list[str]:
    """Names accepted by ``tips.load`` (besides directories)."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a registered name, or raise ``UnknownModelError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}: not a directory, not a hub id (org/name) and not a registered name "
            f"(known: {', '.join(list_models())})"
        ) from None


def make_config(spec: ModelSpec | str, **vision_overrides: Any) -> Tipsv2Config:
    """Build the ``transformers.Tipsv2Config`` for a registry entry."""
    from transformers import Tipsv2Config, Tipsv2TextConfig, Tipsv2VisionConfig

    if isinstance(spec, str):
        spec = get_spec(spec)
    text_width = spec.text_width or spec.width
    vision = Tipsv2VisionConfig(
        hidden_size=spec.width,
        num_hidden_layers=spec.depth,
        num_attention_heads=spec.heads,
        mlp_ratio=spec.mlp_ratio,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        use_swiglu_ffn=spec.swiglu,
        num_register_tokens=1,
        layerscale_value=1.0,
        **vision_overrides,
    )
    text = Tipsv2TextConfig(
        vocab_size=spec.vocab_size,
        hidden_size=text_width,
        intermediate_size=spec.text_mlp or 4 * text_width,
        num_hidden_layers=spec.text_depth,
        num_attention_heads=spec.text_heads or spec.heads,
        max_position_embeddings=spec.max_text_len,
    )
    return Tipsv2Config(vision_config=vision.to_dict(), text_config=text.to_dict())


def tiny_spec(spec: ModelSpec | str, *, width: int = 32, image_size: int | None = None) -> ModelSpec:
    """A few-block version of ``spec`` that keeps its layout (SwiGLU, MLP ratio, text depth ratio).

    Used by tests to run every registered variant's code path in milliseconds.
    """
    if isinstance(spec, str):
        spec = get_spec(spec)
    heads = 2
    text_depth = 2 if spec.text_depth == spec.depth else 1  # SO400m keeps "text mirrors vision"
    text_mlp = None if spec.text_mlp is None else int(round(width * spec.mlp_ratio))
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-tiny-test",
        width=width,
        depth=2,
        heads=heads,
        text_depth=text_depth,
        text_mlp=text_mlp,
        image_size=image_size or spec.patch_size * max(spec.grid // 4, 2),  # v2: 8x8 grid, v1: 4x4
        vocab_size=384,  # byte fallback alone needs 256 + specials
        max_text_len=spec.max_text_len,
        hub_id=None,
        embedded=False,
    )
