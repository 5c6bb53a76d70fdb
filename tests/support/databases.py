"""The two databases the suite runs on: a SQLite file, and a throwaway PostgreSQL database.

PostgreSQL: GATEWAY_TEST_POSTGRES_URL (default the local server) names an admin connection; each
test session creates its own database on it and drops it afterwards, so parallel runs (a clean
clone next to a working tree) never see each other's rows. Under CI=true an unreachable server is
a failure; elsewhere the PostgreSQL half of the suite is skipped with a message saying how to run it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get("GATEWAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin_connection() -> asyncpg.Connection:
    url = postgres_admin_url()
    try:
        return await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        message = (
            f"PostgreSQL is not reachable at {make_url(url).render_as_string(hide_password=True)} "
            f"({type(error).__name__}). Start it, or set GATEWAY_TEST_POSTGRES_URL to an admin URL "
            "(postgresql+asyncpg://user@host:port/db) to run the PostgreSQL half of the suite."
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@asynccontextmanager
async def postgres_database(template: str | None = None) -> AsyncIterator[str]:
    """A throwaway database, dropped afterwards; `template`: a copy of that database (no one connected)."""
    admin = await _admin_connection()
    name = f"gateway_test_{secrets.token_hex(6)}"
    try:
        copied = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{copied}')
        yield make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def sqlite_database(directory: Path) -> AsyncIterator[str]:
    yield f"sqlite+aiosqlite:///{directory / 'gateway.db'}"


@asynccontextmanager
async def postgres_copy(source_url: str) -> AsyncIterator[str]:
    """A copy of a test database (CREATE DATABASE ... TEMPLATE): nobody may be connected to the source."""
    admin = await _admin_connection()
    name = f"gateway_copy_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(source_url).database}"')
        yield make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


async def redis_url() -> str:
    """The Redis the suite may use (GATEWAY_TEST_REDIS_URL); keys the tests make are random, and
    expire. Unreachable: a failure under CI=true, elsewhere a skip saying how to run those tests."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    url = os.environ.get("GATEWAY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, RedisError) as error:
        message = (
            f"Redis is not reachable at {url.split('@')[-1]} ({type(error).__name__}). Start it, or set "
            "GATEWAY_TEST_REDIS_URL, to run the tests of state shared through Redis."
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    finally:
        await client.aclose()
    return url
