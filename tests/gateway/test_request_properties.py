"""Property: whatever bytes, headers and methods arrive at /graphql and /oauth/token, every request
leaves exactly one complete event, no request is answered 500, the event names the authenticated
client whenever the token was valid, and no request fails the group commit it shares with others.

Hypothesis generates batches of requests (bodies of JSON with lone surrogates, NaN, deep nesting,
random bytes, forms with repeated parameters, clients that disconnect; headers of any byte; every
method; URLs with query strings) and sends each batch at once to the app in-process, so that the
requests of a batch share the ledger's group commits. The app, its database (a fresh SQLite file or
PostgreSQL database) and its ledger live on an event loop of their own, in a thread, because
Hypothesis drives the test synchronously.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit import verify_ledger
from gateway.audit.tables import audit_events
from gateway.config import Settings
from gateway.db import create_engine, upgrade
from gateway.keys import SigningKeys, generate_key
from gateway.oauth import add_client
from policies import load_agreements
from resolvers import seed_population
from tests.conftest import FIXED_TODAY, ISSUER, REF_SECRET
from tests.support.databases import postgres_database, sqlite_database
from tests.support.requests import event_of, jti_of, raw_asgi

T = TypeVar("T")
EXAMPLES = 200  # batches per database; each batch holds 1 to 6 requests

LONE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.one_of(
    st.text(max_size=12),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), LONE, st.text(max_size=4)),
)
QUERIES = st.one_of(
    st.sampled_from(
        [
            "{ people(first: 2) { edges { node { ref givenName postcode } } } }",
            "query Page($n: Int) { people(first: $n) { edges { node { ref } } } }",
            "query Find($f: String!, $d: Date!) { findPeople(familyName: $f, dateOfBirth: $d) { ref } }",
            '{ person(ref: "per_nonsense") { ref } }',
            "{ people(first: 2) { edges { node { uprn } } } }",
            "mutation { x }",
            "subscription { x }",
            "{ __schema { types { name } } }",
            "query A { __typename } query B { __typename }",
            "{",
            "",
        ]
    ),
    TEXT,
)
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), TEXT
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def graphql_bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["operation", "operation", "json", "bytes", "nested", "constant", "gone"]))
    if kind == "gone":
        return None  # the client disconnects before sending its body
    if kind == "bytes":
        return draw(st.binary(max_size=120))
    if kind == "nested":
        depth = draw(st.integers(100, 30_000))
        return b"[" * depth + b"]" * depth
    if kind == "constant":
        return (
            b'{"query": "{ __typename }", "variables": {"x": '
            + draw(st.sampled_from([b"NaN", b"Infinity"]))
            + b"}}"
        )
    if kind == "json":
        return json.dumps(draw(JSON), ensure_ascii=True).encode()
    body: dict[str, Any] = {"query": draw(QUERIES)}
    for key, value in (
        ("operationName", st.one_of(TEXT, st.sampled_from(["Page", "Find", "A"]), JSON)),
        (
            "variables",
            st.one_of(st.dictionaries(st.sampled_from(["n", "f", "d", "x"]) | TEXT, JSON, max_size=3), JSON),
        ),
        ("extensions", JSON),
    ):
        if draw(st.booleans()):
            body[key] = draw(value)
    if draw(st.booleans()):
        return json.dumps(body, ensure_ascii=True).encode()  # surrogates as \\ud800 escapes
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")  # ... or as raw bytes


FORMS = st.one_of(
    st.just(b"grant_type=client_credentials"),
    st.just(b"grant_type=client_credentials&grant_type=client_credentials"),
    st.just(b"grant_type=client_credentials&scope=police-prevention"),
    st.just(b"grant_type=client_credentials&scope=mash-safeguarding"),
    st.just(b"grant_type=password&username=a&password=b"),
    st.binary(max_size=80),
    st.builds(lambda t: b"grant_type=" + t.encode("utf-8", "surrogatepass"), TEXT),
    st.none(),
)
HEADER_BYTES = st.binary(max_size=40)


@dataclass(frozen=True)
class Sent:
    path: str
    method: str
    query_string: bytes
    authorization: str  # valid | garbage | none | other-scheme
    headers: list[tuple[bytes, bytes]]
    body: bytes | None


# What can be wrong with a request: each drawn request starts as one a partner would send and
# takes zero to three of these, so that batches mix answers with data and every kind of refusal.
FAULTS = [
    "method", "query-string", "authorization", "no-authorization", "other-scheme", "content-type",
    "purpose-bytes", "no-purpose", "break-glass", "forwarded", "body", "surrogate", "surrogate",
]  # fmt: skip


@st.composite
def requests(draw: st.DrawFn, *, token: str, basic: str) -> Sent:
    path = draw(st.sampled_from(["/graphql", "/graphql", "/oauth/token"]))
    faults = draw(st.sets(st.sampled_from(FAULTS), max_size=3))
    method = "POST"
    if "method" in faults:
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    authorization = "valid"
    credentials = f"Bearer {token}" if path == "/graphql" else basic
    if "authorization" in faults:
        authorization = "garbage"
        credentials = draw(
            st.sampled_from([f"Bearer {token}x", "Bearer", "Basic !!!", "Basic Og==", "Bearer \xff"])
        )
    elif "other-scheme" in faults:
        authorization, credentials = "other-scheme", basic if path == "/graphql" else f"Bearer {token}"
    headers: list[tuple[bytes, bytes]] = []
    if "no-authorization" in faults:
        authorization = "none"
    else:
        headers.append((b"authorization", credentials.encode("latin-1")))
    content_type = b"application/json" if path == "/graphql" else b"application/x-www-form-urlencoded"
    if "content-type" in faults:
        content_type = draw(
            st.sampled_from([b"text/plain", b"", b"application/json; x", b"application/xml"]) | HEADER_BYTES
        )
    if content_type:
        headers.append((b"content-type", content_type))
    if "no-purpose" not in faults:
        for name, value in ((b"x-acting-user", b"officer-1234"), (b"x-case-reference", b"CASE-2026-0042")):
            headers.append((name, draw(HEADER_BYTES) if "purpose-bytes" in faults else value))
    if "break-glass" in faults:
        headers.append((b"x-break-glass-reason", draw(st.sampled_from([b"risk to life", b"\xff\x00"]))))
    if "forwarded" in faults:
        headers.append((b"x-forwarded-for", draw(HEADER_BYTES)))
    if path == "/graphql":
        body = draw(graphql_bodies()) if "body" in faults else draw(GOOD_OPERATIONS)
        if "surrogate" in faults and body is not None and "body" not in faults:
            body = draw(_with_a_lone_surrogate(body))
    else:
        body = draw(FORMS) if "body" in faults else b"grant_type=client_credentials"
    query_string = b"q=" + draw(st.binary(max_size=10)).hex().encode() if "query-string" in faults else b""
    return Sent(path, method, query_string, authorization, headers, body)


@st.composite
def _with_a_lone_surrogate(draw: st.DrawFn, body: bytes) -> bytes:
    """A good operation with a lone surrogate put in one of the places a client controls."""
    operation = json.loads(body)
    lone = draw(LONE)
    place = draw(st.sampled_from(["query", "operationName", "variable value", "variable name", "extensions"]))
    if place == "query":
        operation["query"] += " # " + lone
    elif place == "operationName":
        operation["operationName"] = "Page" + lone
    elif place == "variable value":
        operation["variables"] = {"n": lone}
    elif place == "variable name":
        operation["variables"] = {lone: 1}
    else:
        operation["extensions"] = {"persistedQuery": {"sha256Hash": lone}}
    return json.dumps(operation, ensure_ascii=True).encode()


GOOD_OPERATIONS = st.sampled_from(
    [
        json.dumps({"query": "{ people(first: 3) { edges { node { ref givenName postcode } } } }"}).encode(),
        json.dumps({"query": "query Page($n: Int) { people(first: $n) { edges { node { ref } } } }",
                    "variables": {"n": 5}, "operationName": "Page"}).encode(),
        json.dumps({"query": "{ __typename }"}).encode(),
    ]
)  # fmt: skip


@dataclass
class Figures:
    batches: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)


class _LoopThread:
    """An event loop in a thread of its own, for coroutines started from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="property-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class _Rig:
    app: Starlette
    engine: AsyncEngine
    signing: SigningKeys
    client_id: str
    token: str
    basic: str


