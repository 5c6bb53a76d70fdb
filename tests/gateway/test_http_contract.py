"""POST /graphql before and around GraphQL: tokens, request shape, purpose, dates, paging, errors.

In-process (these do not depend on the socket), on SQLite and PostgreSQL. Every refusal has an
exact status and a stable `extensions.code`; nothing a partner sends comes back in an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.config import Settings
from gateway.keys import SigningKeys
from policies import Agreement
from tests.conftest import REF_SECRET
from tests.support.jwt_forgery import FORGERIES, access_claims, access_header, forge, sign
from tests.support.oracle import Oracle
from tests.support.partners import PURPOSE, Partner
from tests.support.population import EdgeCases

POLICE = "police-prevention"  # runs registered documents only
HUB = "family-hub-outreach"  # any document: a listing, an asserted acting user
YOUTH = "youth-justice"  # any document: findPeople(familyName, dateOfBirth), a verified officer
CHALLENGE = 'DPoP realm="partner-gateway", algs="ES256 PS256"'
TYPENAME = b'{"query": "{ __typename }"}'
PEOPLE = "query($first: Int, $after: String) { people(first: $first, after: $after) { %s } }"
PAGE = PEOPLE % "edges { cursor node { ref } } pageInfo { hasNextPage endCursor }"
ONE_PERSON = "{ people(first: 1) { edges { node { ref } } } }"
REVIEW_GRACE = timedelta(days=30)  # the contract; policies/evaluator.py must agree
PartnerFactory = Callable[[str], Partner]


def _refused(response: httpx.Response, status: int, code: str) -> None:
    """Refused before GraphQL ran: one error with this code, no data, never cached."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}, body
    assert [error["extensions"] for error in body["errors"]] == [{"code": code}], body
    assert response.headers["cache-control"] == "no-store"


def _refused_in_graphql(response: httpx.Response, field: str, code: str) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body.get("data") or {}).get(field) is None, body
    assert [error["extensions"]["code"] for error in body["errors"]] == [code], body


@pytest.fixture
async def police(local_partner: PartnerFactory) -> Partner:
    partner = local_partner(POLICE)
    # The documents this file sends by hand (not through `Partner.post`), registered for the police
    # client as `gateway documents add` would: its agreement runs registered documents only.
    for document in ("{ __typename }", ONE_PERSON):
        assert await partner.trust(document)
    return partner


@pytest.fixture
def hub(local_partner: PartnerFactory) -> Partner:
    return local_partner(HUB)


class BoundToken(str):
    """A token the police partner was issued: sent with its DPoP proof (a plain str goes as Bearer)."""

    partner: Partner


async def _bound(partner: Partner) -> BoundToken:
    issued = BoundToken(await partner.token())
    issued.partner = partner
    return issued


@pytest.fixture
async def token(police: Partner) -> str:
    return await _bound(police)


@pytest.fixture
async def hub_token(hub: Partner) -> str:
    """A token of a view that runs any document, for what a police client could not even register."""
    return await _bound(hub)


async def _raw(asgi: httpx.AsyncClient, token: str | None, content: Any, **headers: str) -> httpx.Response:
    for _ in range(2):
        sent = {"Content-Type": "application/json", **PURPOSE}
        if isinstance(token, BoundToken):
            sent |= token.partner.authorization(token)
        elif token is not None:
            sent["Authorization"] = f"Bearer {token}"
        response = await asgi.post("/graphql", content=content, headers={**sent, **headers})
        if isinstance(token, BoundToken):
            token.partner.nonce = response.headers.get("dpop-nonce", token.partner.nonce)
            if 'error="use_dpop_nonce"' in response.headers.get("www-authenticate", ""):
                continue
        return response
    return response


def _challenged(response: httpx.Response, error: str | None = None) -> None:
    """Both schemes offered (RFC 6750, RFC 9449), with the error on each."""
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(CHALLENGE), challenge
    assert 'Bearer realm="partner-gateway"' in challenge
    if error is not None:
        assert challenge.count(f'error="{error}"') == 2, challenge


# -- the bearer token ------------------------------------------------------------------------------


async def test_no_token_is_401_with_a_bearer_challenge(asgi: httpx.AsyncClient) -> None:
    response = await _raw(asgi, None, TYPENAME)
    _refused(response, 401, "UNAUTHENTICATED")
    assert response.headers["www-authenticate"] == CHALLENGE + ', Bearer realm="partner-gateway"'


