"""`gateway db upgrade` and `gateway seed`: the database schema and the synthetic population."""

from __future__ import annotations

import json
import sys
from datetime import date
from typing import Any, Final

import click

from gateway.cli.support import load_settings, open_database, run
from gateway.config import Settings, council_today
from gateway.db import upgrade
from resolvers import seed_population

DEMO_PEOPLE: Final = 10_000


@click.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply every migration (SQLite or PostgreSQL, from GATEWAY_DATABASE_URL).")
def db_upgrade() -> None:
    settings = load_settings()
    run(lambda: upgrade_database(settings))
    click.echo("database is up to date")


async def upgrade_database(settings: Settings) -> None:
    async with open_database(settings, migrated=False) as engine:
        await upgrade(engine)


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
