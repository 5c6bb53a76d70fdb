"""GraphQL over HTTP: `Accept: application/graphql-response+json` is answered in that media type,
with the status codes the specification gives it; application/json stays the default, unchanged.

As application/graphql-response+json, an answer without `data` (the document never ran: it did not
parse or validate, was too complex, or its variables could not be coerced) is 400, where
application/json answers 200; an answer with `data`, even null beside field errors, is 200 in both.
Refusals before GraphQL keep their statuses in both, in the negotiated type. An Accept header that
takes neither type is 406, as application/json. The ledger records the status that was sent.
In-process, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit.tables import audit_events
from gateway.config import Settings
from gateway.http import negotiate
from gateway.keys import SigningKeys
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.partners import PURPOSE, Partner, enrol
from tests.support.requests import event_of

HUB = "family-hub-outreach"  # runs any document; asks for an acting user; DPoP-bound tokens
GQL = "application/graphql-response+json"
JSON = "application/json"
GQL_CONTENT_TYPE = f"{GQL}; charset=utf-8"
OFFERED = (JSON, GQL)
PEOPLE = "query($n: Int) { people(first: $n) { edges { node { ref } } } }"
ALIASES = "{ people(first: 1) { edges { node { " + " ".join(f"a{i}: ref" for i in range(31)) + " } } } }"
TWO_PAGES = "{ a: people(first: 100) { edges { cursor } } b: people(first: 100) { edges { cursor } } }"
PartnerFactory = Callable[[str], Partner]


# -- negotiation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ([], JSON),  # no Accept header: application/json, as before
        ([""], JSON),
        (["*/*"], JSON),
        (["application/*"], JSON),
        ([JSON], JSON),
        ([GQL], GQL),
        ([f"{GQL}; charset=utf-8, {JSON}; charset=utf-8"], GQL),  # what the specification recommends
        ([f"{GQL}, {JSON};q=0.9"], GQL),
        ([f"{GQL};q=0.5, {JSON}"], JSON),  # the higher quality wins, wherever it is listed
        ([f"{JSON}, {GQL}"], JSON),  # a tie: the one listed first
        ([f"{GQL}, {JSON}"], GQL),
        ([f"{JSON};q=0.8, {GQL};q=0.8"], JSON),
        ([f"application/*, {GQL}"], GQL),  # a tie: named outright beats a wildcard
        ([f"*/*;q=0.1, {GQL}"], GQL),
        ([f"*/*, {JSON};q=0"], GQL),  # q=0 refuses a type even where a wildcard takes it
        ([f"{JSON};q=0, */*"], GQL),
        (["text/html", GQL], GQL),  # several Accept headers are one list
        (["APPLICATION/GRAPHQL-RESPONSE+JSON"], GQL),
        ([f"{JSON};q=nonsense, {GQL};q=0.1"], GQL),  # an unreadable range is passed over
        ([f"{JSON};q=2, {GQL};q=0.1"], GQL),
        ([f"{JSON};q=nan, {GQL};q=0.1"], GQL),
        (["text/html"], None),
        (["text/*, image/png"], None),
        ([f"{JSON};q=0"], None),
        ([f"{GQL};q=0, {JSON};q=0, */*;q=0"], None),
        (["*/json"], None),
        (["nonsense"], None),
    ],
)
def test_the_accept_header_chooses_the_media_type(accept: list[str], chosen: str | None) -> None:
    assert negotiate(accept, OFFERED) == chosen


# -- the status codes -----------------------------------------------------------------------------


@pytest.fixture
def hub(local_partner: PartnerFactory) -> Partner:
    return local_partner(HUB)


async def _post(
    partner: Partner,
    token: str | None,
    body: Any,
    *,
    accept: str | None,
    content_type: str = JSON,
    **headers: str,
) -> httpx.Response:
    """One request as sent by hand: `body` as JSON, or bytes as they are."""
    sent = {"Content-Type": content_type, **PURPOSE, **headers}
    if accept is not None:
        sent["Accept"] = accept
    if token is not None:
        sent |= partner.authorization(token)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await partner.http.post("/graphql", content=content, headers=sent)


async def _recorded(engine: AsyncEngine, response: httpx.Response) -> dict[str, Any]:
    """The request's own event: recorded with the status that was sent."""
    event = await event_of(engine, response.headers["x-audit-event-id"])
    assert event is not None
    assert event["http_status"] == response.status_code, (event["http_status"], response.status_code)
    return event


async def _events(engine: AsyncEngine, **where: Any) -> list[dict[str, Any]]:
    stmt = select(audit_events)
    for column, value in where.items():
        stmt = stmt.where(audit_events.c[column] == value)
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(stmt)]


def _content_type(accept: str | None) -> str:
    return GQL_CONTENT_TYPE if accept == GQL else JSON


