"""Least privilege in PostgreSQL: the gateway runs as an application role that can answer partners and
append to the ledger, and can do nothing that would alter, delete or hide what the ledger holds.

The roles are made with the SQL `gateway db roles --print-sql` prints, the schema by `gateway db
upgrade` as the migrator (which grants the application role its privileges); then the gateway serves
a partner as the application role, and every way of changing the ledger is tried as that role.
`/readyz` turns unready when that role can no longer write the ledger, and ready again after.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.db import create_engine, upgrade
from gateway.keys import SigningKeys
from gateway.roles import APP_PRIVILEGES
from policies import Agreement
from resolvers import seed_population
from tests.conftest import FIXED_TODAY, ISSUER, REF_SECRET, UNLIMITED, build_app
from tests.support.databases import _admin_connection, _asyncpg_dsn, postgres_database
from tests.support.ledger import allow_ledger_inserts, refuse_ledger_inserts
from tests.support.partners import enrol
from tests.support.processes import GATEWAY

PAGE = "{ people(first: 5) { edges { node { ref givenName } } } }"


@dataclass
class Roles:
    migrator_url: str
    app_url: str
    app: str


@pytest.fixture
async def roles() -> AsyncIterator[Roles]:
    suffix = secrets.token_hex(4)
    migrator, app = f"gw_migrator_{suffix}", f"gw_app_{suffix}"
    try:
        async with postgres_database() as url:
            database = make_url(url).database
            printed = subprocess.run(  # noqa: ASYNC221 (a one-off command, before anything runs)
                [GATEWAY, "db", "roles", "--print-sql", "--migrator-role", migrator, "--app-role", app,
                 "--database", str(database)],
                env={"PATH": "/usr/bin:/bin", "GATEWAY_DATABASE_URL": url}, capture_output=True, text=True,
                check=True, timeout=60,
            )  # fmt: skip
            superuser = await asyncpg.connect(_asyncpg_dsn(url))
            try:
                await superuser.execute(printed.stdout)  # as a DBA would paste it
            finally:
                await superuser.close()
            yield Roles(
                migrator_url=make_url(url).set(username=migrator).render_as_string(hide_password=False),
                app_url=make_url(url).set(username=app).render_as_string(hide_password=False),
                app=app,
            )
    finally:
        admin = await _admin_connection()
        try:
            for role in (app, migrator):
                await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()


# Each way a role with the application's rights could try to change or hide what the ledger holds.
FORBIDDEN = [
    "UPDATE audit_events SET outcome = 'denied'",
    "DELETE FROM audit_events",
    "TRUNCATE audit_events",
    "TRUNCATE {partition}",
    "DELETE FROM {partition}",
    "DROP TABLE {partition}",
    "ALTER TABLE audit_events DETACH PARTITION {partition}",
    "UPDATE audit_disclosures SET fields = ''",
    "DELETE FROM audit_disclosures",
    "DELETE FROM audit_checkpoints",
    "UPDATE audit_chains SET host = 'x'",
    "INSERT INTO audit_retention (chain_id, through_seq, head_hash, dropped_before, events, signed_at, "
    "key_id, signature) VALUES ('c', 1, 'h', '2020-01', 1, 't', 'k', 's')",
    "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "DROP FUNCTION audit_append_only() CASCADE",
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RETURN NEW; END $$",
    "SET session_replication_role = replica",
    "ALTER TABLE audit_events ADD COLUMN note text",
    "CREATE TABLE audit_shadow (id int)",
    "SELECT audit_add_month(DATE '2030-01-01')",
    "UPDATE people SET given_name = 'x'",
    # Objections and restrictions are put in effect and lifted (gateway rights), never rewritten.
    "UPDATE objections SET recorded_on = DATE '2020-01-01'",
    "UPDATE restrictions SET agreement_id = 'x'",
    "DELETE FROM rights_requests",
    "DELETE FROM assessments",
    # A referred child's record may be opened (INSERT), never changed or removed.
    "DELETE FROM people",
    "UPDATE addresses SET line1 = 'x'",
    "DELETE FROM person_records",
    "DELETE FROM batches",
    "DELETE FROM alembic_version",
]


async def _refused(engine: AsyncEngine, statement: str) -> str | None:
    """The SQLSTATE the statement was refused with, or None if it ran (then rolled back)."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await conn.execute(text(statement))
        except Exception as error:
            await transaction.rollback()
            orig = getattr(error, "orig", None)
            return str(
                getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", "?")
            )
        await transaction.rollback()
        return None


