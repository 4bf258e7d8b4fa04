"""``tipsv2 serve``: validate the arguments, then load the model once and run uvicorn."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from tipsv2_sdk.cli.common import UserError, info, load_model, user_errors

LOCAL_HOSTS = ("localhost",)


def is_local(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (loopback)."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.argument("indexes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 must be explicit.")
@click.option("--port", default=1234, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--model", "-m", "model_name", default=None, help="Default: the model the first index was built with.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads answering queries at the same time (the model is loaded once and shared).")
@click.option("--api-key", default=None, envvar="TIPSV2_API_KEY",
              help="Require 'Authorization: Bearer KEY' on every API request (env TIPSV2_API_KEY). "
                   "Mandatory when binding a non-loopback address.")
@click.option("--allow-image-url", is_flag=True, help="Let queries name an http(s) image_url for the server to fetch.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for the model.")
@user_errors
def serve(indexes, host, port, model_name, workers, api_key, allow_image_url, device):
    """Serve INDEX directories over HTTP: a search page at /, the /v1 API (docs at /docs) and
    clip-retrieval compatible /indices-list, /knn-service and /metadata."""
    from ..collection import locate
    from ..search import resolve_model_ref

    names = {}
    for path in indexes:
        if not path.is_dir():
            raise UserError(f"no such index directory: {path}")
        name = path.resolve().name
        if name in names:
            raise UserError(f"{path} and {names[name]} would both be served as {name!r}: rename one")
        names[name] = path
    collections = [locate(p) for p in indexes]  # IndexNotFoundError → exit 2 naming the path
    if not is_local(host) and not api_key:
        raise UserError(f"--host {host} accepts connections from other machines: give --api-key (or TIPSV2_API_KEY)")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("tipsv2 serve needs FastAPI and uvicorn: pip install 'tipsv2-sdk[serve]'") from None

    from .app import Server, create_app

    model = load_model(resolve_model_ref(collections[0], model_name), device=device)
    server = Server(list(indexes), model, allow_image_url=allow_image_url, api_key=api_key)
    app = create_app(server, threads=workers)
    info(f"serving {', '.join(server.names)} on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
