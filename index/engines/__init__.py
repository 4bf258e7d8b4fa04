"""Engines that embed the chunks of a build (or of ``tipsv2 embed``): ``local`` and ``ray``.

Both run the same functions of ``chunks.py`` on the same chunks and write the same files to the
work area; the build journal, the indexes and the outputs do not know which engine ran.
"""
from __future__ import annotations

from dataclasses import dataclass

from tipsv2_sdk.errors import TipsV2Error

from .chunks import ChunkJob, ChunkSpec, InOrderCommitter, embed_chunk, pending_chunks

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """Which engine runs the chunks; ``ray_address`` None starts a local Ray with this machine's cores."""

    name: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None  # actor pool size; None = one per GPU, else the CPUs less one

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise TipsV2Error(f"unknown engine {self.name!r}; expected one of {', '.join(ENGINES)}")


def make_engine(options: EngineOptions | None, model, model_ref: str | None, *, device: str = "auto",
                progress: bool = False):
    """The engine object for ``options``: ``.run(job, on_done)``."""
    options = options or EngineOptions()
    if options.name == "ray":
        from .ray import RayEngine

        return RayEngine(model, model_ref, address=options.ray_address, actors=options.ray_actors, device=device,
                         progress=progress)
    from .local import LocalEngine

    return LocalEngine(model)


__all__ = ["ChunkJob", "ChunkSpec", "ENGINES", "EngineOptions", "InOrderCommitter", "embed_chunk", "make_engine",
           "pending_chunks"]
