"""`gateway db upgrade` and `gateway seed`: the database schema and the synthetic population."""

from __future__ import annotations

import json
import sys
from datetime import date
from typing import Any, Final

import click
from sqlalchemy.engine import make_url

from gateway.cli.support import fail, load_settings, open_database, run
from gateway.config import ROLE_NAME, Settings, council_today
from gateway.db import is_sqlite, upgrade
from gateway.roles import DEFAULT_APP, DEFAULT_MIGRATOR, roles_sql
from resolvers import seed_population

DEMO_PEOPLE: Final = 10_000


@click.group(help="Database schema.")
def db() -> None:
    pass


@db.command(
    "upgrade",
    help="Apply every migration (SQLite or PostgreSQL, from GATEWAY_DATABASE_URL). On PostgreSQL, run it as "
    "the migrator role; with GATEWAY_DB_APP_ROLE it also grants that role what the gateway needs.",
)
def db_upgrade() -> None:
    settings = load_settings()
    run(lambda: upgrade_database(settings))
    role = settings.db_app_role
    granted = (
        f"; {role} granted what the gateway needs" if role and not is_sqlite(settings.database_url) else ""
    )
    click.echo(f"database is up to date{granted}")


async def upgrade_database(settings: Settings) -> None:
    async with open_database(settings, migrated=False) as engine:
        await upgrade(engine, app_role=settings.db_app_role)


@db.command("roles", help="Show the SQL a DBA runs once to create the migrator and application roles.")
@click.option("--print-sql", "print_sql", is_flag=True, required=True, help="Print the SQL (nothing is run).")
@click.option("--migrator-role", default=DEFAULT_MIGRATOR, show_default=True)
@click.option("--app-role", default=None, help=f"Default: GATEWAY_DB_APP_ROLE, else {DEFAULT_APP}.")
@click.option("--database", default=None, help="Default: the database of GATEWAY_DATABASE_URL.")
def db_roles(print_sql: bool, migrator_role: str, app_role: str | None, database: str | None) -> None:
    settings = load_settings()
    app = app_role or settings.db_app_role or DEFAULT_APP
    for role in (migrator_role, app):
        if not ROLE_NAME.fullmatch(role):
            fail(f"{role!r} is not a plain role name (lower-case letters, digits and _, at most 63)")
    if migrator_role == app:
        fail("the migrator and the application must be different roles")
    name = database or make_url(settings.database_url).database or "gateway"
    click.echo(roles_sql(database=name, migrator=migrator_role, app=app), nl=False)


@click.command(help="Generate a synthetic population (deterministic for a seed) into an empty database.")
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
    summary = run(lambda: seed_database(settings, people_count, seed, reference, show_progress=True))
    click.echo(json.dumps(summary, indent=2))


async def seed_database(
    settings: Settings, people_count: int, seed: int, today: date, *, show_progress: bool
) -> dict[str, Any]:
    async with open_database(settings) as engine:
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