async def _rig(stack: AsyncExitStack, kind: str, directory: Path) -> _Rig:
    url = await stack.enter_async_context(
        sqlite_database(directory) if kind == "sqlite" else postgres_database()
    )
    engine = create_engine(url)
    stack.push_async_callback(engine.dispose)
    await upgrade(engine)
    async with engine.begin() as conn:
        await seed_population(conn, people_count=60, seed=3, today=FIXED_TODAY)
        created = await add_client(
            conn, agreement_id="police-prevention", known_agreements=set(load_agreements())
        )
    signing = SigningKeys.from_keys([generate_key()])
    settings_ = Settings(
        database_url=url,
        issuer=ISSUER,
        signing_key_file=directory / "k.json",
        ref_secret_file=directory / "r",
        audit_witness=str(directory / "witness"),
    )
    app = create_app(
        settings_, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
    )
    stack.push_async_callback(app.state.gateway.ledger.close)
    import base64

    basic = "Basic " + base64.b64encode(f"{created.record.client_id}:{created.secret}".encode()).decode()
    status, _, content = await raw_asgi(
        app,
        path="/oauth/token",
        headers=[(b"authorization", basic.encode()), (b"content-type", b"application/x-www-form-urlencoded")],
        body=b"grant_type=client_credentials",
    )
    assert status == 200, content
    return _Rig(app, engine, signing, created.record.client_id, json.loads(content)["access_token"], basic)


