"""Assemble the FastAPI application: served indexes, limits, API key, error answers, routes."""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any, Callable

from .errors import RequestError
from .images import RequestImageError
from .live import LiveIndex

MAX_BODY_BYTES = 16 * 1024 * 1024  # a base64 image of MAX_IMAGE_BYTES plus the JSON around it


class Server:
    """What every route needs: the live indexes by name, the model and the server's settings."""

    def __init__(self, paths: list[Path], model: Any, *, allow_image_url: bool = False, api_key: str | None = None):
        self.live = {}
        for path in paths:
            name = Path(path).resolve().name
            if name in self.live:
                raise ValueError(f"two served indexes are both named {name!r}: rename one directory")
            self.live[name] = LiveIndex(name, path, model)
        self.names = list(self.live)
        self.model = model
        self.allow_image_url = allow_image_url
        self.api_key = api_key

    def index(self, name: str | None) -> LiveIndex:
        """The live index called ``name`` (the first one when not given); 404 otherwise."""
        if not name:
            return self.live[self.names[0]]
        if name not in self.live:
            raise RequestError(f"no index named {name!r}; served: {', '.join(self.names)}", 404)
        return self.live[name]

    async def run_blocking(self, func: Callable, *args):
        """Run model / FAISS work in the thread pool so the event loop keeps accepting requests."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(func, *args)


def create_app(server: Server, *, threads: int = 4):
    """The FastAPI app serving ``server``'s indexes (OpenAPI docs at ``/docs``); ``threads`` answer at once."""
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from tipsv2_sdk.errors import TipsV2Error
    from . import api, clip_compat, page

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPI(title="TIPSv2 search", version="1", lifespan=lifespan,
                  description="Text, image and region search over TIPSv2 indexes.")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"error": f"request body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        if server.api_key and request.url.path not in ("/", "/static/page.js", "/static/page.css"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {server.api_key}".encode()):
                return JSONResponse({"error": "missing or wrong API key (Authorization: Bearer ...)"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def request_error(_request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestImageError)
    async def image_error(_request, exc: RequestImageError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(TipsV2Error)
    async def query_error(_request, exc: TipsV2Error):  # empty query, no patch index, bad box, ...
        return JSONResponse({"error": str(exc)}, status_code=400)

    clip_compat.register(app, server)
    api.register(app, server)
    api.register_images(app, server)
    page.register(app)
    return app
