"""`gateway serve`: the app under uvicorn, with logs that carry no personal data."""

from __future__ import annotations

import click

from gateway.app import create_app
from gateway.cli.support import fail, load_settings
from gateway.config import Settings, SettingsError
from gateway.keys import SigningKeyError
from gateway.logs import configure_logging, uvicorn_log_config
from policies import AgreementFileError


@click.command(help="Serve the gateway.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    settings = load_settings()
    serve_app(settings, host, port)


def serve_app(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except (SettingsError, SigningKeyError, AgreementFileError) as error:
        fail(str(error))
    # No access log: it quotes the URL, query string included. Each request's own JSON line (gateway.requests)
    # carries what operations needs, and no personal data.
    uvicorn.run(
        app, host=host, port=port, log_config=uvicorn_log_config(), server_header=False, access_log=False
    )
