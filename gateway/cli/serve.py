"""`gateway serve`: the app under uvicorn, with logs that carry no personal data.

`--workers N` runs N processes under uvicorn's own supervisor (it restarts a worker that dies and
stops them all on SIGTERM, each finishing its requests and sealing its audit chain). No process
manager is added: gunicorn would bring a second configuration language for what uvicorn already does.
Every worker builds its own app from the same GATEWAY_* variables and keeps its own audit chain;
what they share (replay stores, revocations, rate limits, quotas, alert counts, break-glass windows)
lives in PostgreSQL and Redis, so more than one worker needs both. Prometheus metrics are summed
across the workers through a directory of their own (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Final, TypedDict

import click
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import Settings
from gateway.db import is_sqlite
from gateway.logs import configure_logging, uvicorn_log_config
from gateway.metrics import MULTIPROCESS_DIR


class UvicornOptions(TypedDict):
    server_header: bool
    access_log: bool
    proxy_headers: bool


# How the gateway runs under uvicorn; the end-to-end tests serve it the same way.
UVICORN_OPTIONS: Final[UvicornOptions] = {"server_header": False, "access_log": False, "proxy_headers": False}


@click.command(help="Serve the gateway.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    envvar="GATEWAY_WORKERS",
    help="Processes serving the port (more than one needs PostgreSQL and GATEWAY_REDIS_URL).",
)
def serve(host: str, port: int, workers: int) -> None:
    settings = load_settings()
    if workers > 1:
        _can_share(settings, workers)
    serve_app(settings, host, port, workers=workers)


def serve_app(settings: Settings, host: str, port: int, *, workers: int = 1, demo: bool = False) -> None:
    import uvicorn

    configure_logging(settings.log_level)
    # A bad agreement or key: one line, before any worker starts. `demo`: the console's local sign-in.
    app = create_app(settings, console_demo_sign_in=demo)
    run(lambda: _reachable_and_migrated(settings))  # say so in one line, before uvicorn starts
    _can_listen(host, port)
    # No access log: it quotes the URL, query string included. Each request's own JSON line (gateway.requests)
    # carries what operations needs, and no personal data. No proxy headers: uvicorn would believe
    # X-Forwarded-For from any local caller; the gateway reads it only from GATEWAY_TRUSTED_PROXIES.
    if workers == 1:
        uvicorn.run(app, **UVICORN_OPTIONS, host=host, port=port, log_config=uvicorn_log_config())
        return
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[MULTIPROCESS_DIR] = metrics_dir  # read by every worker as it starts
    try:
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            workers=workers,
            # A new worker imports the whole gateway before it can answer the supervisor's health check
            # (the spawned process re-imports the `gateway` command's module): on a busy host that took
            # longer than uvicorn's 5 s, and the supervisor killed and restarted each worker in turn.
            timeout_worker_healthcheck=30,
            **UVICORN_OPTIONS,
            host=host,
            port=port,
            log_config=uvicorn_log_config(),
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Starlette:
    """One worker's app (uvicorn calls this in each worker process, with the parent's environment)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def _can_share(settings: Settings, workers: int) -> None:
    """Several processes share replay stores, counters and windows only through PostgreSQL and Redis."""
    if is_sqlite(settings.database_url):
        fail(f"--workers {workers} needs PostgreSQL: SQLite is for one process (set GATEWAY_DATABASE_URL)")
    if not settings.redis_url:
        fail(
            f"--workers {workers} needs GATEWAY_REDIS_URL: rate limits and alert counts are shared "
            "through Redis"
        )


async def _reachable_and_migrated(settings: Settings) -> None:
    async with open_database(settings):
        pass


def _can_listen(host: str, port: int) -> None:
    """A port in use or an address not on this host, as one line rather than uvicorn's log and exit 3."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        fail(f"cannot listen on {host}:{port} ({error.strerror or type(error).__name__})")