@pytest.mark.parametrize("authorization", ["Basic eHh4Onh4eA==", "Token abc", "Bearer", "Bearer    "])
async def test_a_scheme_other_than_bearer_is_401(authorization: str, asgi: httpx.AsyncClient) -> None:
    response = await _raw(asgi, None, TYPENAME, Authorization=authorization)
    _refused(response, 401, "UNAUTHENTICATED")
    _challenged(response, "invalid_request")


@pytest.mark.parametrize("raw", ["garbage", "a.b.c", "e30.e30.", "x" * 5000])
async def test_a_garbage_token_is_invalid_token(raw: str, asgi: httpx.AsyncClient) -> None:
    response = await _raw(asgi, raw, TYPENAME)
    _refused(response, 401, "UNAUTHENTICATED")
    _challenged(response, "invalid_token")


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_forged_tokens_are_invalid_token(
    forgery: str, asgi: httpx.AsyncClient, settings: Settings, signing: SigningKeys, police: Partner
) -> None:
    response = await _raw(asgi, forge(forgery, settings, signing.active, police.client_id, POLICE), TYPENAME)
    _refused(response, 401, "UNAUTHENTICATED")
    _challenged(response, "invalid_token")


@pytest.mark.parametrize("variant", ["as issued", "typ application/at+jwt", "expired within leeway"])
async def test_hand_made_tokens_with_the_real_key_are_accepted(
    variant: str, asgi: httpx.AsyncClient, settings: Settings, signing: SigningKeys, police: Partner
) -> None:
    """The control for the forgeries: each of them differs from an accepted token in one thing."""
    key, now = signing.active, int(time.time())
    header = access_header(key, typ="application/at+jwt") if variant.startswith("typ") else None
    changes: dict[str, Any] = {"iat": now - 595, "exp": now - 5} if variant.startswith("expired") else {}
    # Bound to the police partner's DPoP key and naming its officer, as its agreement wants.
    assert police.issuer is not None
    changes |= {
        "cnf": {"jkt": police.dpop_key.thumbprint()},
        "act": {"sub": PURPOSE["X-Acting-User"], "iss": police.issuer.issuer},
    }
    raw = BoundToken(sign(key, access_claims(settings, police.client_id, POLICE, **changes), header))
    raw.partner = police
    response = await _raw(asgi, raw, TYPENAME)
    assert response.status_code == 200, (response.text, response.headers.get("www-authenticate"))
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_the_token_is_checked_before_the_body(asgi: httpx.AsyncClient, settings: Settings) -> None:
    response = await _raw(asgi, None, b"x" * (settings.max_body_bytes + 1), **{"Content-Type": "text/plain"})
    _refused(response, 401, "UNAUTHENTICATED")


# -- the request -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_on_graphql_are_405_with_allow_post(
    method: str, asgi: httpx.AsyncClient, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    response = await asgi.request(method, "/graphql", params={"query": "{ __typename }"}, headers=headers)
    _refused(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("OPTIONS", "/graphql", "POST"), ("GET", "/oauth/token", "POST"), ("POST", "/healthz", "GET")],
)
async def test_every_405_names_the_allowed_methods(
    method: str, path: str, allowed: str, asgi: httpx.AsyncClient
) -> None:
    response = await asgi.request(method, path)
    if path == "/oauth/token":
        assert response.status_code == 405 and response.json()["error"] == "invalid_request"
    else:
        _refused(response, 405, "METHOD_NOT_ALLOWED")
    assert allowed in response.headers["allow"].split(", ")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/graphql", "application/x-www-form-urlencoded", ""]
)
async def test_a_body_that_is_not_json_is_415(content_type: str, asgi: httpx.AsyncClient, token: str) -> None:
    response = await _raw(asgi, token, TYPENAME, **{"Content-Type": content_type})
    _refused(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
async def test_json_with_parameters_or_in_capitals_is_json(
    content_type: str, asgi: httpx.AsyncClient, token: str
) -> None:
    response = await _raw(asgi, token, TYPENAME, **{"Content-Type": content_type})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b'{"query": ', "BAD_REQUEST", id="invalid json"),
        pytest.param(b"\xff\xfe{}", "BAD_REQUEST", id="not utf-8"),
        pytest.param(b"[%s, %s]" % (TYPENAME, TYPENAME), "BATCHING_NOT_SUPPORTED", id="batch"),
        pytest.param(b"[]", "BATCHING_NOT_SUPPORTED", id="empty batch"),
        pytest.param(b'"{ __typename }"', "BAD_REQUEST", id="json string"),
        pytest.param(b"{}", "BAD_REQUEST", id="no query"),
        pytest.param(b'{"query": " "}', "BAD_REQUEST", id="blank query"),
        pytest.param(b'{"query": 42}', "BAD_REQUEST", id="query not a string"),
        pytest.param(b'{"query": "{ __typename }", "variables": [1]}', "BAD_REQUEST", id="variables a list"),
        pytest.param(
            b'{"query": "{ __typename }", "variables": "{}"}', "BAD_REQUEST", id="variables a string"
        ),
        pytest.param(b'{"query": "{ __typename }", "operationName": 7}', "BAD_REQUEST", id="operationName 7"),
    ],
)
async def test_malformed_bodies_are_400(body: bytes, code: str, asgi: httpx.AsyncClient, token: str) -> None:
    _refused(await _raw(asgi, token, body), 400, code)


