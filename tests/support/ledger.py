"""Helpers for ledger tests: a fresh database per test, and the DBA's tools for tampering.

Tampering has to get past the append-only triggers first, as a database administrator could;
`gateway audit verify` must then find what was changed.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import create_engine, is_sqlite, upgrade
from gateway.keys import SigningKeys
from resolvers import seed_population
from tests.support.databases import _admin_connection, postgres_admin_url, postgres_database
from tests.support.partners import Partner, enrol
from tests.support.population import EdgeCases, add_edge_cases

LEDGER_TABLES = ("audit_chains", "audit_events", "audit_disclosures", "audit_checkpoints")


@dataclass
class Fresh:
    url: str
    engine: AsyncEngine
    cases: EdgeCases


# Migrated and seeded once per process and kind of database, then copied for each test that wants a
# fresh one: a PostgreSQL database made from a template, a SQLite file copied (migrating and seeding
# each time cost a second or more, a hundred times over).
_TEMPLATES: dict[tuple[str, date, int], tuple[str, EdgeCases]] = {}


async def _template(kind: str, today: date, people: int) -> tuple[str, EdgeCases]:
    key = (kind, today, people)
    if key not in _TEMPLATES:
        if kind == "sqlite":
            url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='gateway-template-')) / 'template.db'}"
        else:
            admin = await _admin_connection()
            name = f"gateway_template_{secrets.token_hex(6)}"
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            url = make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
        engine = create_engine(url)
        try:
            await upgrade(engine)
            async with engine.begin() as conn:
                await seed_population(conn, people_count=people, seed=7, today=today)
                cases = await add_edge_cases(conn, today)
        finally:
            await engine.dispose()  # a template with a connection open cannot be copied
        _TEMPLATES[key] = (url, cases)
    return _TEMPLATES[key]


async def drop_templates() -> None:
    """At the end of the session: the PostgreSQL templates and the SQLite files."""
    for url, _ in _TEMPLATES.values():
        made = make_url(url)
        if made.get_backend_name() == "sqlite":
            shutil.rmtree(Path(str(made.database)).parent, ignore_errors=True)
            continue
        admin = await _admin_connection()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{made.database}" WITH (FORCE)')
        finally:
            await admin.close()
    _TEMPLATES.clear()


@asynccontextmanager
async def fresh_database(
    like_url: str, directory: Path, *, today: date, people: int = 300
) -> AsyncIterator[Fresh]:
    """A migrated, seeded database of the same kind as `like_url` (a copy of this process's template),
    dropped afterwards."""
    kind = "sqlite" if is_sqlite(like_url) else "postgresql"
    template, cases = await _template(kind, today, people)

    @asynccontextmanager
    async def url() -> AsyncIterator[str]:
        if kind == "sqlite":
            copy = directory / "fresh.db"
            shutil.copyfile(str(make_url(template).database), copy)
            yield f"sqlite+aiosqlite:///{copy}"
            return
        async with postgres_database(template=str(make_url(template).database)) as copied:
            yield copied

    async with url() as made:
        engine = create_engine(made)
        try:
            yield Fresh(made, engine, copy_cases(cases))
        finally:
            await engine.dispose()


def copy_cases(cases: EdgeCases) -> EdgeCases:
    return EdgeCases(ids=dict(cases.ids), household_ids=dict(cases.household_ids))


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