@pytest.mark.postgres
async def test_the_application_role_serves_partners_and_cannot_alter_the_ledger(
    roles: Roles, signing: SigningKeys, partner_jwks_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=roles.app_url, issuer=ISSUER, ref_secret=SecretStr(REF_SECRET.decode()),
        audit_witness="none", partner_jwks_dir=partner_jwks_dir, dpop_nonce=False, **UNLIMITED,
    )  # fmt: skip
    migrator = create_engine(roles.migrator_url)
    app_engine = create_engine(roles.app_url)
    try:
        await upgrade(migrator, app_role=roles.app)
        async with migrator.begin() as conn:
            await seed_population(conn, people_count=200, seed=3, today=FIXED_TODAY)
        served = build_app(settings, signing, app_engine)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served, client=("127.0.0.1", 4000)),
            base_url="http://testserver",
        ) as http:
            partner = await enrol(
                app_engine, http, "ons-evaluation", ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
            )
            answered = await partner.post(PAGE)
            assert answered.status_code == 200, answered.text
            assert len(answered.json()["data"]["people"]["edges"]) == 5
            assert (await http.get("/readyz")).json()["status"] == "ready"

            async with app_engine.connect() as conn:
                partition = (
                    await conn.execute(
                        text(
                            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1 LIMIT 1"
                        )
                    )
                ).scalar_one()
                events = (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar_one()
            assert events >= 2  # the token request and the page, written as the application role
            refused = {s: await _refused(app_engine, s.format(partition=partition)) for s in FORBIDDEN}
            # 42501 insufficient privilege; 42501 also for "must be owner" of a table or function.
            assert refused == dict.fromkeys(FORBIDDEN, "42501")
            # What it may do: make next months' partitions through the function that can do only that.
            assert await _refused(app_engine, "SELECT audit_ensure_partitions(3)") is None

            # Unready while the ledger cannot be written, ready again once it can.
            token = await partner.token()
            async with migrator.begin() as conn:
                await conn.execute(text(f'REVOKE INSERT ON audit_events FROM "{roles.app}"'))
            unready = await http.get("/readyz")
            assert unready.status_code == 503
            assert unready.json()["checks"] == {"database": "ok", "ledger": "failed", "agreements": "ok"}
            refused_page = await partner.post(PAGE, token=token)
            assert refused_page.status_code == 503
            assert refused_page.json()["errors"][0]["extensions"]["code"] == "AUDIT_UNAVAILABLE"
            await upgrade(migrator, app_role=roles.app)  # grants again, as every upgrade does
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()["status"]) == (200, "ready")
            assert (await partner.post(PAGE, token=token)).status_code == 200
        await served.state.gateway.ledger.close()
    finally:
        await app_engine.dispose()
        await migrator.dispose()


def test_every_table_the_migrations_make_has_its_privileges_listed() -> None:
    from tests.resolvers.test_migrations import EXPECTED_TABLES

    assert set(APP_PRIVILEGES) == EXPECTED_TABLES | {"alembic_version"}
    ledger = {t: p for t, p in APP_PRIVILEGES.items() if t.startswith("audit_")}
    assert all(set(p) <= {"SELECT", "INSERT"} for p in ledger.values()), ledger


def test_roles_sql_refuses_one_role_for_both(tmp_path: Path) -> None:
    done = subprocess.run(
        [GATEWAY, "db", "roles", "--print-sql", "--migrator-role", "same", "--app-role", "same"],
        env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        "error: the migrator and the application must be different roles\n",
    )


async def test_readyz_is_unready_while_the_ledger_refuses_writes_and_ready_after(
    asgi: httpx.AsyncClient, engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    """On both databases: a ledger that cannot be written (a full disk, here a trigger) takes the
    process out of the balancer; the answer names the failing check and nothing else."""
    assert (await asgi.get("/readyz")).json() == {
        "status": "ready",
        "checks": {"database": "ok", "ledger": "ok", "agreements": "ok"},
        "agreements": {"loaded": len(agreements), "in_force": len(agreements)},
    }
    async with engine.begin() as conn:
        await refuse_ledger_inserts(conn)
    try:
        unready = await asgi.get("/readyz")
    finally:
        async with engine.begin() as conn:
            await allow_ledger_inserts(conn)
    assert unready.status_code == 503
    assert unready.json()["checks"] == {"database": "ok", "ledger": "failed", "agreements": "ok"}
    assert "disk" not in unready.text
    assert (await asgi.get("/readyz")).status_code == 200