async def test_a_body_over_the_limit_is_413(asgi: httpx.AsyncClient, token: str, settings: Settings) -> None:
    query = json.dumps({"query": "{ __typename }"})
    padded = query[:-1] + " " * (settings.max_body_bytes - len(query)) + "}"
    assert len(padded) == settings.max_body_bytes
    assert (await _raw(asgi, token, padded)).status_code == 200
    _refused(await _raw(asgi, token, padded + " "), 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"query": "{ __typename }"'
        for _ in range(settings.max_body_bytes // 1000 + 1):
            yield b" " * 1000
        yield b"}"

    response = await _raw(asgi, token, chunks())
    assert "content-length" not in response.request.headers
    _refused(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("body", "code", "trusted_code"),
    [
        pytest.param(
            {"query": 'subscription { person(ref: "x") { ref } }'}, "OPERATION_NOT_ALLOWED",
            "DOCUMENT_NOT_TRUSTED", id="subscription",
        ),
        pytest.param(
            {"query": "query A { __typename }", "operationName": "B"}, "BAD_REQUEST", "BAD_REQUEST",
            id="no such name",
        ),
        pytest.param(
            {"query": "query A { a: __typename } query B { b: __typename }"}, "BAD_REQUEST", "BAD_REQUEST",
            id="two operations, no operationName",
        ),
    ],
)  # fmt: skip
async def test_only_a_single_query_operation_is_executed(
    body: dict[str, str],
    code: str,
    trusted_code: str,
    asgi: httpx.AsyncClient,
    hub_token: str,
    token: str,
    police: Partner,
) -> None:
    _refused(await _raw(asgi, hub_token, json.dumps(body)), 400, code)
    # Where only registered documents run, one that is not a single query cannot be registered at all;
    # a registered document of several operations still runs only the one named.
    assert await police.trust(body["query"]) is (trusted_code == code)
    _refused(await _raw(asgi, token, json.dumps(body)), 400, trusted_code)


async def test_operation_name_picks_one_of_several_operations(
    asgi: httpx.AsyncClient, token: str, police: Partner
) -> None:
    body = {"query": "query A { a: __typename } query B { b: __typename }", "operationName": "B"}
    assert await police.trust(body["query"])
    response = await _raw(asgi, token, json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"b": "Query"}}


# -- purpose context -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Case-Reference": "CASE-1"}, {"X-Acting-User": "officer-1"}, {"X-Acting-User": "   "}],
    ids=["neither", "no acting user", "no case reference", "blank acting user"],
)
async def test_the_security_team_needs_an_acting_user_and_a_case_reference(
    headers: dict[str, str], local_partner: PartnerFactory
) -> None:
    security = local_partner("security-audit")  # its acting user is asserted in a header
    _refused(
        await security.post("{ __typename }", purpose=False, headers=headers), 400, "PURPOSE_CONTEXT_REQUIRED"
    )


