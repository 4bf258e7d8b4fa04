"""clip-retrieval compatible endpoints: what its ``ClipClient`` and web front end send and expect.

``GET /indices-list`` → names; ``POST /knn-service`` → ``[{"id", "similarity", "url", "image_path",
"caption"?}]``; ``POST /metadata`` → ``[{"id", "metadata": {...}}]``. Bodies are parsed as JSON
whatever their content type (the client posts ``data=json.dumps(...)``). Filters this server has no
model for (safety, violence, aesthetic, mclip, deduplicate) are accepted and ignored.
"""
# No `from __future__ import annotations`: FastAPI must see the route parameter types as objects.
import json
from typing import Any

from ..search import Query
from .errors import RequestError
from .images import decode_base64, fetch_url, image_file
from .queries import MAX_K, search_report


async def json_body(request) -> dict[str, Any]:
    """The request body as a JSON object, whatever the content type says."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise RequestError("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object")
    return body


def bounded_k(value: Any, name: str) -> int:
    """An integer in 1..MAX_K, else a ``RequestError`` naming the field."""
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be an integer") from None
    if not 1 <= k <= MAX_K:
        raise RequestError(f"{name} must be between 1 and {MAX_K}, got {k}")
    return k


def clip_hits(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Our results in clip-retrieval's shape (the image path doubles as its ``url``)."""
    out = []
    for hit in report["queries"][0]["results"]:
        item: dict[str, Any] = {"id": hit["id"], "similarity": hit["score"], "image_path": hit["path"],
                                "url": hit["path"]}
        meta = hit.get("meta") or {}
        for key, value in meta.items():
            item.setdefault(key, value)
        out.append(item)
    return out


def knn(server, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Answer one ``/knn-service`` body."""
    live = server.index(body.get("indice_name"))
    k = bounded_k(body.get("num_images", 40), "num_images")
    if body.get("embedding_input") is not None:
        raise RequestError("embedding_input is not supported: send text or an image")
    if body.get("text"):
        return clip_hits(search_report(live, Query(text=str(body["text"])), k))
    raw = None
    if body.get("image"):
        raw = decode_base64(str(body["image"]))
    elif body.get("image_url"):
        if not server.allow_image_url:
            raise RequestError("image_url fetching is off on this server (start it with --allow-image-url)", 403)
        raw = fetch_url(str(body["image_url"]))
    if raw is None:
        raise RequestError("give text, image (base64) or image_url")
    with image_file(raw) as path:
        return clip_hits(search_report(live, Query(image=path), k))


def metadata(server, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Answer one ``/metadata`` body: each id's stored record (path, caption and other metadata)."""
    live = server.index(body.get("indice_name"))
    ids = body.get("ids") or []
    if not isinstance(ids, list) or len(ids) > MAX_K:
        raise RequestError(f"ids must be a list of at most {MAX_K} integers")
    try:
        ids = [int(i) for i in ids]
    except (TypeError, ValueError):
        raise RequestError("ids must be integers") from None
    searcher = live.searcher()
    index = searcher.glob if searcher.glob is not None else searcher.patch
    out = []
    for i, record in zip(ids, index.records(ids) if ids else []):
        meta = {"image_path": record.get("path"), "url": record.get("path"), **(record.get("meta") or {})} if record else {}
        out.append({"id": i, "metadata": meta})
    return out


def register(app, server) -> None:
    """Add the clip-retrieval routes to ``app``."""
    from fastapi import Request

    @app.get("/indices-list")
    def indices_list() -> list[str]:
        return list(server.names)

    @app.post("/knn-service")
    async def knn_service(request: Request):
        body = await json_body(request)
        return await server.run_blocking(knn, server, body)

    @app.post("/metadata")
    async def metadata_service(request: Request):
        body = await json_body(request)
        return await server.run_blocking(metadata, server, body)
