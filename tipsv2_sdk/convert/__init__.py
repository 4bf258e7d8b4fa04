"""Conversion of the official TIPS / TIPSv2 checkpoints into HF-format directories.

``convert_official`` is the entry point (``tipsv2 convert`` on the command line). The pieces:
``npz`` reads checkpoints without unpickling, ``layout`` recognises the architecture and the TIPS
version, ``keys`` holds the key mapping and the key/shape checks. ``convert_official_dpt`` (``dpt``,
``dpt_keys``) converts the official DPT decoders (depth, normals, segmentation) with the vision tower.
"""
from __future__ import annotations

from .layout import TextLayout, VisionLayout, detect_version, read_text_layout, read_vision_layout
from .dpt import convert_official_dpt
from .official import convert_official

__all__ = ["convert_official", "convert_official_dpt", "detect_version", "read_vision_layout", "read_text_layout",
           "VisionLayout", "TextLayout"]