async def test_the_police_officer_comes_from_the_token_and_a_header_cannot_change_it(police: Partner) -> None:
    no_header = await police.post("{ __typename }", purpose=False, headers={"X-Case-Reference": "CASE-1"})
    assert no_header.status_code == 200, no_header.text  # the verified officer is enough
    same = await police.post("{ __typename }")  # the header repeats the officer the token names
    assert same.status_code == 200, same.text
    other = await police.post("{ __typename }", headers={"X-Acting-User": "someone-else"})
    _refused(other, 403, "ACTING_USER_MISMATCH")
    assert "someone-else" not in other.text
    no_case = await police.post("{ __typename }", purpose=False)
    _refused(no_case, 400, "PURPOSE_CONTEXT_REQUIRED")


@pytest.mark.parametrize(
    "value",
    [b"officer\x01one", b"officer\tone", b"officer\x7f", "officer-\u00e9".encode(), b"o" * 201],
    ids=["control", "tab", "delete", "non-ascii", "201 characters"],
)
async def test_a_purpose_header_that_is_not_short_printable_ascii_is_400(
    value: bytes, police: Partner
) -> None:
    token = await police.token()
    headers = [
        *police.authorization(token).items(),
        ("Content-Type", "application/json"),
        ("X-Case-Reference", "CASE-1"),
        ("X-Acting-User", value),
    ]
    response = await police.http.post("/graphql", content=TYPENAME, headers=headers)
    _refused(response, 400, "BAD_REQUEST")
    assert value.decode("latin-1") not in response.text


async def test_a_purpose_header_of_200_characters_is_accepted(local_partner: PartnerFactory) -> None:
    security = local_partner("security-audit")
    response = await security.post("{ __typename }", headers={"X-Acting-User": "o" * 200})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("header", ["Authorization", "DPoP", "X-Acting-User", "X-Case-Reference"])
async def test_a_repeated_header_is_400_never_first_wins(header: str, police: Partner) -> None:
    token = await police.token()
    sent = {**police.authorization(token), "Content-Type": "application/json", **PURPOSE}
    headers = [*sent.items(), (header, sent.get(header, "CASE-2"))]
    response = await police.http.post("/graphql", content=TYPENAME, headers=headers)
    _refused(response, 400, "BAD_REQUEST")


async def test_break_glass_outside_an_agreement_that_has_it_is_forbidden(police: Partner) -> None:
    response = await police.post("{ __typename }", headers={"X-Break-Glass-Reason": "child at risk"})
    _refused(response, 403, "FORBIDDEN")


async def test_an_agreement_that_requires_nothing_works_without_purpose_headers(
    local_partner: PartnerFactory,
) -> None:
    data = await local_partner("dwp-worklessness").data(ONE_PERSON, purpose=False)
    assert len(data["people"]["edges"]) == 1


# -- agreement dates -------------------------------------------------------------------------------


def _day(agreement: Agreement, moment: str) -> date:
    start, until, review = agreement.effective.start, agreement.effective.until, agreement.review_due
    assert review + REVIEW_GRACE + timedelta(days=2) < until, "the dates no longer allow every case"
    return {
        "day before effective": start - timedelta(days=1),
        "first effective day": start,
        "review due within grace": review + timedelta(days=15),
        "last day of grace": review + REVIEW_GRACE,
        "first day past grace": review + REVIEW_GRACE + timedelta(days=1),
        "day after until": until + timedelta(days=1),
    }[moment]


@pytest.mark.parametrize(
    ("moment", "status", "code"),
    [
        ("day before effective", 403, "AGREEMENT_NOT_IN_EFFECT"),
        ("first effective day", 200, None),
        ("review due within grace", 200, None),
        ("last day of grace", 200, None),
        ("first day past grace", 403, "AGREEMENT_REVIEW_OVERDUE"),
        ("day after until", 403, "AGREEMENT_EXPIRED"),
    ],
)
async def test_agreement_dates_open_and_close_access(
    moment: str,
    status: int,
    code: str | None,
    agreements: dict[str, Agreement],
    settings: Settings,
    engine: AsyncEngine,
    signing: SigningKeys,
    token: str,
) -> None:
    day = _day(agreements[POLICE], moment)
    app = create_app(settings, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: day)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await _raw(client, token, json.dumps({"query": ONE_PERSON}))
    await app.state.gateway.ledger.close()
    if code is None:
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]["people"]["edges"]) == 1
    else:
        _refused(response, status, code)


