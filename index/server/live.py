"""One served index: a Searcher over a consistent generation, reopened when a writer publishes."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..generation import current_generation


class LiveIndex:
    """The searcher of ``path``'s current generation; ``searcher()`` switches after a publish.

    Readers never see a half-written state: ``open_snapshot`` opens one published generation
    and its files stay readable until this object drops it, even if a later generation deletes them.
    """

    def __init__(self, name: str, path: str | Path, model: Any):
        self.name = name
        self.path = Path(path)
        self.model = model
        self._lock = threading.Lock()
        self._searcher = self._open()

    def _open(self):
        from ..search import Searcher
        from ..snapshot import open_snapshot

        return Searcher(open_snapshot(self.path, model=self.model), self.model)

    def searcher(self):
        """The searcher to answer one request with (a newer generation is opened first if published)."""
        current = self._searcher
        if current_generation(self.path) != current.generation:
            with self._lock:  # one request reopens; the others keep the old snapshot meanwhile
                if current_generation(self.path) != self._searcher.generation:
                    self._searcher = self._open()
                current = self._searcher
        return current
