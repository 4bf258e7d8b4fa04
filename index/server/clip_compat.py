"""clip-retrieval compatible endpoints: what its ``ClipClient`` and web front end send and expect.

``GET /indices-list`` → the served names. ``POST /knn-service`` takes the body ``ClipClient`` posts
(``text``, ``image`` as base64, ``image_url``, ``embedding_input``, ``modality``, ``num_images``,
``num_result_ids``, ``indice_name``, ``deduplicate`` and filters) and answers
``[{"url", "image_path", "caption"?, ..., "id", "similarity"}]``. ``POST /metadata`` takes
``{"ids", "indice_name"}`` and answers ``[{"id", "metadata": {...}}]``.

As in clip-retrieval's back end: the first non-empty of text, image / image_url, embedding_input is
the query; ``num_result_ids`` neighbours are searched and answered, the first ``num_images`` with
their metadata (the front end fetches the rest through ``/metadata``); ``deduplicate`` drops results
whose stored vector is a near copy (cosine >= 0.94) of a better-ranked one. Bodies are parsed as JSON
whatever their content type (``ClipClient`` posts ``data=json.dumps(...)`` without one). The safety,
violence, aesthetic and mclip options need models this server does not have: accepted and ignored.
"""
# No `from __future__ import annotations`: FastAPI must see the route parameter types as objects.
import json
import math
from typing import Any, Optional

import numpy as np

from ..search import Query
from .errors import RequestError
from .images import decode_base64, fetch_url, image_file
from .queries import MAX_K, search_report

DUPLICATE_COSINE = 0.94  # clip-retrieval's threshold for "the same picture" under deduplicate
RESERVED = ("id", "similarity")  # answer keys that metadata never overrides


class Pinned:
    """A live index stand-in fixed to one searcher, so a whole request sees one generation."""

    def __init__(self, searcher):
        self._searcher = searcher

    def searcher(self):
        return self._searcher


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
    if isinstance(value, bool):
        raise RequestError(f"{name} must be an integer")
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be an integer") from None
    if not 1 <= k <= MAX_K:
        raise RequestError(f"{name} must be between 1 and {MAX_K}, got {k}")
    return k


def result_ids(value: Any, num_images: int) -> int:
    """How many neighbours to search: ``num_result_ids`` (default ``num_images``), at most MAX_K.

    The front end asks for thousands to page through them later; a larger value is capped rather
    than refused because it only says how many ids to return, never how much metadata.
    """
    if value is None:
        return num_images
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError("num_result_ids must be an integer")
    return max(1, min(int(value), MAX_K))


def index_of(searcher):
    """The index a plain vector query goes to: the global one, else the patch index."""
    return searcher.glob if searcher.glob is not None else searcher.patch


def embedding_vector(value: Any, dim: int) -> np.ndarray:
    """``embedding_input`` as a float32 vector of the index's dimension; ``RequestError`` otherwise."""
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise RequestError(f"embedding_input must be a list of {dim} numbers")
    if len(value) != dim:
        raise RequestError(f"embedding_input has {len(value)} numbers; this index holds {dim}-d vectors")
    vector = np.asarray(value, np.float64)
    if not np.isfinite(vector).all():
        raise RequestError("embedding_input holds NaN or infinite values")
    if not np.any(vector):
        raise RequestError("embedding_input is all zeros: it has no direction to search")
    return vector.astype(np.float32)