@pytest.fixture(params=["sqlite", "postgresql"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[_LoopThread, _Rig]]:
    thread = _LoopThread()
    stack = AsyncExitStack()
    try:
        yield thread, thread.run(_rig(stack, request.param, tmp_path))
    finally:
        thread.run(stack.aclose())
        thread.stop()


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(audit_events))).scalar_one())


async def _send_batch(rig: _Rig, batch: list[Sent]) -> list[tuple[Sent, int, dict[str, str], bytes]]:
    async def one(sent: Sent) -> tuple[Sent, int, dict[str, str], bytes]:
        status, headers, content = await raw_asgi(
            rig.app, method=sent.method, path=sent.path, query_string=sent.query_string, headers=sent.headers,
            body=sent.body,
        )  # fmt: skip
        return sent, status, headers, content

    return list(await asyncio.gather(*(one(sent) for sent in batch)))


def _await(thread: _LoopThread, awaitable: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await awaitable

    return thread.run(wrapped())


def test_every_request_leaves_exactly_one_complete_event(rig: tuple[_LoopThread, _Rig]) -> None:
    thread, made = rig
    figures = Figures()
    before = thread.run(_count(made.engine))
    jti = jti_of(made.token)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(requests(token=made.token, basic=made.basic), min_size=1, max_size=6))
    def check(batch: list[Sent]) -> None:
        answered = thread.run(_send_batch(made, batch))
        figures.batches += 1
        for sent, status, headers, content in answered:
            figures.requests += 1
            figures.statuses[status] += 1
            assert status != 500, (sent, content)
            assert status != 503, (sent, content)  # the database and the ledger are both up
            assert "x-audit-event-id" in headers, (sent, status, content)  # committed, with its batch
            event = thread.run(event_of(made.engine, headers["x-audit-event-id"]))
            assert event is not None, sent
            figures.outcomes[event["outcome"]] += 1
            assert event["http_status"] == status
            assert event["endpoint"] == ("graphql" if sent.path == "/graphql" else "token")
            if sent.path == "/graphql" and sent.authorization == "valid":
                assert (event["client_id"], event["token_jti"]) == (made.client_id, jti), (
                    sent,
                    status,
                    content,
                )
                assert event["agreement_id"] == "police-prevention"
            if sent.body is None and sent.method == "POST" and status not in (401, 405, 400, 415):
                assert event["outcome"] == "disconnected", (sent, status)

    check()
    events = thread.run(_count(made.engine)) - before
    assert events == figures.requests  # exactly one each: none lost, none doubled
    reports = thread.run(verify_ledger(made.engine, made.signing.verification))
    assert all(report.ok for report in reports)
    print(  # the figures for the closing note: pytest -s shows them
        f"\nproperty run: {figures.batches} batches, {figures.requests} requests, {events} events; "
        f"statuses {dict(sorted(figures.statuses.items()))}; outcomes {dict(figures.outcomes)}"
    )
