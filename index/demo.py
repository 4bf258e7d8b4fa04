"""``tipsv2 demo``: index the bundled sample images and run text, image and region queries.

Everything runs offline with the embedded default model: a global (CLS1) and a patch index over
the samples, five queries of every type, and a self-contained ``results.html``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .builder import BuildOptions, build_index
from .collection import BUILD_FILE, locate, read_build
from .samples import load_samples, samples_dir

DEMO_TEXTS = ("a red ring", "a blue hexagon")
DEMO_REGION_TEXT = "a yellow square"
DEMO_IMAGE = 0  # sample used as a whole-image query
DEMO_BOX_IMAGE = 3  # sample whose first object's box is the region query


def demo_queries():
    """The demo's queries: two text → images, one text → regions, one image, one image region."""
    from .search import Query

    samples = load_samples()
    box_sample = samples[DEMO_BOX_IMAGE]
    box = tuple(float(v) for v in box_sample.objects[0]["box"])
    return [
        *(Query(text=t) for t in DEMO_TEXTS),
        Query(text=DEMO_REGION_TEXT, regions=True),
        Query(image=os.fspath(samples[DEMO_IMAGE].path)),
        Query(image=os.fspath(box_sample.path), box=box),
    ]


def _fresh_index_dir(index_dir: Path, model) -> None:
    """Drop a demo index built by another model (only a directory our build wrote is removed)."""
    from .manifest import config_hash

    record = read_build(index_dir) if (index_dir / BUILD_FILE).is_file() else {}
    if record and record.get("model", {}).get("config_hash") != config_hash(model):
        shutil.rmtree(index_dir)


def run_demo(model, out: str | os.PathLike, *, k: int = 5, model_ref: str | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Build ``out/index`` over the samples, answer the demo queries, write ``out/results.html``.

    Returns the search report (the ``tipsv2 search --json`` schema) plus ``html`` and ``build``.
    """
    from .html import write_html
    from .search import Searcher

    out = Path(out)
    index_dir = out / "index"
    _fresh_index_dir(index_dir, model)
    options = BuildOptions(kind="cls1", patches=True, batch_size=8, progress=progress)
    build = build_index(model, samples_dir(), index_dir, options, model_ref=model_ref)
    searcher = Searcher(locate(index_dir), model)
    entries = [searcher.run(q, k, heatmaps=True) for q in demo_queries()]
    report = searcher.report(entries, k)
    html_path = out / "results.html"
    write_html(html_path, report, title="TIPSv2 demo: sample images")
    for entry in report["queries"]:
        for hit in entry["results"]:
            hit.pop("heatmap", None)
    report["html"] = str(html_path)
    report["build"] = {"added": build.added, "counts": build.counts, "skipped": build.skipped}
    return report


__all__ = ["DEMO_TEXTS", "demo_queries", "run_demo"]
