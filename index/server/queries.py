"""Run one query against a live index and shape it exactly like ``tipsv2 search --json``."""
from __future__ import annotations

from typing import Any

from ..search import Query

MAX_K = 1000  # results per query a request may ask for


def search_report(live, query: Query, k: int, *, heatmaps: bool = False) -> dict[str, Any]:
    """The ``tipsv2 search --json`` document (one entry in ``queries``) for ``query`` on ``live``.

    The same ``Searcher.run`` / ``Searcher.report`` produce both, so the shapes cannot drift.
    """
    searcher = live.searcher()
    entry = searcher.run(query, k, heatmaps=heatmaps)
    if not heatmaps:
        for hit in entry["results"]:
            hit.pop("heatmap", None)
    report = searcher.report([entry], k)
    report["generation"] = searcher.generation
    return report
