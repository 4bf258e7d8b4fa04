"""Prompt template sets for zero-shot classification and segmentation (data only).

Each template is a ``str.format`` pattern with exactly one ``{}`` where the class name goes.
A class's text embedding is the mean of its L2-normalised template embeddings, re-normalised
(see ``tipsv2_sdk.zero_shot.label_embeddings``).

* ``IMAGENET_TEMPLATES``: the 80-prompt ImageNet ensemble popularised by CLIP; the default for
  ``zero_shot_classify``.
* ``SUB_IMAGENET_TEMPLATES``: the 7-prompt subset CLIP selected from it (11x fewer texts to encode).
* ``TCL_TEMPLATES``: the 9 prompts of the TCL segmentation protocol (the 7 above plus two
  plural forms); the default for ``zero_shot_segment``, as in the TIPS evaluation.
* ``SIMPLE_TEMPLATES``: a single ``"a photo of a {}."``.
"""
from __future__ import annotations

from collections.abc import Sequence

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

SUB_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of a {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

TCL_TEMPLATES: tuple[str, ...] = SUB_IMAGENET_TEMPLATES + (
    "a photo of many {}.",
    "a photo of {}s.",
)

SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "imagenet7": SUB_IMAGENET_TEMPLATES,
    "tcl": TCL_TEMPLATES,
    "simple": SIMPLE_TEMPLATES,
}

DEFAULT_CLASSIFICATION = "imagenet"
DEFAULT_SEGMENTATION = "tcl"


def resolve_templates(templates: str | Sequence[str] | None, default: str) -> tuple[str, ...]:
    """Turn a set name, a list of patterns or ``None`` (the ``default`` set) into checked patterns.

    Raises ``ValueError`` naming an unknown set or a pattern without exactly one ``{}``.
    """
    if templates is None:
        templates = default
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            if "{}" in templates:  # a single pattern given as a string is a common, harmless shortcut
                templates = (templates,)
            else:
                known = ", ".join(sorted(TEMPLATE_SETS))
                raise ValueError(f"unknown template set {templates!r} (known: {known}; or pass format strings with '{{}}')")
        else:
            return TEMPLATE_SETS[templates]
    patterns = tuple(templates)
    if not patterns:
        raise ValueError("templates is empty; pass None for the default set")
    for pattern in patterns:
        if not isinstance(pattern, str) or pattern.count("{}") != 1:
            raise ValueError(f"template {pattern!r} must be a string with exactly one '{{}}' for the class name")
    return patterns


__all__ = [
    "IMAGENET_TEMPLATES",
    "SUB_IMAGENET_TEMPLATES",
    "TCL_TEMPLATES",
    "SIMPLE_TEMPLATES",
    "TEMPLATE_SETS",
    "DEFAULT_CLASSIFICATION",
    "DEFAULT_SEGMENTATION",
    "resolve_templates",
]
