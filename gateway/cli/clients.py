"""`gateway clients add|keys|list|disable`: partner systems (OAuth clients), each bound to one agreement."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from gateway.cli.client_files import ClientFile, ClientFileError, new_key, public_jwks
from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import Settings
from gateway.oauth import (
    TOKEN_PATH,
    ClientRecord,
    NewClient,
    add_client,
    disable_client,
    list_clients,
    replace_keys,
)
from policies import load_agreements


@click.group(help="Partner systems (OAuth clients), each bound to one agreement.")
def clients() -> None:
    pass


@clients.command(
    "add",
    help="Register a client. With --jwks, the partner's public keys (it keeps the private ones); with "
    "--client-file F, keys made here and written to a new file F with everything the partner needs (a "
    "test partner, or a partner who asked); with --secret, a shared secret, only where the agreement "
    "allows it.",
)
@click.option("--agreement", "agreement_id", required=True)
@click.option("--name", default=None)
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(path_type=Path, allow_dash=True),
    default=None,
    help="The partner's public JWK set (a file, or - for standard input).",
)
@click.option(
    "--client-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Make the keys here; write them to F.",
)
@click.option("--secret", is_flag=True, help="A shared secret (client_secret_basic), shown once.")
def clients_add(
    agreement_id: str, name: str | None, jwks_file: Path | None, client_file: Path | None, secret: bool
) -> None:
    settings = load_settings()
    if [jwks_file is not None, client_file is not None, secret].count(True) != 1:
        fail("give exactly one of --jwks, --client-file and --secret")
    agreements = load_agreements(settings.agreements_dir)
    agreement = agreements.get(agreement_id)
    method = "client_secret_basic" if secret else "private_key_jwt"
    if agreement is not None and method not in agreement.access.client_authentication:
        allowed = ", ".join(agreement.access.client_authentication)
        fail(f"agreement {agreement_id} does not allow {method} (it allows {allowed})")
    if client_file is not None and client_file.exists():
        fail(f"{client_file} exists: a client file is written once, to a new path")
    made = (new_key(), new_key()) if client_file is not None else None
    jwks = _read_jwks(jwks_file) if jwks_file is not None else (public_jwks(made[0]) if made else None)

    def write_file(created: NewClient) -> None:
        if client_file is not None and made is not None:
            file = ClientFile(created.record.client_id, agreement_id, settings.issuer, made[0], made[1])
            try:
                file.write(client_file, exclusive=True)
            except OSError as error:
                reason = error.strerror or type(error).__name__
                raise ClientFileError(f"cannot write {client_file} ({reason}); no client added") from None

    [created] = run(
        lambda: add_clients(settings, [(agreement_id, name, jwks, secret)], before_commit=write_file)
    )
    click.echo(json.dumps(client_json(settings, created, client_file), indent=2))


async def add_clients(
    settings: Settings,
    wanted: Sequence[tuple[str, str | None, dict[str, Any] | None, bool]],
    *,
    before_commit: Callable[[NewClient], None] | None = None,
) -> list[NewClient]:
    """Register clients in one transaction; `before_commit` (writing what the partner needs) runs for
    each inside it, so that a failure there leaves no client behind."""
    known = set(load_agreements(settings.agreements_dir))
    async with open_database(settings) as engine, engine.begin() as conn:
        made = []
        for agreement_id, name, jwks, secret in wanted:
            created = await add_client(
                conn,
                agreement_id=agreement_id,
                known_agreements=known,
                name=name,
                jwks=jwks,
                with_secret=secret,
            )
            if before_commit is not None:
                before_commit(created)
            made.append(created)
        return made


def client_json(settings: Settings, created: NewClient, client_file: Path | None = None) -> dict[str, Any]:
    """What a partner's integrator needs to get a token; a secret appears here and nowhere else."""
    body: dict[str, Any] = {
        "client_id": created.record.client_id,
        "agreement": created.record.agreement_id,
        "name": created.record.name,
        "token_endpoint": settings.issuer + TOKEN_PATH,
        "authentication": "client_secret_basic" if created.secret else "private_key_jwt",
    }
    if created.secret:
        body["client_secret"] = created.secret
    if client_file is not None:
        body["client_file"] = str(client_file)
    return body


@clients.command("keys", help="Replace a client's public keys with the partner's new JWK set (key rotation).")
@click.argument("client_id")
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(path_type=Path, allow_dash=True),
    required=True,
    help="The partner's new public JWK set (a file, or - for standard input).",
)
def clients_keys(client_id: str, jwks_file: Path) -> None:
    settings = load_settings()
    jwks = _read_jwks(jwks_file)

    async def replace() -> ClientRecord:
        async with open_database(settings) as engine, engine.begin() as conn:
            return await replace_keys(conn, client_id, jwks)

    record = run(replace)
    kids = [key["kid"] for key in json.loads(record.jwks or "{}").get("keys", [])]
    click.echo(f"{client_id}: keys {', '.join(kids)}")


def _read_jwks(path: Path) -> dict[str, Any]:
    """A JWK set from a file, or from standard input for `-` (a command run inside a container)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as error:
        fail(f"cannot read {path} ({error.strerror or type(error).__name__})")
    except ValueError:
        fail(f"{path} is not JSON")
    if not isinstance(data, dict):
        fail(f"{path} is not a JWK set")
    return data


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
