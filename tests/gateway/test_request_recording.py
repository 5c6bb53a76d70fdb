"""Exactly one complete event per request, whatever the bytes: text that is not valid Unicode, JSON
that Python accepts and nothing else can store, a client that goes away before its body arrives,
and a database that cannot answer. On SQLite and PostgreSQL; the refused requests name the client,
agreement and token that were verified before the refusal.

Requests are made by hand here, so their credentials are too: a DPoP-bound token goes with the
`DPoP` scheme and a proof for the request's method and the gateway's configured URL, never the Host.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit import EventDraft, LedgerWriter, verify_ledger
from gateway.config import Settings
from gateway.db import create_engine, is_unavailable
from gateway.keys import SigningKeys
from policies import Agreement, PurposeContext, evaluate
from resolvers import list_people
from tests.conftest import FIXED_TODAY, ISSUER, REF_SECRET, UNLIMITED, make_partners
from tests.support.databases import postgres_admin_url
from tests.support.identity import RegisteredClient, assertion, new_key
from tests.support.ledger import Fresh, fresh_database
from tests.support.partners import ASSERTION_TYPE, PURPOSE, Partner, enrol, proof
from tests.support.requests import event_of, events_of_token, jti_of, raw_asgi

if TYPE_CHECKING:  # imported into a test module, pytest would try to collect it as a test class
    from tests.support.identity import TestIssuer

PAGE = "query Page { people(first: 2) { edges { node { ref } } } }"
LONE = "\ud800"  # a lone UTF-16 surrogate: json.loads returns it; str.encode refuses it


def _bound(
    partner: Partner, token: str, *, method: str = "POST", path: str = "/graphql"
) -> list[tuple[bytes, bytes]]:
    """The Authorization and DPoP headers of one hand-made request with this partner's bound token."""
    dpop = proof(partner.dpop_key, method, ISSUER + path, token=token, nonce=partner.nonce)
    return [(b"authorization", f"DPoP {token}".encode()), (b"dpop", dpop.encode())]


