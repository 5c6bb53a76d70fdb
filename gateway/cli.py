"""The `gateway` command: database, population, clients, agreements, schema snapshots, keys, serving."""

from __future__ import annotations

import json
import os
import secrets
import sys
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import click

from gateway.cli_audit import audit, sar
from gateway.cli_support import fail, load_settings, run, settings_with
from gateway.clients import NewClient, add_client, disable_client, list_clients
from gateway.config import Settings, SettingsError, council_today
from gateway.db import create_engine, is_sqlite, upgrade
from gateway.keys import SigningKeyError, generate_key, load_key_file, write_key_file
from gateway.logs import configure_logging, uvicorn_log_config
from gateway.oauth import TOKEN_PATH
from policies import AgreementFileError, evaluate, load_agreements
from policies.decisions import PurposeContext
from resolvers import seed_population

DEMO_PEOPLE = 10_000
DEMO_CLIENTS_FILE = Path("var/demo-clients.json")


@click.group(help="Partner data-sharing gateway. Configure with GATEWAY_* environment variables.")
def main() -> None:
    pass


main.add_command(audit)
main.add_command(sar)


# -- database and population ---------------------------------------------------------------------


@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply every migration (SQLite or PostgreSQL, from GATEWAY_DATABASE_URL).")
def db_upgrade() -> None:
    settings = load_settings()
    run(lambda: _upgrade(settings))
    click.echo("database is up to date")


