"""Start-up refuses what would fail later: an unmigrated database. Liveness does not need the database.
On PostgreSQL the request pool is fixed and plans each statement once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import SchemaOutOfDateError, create_engine, head_revision, upgrade
from gateway.keys import SigningKeys
from tests.conftest import REF_SECRET
from tests.support.databases import postgres_database


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}",
        ref_secret=SecretStr(REF_SECRET.decode()),
        audit_witness=str(tmp_path / "witness"),
    )


async def test_the_gateway_will_not_start_on_an_unmigrated_database(
    tmp_path: Path, signing: SigningKeys
) -> None:
    app = create_app(_settings(tmp_path), signing=signing)
    with pytest.raises(SchemaOutOfDateError, match=f"needs {head_revision()}: run `gateway db upgrade`"):
        async with app.router.lifespan_context(app):
            pass


async def test_the_gateway_starts_once_migrated(tmp_path: Path, signing: SigningKeys) -> None:
    settings = _settings(tmp_path)
    engine = create_engine(settings.database_url)
    await upgrade(engine)
    await engine.dispose()
    app = create_app(settings, signing=signing)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        assert (await client.get("/healthz")).json()["database"] == "ok"


async def test_liveness_answers_without_the_database(tmp_path: Path, signing: SigningKeys) -> None:
    # A database file in a directory that does not exist: every query fails.
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nowhere' / 'x.db'}",
        ref_secret=SecretStr(REF_SECRET.decode()),
        audit_witness=str(tmp_path / "witness"),
    )
    engine = create_engine(settings.database_url)
    (tmp_path / "missing" / "nowhere").rmdir()
    app = create_app(settings, signing=signing, engine=engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        assert (await client.get("/livez")).status_code == 200
        ready = await client.get("/healthz")
        assert ready.status_code == 503 and ready.json()["database"] == "unavailable"
    await engine.dispose()


@pytest.mark.postgres
async def test_on_postgresql_the_request_pool_is_fixed_and_plans_each_statement_once(
    tmp_path: Path, signing: SigningKeys
) -> None:
    async with postgres_database() as url:
        settings = Settings(
            database_url=url,
            ref_secret=SecretStr(REF_SECRET.decode()),
            audit_witness=str(tmp_path / "witness"),
            db_pool_size=3,
        )
        migrator = create_engine(url)
        await upgrade(migrator)
        await migrator.dispose()
        app = create_app(settings, signing=signing)
        gateway = app.state.gateway
        try:
            pool = gateway.engine.pool
            # The setting's connections for requests, one for the revocation listener, no overflow.
            assert (pool.size(), pool._max_overflow) == (4, 0)
            async with gateway.engine.connect() as conn:
                assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "force_generic_plan"
            plain = create_engine(url)
            async with plain.connect() as conn:
                assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "auto"
            await plain.dispose()
        finally:
            await gateway.engine.dispose()
            await gateway.state.close()
