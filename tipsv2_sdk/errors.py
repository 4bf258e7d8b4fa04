"""Exceptions raised for bad user input. Each names the thing that is wrong."""
from __future__ import annotations


class TipsV2Error(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownModelError(TipsV2Error, KeyError):
    """A model name is neither a registry name nor a directory."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelUnavailableError(UnknownModelError):
    """A known model (hub id or registry name) has no local copy and cannot be downloaded now."""


class ImageLoadError(TipsV2Error, ValueError):
    """An image could not be opened or decoded.

    Attributes:
        source: the path (or a short description of the in-memory object) that failed.
        reason: why it failed, in a few words.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"cannot load image {source}: {reason}")
        self.source = source
        self.reason = reason


class CheckpointError(TipsV2Error, ValueError):
    """A checkpoint file does not have the keys or shapes that its layout requires."""
