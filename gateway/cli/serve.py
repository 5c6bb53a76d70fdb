"""`gateway serve`: the app under uvicorn, with logs that carry no personal data."""

from __future__ import annotations

import socket
from typing import Final, TypedDict

import click

from gateway.app import create_app
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import Settings
from gateway.logs import configure_logging, uvicorn_log_config


class UvicornOptions(TypedDict):
    server_header: bool
    access_log: bool
    proxy_headers: bool


# How the gateway runs under uvicorn; the end-to-end tests serve it the same way.
UVICORN_OPTIONS: Final[UvicornOptions] = {"server_header": False, "access_log": False, "proxy_headers": False}


@click.command(help="Serve the gateway.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    settings = load_settings()
    serve_app(settings, host, port)


def serve_app(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    configure_logging(settings.log_level)
    app = create_app(settings)
    run(lambda: _reachable_and_migrated(settings))  # say so in one line, before uvicorn starts
    _can_listen(host, port)
    # No access log: it quotes the URL, query string included. Each request's own JSON line (gateway.requests)
    # carries what operations needs, and no personal data. No proxy headers: uvicorn would believe
    # X-Forwarded-For from any local caller; the gateway reads it only from GATEWAY_TRUSTED_PROXIES.
    uvicorn.run(app, **UVICORN_OPTIONS, host=host, port=port, log_config=uvicorn_log_config())


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
