"""What the authorization server's tests share: a partner system driven by hand, apps built with other
settings, and the audit event a response left.

Every test talks from an address of its own (198.18.0.0/15, the range kept for tests) and, where it
provokes failed client authentication, as a client of its own: failures are counted per address and
per client id by the gateway, across the whole session's database, and a test that spent the
police client's allowance would lock every later test out.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit.tables import audit_events
from gateway.config import Settings
from gateway.guard import add_document
from gateway.keys import SigningKeys
from policies import AGREEMENTS_DIR, Agreement
from schema import build_view
from tests.conftest import FIXED_TODAY, ISSUER, REF_SECRET, register
from tests.support.identity import OFFICER, TestIssuer, assertion
from tests.support.partners import PURPOSE, proof

TOKEN_PATH = "/oauth/token"
INTROSPECT_PATH = "/oauth/introspect"
REVOKE_PATH = "/oauth/revoke"
TOKEN_URL = ISSUER + TOKEN_PATH
GRAPHQL_URL = ISSUER + "/graphql"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
FAILED = "client authentication failed"  # the one description every client-dependent failure gets
TYPENAME = {"query": "{ __typename }"}
POLICE = "police-prevention"
ONS = "ons-evaluation"
SANDBOX = "dev-sandbox"  # an agreement of the tests' own: bearer tokens, a secret allowed (see `sandbox`)

_BASE = ipaddress.IPv4Address("198.18.0.0") + secrets.randbelow(60_000)
_NEXT = itertools.count(1)


def new_address() -> str:
    """An address no other test uses (198.18.0.0/15 is reserved for testing, RFC 2544)."""
    return str(_BASE + next(_NEXT))


def http_client(app: Starlette, address: str | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address or new_address(), 40_000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@dataclass
class Caller:
    """A partner system written out by hand, so that each test can change one thing it sends."""

    http: httpx.AsyncClient
    agreement: str
    client_id: str
    key: ECKey  # signs its client assertions
    dpop_key: ECKey  # signs its DPoP proofs
    issuer: TestIssuer | None = None  # its identity provider, where the agreement names officers
    nonce: str | None = None
    last: dict[str, Any] = field(default_factory=dict)  # the last successful token response

    # -- what goes into a token request ---------------------------------------------------------

    def assertion(self, **changes: Any) -> str:
        return assertion(self.client_id, self.key, TOKEN_URL, **changes)

    def authentication(self, **changes: Any) -> dict[str, str]:
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion(**changes)}

    def grant(self, officer: str = OFFICER, **subject_changes: Any) -> dict[str, str]:
        """The grant its agreement wants: token exchange of an officer's token, or client credentials."""
        if self.issuer is None:
            return {"grant_type": "client_credentials"}
        return {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": self.issuer.token(officer, **subject_changes),
            "subject_token_type": JWT_TOKEN_TYPE,
        }

    def form(self, **replace: str | None) -> dict[str, str]:
        """A complete token request; `replace` changes (None removes) parameters."""
        form = {**self.grant(), **self.authentication()}
        for name, value in replace.items():
            if value is None:
                form.pop(name, None)
            else:
                form[name] = value
        return form

    def proof(self, method: str = "POST", url: str = TOKEN_URL, **changes: Any) -> str:
        changes.setdefault("nonce", self.nonce)
        return proof(self.dpop_key, method, url, **changes)

    # -- the endpoints -----------------------------------------------------------------------------

    async def post_form(
        self,
        path: str,
        form: Mapping[str, str],
        *,
        dpop: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = {**({"DPoP": dpop} if dpop is not None else {}), **(headers or {})}
        response = await self.http.post(path, data=dict(form), headers=sent)
        self.nonce = response.headers.get("dpop-nonce", self.nonce)
        return response

    async def token_response(
        self,
        form: Mapping[str, str] | None = None,
        *,
        dpop: bool = True,
        proof: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request to the token endpoint: a fresh proof unless `dpop` is False or `proof` given."""
        sent_proof = proof if proof is not None else (self.proof() if dpop else None)
        return await self.post_form(TOKEN_PATH, form or self.form(), dpop=sent_proof, headers=headers)

    async def token(self, **kwargs: Any) -> str:
        response = await self.token_response(**kwargs)
        assert response.status_code == 200, response.text
        self.last = response.json()
        token = self.last["access_token"]
        assert isinstance(token, str)
        return token

    def bound(self, token: str, *, scheme: str = "DPoP", **proof_changes: Any) -> dict[str, str]:
        """Authorization and a fresh DPoP proof for one request to /graphql."""
        proof_changes.setdefault("token", token)
        return {
            "Authorization": f"{scheme} {token}",
            "DPoP": self.proof("POST", GRAPHQL_URL, **proof_changes),
        }

    async def graphql(
        self,
        token: str,
        *,
        headers: Mapping[str, str] | None = None,
        purpose: bool = True,
        body: Mapping[str, Any] = TYPENAME,
    ) -> httpx.Response:
        """POST /graphql with the token as DPoP and a fresh proof, unless `headers` says otherwise."""
        sent = {**self.bound(token), **(PURPOSE if purpose else {}), **(headers or {})}
        response = await self.http.post("/graphql", json=dict(body), headers=sent)
        self.nonce = response.headers.get("dpop-nonce", self.nonce)
        return response

    async def introspect(self, token: str, **changes: Any) -> httpx.Response:
        return await self.post_form(INTROSPECT_PATH, {"token": token, **self.authentication(**changes)})

    async def revoke(self, token: str) -> httpx.Response:
        return await self.post_form(REVOKE_PATH, {"token": token, **self.authentication()})


Enrol = Callable[..., Awaitable[Caller]]


@pytest.fixture
def address() -> str:
    return new_address()


@pytest.fixture
async def web(app: Starlette, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """The session's app, in-process, from this test's own address."""
    async with http_client(app, address) as client:
        yield client


@pytest.fixture
def enrol(
    engine: AsyncEngine,
    agreements: dict[str, Agreement],
    issuers: dict[str, TestIssuer],
    web: httpx.AsyncClient,
) -> Enrol:
    """A new client of an agreement (of `among`, by default the shipped ones), talking over `http`."""

    async def make(
        agreement_id: str,
        *,
        http: httpx.AsyncClient | None = None,
        among: dict[str, Agreement] | None = None,
    ) -> Caller:
        known = among or agreements
        made = (await register(engine, known, [agreement_id]))[agreement_id]
        await trust_typename(engine, known[agreement_id], made.client_id)
        return Caller(
            http or web, agreement_id, made.client_id, made.key, made.dpop_key, issuers.get(agreement_id)
        )

    return make


async def trust_typename(engine: AsyncEngine, agreement: Agreement, client_id: str) -> None:
    """Register the document `Caller.graphql` sends for the client, where its agreement runs registered
    documents only (as `gateway documents add` would): these tests are about tokens, not documents."""
    if not agreement.access.trusted_documents_only:
        return
    async with engine.begin() as conn:
        await add_document(
            conn, client_id=client_id, text=TYPENAME["query"], view=build_view(agreement),
            added_by="tests", max_tokens=2_000,
        )  # fmt: skip


@pytest.fixture
async def police(enrol: Enrol) -> Caller:
    return await enrol(POLICE)


@pytest.fixture
async def ons(enrol: Enrol) -> Caller:
    return await enrol(ONS)


@asynccontextmanager
async def app_with(
    settings: Settings,
    engine: AsyncEngine,
    signing: SigningKeys,
    *,
    today: date = FIXED_TODAY,
    **updates: Any,
) -> AsyncIterator[Starlette]:
    """An app on the session's database with some settings changed (its ledger closed afterwards)."""
    app = create_app(
        settings.model_copy(update=updates),
        engine=engine,
        signing=signing,
        ref_secret=REF_SECRET,
        today=lambda: today,
    )
    try:
        yield app
    finally:
        ledger = app.state.gateway.ledger
        if ledger is not None:
            await ledger.close()


SANDBOX_ACCESS = """
client_authentication: [private_key_jwt, client_secret_basic]   # a development sandbox
token_binding: bearer
"""


@pytest.fixture(scope="session")
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped agreements and one more, `dev-sandbox`: bearer tokens and a secret allowed."""
    directory = tmp_path_factory.mktemp("agreements")
    shipped = AGREEMENTS_DIR
    for path in shipped.glob("*.yaml"):
        (directory / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    text = (shipped / "dwp-worklessness.yaml").read_text(encoding="utf-8")
    text = text.replace("id: dwp-worklessness", f"id: {SANDBOX}")
    # A development sandbox: it also runs any document, not only registered ones.
    lines = [
        line
        for line in text.splitlines()
        if not line.startswith(("client_authentication", "token_binding", "documents"))
    ]
    (directory / f"{SANDBOX}.yaml").write_text("\n".join(lines) + SANDBOX_ACCESS, encoding="utf-8")
    return directory


async def event_of(engine: AsyncEngine, response: httpx.Response) -> dict[str, Any]:
    """The audit event a response names (committed before the response was sent)."""
    event_id = response.headers["x-audit-event-id"]
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).one()
    return dict(row._mapping)


def claims_of(token: str, signing: SigningKeys) -> dict[str, Any]:
    return dict(jwt.decode(token, signing.verification, algorithms=["ES256"]).claims)


def header_of(token: str, signing: SigningKeys) -> dict[str, Any]:
    return dict(jwt.decode(token, signing.verification, algorithms=["ES256"]).header)


def oauth_error(response: httpx.Response, status: int, error: str, description: str | None = None) -> str:
    """An OAuth error (RFC 6749 5.2): the status, the code, no token, never cached. The description."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    if description is not None:
        assert body["error_description"] == description, body
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    text = body["error_description"]
    assert isinstance(text, str)
    return text


def graphql_refused(response: httpx.Response, status: int, code: str) -> None:
    """Refused before GraphQL ran: one error with this code, no data."""
    assert response.status_code == status, (response.text, response.headers.get("www-authenticate"))
    body = response.json()
    assert set(body) == {"errors"}, body
    assert [error["extensions"]["code"] for error in body["errors"]] == [code], body
    assert response.headers["cache-control"] == "no-store"


def served(response: httpx.Response) -> None:
    assert response.status_code == 200, (response.text, response.headers.get("www-authenticate"))
    assert response.json() == {"data": {"__typename": "Query"}}
