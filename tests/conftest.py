"""Fixtures shared by every layer's tests.

Database fixtures are parametrised over SQLite and PostgreSQL, so every test that touches data
runs on both. HTTP fixtures are parametrised over the in-process ASGI app and uvicorn on
127.0.0.1, so the agreement tests run in-process and over a real socket with real tokens.
The clock is fixed: agreements, ages and retention dates are judged on FIXED_TODAY.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings
from gateway.db import create_engine, upgrade
from gateway.keys import SigningKeys, generate_key
from gateway.oauth import add_client
from policies import Agreement, load_agreements
from resolvers import RefCodec, seed_population
from tests.support.databases import postgres_database, sqlite_database
from tests.support.identity import RegisteredClient, TestIssuer, install_issuers, jwks, new_key
from tests.support.ledger import drop_templates
from tests.support.oracle import Oracle
from tests.support.partners import Partner
from tests.support.population import EdgeCases, add_edge_cases
from tests.support.server import serve_in_thread

FIXED_TODAY = date(2026, 11, 22)
SEED = 20261122
SEEDED_PEOPLE = 3_000
REF_SECRET = b"a test ref secret that is at least thirty-two bytes long"
ISSUER = "http://127.0.0.1:8000"


@pytest.fixture(scope="session", autouse=True)
async def _fresh_database_templates() -> AsyncIterator[None]:
    """Fresh databases are copies of a template made once per process: dropped when the session ends."""
    yield
    await drop_templates()


@pytest.fixture(scope="session")
def agreements() -> dict[str, Agreement]:
    return load_agreements()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        async with sqlite_database(tmp_path_factory.mktemp("sqlite")) as url:
            yield url
    else:
        async with postgres_database() as url:
            yield url


@pytest.fixture(scope="session")
async def populated(database_url: str) -> AsyncIterator[tuple[AsyncEngine, EdgeCases]]:
    """A migrated database with the seeded population and the edge cases, committed."""
    engine = create_engine(database_url)
    await upgrade(engine)
    async with engine.begin() as conn:
        await seed_population(conn, people_count=SEEDED_PEOPLE, seed=SEED, today=FIXED_TODAY)
        cases = await add_edge_cases(conn, FIXED_TODAY)
    yield engine, cases
    await engine.dispose()


@pytest.fixture(scope="session")
def engine(populated: tuple[AsyncEngine, EdgeCases]) -> AsyncEngine:
    return populated[0]


@pytest.fixture(scope="session")
def cases(populated: tuple[AsyncEngine, EdgeCases]) -> EdgeCases:
    return populated[1]


@pytest.fixture(scope="session")
async def oracle(engine: AsyncEngine) -> Oracle:
    async with engine.connect() as conn:
        return await Oracle.load(conn)


@pytest.fixture(scope="session")
def signing() -> SigningKeys:
    return SigningKeys.from_keys([generate_key()])


@pytest.fixture(scope="session")
def partner_jwks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("partner-jwks")


@pytest.fixture(scope="session")
def issuers(agreements: dict[str, Agreement], partner_jwks_dir: Path) -> dict[str, TestIssuer]:
    """A stand-in identity provider for each agreement that names officers, trusted by the gateway."""
    return install_issuers(agreements, partner_jwks_dir)


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, partner_jwks_dir: Path) -> Settings:
    state = tmp_path_factory.mktemp("state")
    return Settings(
        database_url=database_url,
        issuer=ISSUER,
        signing_key_file=state / "unused-signing-key.json",
        ref_secret=SecretStr(REF_SECRET.decode()),
        ref_secret_file=state / "unused-ref-secret",
        audit_witness=str(state / "witness"),
        partner_jwks_dir=partner_jwks_dir,
        # Nonces cost every new partner a refused first request; the DPoP tests turn them on.
        dpop_nonce=False,
        # The session's partners make thousands of requests; the limits have tests of their own.
        **UNLIMITED,
    )


UNLIMITED: Final[dict[str, Any]] = {
    "requests_per_second": 10_000,
    "requests_per_minute": 600_000,
    "unauthenticated_per_minute": 600_000,
}


def build_app(settings: Settings, signing: SigningKeys, engine: AsyncEngine | None) -> Starlette:
    return create_app(
        settings, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
    )


@pytest.fixture(scope="session")
async def app(settings: Settings, signing: SigningKeys, engine: AsyncEngine) -> AsyncIterator[Starlette]:
    built = build_app(settings, signing, engine)
    yield built
    ledger = built.state.gateway.ledger
    if ledger is not None:
        await ledger.close()


@pytest.fixture(scope="session")
def server_url(settings: Settings, signing: SigningKeys, engine: AsyncEngine) -> Iterator[str]:
    # The server builds its own engine: connections must be made on the server thread's event loop.
    with serve_in_thread(build_app(settings, signing, None)) as url:
        yield url


@pytest.fixture(params=["asgi", "http"])
async def http(request: pytest.FixtureRequest, app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    if request.param == "asgi":
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    else:
        base_url = request.getfixturevalue("server_url")
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            yield client


@pytest.fixture
async def asgi(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """In-process only: for tests of HTTP behaviour that does not depend on the socket."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


async def register(
    engine: AsyncEngine, agreements: dict[str, Agreement], agreement_ids: list[str] | None = None
) -> dict[str, RegisteredClient]:
    """A client per agreement, with keys made here: agreement id -> (client_id, key, dpop_key)."""
    out = {}
    async with engine.begin() as conn:
        for agreement_id in agreement_ids or list(agreements):
            key = new_key()
            created = await add_client(
                conn, agreement_id=agreement_id, known_agreements=set(agreements), jwks=jwks(key)
            )
            out[agreement_id] = RegisteredClient(created.record.client_id, key, new_key())
    return out


@pytest.fixture(scope="session")
async def registered(engine: AsyncEngine, agreements: dict[str, Agreement]) -> dict[str, RegisteredClient]:
    """One enabled client per agreement."""
    return await register(engine, agreements)


def make_partners(
    client: httpx.AsyncClient,
    registered: dict[str, RegisteredClient],
    issuers: dict[str, TestIssuer],
    engine: AsyncEngine,
) -> Callable[[str], Partner]:
    def partner(agreement_id: str) -> Partner:
        made = registered[agreement_id]
        return Partner(
            client, agreement_id, made.client_id, made.key, made.dpop_key, RefCodec(REF_SECRET, agreement_id),
            issuers.get(agreement_id), engine=engine,
        )  # fmt: skip

    return partner


@pytest.fixture
def partner(
    http: httpx.AsyncClient,
    registered: dict[str, RegisteredClient],
    issuers: dict[str, TestIssuer],
    engine: AsyncEngine,
) -> Callable[[str], Partner]:
    """A partner over both transports (in-process and uvicorn)."""
    return make_partners(http, registered, issuers, engine)


@pytest.fixture
def local_partner(
    asgi: httpx.AsyncClient,
    registered: dict[str, RegisteredClient],
    issuers: dict[str, TestIssuer],
    engine: AsyncEngine,
) -> Callable[[str], Partner]:
    return make_partners(asgi, registered, issuers, engine)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
