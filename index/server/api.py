"""The versioned ``/v1`` API, typed with pydantic; answers have the ``tipsv2 search --json`` shape."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field

from ..search import Query
from .errors import RequestError
from .images import decode_base64, fetch_url, image_file
from .queries import MAX_K, search_report


class SearchRequest(BaseModel):
    """One query: ``text``, or an ``image`` (base64) / ``image_url``, optionally a ``box`` on it."""

    index: Optional[str] = Field(None, description="Index name (default: the first served index).")
    text: Optional[str] = Field(None, description="Text query: text → images, or text → regions.")
    image: Optional[str] = Field(None, description="Query image, base64 (a data: URL is accepted).")
    image_url: Optional[str] = Field(None, description="Query image URL (only with --allow-image-url).")
    box: Optional[list[float]] = Field(None, description="x0,y0,x1,y1 in pixels of the query image.",
                                       min_length=4, max_length=4)
    regions: bool = Field(False, description="Return regions (image + patch) instead of images.")
    maxsim: bool = Field(False, description="Image queries: MaxSim over patches.")
    heatmaps: bool = Field(False, description="Include patch heatmaps for each result.")
    k: int = Field(10, ge=1, le=MAX_K, description="Results per query.")


def answer(server, req: SearchRequest) -> dict[str, Any]:
    """The ``tipsv2 search --json`` report for one typed request."""
    live = server.index(req.index)
    if req.text is not None:
        if req.box is not None:
            raise RequestError("box needs an image: it is a region of the query image")
        return search_report(live, Query(text=req.text, regions=req.regions), req.k, heatmaps=req.heatmaps)
    if req.image:
        raw = decode_base64(req.image)
    elif req.image_url:
        if not server.allow_image_url:
            raise RequestError("image_url fetching is off on this server (start it with --allow-image-url)", 403)
        raw = fetch_url(req.image_url)
    else:
        raise RequestError("give text, image (base64) or image_url")
    box = None
    if req.box is not None:
        x0, y0, x1, y1 = req.box
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise RequestError("box: need 0 <= x0 < x1 and 0 <= y0 < y1")
        box = (x0, y0, x1, y1)
    with image_file(raw) as path:
        report = search_report(live, Query(image=path, box=box, regions=req.regions, maxsim=req.maxsim), req.k,
                               heatmaps=req.heatmaps)
    report["queries"][0]["image"] = None  # the temporary file is gone; never leak server paths
    return report


def register(app, server) -> None:
    """Add the ``/v1`` routes to ``app``."""

    @app.get("/v1/indexes")
    def indexes() -> list[dict[str, Any]]:
        """Served indexes: name, current generation, whether they have global / patch indexes."""
        out = []
        for name in server.names:
            s = server.index(name).searcher()
            out.append({"name": name, "generation": s.generation, "size": len(s.glob if s.glob is not None else s.patch),
                        "kind": s.glob.kind if s.glob is not None else None, "patches": s.patch is not None})
        return out

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> dict[str, Any]:
        """Text → images / regions, image → images, box → images / regions, MaxSim."""
        return await server.run_blocking(answer, server, req)


def register_images(app, server) -> None:
    """``GET /v1/image/{index}/{id}``: the image file an index recorded for ``id`` (nothing else is served)."""
    from fastapi.responses import FileResponse

    @app.get("/v1/image/{index}/{image_id}", include_in_schema=True)
    def image(index: str, image_id: int):
        searcher = server.index(index).searcher()
        store = searcher.glob if searcher.glob is not None else searcher.patch
        record = store.records([image_id])[0]
        path = (record or {}).get("path")
        if not path:
            raise RequestError(f"no image with id {image_id} in {index}", 404)
        from pathlib import Path

        if "#" in path or not Path(path).is_file():  # tar / parquet members are not served as files
            raise RequestError(f"image {image_id} of {index} is not a plain file on the server", 404)
        return FileResponse(path)
