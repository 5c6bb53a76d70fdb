"""The console under test: the real app (demo sign-in on, a trace viewer template set), over the
in-process ASGI transport at https://testserver, so that its Secure cookie is sent back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings
from gateway.guard.breakglass import BreakGlassWindows
from gateway.keys import SigningKeys
from resolvers.models import people
from tests.conftest import FIXED_TODAY, REF_SECRET, RegisteredClient, make_partners
from tests.support.console import Reader
from tests.support.identity import TestIssuer
from tests.support.partners import Partner

TRACE_URL = "http://127.0.0.1:16686/trace/{trace_id}"


@pytest.fixture(scope="session")
def console_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # A witness of its own: the session's is shared with apps writing other databases' chains, which the
    # console's check of this database would rightly call records the database does not hold.
    witness = tmp_path_factory.mktemp("console-witness")
    return settings.model_copy(update={"console_trace_url": TRACE_URL, "audit_witness": str(witness)})


@pytest.fixture(scope="session")
async def console_app(
    console_settings: Settings, signing: SigningKeys, engine: AsyncEngine
) -> AsyncIterator[Starlette]:
    app = create_app(
        console_settings, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY,
        console_demo_sign_in=True,
    )  # fmt: skip
    yield app
    ledger = app.state.gateway.ledger
    if ledger is not None:
        await ledger.close()


@pytest.fixture
async def browser(console_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client with its own cookie jar, as one browser."""
    transport = httpx.ASGITransport(app=console_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client


@pytest.fixture
async def reader(browser: httpx.AsyncClient) -> Reader:
    """The demo's security analyst, signed in, with a case reference given."""
    return await Reader(browser).signed_in()


@pytest.fixture
async def partner(
    console_app: Starlette,
    registered: dict[str, RegisteredClient],
    issuers: dict[str, TestIssuer],
    engine: AsyncEngine,
) -> AsyncIterator[Callable[[str], Partner]]:
    """Partners talking to the same app the console is part of."""
    transport = httpx.ASGITransport(app=console_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield make_partners(client, registered, issuers, engine)


async def open_break_glass(engine: AsyncEngine) -> str:
    """A window as MASH's break-glass opens one (the request path is tested in tests/gateway/guard)."""
    async with engine.connect() as conn:
        person = (await conn.execute(select(people.c.id).limit(1))).scalar_one()
    windows = BreakGlassWindows(engine, minutes=15)
    return await windows.open(
        event_id=uuid.uuid4().hex, client_id="mash-client", agreement_id="mash-safeguarding",
        officer="officer-77", officer_issuer="https://idp.mash.test.invalid", case_reference="MASH-1",
        reason="risk to a child", person_id=int(person),
    )  # fmt: skip