def _json_with(**fields: Any) -> bytes:
    # ensure_ascii writes the surrogate as the escape "\ud800", as a hostile client would send it
    return json.dumps({"query": PAGE, **fields}, ensure_ascii=True).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps({"query": PAGE + " #" + LONE}).encode(), id="query"),
        pytest.param(_json_with(operationName="Page" + LONE), id="operationName"),
        pytest.param(_json_with(variables={"name": "Ada" + LONE}), id="variable value"),
        pytest.param(_json_with(variables={"na" + LONE: "Ada"}), id="variable name"),
        pytest.param(_json_with(variables={"deep": [[{"x": ["\udfff"]}]]}), id="nested"),
        pytest.param(_json_with(extensions={"k": "\udc80"}), id="extensions"),
        pytest.param(b'{"query": "{ x }", "variables": {"f": NaN}}', id="NaN"),
        pytest.param(b'{"query": "{ x }", "variables": {"f": -Infinity}}', id="Infinity"),
        pytest.param(b"[" * 30_000 + b"]" * 30_000, id="nesting past the parser's recursion"),
        pytest.param(b'{"query": "{ x }\xed\xa0\x80"}', id="a surrogate encoded as UTF-8 bytes"),
        pytest.param(_json_with(variables={"f": "Sm\x00ith"}), id="NUL in a variable"),
        pytest.param(_json_with(operationName="Page\x00"), id="NUL in the operation name"),
    ],
)
async def test_text_that_is_not_valid_unicode_is_a_recorded_bad_request(
    body: bytes, app: Starlette, local_partner: Callable[[str], Partner], engine: AsyncEngine
) -> None:
    police = local_partner("police-prevention")
    token = await police.token()
    status, headers, content = await raw_asgi(
        app,
        headers=[
            *_bound(police, token),
            (b"content-type", b"application/json"),
            *((k.lower().encode(), v.encode()) for k, v in PURPOSE.items()),
        ],
        body=body,
    )
    assert status == 400, content
    assert json.loads(content)["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    event = await event_of(engine, headers["x-audit-event-id"])
    assert event is not None
    assert (event["outcome"], event["http_status"], event["error_code"]) == ("denied", 400, "BAD_REQUEST")
    assert event["client_id"] == police.client_id
    assert event["agreement_id"] == "police-prevention"
    assert event["token_jti"] == jti_of(token)
    assert event["people_count"] == 0


async def test_a_lone_surrogate_cannot_fail_the_batch_it_shares(fresh: Fresh, signing: SigningKeys) -> None:
    """Even if hostile text reached the writer, it is stored encodable and its neighbours commit."""
    writer = LedgerWriter(fresh.engine, signing=signing)
    drafts = [
        EventDraft(endpoint="graphql", outcome="denied", http_status=400, latency_us=1, operation_name=name)
        for name in ("Before", "Page" + LONE, "After\udfff!", "Last")
    ]
    await asyncio.gather(*(writer.record(draft) for draft in drafts))
    await writer.close()
    stored = [await event_of(fresh.engine, draft.id) for draft in drafts]
    assert [row["operation_name"] for row in stored if row] == ["Before", "Page?", "After?!", "Last"]
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.events == 4


@pytest.mark.parametrize("path", ["/graphql", "/oauth/token"])
async def test_a_client_that_disconnects_before_its_body_is_recorded_as_disconnected(
    path: str, app: Starlette, local_partner: Callable[[str], Partner], engine: AsyncEngine
) -> None:
    police = local_partner("police-prevention")
    token = await police.token()
    if path == "/graphql":
        credentials = _bound(police, token)
        content_type = b"application/json"
    else:  # the client assertion and the officer's token would have come in the body
        credentials = [(b"dpop", proof(police.dpop_key, "POST", ISSUER + path, nonce=police.nonce).encode())]
        content_type = b"application/x-www-form-urlencoded"
    status, headers, _ = await raw_asgi(
        app,
        path=path,
        headers=[*credentials, (b"content-type", content_type), (b"content-length", b"120")],
        body=None,
    )
    assert status == 499  # nobody reads it
    event = await event_of(engine, headers["x-audit-event-id"])
    assert event is not None
    assert (event["outcome"], event["error_code"], event["people_count"]) == (
        "disconnected",
        "CLIENT_DISCONNECTED",
        0,
    )
    if path == "/graphql":
        assert (event["client_id"], event["token_jti"]) == (police.client_id, jti_of(token))
        assert event["agreement_id"] == "police-prevention"
    else:  # the client never authenticated
        assert (event["client_id"], event["agreement_id"], event["token_jti"]) == (None, None, None)


@pytest.mark.e2e
async def test_a_disconnect_over_a_real_socket_is_recorded_once(
    server_url: str,
    registered: dict[str, RegisteredClient],
    issuers: dict[str, TestIssuer],
    engine: AsyncEngine,
) -> None:
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        police = make_partners(client, registered, issuers, engine)("police-prevention")
        token = await police.token()
    client_id = registered["police-prevention"].client_id
    host, port = urlsplit(server_url).hostname, urlsplit(server_url).port
    assert host is not None and port is not None
    credentials = b"".join(name + b": " + value + b"\r\n" for name, value in _bound(police, token))
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            + credentials
            + b'Content-Length: 500\r\n\r\n{"query": '
        )
    [event] = await events_of_token(engine, jti_of(token))
    assert (event["outcome"], event["http_status"], event["error_code"]) == (
        "disconnected",
        499,
        "CLIENT_DISCONNECTED",
    )
    assert event["client_id"] == client_id


# -- a database that cannot answer ------------------------------------------------------------------


@pytest.fixture
async def fresh(database_url: str, tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY) as made:
        yield made


