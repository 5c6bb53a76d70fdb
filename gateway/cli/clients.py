"""`gateway clients add|list|disable`: partner systems (OAuth clients), each bound to one agreement."""

from __future__ import annotations

import json
from typing import Any

import click

from gateway.cli.support import load_settings, open_database, run
from gateway.config import Settings
from gateway.oauth import TOKEN_PATH, ClientRecord, NewClient, add_client, disable_client, list_clients
from policies import load_agreements


@click.group(help="Partner systems (OAuth clients), each bound to one agreement.")
def clients() -> None:
    pass


@clients.command("add", help="Register a client; prints its secret once, as JSON.")
@click.option("--agreement", "agreement_id", required=True)
@click.option("--name", default=None)
def clients_add(agreement_id: str, name: str | None) -> None:
    settings = load_settings()
    [created] = run(lambda: add_clients(settings, [(agreement_id, name)]))
    click.echo(json.dumps(client_json(settings, created), indent=2))


async def add_clients(settings: Settings, wanted: list[tuple[str, str | None]]) -> list[NewClient]:
    known = set(load_agreements(settings.agreements_dir))
    async with open_database(settings) as engine, engine.begin() as conn:
        return [
            await add_client(conn, agreement_id=agreement_id, known_agreements=known, name=name)
            for agreement_id, name in wanted
        ]


def client_json(settings: Settings, created: NewClient) -> dict[str, str]:
    """What a partner's integrator needs to get a token; the secret appears here and nowhere else."""
    return {
        "client_id": created.record.client_id,
        "client_secret": created.secret,
        "agreement": created.record.agreement_id,
        "name": created.record.name,
        "token_endpoint": settings.issuer + TOKEN_PATH,
    }


@clients.command("list", help="List clients (never their secrets).")
@click.option("--json", "as_json", is_flag=True)
def clients_list(as_json: bool) -> None:
    settings = load_settings()

    async def fetch() -> list[ClientRecord]:
        async with open_database(settings) as engine, engine.connect() as conn:
            return await list_clients(conn)

    rows = [_row(record) for record in run(fetch)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['client_id']:<44} {row['agreement']:<22} {row['status']:<10} {row['name']}")


def _row(record: ClientRecord) -> dict[str, Any]:
    disabled = record.disabled_at.isoformat() if record.disabled_at else ""
    return {
        "client_id": record.client_id,
        "agreement": record.agreement_id,
        "name": record.name,
        "created_at": record.created_at.isoformat(),
        "status": "enabled" if record.is_enabled else f"disabled {disabled}",
    }


@clients.command("disable", help="Disable a client: its new token requests and its live tokens stop working.")
@click.argument("client_id")
def clients_disable(client_id: str) -> None:
    settings = load_settings()

    async def disable() -> None:
        async with open_database(settings) as engine, engine.begin() as conn:
            await disable_client(conn, client_id)

    run(disable)
    click.echo(f"disabled {client_id}")