# name: body, status as application/json, as application/graphql-response+json, code, data (absent: no key)
_ANSWERS: dict[str, tuple[Any, int, int, str | None, bool]] = {
    "answered": ({"query": PEOPLE, "variables": {"n": 1}}, 200, 200, None, True),
    "a page size out of range, found as it runs": (
        {"query": PEOPLE, "variables": {"n": 0}}, 200, 200, "BAD_USER_INPUT", True,
    ),
    "a variable that is not an Int": (
        {"query": PEOPLE, "variables": {"n": "many"}}, 200, 400, "BAD_USER_INPUT", False,
    ),
    "a required variable missing": (
        {"query": "query($n: Int!) { people(first: $n) { edges { cursor } } }"},
        200, 400, "BAD_USER_INPUT", False,
    ),
    "does not parse": ({"query": "{ people("}, 200, 400, "GRAPHQL_PARSE_FAILED", False),
    "does not fit the view": (
        {"query": "{ people { edges { node { uprn } } } }"}, 200, 400, "GRAPHQL_VALIDATION_FAILED", False,
    ),
    "too many aliases": ({"query": ALIASES}, 200, 400, "QUERY_TOO_COMPLEX", False),
    "asks for too many people": ({"query": TWO_PAGES}, 200, 400, "QUERY_TOO_COMPLEX", False),
    "a document too long": (
        {"query": "{ __typename }" + " " * 10_000}, 400, 400, "QUERY_TOO_COMPLEX", False,
    ),
    "not JSON": (b'{"query":', 400, 400, "BAD_REQUEST", False),
    "no query": ({"qeury": "{ __typename }"}, 400, 400, "BAD_REQUEST", False),
    "variables not an object": ({"query": PEOPLE, "variables": [7]}, 400, 400, "BAD_REQUEST", False),
    "an array of operations": ([{"query": PEOPLE}], 400, 400, "BATCHING_NOT_SUPPORTED", False),
    "several operations, none named": (
        {"query": "query A { __typename } query B { __typename }"}, 400, 400, "BAD_REQUEST", False,
    ),
    "a subscription": ({"query": "subscription { __typename }"}, 400, 400, "OPERATION_NOT_ALLOWED", False),
}  # fmt: skip


@pytest.mark.parametrize("accept", [None, JSON, GQL])
@pytest.mark.parametrize("case", list(_ANSWERS))
async def test_each_answer_has_the_status_its_media_type_gives_it(
    case: str, accept: str | None, hub: Partner, engine: AsyncEngine
) -> None:
    body, json_status, gql_status, code, has_data = _ANSWERS[case]
    response = await _post(hub, await hub.token(), body, accept=accept)
    assert response.status_code == (gql_status if accept == GQL else json_status), response.text
    assert response.headers["content-type"] == _content_type(accept)
    answer = response.json()
    assert ("data" in answer) is has_data, answer
    assert [error["extensions"]["code"] for error in answer.get("errors", [])] == ([code] if code else [])
    assert response.headers["cache-control"] == "no-store"
    event = await _recorded(engine, response)
    assert event["error_code"] == code
    assert event["client_id"] == hub.client_id
    # Whatever the status, a document that never ran was refused; one that ran with errors, an error.
    assert event["outcome"] == ("denied" if not has_data else "error" if code else "allowed")


async def test_a_field_error_with_null_data_is_200(hub: Partner, engine: AsyncEngine) -> None:
    """`people` is non-null: its error nulls `data` itself, and the answer still has the entry."""
    response = await _post(hub, await hub.token(), {"query": PEOPLE, "variables": {"n": 0}}, accept=GQL)
    assert response.status_code == 200, response.text
    assert response.json()["data"] is None
    assert (await _recorded(engine, response))["outcome"] == "error"


async def test_refusals_keep_their_status_in_the_negotiated_type(hub: Partner, engine: AsyncEngine) -> None:
    token = await hub.token()
    typename = {"query": "{ __typename }"}
    gql = {"accept": GQL}
    refusals = {
        "UNAUTHENTICATED": (401, await _post(hub, None, typename, **gql)),
        "FORBIDDEN": (403, await _post(hub, token, typename, **gql, **{"X-Break-Glass-Reason": "at risk"})),
        "PURPOSE_CONTEXT_REQUIRED": (400, await _post(hub, token, typename, **gql, **{"X-Acting-User": ""})),
        "UNSUPPORTED_MEDIA_TYPE": (415, await _post(hub, token, typename, **gql, content_type="text/plain")),
        "PAYLOAD_TOO_LARGE": (413, await _post(hub, token, b" " * 70_000, **gql)),
        "METHOD_NOT_ALLOWED": (405, await hub.http.get("/graphql", headers={"Accept": GQL})),
    }
    for code, (status, response) in refusals.items():
        assert (response.status_code, response.headers["content-type"]) == (status, GQL_CONTENT_TYPE), code
        answer = response.json()
        assert set(answer) == {"errors"}, answer
        assert [error["extensions"] for error in answer["errors"]] == [{"code": code}], answer
        event = await _recorded(engine, response)
        assert event["error_code"] == code
    assert "DPoP" in refusals["UNAUTHENTICATED"][1].headers["www-authenticate"]
    assert refusals["METHOD_NOT_ALLOWED"][1].headers["allow"] == "POST"


