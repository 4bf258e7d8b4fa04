"""The local engine: the chunks of a job, one after the other, in this process with this model."""
from __future__ import annotations

from .chunks import ChunkJob, OnDone, embed_chunk


class LocalEngine:
    """Embed every chunk of a job with ``model`` and write it to the job's work area."""

    name = "local"

    def __init__(self, model):
        self.model = model

    def run(self, job: ChunkJob, on_done: OnDone) -> None:
        """Embed, write and report each chunk in order (``on_done`` commits it)."""
        from ..journal import WorkArea

        work = WorkArea(job.work_dir)
        for chunk, ids, records in job.chunks:
            arrays, skipped = embed_chunk(self.model, records, ids, job.spec, job.sources)
            work.write_chunk(chunk, arrays, skipped)
            on_done(chunk, len(ids))


__all__ = ["LocalEngine"]
