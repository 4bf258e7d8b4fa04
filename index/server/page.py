"""The web search page at ``/`` and the result images it shows, served from package files only."""
from __future__ import annotations

from importlib import resources

STATIC = ("page.html", "page.js", "page.css")


def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def register(app) -> None:
    """Add ``/`` and ``/static/...`` (fixed names: no request path reaches the filesystem)."""
    from fastapi.responses import HTMLResponse, Response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> str:
        return _static("page.html")

    @app.get("/static/page.js", include_in_schema=False)
    def page_js() -> Response:
        return Response(_static("page.js"), media_type="text/javascript")

    @app.get("/static/page.css", include_in_schema=False)
    def page_css() -> Response:
        return Response(_static("page.css"), media_type="text/css")