# -- paging ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [0, -1, 101, 100_000])
async def test_a_page_size_outside_1_to_the_maximum_is_bad_user_input(first: int, police: Partner) -> None:
    _refused_in_graphql(await police.post(PAGE, {"first": first}), "people", "BAD_USER_INPUT")
    inline = await police.post(ONE_PERSON.replace("first: 1", f"first: {first}"))
    _refused_in_graphql(inline, "people", "BAD_USER_INPUT")


@pytest.mark.parametrize(("variables", "size"), [({"first": None}, 50), ({}, 50), ({"first": 100}, 100)])
async def test_page_size_defaults_to_50_and_reaches_the_maximum(
    variables: dict[str, Any], size: int, police: Partner
) -> None:
    assert len((await police.data(PAGE, variables))["people"]["edges"]) == size


async def _page(partner: Partner, first: int, after: str | None = None) -> tuple[list[str], str]:
    connection = (await partner.data(PAGE, {"first": first, "after": after}))["people"]
    assert connection["pageInfo"]["hasNextPage"] is True
    return [edge["node"]["ref"] for edge in connection["edges"]], connection["pageInfo"]["endCursor"]


async def test_a_cursor_continues_exactly_after_the_previous_page(police: Partner) -> None:
    first_page, cursor = await _page(police, 5)
    second_page, _ = await _page(police, 5, cursor)
    both, _ = await _page(police, 10)
    assert not set(first_page) & set(second_page)
    assert first_page + second_page == both


async def test_each_edge_cursor_continues_after_its_own_edge(police: Partner) -> None:
    edges = (await police.data(PAGE, {"first": 6}))["people"]["edges"]
    assert all(edge["cursor"].startswith("cur_") for edge in edges)
    after_third = (await police.data(PAGE, {"first": 3, "after": edges[2]["cursor"]}))["people"]["edges"]
    assert [e["node"]["ref"] for e in after_third] == [e["node"]["ref"] for e in edges[3:]]


@pytest.mark.parametrize("source", ["not a cursor", "another partner's cursor", "a person ref", "altered"])
async def test_after_must_be_a_cursor_this_view_issued(
    source: str, police: Partner, local_partner: PartnerFactory
) -> None:
    refs, own = await _page(police, 1)
    after = {
        "not a cursor": "not-a-cursor",
        "another partner's cursor": (await _page(local_partner("ons-evaluation"), 1))[1],
        "a person ref": refs[0],
        "altered": own[:-2] + ("BB" if own.endswith("AA") else "AA"),
    }[source]
    response = await police.post(PAGE, {"first": 5, "after": after})
    _refused_in_graphql(response, "people", "BAD_USER_INPUT")
    assert after not in response.text


# -- no echo of what the partner sent --------------------------------------------------------------

FIND = "query($f: String!, $d: Date!) { findPeople(familyName: $f, dateOfBirth: $d) { ref } }"
FOUND = '{ findPeople(familyName: "%NAME%", dateOfBirth: "%DOB%") '


def _malformed(query: str, variables: dict[str, Any] | None, *, id: str, agreement: str = YOUTH) -> object:
    """A document or variables that cannot run, under a view that runs any document and has its fields."""
    return pytest.param(query, variables, agreement, id=id)