class _Proxy:
    """A TCP relay between the gateway's request engine and PostgreSQL that can be cut, as a network
    partition or a database restart would cut it. Nothing is faked: the bytes are PostgreSQL's own."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop accepting and close every relayed connection."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._pipes):
            task.cancel()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


@dataclass
class Split:
    app: Starlette
    police: Partner
    proxy: _Proxy
    fresh: Fresh


@pytest.fixture
async def split(
    tmp_path: Path, signing: SigningKeys, partner_jwks_dir: Path, issuers: dict[str, TestIssuer]
) -> AsyncIterator[Split]:
    """A fresh PostgreSQL database, and an app whose request engine reaches it through a relay that
    can be cut while the ledger writes to it directly. (`issuers`: the officers' identity providers'
    keys are installed in `partner_jwks_dir` before the app starts, as the operator would.)"""
    async with (
        fresh_database(postgres_admin_url(), tmp_path, today=FIXED_TODAY) as fresh,
        _relayed(fresh) as (proxy, requests),
    ):
        # DPoP nonces as in production (on): the partner answers use_dpop_nonce by trying again.
        settings = Settings(
            database_url=fresh.url, issuer=ISSUER, signing_key_file=tmp_path / "unused-key.json",
            ref_secret_file=tmp_path / "unused-secret", audit_witness=str(tmp_path / "witness"),
            partner_jwks_dir=partner_jwks_dir, **UNLIMITED,
        )  # fmt: skip
        async with _app(fresh, requests, settings, signing) as (app, police):
            yield Split(app, police, proxy, fresh)


@asynccontextmanager
async def _relayed(fresh: Fresh) -> AsyncIterator[tuple[_Proxy, AsyncEngine]]:
    """An engine that reaches the fresh database through a relay that can be cut."""
    url = make_url(fresh.url)
    proxy = _Proxy((url.host or "127.0.0.1", url.port or 5432))
    await proxy.start()
    engine = create_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    try:
        yield proxy, engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def _app(
    fresh: Fresh, requests: AsyncEngine, settings: Settings, signing: SigningKeys
) -> AsyncIterator[tuple[Starlette, Partner]]:
    app = create_app(
        settings, engine=requests, ledger_engine=fresh.engine, signing=signing, ref_secret=REF_SECRET,
        today=lambda: FIXED_TODAY,
    )  # fmt: skip
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        partner = await enrol(
            fresh.engine, client, "police-prevention", ref_secret=REF_SECRET,
            jwks_dir=settings.partner_jwks_dir,
        )  # fmt: skip
        yield app, partner
    await app.state.gateway.ledger.close()


@pytest.mark.postgres
async def test_once_the_database_is_back_one_request_finds_the_pool_dead_and_the_next_are_served(
    split: Split,
) -> None:
    """No connection is pinged before use: a restart is found by the first statement on a dead
    connection (503), which clears the whole pool, so the requests after it are served."""
    police, proxy = split.police, split.proxy
    token = await police.token()
    # Several connections in the pool: answered at the same time, each on its own.
    answers = await asyncio.gather(*(police.post(PAGE, token=token) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    await proxy.cut()
    await proxy.start()  # the database is back, on the same address; the pooled connections are dead
    statuses = [(await police.post(PAGE, token=token)).status_code for _ in range(8)]
    assert statuses.count(503) <= 1 and statuses[1:] == [200] * 7, statuses


@pytest.mark.postgres
async def test_a_read_on_the_driver_that_finds_the_server_gone_clears_the_whole_pool(
    tmp_path: Path, agreements: dict[str, Agreement]
) -> None:
    """A person read runs on the asyncpg driver, where SQLAlchemy does not see its errors: when it
    finds the connection dead, every connection opened before is replaced, as SQLAlchemy does for a
    disconnect it sees itself; else each pooled connection would fail one request in turn."""
    decision = evaluate(
        agreements["ons-evaluation"], PurposeContext(acting_user="analyst"), today=FIXED_TODAY
    )

    async with (
        fresh_database(postgres_admin_url(), tmp_path, today=FIXED_TODAY) as fresh,
        _relayed(fresh) as (proxy, engine),
    ):

        async def read() -> int:
            async with engine.connect() as conn:
                page = await list_people(conn, decision=decision, fields=("givenName",), first=2, after=None)
                await asyncio.sleep(0.05)  # held a moment: reads at once need connections of their own
            return len(page.people)

        assert await asyncio.gather(*(read() for _ in range(4))) == [2] * 4
        assert engine.pool.checkedin() == 4
        await proxy.cut()
        await proxy.start()  # back on the same address; the four pooled connections are dead
        with pytest.raises(asyncpg.InterfaceError) as found:
            await read()
        assert is_unavailable(found.value)
        assert [await read() for _ in range(4)] == [2] * 4
        await proxy.cut()


@pytest.mark.postgres
async def test_an_unreachable_database_is_a_recorded_503_on_both_endpoints(split: Split) -> None:
    police, proxy, fresh = split.police, split.proxy, split.fresh
    token = await police.token()
    assert (await police.post(PAGE, token=token)).status_code == 200
    await proxy.cut()  # as in a restart: established connections drop, new ones are refused
    answers = [
        await police.post(PAGE, token=token),
        await police.token_response(),  # a client assertion, the officer's token and a DPoP proof
    ]
    graphql, tokens = answers
    assert graphql.status_code == 503 and graphql.headers["retry-after"] == "5"
    assert graphql.json()["errors"][0]["extensions"]["code"] == "DATABASE_UNAVAILABLE"
    assert "data" not in graphql.json()
    assert tokens.status_code == 503 and tokens.headers["retry-after"] == "5"
    assert tokens.json()["error"] == "temporarily_unavailable"
    graphql_event = await event_of(fresh.engine, graphql.headers["x-audit-event-id"])
    token_event = await event_of(fresh.engine, tokens.headers["x-audit-event-id"])
    assert graphql_event is not None and token_event is not None
    assert (graphql_event["outcome"], graphql_event["http_status"], graphql_event["error_code"]) == (
        "error", 503, "DATABASE_UNAVAILABLE",
    )  # fmt: skip
    assert (graphql_event["client_id"], graphql_event["token_jti"]) == (police.client_id, jti_of(token))
    assert (
        graphql_event["agreement_id"] == "police-prevention"
    )  # from the signed token, as the client was unread
    assert (token_event["outcome"], token_event["http_status"], token_event["error_code"]) == (
        "error", 503, "temporarily_unavailable",
    )  # fmt: skip


@pytest.mark.postgres
async def test_a_table_locked_past_the_timeout_is_a_503_without_partial_data(split: Split) -> None:
    """The client is read, then the people cannot be: the answer is 503 with no data at all.
    (PostgreSQL: SQLite readers are not blocked by a writer in WAL mode.)"""
    police, fresh = split.police, split.fresh
    token = await police.token()
    async with fresh.engine.begin() as conn:  # this database only: other test runs share the server
        name = (await conn.execute(text("SELECT current_database()"))).scalar()
        await conn.execute(text(f"ALTER DATABASE \"{name}\" SET lock_timeout = '300ms'"))
    await split.app.state.gateway.engine.dispose()  # new connections take the setting
    blocker = await fresh.engine.connect()
    transaction = await blocker.begin()
    await blocker.execute(text("LOCK TABLE people IN ACCESS EXCLUSIVE MODE"))
    try:
        response = await police.post(PAGE, token=token)
    finally:
        await transaction.rollback()
        await blocker.close()
    assert response.status_code == 503
    assert response.json() == {
        "errors": [
            {
                "message": response.json()["errors"][0]["message"],
                "extensions": {"code": "DATABASE_UNAVAILABLE"},
            }
        ]
    }
    event = await event_of(fresh.engine, response.headers["x-audit-event-id"])
    assert event is not None
    assert (event["error_code"], event["people_count"], event["client_id"]) == (
        "DATABASE_UNAVAILABLE", 0, police.client_id,
    )  # fmt: skip


async def test_which_database_errors_mean_unavailable(fresh: Fresh, tmp_path: Path) -> None:
    """Real errors from real databases: unreachable, locked and terminated mean 503; a bad statement
    is the gateway's own fault (500)."""
    url = make_url(fresh.url)
    caught: dict[str, BaseException] = {}

    async def failure(name: str, engine: AsyncEngine, *statements: str) -> None:
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.execute(text(statement))
        except Exception as error:
            caught[name] = error
        finally:
            await engine.dispose()

    await failure("bad statement", create_engine(fresh.url), "SELECT no_such_column FROM people")
    if url.get_backend_name() == "postgresql":
        elsewhere = url.set(port=1).render_as_string(hide_password=False)
        await failure("unreachable", create_engine(elsewhere), "SELECT 1")
        missing = url.set(database="no_such_database_here").render_as_string(hide_password=False)
        await failure("no such database", create_engine(missing), "SELECT 1")
        await failure(
            "statement timeout", create_engine(fresh.url), "SET statement_timeout = 50", "SELECT pg_sleep(1)"
        )
        admin = create_engine(postgres_admin_url())  # a database cannot refuse connections to itself
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false'))
            await failure("not accepting connections", create_engine(fresh.url), "SELECT 1")
        finally:
            async with admin.begin() as conn:
                await conn.execute(text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true'))
            await admin.dispose()
    else:
        import sqlite3

        holder = sqlite3.connect(str(url.database), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # a writer that holds on
        try:
            await failure(
                "locked",
                create_engine(fresh.url),
                "PRAGMA busy_timeout=50",
                "DELETE FROM objections WHERE 1 = 0",
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert not is_unavailable(caught.pop("bad statement"))
    assert caught, "no failure was provoked"
    for name, error in caught.items():
        assert is_unavailable(error), name


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "FOO", "PROPFIND", "GET", "HEAD"])
async def test_any_other_method_is_a_recorded_405_naming_the_verified_client(
    method: str, app: Starlette, local_partner: Callable[[str], Partner], engine: AsyncEngine
) -> None:
    police = local_partner("police-prevention")
    token = await police.token()
    for path in ("/graphql", "/oauth/token"):
        status, headers, _ = await raw_asgi(
            app, method=method, path=path, headers=_bound(police, token, method=method, path=path)
        )
        assert status == 405 and headers["allow"] == "POST"
        event = await event_of(engine, headers["x-audit-event-id"])
        assert event is not None and event["error_code"] in ("METHOD_NOT_ALLOWED", "invalid_request")
        if path == "/graphql":
            assert (event["client_id"], event["agreement_id"]) == (police.client_id, "police-prevention")


NOT_CLIENT_IDS = [
    pytest.param("a\x00bc", id="NUL"),
    pytest.param("%00abc", id="percent-NUL"),
    pytest.param("police\nprevention", id="newline"),
    pytest.param("x" * 65, id="too long"),
    pytest.param("\u00e9t\u00e9", id="non-ASCII"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("claimed", NOT_CLIENT_IDS)
async def test_an_assertion_for_a_client_id_that_cannot_be_one_is_invalid_client_not_a_500(
    claimed: str, app: Starlette, engine: AsyncEngine
) -> None:
    """A client assertion, signed and well formed, naming as iss and sub what cannot be a client id."""
    signed = assertion(claimed, new_key(), ISSUER + "/oauth/token")
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
    status, headers, content = await raw_asgi(
        app,
        path="/oauth/token",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
        body=urlencode({**form, "client_assertion": signed}).encode(),
    )
    assert status == 401 and json.loads(content)["error"] == "invalid_client"
    event = await event_of(engine, headers["x-audit-event-id"])
    assert event is not None and event["client_id"] is None  # nothing that is not a client id is stored
    assert event["error_code"] == "invalid_client"


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"sub": 42, "iss": 42}, id="a number"),
        pytest.param({"sub": ["police-prevention-x"], "iss": ["police-prevention-x"]}, id="a list"),
        pytest.param({"sub": None, "iss": None}, id="no sub or iss"),
        pytest.param({"iss": "someone-else"}, id="iss is not sub"),
    ],
)
async def test_an_assertion_naming_no_single_client_stores_no_client_id(
    claims: dict[str, Any], app: Starlette, engine: AsyncEngine
) -> None:
    signed = assertion("police-prevention-x", new_key(), ISSUER + "/oauth/token", **claims)
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}
    status, headers, content = await raw_asgi(
        app,
        path="/oauth/token",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
        body=urlencode({**form, "client_assertion": signed}).encode(),
    )
    assert status == 401 and json.loads(content)["error"] == "invalid_client"
    event = await event_of(engine, headers["x-audit-event-id"])
    assert event is not None and event["client_id"] is None