def vector_hits(searcher, vector: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Hits ``{"id", "path", "score", "meta"?}`` of one query vector (cosine, like every other query)."""
    if searcher.glob is not None:
        res = searcher.glob.search(vector[None], k, nprobe=searcher.nprobe)
    else:
        res = searcher.patch.search_images(vector[None], k, nprobe=searcher.nprobe)
    keep = [(int(i), float(s)) for i, s in zip(res.ids[0], res.scores[0]) if i >= 0 and np.isfinite(s)]
    records = index_of(searcher).records([i for i, _ in keep]) if keep else []
    hits = []
    for (i, score), record in zip(keep, records):
        hit = {"id": i, "path": (record or {}).get("path"), "score": round(score, 6)}
        if (record or {}).get("meta"):
            hit["meta"] = record["meta"]
        hits.append(hit)
    return hits


def deduplicated(searcher, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``hits`` without near copies: of each group of results whose stored vectors are within
    ``DUPLICATE_COSINE`` of each other (transitively), only the best-ranked stays.

    Only global vectors are compared; an index without a global index is answered as it is.
    """
    if searcher.glob is None or len(hits) < 2:
        return hits
    vectors = searcher.glob.vectors([h["id"] for h in hits])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    close = unit @ unit.T >= DUPLICATE_COSINE
    dropped = np.zeros(len(hits), bool)
    for first in range(len(hits)):  # results come best first: each unvisited one starts a group
        if dropped[first]:
            continue
        group, frontier = {first}, [first]
        while frontier:
            node = frontier.pop()
            for other in np.flatnonzero(close[node] & ~dropped).tolist():
                if other not in group:
                    group.add(other)
                    frontier.append(other)
        for other in group - {first}:
            dropped[other] = True
    return [h for h, gone in zip(hits, dropped) if not gone]


def record_fields(name: str, image_id: int, path: Optional[str], meta: Optional[dict], base_url: str) -> dict[str, Any]:
    """clip-retrieval's metadata columns for one record: ``url``, ``image_path``, ``caption`` and
    the sample's own metadata fields (an img2dataset ``url`` there is the image's original address).

    Without an original address, ``url`` is where this server hands out the file (``/v1/image/...``);
    tar / parquet members have no such file, so their ``url`` is null.
    """
    meta = meta or {}
    extra = meta.get("metadata") if isinstance(meta.get("metadata"), dict) else {}
    served = f"{base_url.rstrip('/')}/v1/image/{name}/{image_id}" if path and "#" not in path else None
    fields: dict[str, Any] = {"url": extra.get("url") or served, "image_path": path}
    if meta.get("caption") is not None:
        fields["caption"] = meta["caption"]
    for key, value in extra.items():
        if key not in RESERVED:
            fields.setdefault(key, value)
    return fields


def knn(server, body: dict[str, Any], base_url: str = "") -> list[dict[str, Any]]:
    """Answer one ``/knn-service`` body."""
    live = server.index(body.get("indice_name"))
    modality = body.get("modality", "image")
    if modality not in ("image", "text"):
        raise RequestError(f"modality must be 'image' or 'text', got {modality!r}")
    if modality == "text":
        raise RequestError("modality 'text' searches caption embeddings, which TIPSv2 indexes do not hold; "
                           "use modality 'image' (text queries still work: they search images)")
    num_images = bounded_k(body.get("num_images", 40), "num_images")
    k = result_ids(body.get("num_result_ids"), num_images)
    searcher = live.searcher()  # one generation for the search, the dedup vectors and the metadata
    pinned = Pinned(searcher)
    text, image, image_url, embedding = (body.get(f) for f in ("text", "image", "image_url", "embedding_input"))
    if text:
        hits = search_report(pinned, Query(text=str(text)), k)["queries"][0]["results"]
    elif image or image_url:
        if image:
            raw = decode_base64(str(image))
        elif not server.allow_image_url:
            raise RequestError("image_url fetching is off on this server (start it with --allow-image-url)", 403)
        else:
            raw = fetch_url(str(image_url))
        with image_file(raw) as path:
            hits = search_report(pinned, Query(image=path), k)["queries"][0]["results"]
    elif embedding is not None:
        hits = vector_hits(searcher, embedding_vector(embedding, index_of(searcher).dim), k)
    else:
        raise RequestError("give text, image (base64), image_url or embedding_input")
    if body.get("deduplicate"):
        hits = deduplicated(searcher, hits)
    out = []
    for n, hit in enumerate(hits):
        item = record_fields(live.name, hit["id"], hit.get("path"), hit.get("meta"), base_url) if n < num_images else {}
        item["id"] = hit["id"]
        item["similarity"] = hit["score"]
        out.append(item)
    return out


def metadata(server, body: dict[str, Any], base_url: str = "") -> list[dict[str, Any]]:
    """Answer one ``/metadata`` body: each id's stored record in the fields ``/knn-service`` uses."""
    live = server.index(body.get("indice_name"))
    ids = body.get("ids")
    if not isinstance(ids, list) or len(ids) > MAX_K:
        raise RequestError(f"ids must be a list of at most {MAX_K} integers")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise RequestError("ids must be integers")
    if not ids:
        return []
    records = index_of(live.searcher()).records(ids)
    return [{"id": i, "metadata": record_fields(live.name, i, record.get("path"), record.get("meta"), base_url)
             if record else {}} for i, record in zip(ids, records)]


def register(app, server) -> None:
    """Add the clip-retrieval routes to ``app``."""
    from fastapi import Request

    @app.get("/indices-list")
    def indices_list() -> list[str]:
        """Names of the served indexes (clip-retrieval's ``indice_name`` values)."""
        return list(server.names)

    @app.post("/knn-service")
    async def knn_service(request: Request):
        """clip-retrieval's nearest-neighbour query (the body ``ClipClient`` posts)."""
        body = await json_body(request)
        return await server.run_blocking(knn, server, body, str(request.base_url))

    @app.post("/metadata")
    async def metadata_service(request: Request):
        """clip-retrieval's metadata of result ids."""
        body = await json_body(request)
        return await server.run_blocking(metadata, server, body, str(request.base_url))
