"""uvicorn on 127.0.0.1 in a background thread, on a free port (the httpx test-suite pattern)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from gateway.cli.serve import UVICORN_OPTIONS


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process keeps its own handlers
        return None


@contextmanager
def serve_in_thread(app: ASGIApp) -> Iterator[str]:
    config = uvicorn.Config(app, **UVICORN_OPTIONS, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = _Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