@pytest.mark.parametrize(
    "client_assertion",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="no dots"),
        pytest.param("a.b.c", id="not base64 JSON"),
        pytest.param("W10.W10.", id="JSON arrays"),
        pytest.param("\u00e9.\u00e9.\u00e9", id="non-ASCII"),
        pytest.param("x" * 5000 + "..", id="too long"),
        pytest.param(
            base64.urlsafe_b64encode(b'{"alg": "ES256"}').decode().rstrip("=")
            + "."
            + base64.urlsafe_b64encode(b'{"sub": "a\xff"}').decode().rstrip("=")
            + ".",
            id="claims not UTF-8",
        ),
    ],
)
async def test_a_malformed_client_assertion_is_invalid_client_not_a_500(
    client_assertion: str, app: Starlette, engine: AsyncEngine
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
    }
    status, headers, content = await raw_asgi(
        app,
        path="/oauth/token",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
        body=urlencode(form).encode(),
    )
    assert status == 401 and json.loads(content)["error"] == "invalid_client", content
    event = await event_of(engine, headers["x-audit-event-id"])
    assert event is not None and event["client_id"] is None


@pytest.mark.parametrize(
    "credentials",
    [b"a\x00bc:x", b"%00abc:x", b"police\nprevention:x", b"x" * 65 + b":y", "\u00e9t\u00e9:x".encode()],
    ids=["NUL", "percent-NUL", "newline", "too long", "non-ASCII"],
)
async def test_basic_credentials_for_a_client_id_that_cannot_be_one_are_invalid_client_not_a_500(
    credentials: bytes, app: Starlette, engine: AsyncEngine
) -> None:
    """Basic is still read (an agreement may allow client_secret_basic); what cannot be a client id is
    refused without being stored."""
    status, headers, content = await raw_asgi(
        app,
        path="/oauth/token",
        headers=[
            (b"authorization", b"Basic " + base64.b64encode(credentials)),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
        body=b"grant_type=client_credentials",
    )
    assert status == 401 and json.loads(content)["error"] == "invalid_client"
    event = await event_of(engine, headers["x-audit-event-id"])
    assert event is not None and event["client_id"] is None  # nothing that is not a client id is stored


async def test_the_request_engines_carry_lock_and_statement_timeouts(
    database_url: str, settings: Settings, signing: SigningKeys
) -> None:
    if make_url(database_url).get_backend_name() != "postgresql":
        return  # SQLite has its busy timeout; these are PostgreSQL settings
    app = create_app(settings, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY)
    try:
        async with app.state.gateway.engine.connect() as conn:
            lock = (await conn.execute(text("SHOW lock_timeout"))).scalar()
            statement = (await conn.execute(text("SHOW statement_timeout"))).scalar()
        assert (lock, statement) == ("3s", "15s")
    finally:
        await app.state.gateway.engine.dispose()