MALFORMED = [
    _malformed('{ findPeople(familyName: %DIGITS%, dateOfBirth: "%DOB%") { ref } }', None, id="Int literal"),
    _malformed(FIND, {"f": "%DIGITS%", "d": "%NAME%"}, id="Int variable"),
    _malformed(FIND, {"f": ["%NAME%"], "d": "%DOB%"}, id="list variable"),
    _malformed('{ findPeople(familyName: {v: "%NAME%"}, dateOfBirth: "%DOB%") { ref } }', None, id="object"),
    _malformed(FOUND.replace("%DOB%", "2011-02-30") + "{ ref } }", None, id="impossible date literal"),
    _malformed(FIND, {"f": "%NAME%", "d": "2011-02-30"}, id="impossible date variable"),
    _malformed('{ people(first: "%DOB%") { edges { cursor } } }', None, id="date of birth as Int",
               agreement=HUB),
    _malformed('{ findPeople(familyName: %ENUM%, dateOfBirth: "%DOB%") { ref } }', None, id="enum-like"),
    _malformed(FOUND + '{ ref } "%NAME%" }', None, id="syntax error"),
    _malformed(FOUND.replace(") ", ', postcode: "%NAME%") ') + "{ ref } }", None, id="unknown argument"),
    _malformed(FOUND + '@skip(if: "%NAME%") { ref } }', None, id="directive argument"),
    _malformed(FIND.replace("String!", "Strin!"), {"f": "%NAME%", "d": "%DOB%"}, id="unknown variable type"),
    _malformed(FIND.replace("String!", "Int!"), {"f": "%NAME%", "d": "%DOB%"}, id="wrong variable type"),
    _malformed(FIND.replace("String!", "String = %DIGITS%"), {"d": "%NAME%"}, id="wrong default"),
    _malformed(FOUND.replace("familyName", "familyNam") + "{ ref } }", None, id="argument typo"),
    _malformed(FOUND + "{ ...F } } fragment F on Persn { ref }", None, id="fragment on misspelt type"),
]  # fmt: skip
PUBLIC_CODES = {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if value == "%DIGITS%":
        return int(values[value])
    for placeholder, text in values.items():
        value = value.replace(placeholder, text) if isinstance(value, str) else value
    return value


def _personal_values(oracle: Oracle, cases: EdgeCases) -> dict[str, str]:
    person = oracle.people[cases.id("cohort_plain")]
    dob = person.date_of_birth.isoformat()
    return {
        "%NAME%": person.family_name,
        "%DOB%": dob,
        "%DIGITS%": dob.replace("-", ""),
        "%ENUM%": person.family_name.replace("-", "_"),
    }


def _refused_without_echo(response: httpx.Response, values: dict[str, str]) -> None:
    """Refused in GraphQL with public codes only, no suggestion, nothing sent quoted back."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("data") is None, body
    assert body["errors"], body
    for error in body["errors"]:
        assert error["extensions"]["code"] in PUBLIC_CODES, error
        assert "Did you mean" not in error["message"], error
    _not_echoed(response, values)


def _not_echoed(response: httpx.Response, values: dict[str, str]) -> None:
    for sent in [*values.values(), "2011-02-30"]:
        assert sent not in response.text, sent


@pytest.mark.parametrize(("query", "variables", "agreement"), MALFORMED)
async def test_errors_never_echo_the_values_sent_nor_suggest_names(
    query: str,
    variables: dict[str, Any] | None,
    agreement: str,
    local_partner: PartnerFactory,
    oracle: Oracle,
    cases: EdgeCases,
) -> None:
    values = _personal_values(oracle, cases)
    response = await local_partner(agreement).post(_fill(query, values), _fill(variables, values))
    _refused_without_echo(response, values)


@pytest.mark.parametrize(("query", "variables", "agreement"), MALFORMED)
async def test_under_trusted_documents_a_bad_document_is_not_trusted_and_bad_variables_never_echo(
    query: str,
    variables: dict[str, Any] | None,
    agreement: str,
    police: Partner,
    oracle: Oracle,
    cases: EdgeCases,
) -> None:
    values = _personal_values(oracle, cases)
    document = _fill(query, values)
    response = await police.post(document, _fill(variables, values))  # registered first, where it can be
    if await police.trust(document):  # a good document with bad variables: refused in GraphQL
        _refused_without_echo(response, values)
    else:  # a document that does not fit the view cannot be registered, so it is never read
        _refused(response, 400, "DOCUMENT_NOT_TRUSTED")
        _not_echoed(response, values)


# -- query complexity ------------------------------------------------------------------------------


@pytest.mark.parametrize(("roots", "allowed"), [(5, True), (6, False)])
async def test_at_most_five_root_fields(roots: int, allowed: bool, hub: Partner, police: Partner) -> None:
    fields = " ".join(f'r{i}: person(ref: "per_{i}") {{ ref }}' for i in range(roots))
    response = await hub.post(f"{{ {fields} }}")
    assert response.status_code == 200, response.text
    if allowed:
        assert response.json() == {"data": {f"r{i}": None for i in range(roots)}}
    else:
        assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["QUERY_TOO_COMPLEX"]
        assert "data" not in response.json()
    # Where only registered documents run, a document past the limit cannot be registered.
    trusted = await police.post(f"{{ {fields} }}")
    if allowed:
        assert trusted.json() == {"data": {f"r{i}": None for i in range(roots)}}, trusted.text
    else:
        _refused(trusted, 400, "DOCUMENT_NOT_TRUSTED")


def _fanned_out(levels: int, leaves: str) -> str:
    """people > edges > node > F<levels>; each fragment spreads the one below twice: 6 * 2**levels."""
    assert len(leaves.split()) == 6
    fragments = [f"fragment F0 on Person {{ {leaves} }}"]
    fragments += [f"fragment F{i} on Person {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return f"{{ people(first: 1) {{ edges {{ node {{ ...F{levels} }} }} }} }} {' '.join(fragments)}"


# Six fields of each view, `ref` twice: repeated, not aliased (a fragment's alias is counted where it is
# spread too, and 2**5 of them would pass the alias limit first).
LEAVES = {
    HUB: "ref givenName familyName phone email ref",
    POLICE: "ref givenName familyName dateOfBirth postcode ref",
}


@pytest.mark.parametrize(("levels", "allowed"), [(5, True), (6, False)])  # 195 and 387 fields
async def test_fragments_are_counted_where_they_are_spread(
    levels: int, allowed: bool, hub: Partner, police: Partner
) -> None:
    response = await hub.post(_fanned_out(levels, LEAVES[HUB]))
    assert response.status_code == 200, response.text
    codes = [error["extensions"]["code"] for error in response.json().get("errors", [])]
    assert codes == ([] if allowed else ["QUERY_TOO_COMPLEX"]), response.text
    # Where only registered documents run, the same count decides whether it can be registered.
    trusted = await police.post(_fanned_out(levels, LEAVES[POLICE]))
    if allowed:
        assert trusted.status_code == 200 and "errors" not in trusted.json(), trusted.text
    else:
        _refused(trusted, 400, "DOCUMENT_NOT_TRUSTED")


async def test_the_standard_introspection_query_is_not_refused(police: Partner) -> None:
    data = await police.data(get_introspection_query())
    assert data["__schema"]["queryType"]["name"] == "Query"
    assert "Person" in {kind["name"] for kind in data["__schema"]["types"]}


# -- headers on every answer, and the other routes -------------------------------------------------


async def test_every_graphql_answer_is_no_store(
    police: Partner, hub: Partner, asgi: httpx.AsyncClient
) -> None:
    answers = [
        await police.post("{ __typename }"),
        await hub.post("{ nothing }"),
        await police.post("{ nothing }"),  # not registered: only registered documents run
        await police.post(PAGE, {"first": 0}),
        await police.post("{ __typename }", purpose=False),
        await _raw(asgi, None, "{}"),
        await asgi.get("/graphql"),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 400, 200, 400, 401, 405]
    assert answers[1].json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert answers[2].json()["errors"][0]["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED"
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store", answer.text
        assert answer.headers["pragma"] == "no-cache"


async def test_healthz_reports_the_database_and_names_no_agreement(asgi: httpx.AsyncClient) -> None:
    response = await asgi.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "NOT_FOUND"),
        ("GET", "/oauth/tokens", 404, "NOT_FOUND"),
        ("POST", "/healthz", 405, "METHOD_NOT_ALLOWED"),
    ],
)
async def test_unknown_routes_get_json_errors(
    method: str, path: str, status: int, code: str, asgi: httpx.AsyncClient
) -> None:
    response = await asgi.request(method, path)
    _refused(response, status, code)
    assert response.headers["content-type"] == "application/json"


async def test_nothing_may_travel_in_the_url(asgi: httpx.AsyncClient, token: str, police: Partner) -> None:
    query = {"familyName": "Brackenridge-Vale", "dateOfBirth": "1992-10-13"}
    assert isinstance(token, BoundToken)
    refused = await asgi.post(
        "/graphql",
        params=query,
        json={"query": "{ __typename }"},
        headers={**police.authorization(token), **PURPOSE},
    )
    _refused(refused, 400, "BAD_REQUEST")
    unauthenticated = await asgi.post("/graphql", params=query, json={"query": "{ __typename }"})
    assert unauthenticated.status_code == 401  # who is asking is settled first
    assertion = police_assertion(police)
    token_refused = await asgi.post(
        "/oauth/token",
        params={"client_assertion": assertion},
        data={"grant_type": "client_credentials", "client_assertion": assertion},
    )
    assert token_refused.status_code == 400
    assert token_refused.json()["error"] == "invalid_request"
    assert "access_token" not in token_refused.json()


def police_assertion(police: Partner) -> str:
    from tests.support.identity import assertion

    return assertion(police.client_id, police.key, police.base + "/oauth/token")
