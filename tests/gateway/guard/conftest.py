"""Apps with the limits turned down, over the session's database, and partners enrolled afresh.

Each test gets new clients (their counters, windows and quotas start at nothing) and, where it
changes settings or agreements, an app of its own whose ledger is closed (summaries written) after.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit.tables import audit_events
from gateway.config import Settings
from gateway.keys import SigningKeys
from policies import AGREEMENTS_DIR
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.partners import Partner, enrol

Enrol = Callable[..., Awaitable[Partner]]


@asynccontextmanager
async def guarded_app(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, **updates: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """An app with some settings changed, its lifespan run (background work started and stopped)."""
    app = create_app(
        settings.model_copy(update=updates), engine=engine, signing=signing, ref_secret=REF_SECRET,
        today=lambda: FIXED_TODAY,
    )  # fmt: skip
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(new_address(), 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


def new_address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def agreements_with(directory: Path, agreement_id: str, old: str, new: str) -> Path:
    """The shipped agreements, one of them changed (`old` replaced by `new`)."""
    for path in AGREEMENTS_DIR.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if path.stem == agreement_id:
            assert old in text, (agreement_id, old)
            text = text.replace(old, new)
        (directory / path.name).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def enrolled(engine: AsyncEngine, settings: Settings) -> Enrol:
    """A new client of an agreement, talking over `http`."""

    async def make(agreement_id: str, http: httpx.AsyncClient) -> Partner:
        return await enrol(
            engine, http, agreement_id, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
        )

    return make


async def events(engine: AsyncEngine, **where: Any) -> list[dict[str, Any]]:
    stmt = select(audit_events)
    for column, value in where.items():
        stmt = stmt.where(audit_events.c[column] == value)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt.order_by(audit_events.c.occurred_at))).all()
    return [dict(row._mapping) for row in rows]


def code_of(response: httpx.Response) -> str:
    code = response.json()["errors"][0]["extensions"]["code"]
    assert isinstance(code, str)
    return code
