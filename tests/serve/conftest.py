"""A real uvicorn server on 127.0.0.1 (free port, background thread) over a small built index."""
from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def build(folder, out, model_dir, *extra):
    """``tipsv2 index build`` through the CLI (global cls1 + patch index)."""
    from tipsv2_sdk.cli.app import cli

    args = ["index", "build", str(folder), str(out), "--model", str(model_dir), "--patches", "--batch-size", "4", "-q",
            *map(str, extra)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


class Running:
    """A uvicorn server in a thread; ``url`` to reach it, ``stop()`` to end it."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                return
            time.sleep(0.025)
        raise RuntimeError("server did not start")

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def serve_images(tmp_path_factory):
    """8 sample images with distinct content."""
    from tipsv2_sdk.index.samples import load_samples

    root = tmp_path_factory.mktemp("serve_images")
    for s in load_samples()[:8]:
        shutil.copy(s.path, root / s.path.name)
    return root


@pytest.fixture(scope="session")
def serve_index(serve_images, tiny_model_dir, tmp_path_factory):
    return build(serve_images, tmp_path_factory.mktemp("serve_idx") / "photos", tiny_model_dir)


@pytest.fixture(scope="session")
def running(serve_index, tiny_model_dir):
    """The server over ``photos`` (the tiny model), stopped at the end of the session."""
    from tipsv2_sdk.index.server.app import Server, create_app
    from tipsv2_sdk.loading import load

    model = load(str(tiny_model_dir))
    run = Running(create_app(Server([serve_index], model)))
    yield run
    run.stop()


@pytest.fixture(scope="session")
def serve_model(tiny_model_dir):
    from tipsv2_sdk.loading import load

    return load(str(tiny_model_dir))


@pytest.fixture
def start_server(serve_model):
    """``start_server(paths, **settings)`` → a running server over ``paths``; all stopped afterwards."""
    from tipsv2_sdk.index.server.app import Server, create_app

    started = []

    def start(paths, **settings):
        run = Running(create_app(Server(list(paths), serve_model, **settings)))
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


@pytest.fixture(scope="session")
def build_index(tiny_model_dir):
    """``build_index(folder, out)``: ``tipsv2 index build`` with the tiny model (global + patches)."""
    return lambda folder, out: build(folder, out, tiny_model_dir)
