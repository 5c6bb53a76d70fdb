"""Helpers for ledger tests: a fresh database per test, and the DBA's tools for tampering.

Tampering has to get past the append-only triggers first, as a database administrator could;
`gateway audit verify` must then find what was changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import create_engine, is_sqlite, upgrade
from gateway.keys import SigningKeys
from resolvers import seed_population
from tests.support.databases import postgres_database
from tests.support.partners import Partner, enrol
from tests.support.population import EdgeCases, add_edge_cases

LEDGER_TABLES = ("audit_chains", "audit_events", "audit_disclosures", "audit_checkpoints")


@dataclass
class Fresh:
    url: str
    engine: AsyncEngine
    cases: EdgeCases


@asynccontextmanager
async def fresh_database(
    like_url: str, directory: Path, *, today: date, people: int = 300
) -> AsyncIterator[Fresh]:
    """A migrated, seeded database of the same kind as `like_url`, dropped afterwards."""

    @asynccontextmanager
    async def url() -> AsyncIterator[str]:
        if is_sqlite(like_url):
            yield f"sqlite+aiosqlite:///{directory / 'fresh.db'}"
        else:
            async with postgres_database() as made:
                yield made

    async with url() as made:
        engine = create_engine(made)
        await upgrade(engine)
        async with engine.begin() as conn:
            await seed_population(conn, people_count=people, seed=7, today=today)
            cases = await add_edge_cases(conn, today)
        try:
            yield Fresh(made, engine, cases)
        finally:
            await engine.dispose()


@asynccontextmanager
async def app_on(
    fresh: Fresh, settings: Settings, signing: SigningKeys, secret: bytes, today: date, agreement: str
) -> AsyncIterator[tuple[Starlette, Partner]]:
    """An app on the fresh database and one partner of `agreement` registered in it."""
    app = create_app(settings, engine=fresh.engine, signing=signing, ref_secret=secret, today=lambda: today)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        partner = await enrol(
            fresh.engine, client, agreement, ref_secret=secret, jwks_dir=settings.partner_jwks_dir
        )
        yield app, partner
    ledger = app.state.gateway.ledger
    if ledger is not None:
        await ledger.close()


async def drop_append_only(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        for table in LEDGER_TABLES:
            await conn.execute(text(f"DROP TRIGGER {table}_append_only ON {table}"))
    else:
        for table in LEDGER_TABLES:
            for action in ("update", "delete"):
                await conn.execute(text(f"DROP TRIGGER {table}_no_{action}"))


async def refuse_ledger_inserts(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text(
            "CREATE FUNCTION test_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'the disk is full'; END $$"
        ))  # fmt: skip
        await conn.execute(text(
            "CREATE TRIGGER test_refuse_insert BEFORE INSERT ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_insert()"
        ))  # fmt: skip
    else:
        await conn.execute(text(
            "CREATE TRIGGER test_refuse_insert BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
        ))  # fmt: skip


async def allow_ledger_inserts(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("DROP TRIGGER test_refuse_insert ON audit_events"))
        await conn.execute(text("DROP FUNCTION test_refuse_insert()"))
    else:
        await conn.execute(text("DROP TRIGGER test_refuse_insert"))
