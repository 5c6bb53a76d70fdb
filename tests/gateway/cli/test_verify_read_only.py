"""`gateway audit verify` changes nothing: it checks a read-only copy (a SQLite file the process may
not write) and a PostgreSQL role that may only read, and records who ran it only when asked."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gateway.audit import EventDraft, LedgerWriter
from gateway.audit.tables import audit_chains, audit_events
from gateway.cli import main
from gateway.db import create_engine
from gateway.keys import SigningKeys, write_key_file
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.databases import postgres_admin_url
from tests.support.ledger import Fresh, fresh_database


@pytest.fixture
async def fresh(database_url: str, tmp_path: Path, signing: SigningKeys) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY, people=20) as made:
        writer = LedgerWriter(made.engine, signing=signing)
        for n in range(4):
            await writer.record(
                EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=n)
            )
        await writer.close()
        yield made


def _env(url: str, signing: SigningKeys, tmp_path: Path) -> dict[str, str]:
    key_file = tmp_path / "signing.jwk.json"
    write_key_file(key_file, [signing.active])
    return {
        "GATEWAY_DATABASE_URL": url, "GATEWAY_SIGNING_KEY_FILE": str(key_file),
        "GATEWAY_REF_SECRET": REF_SECRET.decode(), "GATEWAY_AUDIT_WITNESS": str(tmp_path / "witness"),
    }  # fmt: skip


async def _cli(env: dict[str, str], *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


async def test_the_read_only_engine_cannot_write(fresh: Fresh) -> None:
    reader = create_engine(fresh.url, read_only=True)
    try:
        with pytest.raises(DBAPIError, match=r"read-only|readonly"):
            async with reader.begin() as conn:
                await conn.execute(
                    insert(audit_chains).values(
                        chain_id="x", started_at="t", host="h", process_id=1, writer="w"
                    )
                )
    finally:
        await reader.dispose()


@pytest.fixture
async def sqlite_fresh(tmp_path: Path, signing: SigningKeys) -> AsyncIterator[Fresh]:
    async with fresh_database("sqlite+aiosqlite:///", tmp_path, today=FIXED_TODAY, people=20) as made:
        writer = LedgerWriter(made.engine, signing=signing)
        for n in range(4):
            await writer.record(
                EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=n)
            )
        await writer.close()
        yield made


async def test_verify_checks_a_sqlite_copy_without_writing_to_it(
    sqlite_fresh: Fresh, signing: SigningKeys, tmp_path: Path
) -> None:
    copy = tmp_path / "restored" / "ledger.db"
    copy.parent.mkdir()
    with sqlite3.connect(str(make_url(sqlite_fresh.url).database)) as source, sqlite3.connect(copy) as made:
        source.backup(made)
        made.execute("PRAGMA journal_mode=DELETE")  # a backup as an archive holds it: one file
    copy.chmod(stat.S_IRUSR | stat.S_IRGRP)
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    result = await _cli(_env(f"sqlite+aiosqlite:///{copy}", signing, tmp_path), "audit", "verify", "--strict")
    assert result.exit_code == 0, result.output
    assert "ledger intact: 1 chains, 4 events" in result.output
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before  # not a byte written
    assert sorted(p.name for p in copy.parent.iterdir()) == ["ledger.db"]  # no journal, no WAL, nothing


@pytest.fixture
async def reader_url(tmp_path: Path, signing: SigningKeys) -> AsyncIterator[tuple[str, Fresh]]:
    """A fresh PostgreSQL ledger and a role that may connect and SELECT, nothing else."""
    async with fresh_database(postgres_admin_url(), tmp_path, today=FIXED_TODAY, people=20) as made:
        writer = LedgerWriter(made.engine, signing=signing)
        for n in range(4):
            await writer.record(
                EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=n)
            )
        await writer.close()
        role = f"gateway_reader_{secrets.token_hex(4)}"
        database = make_url(made.url).database
        async with made.engine.begin() as conn:
            await conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            await conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO {role}'))
            await conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
            await conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        try:
            yield make_url(made.url).set(username=role).render_as_string(hide_password=False), made
        finally:
            async with made.engine.begin() as conn:
                await conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :role"
                ), {"role": role})  # fmt: skip
                await conn.execute(text(f"DROP OWNED BY {role}"))
                await conn.execute(text(f"DROP ROLE {role}"))


@pytest.mark.postgres
async def test_verify_checks_postgresql_as_a_role_that_may_only_read(
    reader_url: tuple[str, Fresh], signing: SigningKeys, tmp_path: Path
) -> None:
    url, made = reader_url
    env = _env(url, signing, tmp_path)
    result = await _cli(env, "audit", "verify", "--strict")
    assert result.exit_code == 0, result.output
    assert "ledger intact: 1 chains, 4 events" in result.output
    recorded = await _cli(env, "audit", "verify", "--record")
    assert recorded.exit_code == 1
    lines = recorded.output.strip().splitlines()
    assert lines[-1] == "error: the ledger could not be written"
    assert all(line.startswith(("chain ", "error: ")) for line in lines), lines  # no traceback, no log lines
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    async with made.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(audit_events))).scalar() == 4
        assert (await conn.execute(select(func.count()).select_from(audit_chains))).scalar() == 1


async def test_a_wal_file_on_storage_that_cannot_take_its_shm_opens_immutably(tmp_path: Path) -> None:
    """The fallback `audit verify` uses when a WAL-mode backup sits on read-only storage: opened
    immutable, SQLite needs no -shm or -wal beside the file, and creates none."""
    path = tmp_path / "backup.db"
    made = sqlite3.connect(path)
    made.execute("PRAGMA journal_mode=WAL")
    made.execute("CREATE TABLE t (a)")
    made.execute("INSERT INTO t VALUES (1)")
    made.commit()
    made.close()  # the last connection checkpoints and removes -wal and -shm; the file stays in WAL mode
    assert _names(tmp_path) == ["backup.db"]
    reader = create_engine(f"sqlite+aiosqlite:///{path}", read_only=True, immutable=True)
    try:
        async with reader.connect() as conn:
            assert (await conn.execute(text("SELECT a FROM t"))).scalar() == 1
    finally:
        await reader.dispose()
    assert _names(tmp_path) == ["backup.db"]


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())