async def test_how_an_answer_is_sent_changes_no_refusal_count(
    asgi: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    """A document that does not validate is 400 as application/graphql-response+json and 200 as
    application/json: the burst alert (over 20 refusals in a minute) counts it as neither."""
    hub = await enrol(engine, asgi, HUB, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir)
    token = await hub.token()
    for _ in range(22):
        response = await _post(hub, token, {"query": "{ uprn }"}, accept=GQL)
        assert response.status_code == 400, response.text
    assert await _events(engine, endpoint="alert", client_id=hub.client_id) == []


@pytest.mark.parametrize("accept", ["text/html", f"{GQL};q=0, {JSON};q=0", "image/*"])
async def test_an_accept_header_that_takes_neither_type_is_406_as_json(
    accept: str, hub: Partner, engine: AsyncEngine
) -> None:
    response = await _post(hub, await hub.token(), {"query": PEOPLE, "variables": {"n": 1}}, accept=accept)
    assert response.status_code == 406, response.text
    assert response.headers["content-type"] == JSON
    assert response.json() == {
        "errors": [{"message": f"Accept {GQL} or {JSON}.", "extensions": {"code": "NOT_ACCEPTABLE"}}]
    }
    event = await _recorded(engine, response)
    assert (event["outcome"], event["error_code"]) == ("denied", "NOT_ACCEPTABLE")
    assert event["client_id"] == hub.client_id  # refused once the caller is known
    assert event["people_count"] == 0


async def test_without_a_token_an_unacceptable_accept_header_is_still_401(hub: Partner) -> None:
    response = await _post(hub, None, {"query": "{ __typename }"}, accept="text/html")
    assert (response.status_code, response.headers["content-type"]) == (401, JSON)


# -- refusals the routes make: past a rate limit, and with the ledger unwritable -------------------


@asynccontextmanager
async def _app(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys, **updates: Any
) -> AsyncIterator[tuple[Starlette, Partner]]:
    """An app of its own with some settings changed, and a new client of the hub, from a new address."""
    app = create_app(
        settings.model_copy(update=updates), engine=engine, signing=signing, ref_secret=REF_SECRET,
        today=lambda: FIXED_TODAY,
    )  # fmt: skip
    async with app.router.lifespan_context(app):
        address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
        transport = httpx.ASGITransport(app=app, client=(address, 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            partner = await enrol(
                engine, http, HUB, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
            )
            yield app, partner


async def test_past_a_rate_limit_429_is_in_the_negotiated_type(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys
) -> None:
    limits = {"requests_per_minute": 2, "unauthenticated_per_minute": 1}
    async with _app(settings, engine, signing, **limits) as (_, hub):
        token = await hub.token()  # the client's first request of the minute
        served = await _post(hub, token, {"query": PEOPLE, "variables": {"n": 1}}, accept=GQL)
        assert (served.status_code, served.headers["content-type"]) == (200, GQL_CONTENT_TYPE)
        throttled = await _post(hub, token, {"query": PEOPLE, "variables": {"n": 1}}, accept=GQL)
        refused = await _post(hub, None, {"query": "{ __typename }"}, accept=GQL)  # the address's one
        over = await _post(hub, None, {"query": "{ __typename }"}, accept=GQL)
        as_json = await _post(hub, None, {"query": "{ __typename }"}, accept=None)
    assert refused.status_code == 401
    for response in (throttled, over, as_json):
        assert response.status_code == 429, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert "retry-after" in response.headers
    assert throttled.headers["content-type"] == over.headers["content-type"] == GQL_CONTENT_TYPE
    assert as_json.headers["content-type"] == JSON
    # One event stands for each minute's refusals past the limit, written as the app stopped.
    for response in (throttled, over):
        event = await event_of(engine, response.headers["x-audit-event-id"])
        assert event is not None and event["http_status"] == 429


async def test_with_the_ledger_unwritable_503_is_in_the_negotiated_type(
    settings: Settings, engine: AsyncEngine, signing: SigningKeys
) -> None:
    app = create_app(
        settings, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        hub = await enrol(engine, http, HUB, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir)
        token = await hub.token()
        await app.state.gateway.ledger.close()  # from now on, no event can be written: nothing is sent
        answers = {
            "answered": await _post(hub, token, {"query": PEOPLE, "variables": {"n": 1}}, accept=GQL),
            "unauthenticated": await _post(hub, None, {"query": "{ __typename }"}, accept=GQL),
            "wrong method": await http.get("/graphql", headers={"Accept": GQL}),
            "as json": await _post(hub, token, {"query": PEOPLE, "variables": {"n": 1}}, accept=None),
        }
    for name, response in answers.items():
        assert response.status_code == 503, (name, response.text)
        assert response.json()["errors"][0]["extensions"]["code"] == "AUDIT_UNAVAILABLE"
        assert "data" not in response.json()
        expected = JSON if name == "as json" else GQL_CONTENT_TYPE
        assert response.headers["content-type"] == expected, name