async def _upgrade(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@main.command(help="Generate a synthetic population (deterministic for a seed) into an empty database.")
@click.option(
    "--people", "people_count", type=click.IntRange(1, 2_000_000), default=DEMO_PEOPLE, show_default=True
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Reference date (default: today).",
)
def seed(people_count: int, seed: int, today: Any) -> None:
    settings = load_settings()
    reference = today.date() if today else council_today()
    summary = run(lambda: _seed(settings, people_count, seed, reference, show_progress=True))
    click.echo(json.dumps(summary, indent=2))


async def _seed(
    settings: Settings, people_count: int, seed: int, today: date, *, show_progress: bool
) -> dict[str, Any]:
    engine = create_engine(settings.database_url)
    try:
        with click.progressbar(
            length=people_count, label="people", file=sys.stderr, hidden=not show_progress
        ) as bar:
            done = 0

            def advance(count: int) -> None:
                nonlocal done
                bar.update(count - done)
                done = count

            # One transaction: a failure part-way leaves the database as it was.
            async with engine.begin() as conn:
                summary = await seed_population(
                    conn, people_count=people_count, seed=seed, today=today, progress=advance
                )
    finally:
        await engine.dispose()
    return {
        "people": summary.people,
        "households": summary.households,
        "assessed_households": summary.assessed_households,
        "eligible_households": summary.eligible_households,
        "protected_people": summary.protected_people,
        "restricted_people": summary.restricted_people,
        "past_retention_people": summary.past_retention_people,
        "objections": summary.objections,
        "seed": seed,
        "today": today.isoformat(),
    }


# -- clients -------------------------------------------------------------------------------------


@main.group(help="Partner systems (OAuth clients), each bound to one agreement.")
def clients() -> None:
    pass


@clients.command("add", help="Register a client; prints its secret once, as JSON.")
@click.option("--agreement", "agreement_id", required=True)
@click.option("--name", default=None)
def clients_add(agreement_id: str, name: str | None) -> None:
    settings = load_settings()
    [created] = run(lambda: _add_clients(settings, [(agreement_id, name)]))
    click.echo(json.dumps(_client_json(settings, created), indent=2))


async def _add_clients(settings: Settings, wanted: list[tuple[str, str | None]]) -> list[NewClient]:
    known = set(load_agreements(settings.agreements_dir))
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            return [
                await add_client(conn, agreement_id=agreement_id, known_agreements=known, name=name)
                for agreement_id, name in wanted
            ]
    finally:
        await engine.dispose()


def _client_json(settings: Settings, created: NewClient) -> dict[str, str]:
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

    async def fetch() -> list[Any]:
        engine = create_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                return await list_clients(conn)
        finally:
            await engine.dispose()

    records = run(fetch)
    rows = [
        {
            "client_id": r.client_id,
            "agreement": r.agreement_id,
            "name": r.name,
            "created_at": r.created_at.isoformat(),
            "status": "enabled"
            if r.is_enabled
            else f"disabled {r.disabled_at.isoformat() if r.disabled_at else ''}",
        }
        for r in records
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['client_id']:<44} {row['agreement']:<22} {row['status']:<10} {row['name']}")


@clients.command("disable", help="Disable a client: its new token requests and its live tokens stop working.")
@click.argument("client_id")
def clients_disable(client_id: str) -> None:
    settings = load_settings()

    async def disable() -> None:
        engine = create_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await disable_client(conn, client_id)
        finally:
            await engine.dispose()

    run(disable)
    click.echo(f"disabled {client_id}")


# -- agreements and views ------------------------------------------------------------------------


@main.group(help="Data-sharing agreements.")
def policies() -> None:
    pass


@policies.command("check", help="Validate every agreement file and show whether it is in force today.")
def policies_check() -> None:
    settings = load_settings()
    try:
        agreements = load_agreements(settings.agreements_dir)
    except AgreementFileError as error:
        fail(str(error))
    today = council_today()
    for agreement in agreements.values():
        decision = evaluate(
            agreement, PurposeContext(acting_user="check", case_reference="check"), today=today
        )
        state = "in force" if decision.allowed else f"refused today: {decision.code}"
        click.echo(
            f"ok {agreement.label:<24} {agreement.partner}: {len(agreement.fields)} fields, "
            f"population {agreement.population}; {state}"
        )


@main.group(help="GraphQL views.")
def schema() -> None:
    pass


@schema.command("export", help="Write schema/views/<agreement>.graphql; with --check, fail if they differ.")
@click.option("--check", is_flag=True)
def schema_export(check: bool) -> None:
    from schema import build_views
    from schema.snapshots import stale_snapshots, write_snapshots

    settings = load_settings()
    try:
        views = build_views(load_agreements(settings.agreements_dir).values())
    except AgreementFileError as error:
        fail(str(error))
    if check:
        stale = stale_snapshots(views)
        if stale:
            fail(f"out of date: {', '.join(stale)} (run `gateway schema export`)")
        click.echo(f"{len(views)} view snapshots are up to date")
        return
    changed = write_snapshots(views)
    click.echo(f"wrote {len(views)} view snapshots; changed: {', '.join(changed) or 'none'}")


# -- keys and serving ----------------------------------------------------------------------------


@main.group(help="Signing key and ref secret.")
def keys() -> None:
    pass


@keys.command("generate", help="Create the signing key file and the ref secret file (never overwrites).")
def keys_generate() -> None:
    settings = load_settings()
    created = _ensure_secrets(settings)
    click.echo(f"created: {', '.join(created) or 'nothing (both exist)'}")


@keys.command("public", help="Print the public keys (JWKS): archive them before retiring a key.")
def keys_public() -> None:
    settings = load_settings()
    try:
        signing = load_key_file(settings.signing_key_file)
    except SigningKeyError as error:
        fail(str(error))
    click.echo(json.dumps(signing.public_jwks, indent=2))


def _ensure_secrets(settings: Settings) -> list[str]:
    created = []
    if not settings.signing_key_file.exists():
        write_key_file(settings.signing_key_file, [generate_key()])
        created.append(str(settings.signing_key_file))
    if settings.ref_secret is None and not settings.ref_secret_file.exists():
        settings.ref_secret_file.parent.mkdir(parents=True, exist_ok=True)
        settings.ref_secret_file.write_text(secrets.token_urlsafe(48) + "\n", encoding="utf-8")
        settings.ref_secret_file.chmod(0o600)
        created.append(str(settings.ref_secret_file))
    return created


@main.command(help="Serve the gateway.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    settings = load_settings()
    _serve(settings, host, port)


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from gateway.app import create_app

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


@main.command(help="Fresh SQLite database, synthetic population, a demo client per agreement, then serve.")
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
    _ensure_secrets(settings)
    run(lambda: _upgrade(settings))
    summary = run(lambda: _seed(settings, people_count, 1, council_today(), show_progress=True))
    known = sorted(load_agreements(settings.agreements_dir))
    demo_clients = run(lambda: _add_clients(settings, [(a, f"Demo {a}") for a in known]))
    created = dict(zip(known, demo_clients, strict=True))
    DEMO_CLIENTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_CLIENTS_FILE.write_text(
        json.dumps({a: _client_json(settings, c) for a, c in created.items()}, indent=2) + "\n",
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
        _serve(settings, host, port)


def demo_example(base: str) -> str:
    """The README's copy-paste example, for a gateway served at `base`."""
    template = (Path(__file__).parent / "demo_example.sh").read_text(encoding="utf-8")
    return template.replace("{base}", base)
