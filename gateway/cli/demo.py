"""`gateway demo`: a fresh SQLite database, a synthetic population, a client per agreement, then serve."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Final

import click

from gateway.cli.clients import add_clients, client_json
from gateway.cli.database import DEMO_PEOPLE, seed_database, upgrade_database
from gateway.cli.keys import ensure_secrets
from gateway.cli.serve import serve_app
from gateway.cli.support import fail, load_settings, run, settings_with
from gateway.config import council_today
from gateway.db import is_sqlite
from policies import load_agreements

DEMO_STATE_DIR: Final = Path("var")
DEMO_CLIENTS_FILE: Final = DEMO_STATE_DIR / "demo-clients.json"


@click.command(help="Fresh SQLite database, synthetic population, a demo client per agreement, then serve.")
@click.option(
    "--people", "people_count", type=click.IntRange(1, 2_000_000), default=DEMO_PEOPLE, show_default=True
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Prepare everything and exit.")
def demo(people_count: int, host: str, port: int, no_serve: bool) -> None:
    settings = load_settings()
    if "GATEWAY_ISSUER" not in os.environ:
        # Tokens name the address the demo actually serves on, so the metadata points at it.
        settings = settings_with(issuer=f"http://{host}:{port}")
    if not is_sqlite(settings.database_url):
        fail(
            "the demo builds a fresh SQLite database; unset GATEWAY_DATABASE_URL or point it at a sqlite file"
        )
    database = Path(settings.database_url.split("///", 1)[1])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{database}.chains", ignore_errors=True)  # the old database's chain locks
    witness = settings.witness.directory if settings.witness else None
    if witness is not None and witness.resolve().is_relative_to(DEMO_STATE_DIR.resolve()):
        shutil.rmtree(witness, ignore_errors=True)  # the old database's evidence, gone with it
    ensure_secrets(settings)
    run(lambda: upgrade_database(settings))
    summary = run(lambda: seed_database(settings, people_count, 1, council_today(), show_progress=True))
    known = sorted(load_agreements(settings.agreements_dir))
    demo_clients = run(lambda: add_clients(settings, [(a, f"Demo {a}") for a in known]))
    created = dict(zip(known, demo_clients, strict=True))
    DEMO_CLIENTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_CLIENTS_FILE.write_text(
        json.dumps({a: client_json(settings, c) for a, c in created.items()}, indent=2) + "\n",
        encoding="utf-8",
    )
    DEMO_CLIENTS_FILE.chmod(0o600)
    base = f"http://{host}:{port}"
    click.echo(
        f"\nDemo ready: {summary['people']} synthetic people in {database}.\n"
        f"Demo clients (one per agreement, secrets shown once) are in {DEMO_CLIENTS_FILE}.\n\n"
        "Get a token and query, from another terminal in this directory:\n\n"
        f"{textwrap.indent(demo_example(base), '  ')}\n"
    )
    if not no_serve:
        serve_app(settings, host, port)


def demo_example(base: str) -> str:
    """The README's copy-paste example, for a gateway served at `base`."""
    template = (Path(__file__).parent / "demo_example.sh").read_text(encoding="utf-8")
    return template.replace("{base}", base)
