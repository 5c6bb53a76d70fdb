"""Database engines and migrations.

SQLite is the embedded default; PostgreSQL is the production database. Both run the same Alembic
migrations. Bound parameter values are hidden from exception text (`hide_parameters`), because a
parameter may be a name or a date of birth.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from redis import exceptions as redis_errors
from sqlalchemy import Connection, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.roles import grant_statements

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


# PostgreSQL SQLSTATE classes that mean "the database cannot serve you now", not "your SQL is wrong":
# connection exceptions, invalid authorization, no such database, insufficient resources (too many
# connections, disk full), operator intervention (shutdown, restart, cancelled by a timeout); and a
# database that is not accepting connections or a lock not granted in time (class 55).
_UNAVAILABLE_SQLSTATE_CLASSES: Final = frozenset({"08", "28", "3D", "53", "55", "57"})
# SQLite primary result codes of the same kind: busy, locked, I/O error, full, cannot open.
_UNAVAILABLE_SQLITE_CODES: Final = frozenset({5, 6, 10, 13, 14})


def is_unavailable(error: BaseException) -> bool:
    """Whether an error means the database (or the shared Redis) could not be reached or could not
    serve the request now (answered with 503 and Retry-After), as opposed to a fault in the gateway (500)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # Network errors only: a file that cannot be written is the gateway's own problem, not the database's.
        if isinstance(
            current,
            ConnectionError
            | TimeoutError
            | socket.gaierror
            | exc.TimeoutError
            | exc.InterfaceError
            | exc.DisconnectionError
            | redis_errors.ConnectionError
            | redis_errors.TimeoutError,
        ):
            return True
        # Raised by asyncpg itself: a statement the resolvers run on the driver directly.
        if isinstance(current, asyncpg.InterfaceError) or (
            isinstance(current, asyncpg.PostgresError)
            and current.sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
        ):
            return True
        if isinstance(current, exc.DBAPIError):
            if current.connection_invalidated:
                return True
            orig = current.orig
            state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
            if isinstance(state, str) and state[:2] in _UNAVAILABLE_SQLSTATE_CLASSES:
                return True
            code = getattr(orig, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in _UNAVAILABLE_SQLITE_CODES:
                return True
        current = current.__cause__ or current.__context__
    return False


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


SUPPORTED_DRIVERS: Final = ("sqlite+aiosqlite", "postgresql+asyncpg")
# Query options each driver takes from the URL (any other would fail every connection later).
_URL_OPTIONS: Final = {
    "sqlite+aiosqlite": frozenset(),
    "postgresql+asyncpg": frozenset(
        {"ssl", "sslmode", "command_timeout", "timeout", "prepared_statement_cache_size"}
    ),
}


def check_url(url: str) -> str:
    """The URL, if it names a database this gateway can use; ValueError otherwise (never quoting it:
    it may hold a password)."""
    try:
        parsed = make_url(url)
        port = parsed.port
    except (exc.ArgumentError, ValueError):
        raise ValueError("not a database URL") from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ValueError(f"use {' or '.join(SUPPORTED_DRIVERS)}, not {parsed.drivername}")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port")
    unknown = sorted(set(parsed.query) - _URL_OPTIONS[parsed.drivername])
    if unknown:
        raise ValueError(f"options the driver does not take: {', '.join(unknown)}")
    return url


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    read_only: bool = False,
    immutable: bool = False,
    statement_timeout_ms: int = 0,
    lock_timeout_ms: int = 0,
    generic_plans: bool = False,
) -> AsyncEngine:
    """`read_only`: every connection refuses to write (SQLite opens the file read-only; PostgreSQL
    starts every transaction READ ONLY), for checking a replica, a restored backup or a copy.
    `immutable` (SQLite, with read_only): the file is taken never to change, so SQLite needs no -shm
    beside it: a backup on read-only storage. Never for a database that something is writing.
    The timeouts (PostgreSQL; 0 = none) bound how long a request waits on a lock or a statement, so
    that a locked table answers 503 rather than holding the request for as long as the lock lasts.
    `generic_plans` (PostgreSQL): each prepared statement is planned once, not again for every set of
    values; a person read's joins cost the planner more than running them (1.8 ms against 0.8 ms
    per page of 100 on 200,000 people)."""
    options: dict[str, Any] = {"hide_parameters": True}
    parsed = make_url(url)
    if is_sqlite(url):
        database = parsed.database
        if read_only and database and database != ":memory:":
            query = {"mode": "ro", "uri": "true", **({"immutable": "1"} if immutable else {})}
            url = parsed.set(database=f"file:{database}", query=query).render_as_string(hide_password=False)
        elif database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": 30}
    else:
        # A fixed pool: connections opened as needed and kept. An overflow connection is closed when it
        # comes back, so a pool smaller than the load opened and closed one every few requests; past
        # the pool, a request waits for a connection (30 s, then 503) instead.
        options["pool_size"] = pool_size
        options["max_overflow"] = 0
        server_settings = {
            name: value
            for name, value in (
                ("default_transaction_read_only", "on" if read_only else ""),
                ("statement_timeout", str(statement_timeout_ms) if statement_timeout_ms else ""),
                ("lock_timeout", str(lock_timeout_ms) if lock_timeout_ms else ""),
                ("plan_cache_mode", "force_generic_plan" if generic_plans else ""),
            )
            if value
        }
        if server_settings:
            options["connect_args"] = {"server_settings": server_settings}
    engine = create_async_engine(url, **options)
    if is_sqlite(url):
        event.listen(
            engine.sync_engine, "connect", _sqlite_read_only_pragmas if read_only else _sqlite_pragmas
        )
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed audit event survives a power cut, not only a crash of the process.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_read_only_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


class RoleError(Exception):
    """The application role named in the settings cannot be granted its privileges."""


async def upgrade(engine: AsyncEngine, revision: str = "head", *, app_role: str | None = None) -> None:
    """Bring the database schema up to `revision` in one transaction; on PostgreSQL, with `app_role`,
    grant that role exactly what the running gateway needs (gateway/roles.py) in the same transaction."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), revision))
        if app_role is None or conn.dialect.name != "postgresql":
            return
        exists = await conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": app_role})
        if exists.first() is None:
            raise RoleError(
                f"GATEWAY_DB_APP_ROLE names role {app_role}, which does not exist: a DBA creates it "
                "first (`gateway db roles --print-sql`)"
            )
        for statement in grant_statements(app_role):
            await conn.execute(text(statement))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


class SchemaOutOfDateError(Exception):
    """The database is not at the migration this code needs."""


async def require_current_schema(engine: AsyncEngine) -> None:
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDateError(
            f"the database schema is at revision {current or 'none'}, this gateway needs {head}: "
            "run `gateway db upgrade` first"
        )


def utc(moment: datetime | None) -> datetime | None:
    """A timestamp as read back from either database, in UTC: SQLite keeps no zone with it."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
