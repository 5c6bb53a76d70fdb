"""The security-audit view: the access ledger as GraphQL for the council's security team.

The ledger is shared by every test, so each test finds its own requests by X-Audit-Event-Id.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.tables import audit_disclosures, audit_events
from gateway.rights import check_new, record, rights_requests
from policies import Agreement
from tests.conftest import FIXED_TODAY
from tests.support.identity import RegisteredClient
from tests.support.partners import PURPOSE, Partner
from tests.support.population import EdgeCases

PartnerFactory = Callable[[str], Partner]
POLICE, SECURITY = "police-prevention", "security-audit"
NODE = (
    "id time endpoint outcome httpStatus errorCode clientId agreementId agreementVersion purpose "
    "lawfulBasis actingUser caseReference operationName documentSha256 fieldsDisclosed fieldsWithheld "
    "peopleCount traceId"
)
SEARCH = (
    "query Search($filter: AuditEventFilter, $first: Int, $after: String) { "
    "auditEvents(filter: $filter, first: $first, after: $after) { "
    f"edges {{ cursor node {{ {NODE} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
)
DISCLOSURES = (
    "query($id: ID!, $first: Int) { disclosures(personId: $id, first: $first) { edges { node { "
    "eventId time clientId partner agreementId agreementVersion purpose lawfulBasis fields actingUser "
    "caseReference } } } }"
)
POLICE_PAGE = "query PoliceList { people(first: 5) { edges { node { ref givenName dateOfBirth } } } }"


async def _search(security: Partner, first: int = 50, after: str | None = None, **filter: Any) -> Any:
    data = await security.data(SEARCH, {"filter": filter, "first": first, "after": after})
    return data["auditEvents"]


async def _ids(security: Partner, **filter: Any) -> set[str]:
    return {edge["node"]["id"] for edge in (await _search(security, first=200, **filter))["edges"]}


async def _error_code(security: Partner, query: str, variables: dict[str, Any]) -> str:
    response = await security.post(query, variables)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None, body
    [error] = body["errors"]
    return str(error["extensions"]["code"])


async def _row(engine: AsyncEngine, event_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).one()


async def _disclosure_rows(engine: AsyncEngine, event_id: str) -> list[Any]:
    async with engine.connect() as conn:
        stmt = select(audit_disclosures).where(audit_disclosures.c.event_id == event_id)
        return list((await conn.execute(stmt)).all())


def _window(start: datetime | None, end: datetime | None) -> dict[str, str]:
    given = {"from": start, "to": end}
    return {name: moment.isoformat() for name, moment in given.items() if moment is not None}


async def test_introspection_shows_the_ledger_and_no_person_types(
    partner: PartnerFactory, engine: AsyncEngine, registered: dict[str, RegisteredClient]
) -> None:
    security = partner(SECURITY)
    response = await security.post(
        '{ __schema { queryType { fields { name } } types { name } } person: __type(name: "Person") '
        '{ name } address: __type(name: "Address") { name } }'
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert sorted(f["name"] for f in data["__schema"]["queryType"]["fields"]) == [
        "auditEvents",
        "breakGlass",
        "disclosures",
        "eligibility",
        "rightsRequests",
    ]
    names = {t["name"] for t in data["__schema"]["types"]}
    assert {"AuditEvent", "PersonDisclosure"} <= names
    assert not names & {"Person", "Address", "PersonConnection", "PersonEdge", "Household"}
    assert data["person"] is None and data["address"] is None
    # The security team's own request is an event under its own agreement.
    row = await _row(engine, response.headers["X-Audit-Event-Id"])
    assert (row.endpoint, row.outcome, row.http_status) == ("graphql", "allowed", 200)
    assert (row.client_id, row.agreement_id) == (registered[SECURITY][0], SECURITY)
    assert (row.acting_user, row.case_reference, row.people_count) == ("officer-1234", "CASE-2026-0042", 0)


@pytest.mark.parametrize("sent", [{}, {"X-Acting-User": "analyst-1"}, {"X-Case-Reference": "SEC-1"}])
async def test_the_security_team_must_say_who_and_why(
    sent: dict[str, str], partner: PartnerFactory, engine: AsyncEngine
) -> None:
    response = await partner(SECURITY).post(
        "{ auditEvents(first: 1) { edges { cursor } } }", purpose=False, headers=sent
    )
    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["PURPOSE_CONTEXT_REQUIRED"]
    row = await _row(engine, response.headers["X-Audit-Event-Id"])
    assert (row.outcome, row.error_code, row.agreement_id) == ("denied", "PURPOSE_CONTEXT_REQUIRED", SECURITY)


async def test_a_police_request_is_found_with_everything_the_ledger_records(
    partner: PartnerFactory,
    registered: dict[str, RegisteredClient],
    agreements: dict[str, Agreement],
    engine: AsyncEngine,
) -> None:
    police, security = partner(POLICE), partner(SECURITY)
    response = await police.post(POLICE_PAGE)
    assert response.status_code == 200, response.text
    event_id = response.headers["X-Audit-Event-Id"]
    refs = [edge["node"]["ref"] for edge in response.json()["data"]["people"]["edges"]]
    assert len(refs) == 5
    connection = await _search(security, first=20, client=registered[POLICE][0])
    [node] = [edge["node"] for edge in connection["edges"] if edge["node"]["id"] == event_id]
    agreement = agreements[POLICE]
    assert re.fullmatch(r"[0-9a-f]{32}", node.pop("traceId"))
    assert datetime.fromisoformat(node.pop("time")).utcoffset() == timedelta(0)
    assert node == {
        "id": event_id,
        "endpoint": "graphql",
        "outcome": "ALLOWED",
        "httpStatus": 200,
        "errorCode": None,
        "clientId": registered[POLICE][0],
        "agreementId": POLICE,
        "agreementVersion": agreement.version,
        "purpose": agreement.purpose,
        "lawfulBasis": list(agreement.lawful_basis),
        "actingUser": PURPOSE["X-Acting-User"],
        "caseReference": PURPOSE["X-Case-Reference"],
        "operationName": "PoliceList",
        "documentSha256": hashlib.sha256(POLICE_PAGE.encode()).hexdigest(),
        "fieldsDisclosed": ["ref", "givenName", "dateOfBirth"],
        "fieldsWithheld": [],
        "peopleCount": len(refs),
    }
    rows = await _disclosure_rows(engine, event_id)
    assert {r.person_id for r in rows} == {police.person_id(ref) for ref in refs}


async def test_filters_by_outcome_agreement_time_and_all_together(
    partner: PartnerFactory, registered: dict[str, RegisteredClient]
) -> None:
    police, security = partner(POLICE), partner(SECURITY)
    client = registered[POLICE][0]
    allowed = (await police.post(POLICE_PAGE)).headers["X-Audit-Event-Id"]
    refused = await police.post(POLICE_PAGE, purpose=False)
    assert refused.status_code == 400
    denied = refused.headers["X-Audit-Event-Id"]

    by_outcome = await _search(security, first=200, client=client, outcome="DENIED")
    assert {e["node"]["outcome"] for e in by_outcome["edges"]} == {"DENIED"}
    assert denied in {e["node"]["id"] for e in by_outcome["edges"]}
    assert allowed not in {e["node"]["id"] for e in by_outcome["edges"]}
    assert allowed in await _ids(security, client=client, outcome="ALLOWED")
    assert denied not in await _ids(security, client=client, outcome="ALLOWED")

    by_agreement = await _search(security, first=200, agreement=POLICE)
    assert {e["node"]["agreementId"] for e in by_agreement["edges"]} == {POLICE}
    assert {allowed, denied} <= {e["node"]["id"] for e in by_agreement["edges"]}
    assert not {allowed, denied} & await _ids(security, agreement="dwp-worklessness")

    [node] = [e["node"] for e in by_agreement["edges"] if e["node"]["id"] == allowed]
    moment = datetime.fromisoformat(node["time"])
    second, micro = timedelta(seconds=1), timedelta(microseconds=1)
    india = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))  # the same instant, elsewhere
    for start, end, found in [
        (moment - second, moment + second, True),
        (moment, moment + micro, True),  # from: at or after
        (india, india + micro, True),
        (moment + micro, None, False),
        (None, moment, False),  # to: strictly before
    ]:
        window = _window(start, end)
        assert (allowed in await _ids(security, client=client, **window)) is found, window
    window = _window(moment - second, moment + second)
    assert allowed in await _ids(security, client=client, agreement=POLICE, outcome="ALLOWED", **window)
    assert allowed not in await _ids(security, client=client, agreement=POLICE, outcome="DENIED", **window)
    assert allowed not in await _ids(security, client=registered[SECURITY][0], agreement=POLICE, **window)


async def test_pages_are_newest_first_and_never_repeat(local_partner: PartnerFactory) -> None:
    security = local_partner(SECURITY)
    for _ in range(3):  # enough events for several pages, whatever else the ledger holds
        await local_partner(POLICE).post(POLICE_PAGE)
    seen: list[tuple[str, datetime]] = []
    after = None
    for _ in range(4):
        page = await _search(security, first=2, after=after)
        assert len(page["edges"]) == 2
        assert page["pageInfo"] == {"hasNextPage": True, "endCursor": page["edges"][-1]["cursor"]}
        assert page["pageInfo"]["endCursor"]
        seen += [(e["node"]["id"], datetime.fromisoformat(e["node"]["time"])) for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
    ids = [event_id for event_id, _ in seen]
    assert len(set(ids)) == len(ids) == 8
    times = [moment for _, moment in seen]
    assert times == sorted(times, reverse=True)
    forged = base64.urlsafe_b64encode(b"2026-11-22T04:05:44.948123Z|not-an-event-id").decode()
    for garbage in ["garbage", "", forged, after[:-2]]:
        assert await _error_code(security, SEARCH, {"first": 2, "after": garbage}) == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    ("first", "accepted"), [(0, False), (-1, False), (201, False), (1, True), (200, True)]
)
async def test_page_size_must_be_between_1_and_200(
    first: int, accepted: bool, local_partner: PartnerFactory
) -> None:
    security = local_partner(SECURITY)
    if accepted:
        page = await _search(security, first=first)
        assert 1 <= len(page["edges"]) <= first
        assert len(page["edges"]) == first or not page["pageInfo"]["hasNextPage"]
    else:
        assert await _error_code(security, SEARCH, {"first": first}) == "BAD_USER_INPUT"
        assert await _error_code(security, DISCLOSURES, {"id": "1", "first": first}) == "BAD_USER_INPUT"


async def test_disclosures_of_a_person_list_the_police_disclosure_and_reading_them_is_recorded(
    partner: PartnerFactory,
    cases: EdgeCases,
    engine: AsyncEngine,
    registered: dict[str, RegisteredClient],
    agreements: dict[str, Agreement],
) -> None:
    police, security = partner(POLICE), partner(SECURITY)
    person_id = cases.id("cohort_plain")
    shown = await police.post(
        "query($ref: ID!) { person(ref: $ref) { ref givenName dateOfBirth } }", {"ref": police.ref(person_id)}
    )
    assert shown.json()["data"]["person"]["givenName"] == "Ada"
    police_event = shown.headers["X-Audit-Event-Id"]

    read = await security.post(DISCLOSURES, {"id": str(person_id), "first": 200})
    assert read.status_code == 200, read.text
    nodes = [e["node"] for e in read.json()["data"]["disclosures"]["edges"]]
    times = [datetime.fromisoformat(n.pop("time")) for n in nodes]
    assert times == sorted(times, reverse=True)  # newest first
    [node] = [n for n in nodes if n["eventId"] == police_event]
    agreement = agreements[POLICE]
    assert node == {
        "eventId": police_event,
        "clientId": registered[POLICE][0],
        "partner": "Metropolitan Police Service",
        "agreementId": POLICE,
        "agreementVersion": agreement.version,
        "purpose": agreement.purpose,
        "lawfulBasis": list(agreement.lawful_basis),
        "fields": ["ref", "givenName", "dateOfBirth"],
        "actingUser": PURPOSE["X-Acting-User"],
        "caseReference": PURPOSE["X-Case-Reference"],
    }

    own = read.headers["X-Audit-Event-Id"]
    rows = await _disclosure_rows(engine, own)
    assert [(r.person_id, r.fields) for r in rows] == [(person_id, "disclosures")]
    row = await _row(engine, own)
    assert (row.agreement_id, row.people_count, row.fields_disclosed) == (SECURITY, 1, "disclosures")

    again = await security.data(DISCLOSURES, {"id": str(person_id), "first": 200})
    [looked] = [e["node"] for e in again["disclosures"]["edges"] if e["node"]["eventId"] == own]
    assert (looked["agreementId"], looked["partner"], looked["fields"]) == (
        SECURITY,
        agreements[SECURITY].partner,
        ["disclosures"],
    )


@pytest.mark.parametrize("person_id", ["abc", "-1", "12a", "", "1" * 19])
async def test_a_person_id_that_is_not_digits_is_bad_input_and_discloses_nothing(
    person_id: str, local_partner: PartnerFactory, engine: AsyncEngine
) -> None:
    response = await local_partner(SECURITY).post(DISCLOSURES, {"id": person_id})
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await _disclosure_rows(engine, response.headers["X-Audit-Event-Id"]) == []


async def test_the_security_teams_own_requests_are_events_under_security_audit(
    partner: PartnerFactory, registered: dict[str, RegisteredClient]
) -> None:
    security = partner(SECURITY)
    first = await security.post(SEARCH, {"first": 1})
    own = first.headers["X-Audit-Event-Id"]
    connection = await _search(security, first=20, agreement=SECURITY, client=registered[SECURITY][0])
    [node] = [e["node"] for e in connection["edges"] if e["node"]["id"] == own]
    assert (node["agreementId"], node["outcome"], node["operationName"]) == (SECURITY, "ALLOWED", "Search")
    assert (node["actingUser"], node["peopleCount"], node["fieldsDisclosed"]) == ("officer-1234", 0, [])


async def test_a_persons_rights_requests_are_read_and_recorded_as_a_read_of_that_person(
    local_partner: PartnerFactory, engine: AsyncEngine, cases: EdgeCases, agreements: dict[str, Agreement]
) -> None:
    person_id = cases.id("cohort_plain")
    async with engine.begin() as conn:
        new = await check_new(
            conn, person_id=person_id, kind="access", agreement_id=None, received_on=FIXED_TODAY,
            requested_by="representative", legal_basis="UK GDPR Art 15",
            recorded_by="dpo@council.test.invalid", agreements=agreements, today=FIXED_TODAY,
        )  # fmt: skip
        await record(conn, new, today=FIXED_TODAY)
    try:
        security = local_partner(SECURITY)
        query = (
            "query Rights($p: ID!) { rightsRequests(personId: $p) { id kind status requestedBy receivedOn } }"
        )
        response = await security.post(query, {"p": str(person_id)})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["rightsRequests"] == [
            {"id": new.id, "kind": "access", "status": "open", "requestedBy": "representative",
             "receivedOn": FIXED_TODAY.isoformat()}
        ]  # fmt: skip
        async with engine.connect() as conn:
            fields = (
                await conn.execute(
                    select(audit_disclosures.c.fields).where(
                        audit_disclosures.c.event_id == response.headers["X-Audit-Event-Id"],
                        audit_disclosures.c.person_id == person_id,
                    )
                )
            ).scalar_one()
        assert fields == "rightsRequests"
        bad = (await security.post(query, {"p": "12a"})).json()
        assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(rights_requests).where(rights_requests.c.id == new.id))
