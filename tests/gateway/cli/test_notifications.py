"""UK GDPR Art 19 over HTTP with real tokens, on SQLite and PostgreSQL: a rectification or an erasure
completed with `gateway rights close` reaches the feed of every past recipient of the fields affected, by
that partner's own ref, and no one else's; partners acknowledge it; reading and acknowledging are recorded."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import subject_access_report
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.oauth.clients import clients
from gateway.rights import notifications, rights_requests
from policies import Agreement
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.gateway.cli.conftest import run_gateway
from tests.support.oracle import Oracle
from tests.support.partners import Partner, enrol

PERSON = "query Person($r: ID!) { person(ref: $r) { ref givenName familyName } }"
FEED = (
    "query Feed($after: String) { notifications(first: 100, after: $after) { "
    "edges { cursor node { id ref kind fields at acknowledgedAt } } pageInfo { hasNextPage endCursor } } }"
)
ACK = "mutation Ack($id: ID!) { acknowledgeNotification(id: $id) { id ref kind acknowledgedAt } }"
OPERATOR = "rights.officer@council.test.invalid"


@pytest.fixture(scope="module")
def cli(session_cli_env: tuple[dict[str, str], Path]) -> Callable[..., subprocess.CompletedProcess[str]]:
    env, cwd = session_cli_env
    return lambda *args: run_gateway(env, cwd, "rights", *args, "--acting-user", OPERATOR)


@pytest.fixture
async def person(oracle: Oracle, agreements: dict[str, Agreement], engine: AsyncEngine) -> AsyncIterator[int]:
    """Someone the police and the ONS reach and Family Hubs never could (other tests page through whole
    views); what the test notified is removed afterwards."""
    expected = {
        a: oracle.expected(agreements[a], FIXED_TODAY) for a in ("police-prevention", "ons-evaluation")
    }
    never = set(oracle.people) - oracle.expected(agreements["family-hub-outreach"], FIXED_TODAY)
    chosen = sorted(expected["police-prevention"] & expected["ons-evaluation"] & never)[0]
    yield chosen
    async with engine.begin() as conn:
        await conn.execute(delete(notifications).where(notifications.c.person_id == chosen))
        await conn.execute(delete(rights_requests).where(rights_requests.c.person_id == chosen))


async def _feed(partner: Partner, person_id: int) -> list[dict[str, Any]]:
    """This partner's notifications about the person, read through its whole feed."""
    found, after = [], None
    while True:
        page = (await partner.data(FEED, {"after": after}))["notifications"]
        found += [edge["node"] for edge in page["edges"] if edge["node"]["ref"] == partner.ref(person_id)]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


def _closed(
    cli: Callable[..., subprocess.CompletedProcess[str]], kind: str, person_id: int, *more: str
) -> str:
    recorded = cli(
        "record",
        str(person_id),
        "--kind",
        kind,
        "--basis",
        f"UK GDPR Art {16 if kind == 'rectification' else 17}",
    )
    assert recorded.returncode == 0, recorded.stderr
    request = recorded.stdout.split()[0]
    closed = cli("close", request, "--outcome", "completed", "--note", "done in the case system", *more)
    assert closed.returncode == 0, closed.stderr
    return closed.stdout


async def test_a_rectification_reaches_every_past_recipient_and_no_one_else(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    local_partner: Callable[[str], Partner],
    person: int,
    engine: AsyncEngine,
) -> None:
    police, ons, hub = (
        local_partner("police-prevention"),
        local_partner("ons-evaluation"),
        local_partner("family-hub-outreach"),
    )
    for partner in (police, ons):
        assert (await partner.data(PERSON, {"r": partner.ref(person)}))["person"] is not None
    printed = _closed(cli, "rectification", person, "--changed", "givenName,postcode")
    assert f"notified: {police.client_id} (police-prevention), which received givenName" in printed
    assert f"notified: {ons.client_id} (ons-evaluation), which received givenName" in printed
    assert hub.client_id not in printed
    [to_police] = await _feed(police, person)
    [to_ons] = await _feed(ons, person)
    assert (to_police["kind"], to_ons["kind"]) == ("RECTIFICATION", "RECTIFICATION")
    # What each received of the fields corrected: the ONS never had the postcode. No value, old or new.
    assert to_ons["fields"] == ["givenName"]
    assert to_police["fields"][0] == "givenName" and set(to_police["fields"]) <= {"givenName", "postcode"}
    assert to_police["ref"] != to_ons["ref"]  # each in its own ref space
    assert await _feed(hub, person) == []
    # Reading the feed is a disclosure of the person it names, recorded as such.
    response = await police.post(FEED, {"after": None})
    async with engine.connect() as conn:
        recorded = (
            await conn.execute(
                select(audit_disclosures.c.fields).where(
                    audit_disclosures.c.event_id == response.headers["X-Audit-Event-Id"],
                    audit_disclosures.c.person_id == person,
                )
            )
        ).scalar_one()
    assert recorded == "notifications"


async def test_a_partner_acknowledges_its_own_notifications_only(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    local_partner: Callable[[str], Partner],
    person: int,
    engine: AsyncEngine,
) -> None:
    police, ons = local_partner("police-prevention"), local_partner("ons-evaluation")
    for partner in (police, ons):
        assert (await partner.data(PERSON, {"r": partner.ref(person)}))["person"] is not None
    _closed(cli, "rectification", person, "--changed", "familyName")
    [notice] = await _feed(police, person)
    assert notice["acknowledgedAt"] is None
    acknowledged = await police.post(ACK, {"id": notice["id"]})
    body = acknowledged.json()
    assert "errors" not in body, body
    first = body["data"]["acknowledgeNotification"]
    assert first["id"] == notice["id"] and first["acknowledgedAt"] is not None
    again = (await police.data(ACK, {"id": notice["id"]}))["acknowledgeNotification"]
    assert again["acknowledgedAt"] == first["acknowledgedAt"]
    [after] = await _feed(police, person)
    assert after["acknowledgedAt"] == first["acknowledgedAt"]
    async with engine.connect() as conn:
        event = (
            await conn.execute(
                select(audit_events).where(audit_events.c.id == acknowledged.headers["X-Audit-Event-Id"])
            )
        ).one()
    assert event.outcome == "allowed" and event.operation_name == "Ack" and event.people_count == 1
    # The ONS cannot acknowledge the police's notification, nor learn that it exists.
    foreign = (await ons.post(ACK, {"id": notice["id"]})).json()
    assert foreign["data"] is None
    assert foreign["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert foreign["errors"][0]["message"] == "No notification with this id is addressed to you."


async def test_an_erasure_tells_every_recipient_and_the_subject_access_report_keeps_the_disclosures(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    local_partner: Callable[[str], Partner],
    person: int,
    engine: AsyncEngine,
    agreements: dict[str, Agreement],
) -> None:
    police = local_partner("police-prevention")
    assert (await police.data(PERSON, {"r": police.ref(person)}))["person"] is not None
    # Reading the feed is in the register as a read of `notifications`: never a field to tell of later.
    _closed(cli, "rectification", person, "--changed", "familyName")
    assert len(await _feed(police, person)) == 1
    printed = _closed(cli, "erasure", person)
    assert f"notified: {police.client_id} (police-prevention)" in printed
    [notice] = [n for n in await _feed(police, person) if n["kind"] == "ERASURE"]
    assert "givenName" in notice["fields"] and "familyName" in notice["fields"]
    assert set(notice["fields"]) <= set(agreements["police-prevention"].fields)
    report = await subject_access_report(engine, person, agreements=agreements)
    assert any(d["agreement"] == "police-prevention" for d in report.disclosures)
    assert sorted((r["kind"], r["status"]) for r in report.requests) == [
        ("erasure", "completed"),
        ("rectification", "completed"),
    ]


async def test_a_corrected_date_of_birth_or_postcode_reaches_whoever_was_given_a_value_derived_from_it(
    cli: Callable[..., subprocess.CompletedProcess[str]], local_partner: Callable[[str], Partner], person: int
) -> None:
    health = local_partner("public-health-planning")
    derived = "query Derived($r: ID!) { person(ref: $r) { ref ageBand postcodeDistrict } }"
    assert (await health.data(derived, {"r": health.ref(person)}))["person"] is not None
    printed = _closed(cli, "rectification", person, "--changed", "dateOfBirth")
    assert f"notified: {health.client_id} (public-health-planning), which received ageBand\n" in printed
    printed = _closed(cli, "rectification", person, "--changed", "postcode")
    assert (
        f"notified: {health.client_id} (public-health-planning), which received postcodeDistrict\n" in printed
    )
    assert sorted(n["fields"] for n in await _feed(health, person)) == [["ageBand"], ["postcodeDistrict"]]
    # A derived value is corrected by correcting what it is derived from.
    recorded = cli("record", str(person), "--kind", "rectification", "--basis", "Art 16")
    refused = cli(
        "close", recorded.stdout.split()[0], "--outcome", "completed", "--note", "n", "--changed", "ageBand"
    )
    assert refused.returncode == 1 and "(BAD_INPUT)" in refused.stderr
    assert "ageBand" not in refused.stderr and "dateOfBirth" in refused.stderr


async def test_changed_fields_are_named_only_for_a_rectification_completed(
    cli: Callable[..., subprocess.CompletedProcess[str]], person: int
) -> None:
    recorded = cli("record", str(person), "--kind", "rectification", "--basis", "Art 16")
    request = recorded.stdout.split()[0]
    unnamed = "error: --changed names the view fields corrected, from: "
    misplaced = "error: --changed names what a completed rectification corrected, and only that (BAD_INPUT)"
    for args, line in (
        (["--outcome", "completed"], unnamed),
        (["--outcome", "completed", "--changed", "shoeSize"], unnamed),
        (["--outcome", "refused", "--changed", "givenName"], misplaced),
    ):
        result = cli("close", request, "--note", "n", *args)
        assert result.returncode == 1 and result.stderr.startswith(line), (args, result.stderr)
    listed = json.loads(cli("list", "--person", str(person), "--json").stdout)
    assert [r["status"] for r in listed] == ["open"]  # nothing was closed by a refused attempt


@pytest.mark.parametrize(
    "moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-11-30T10:00:00"]
)
async def test_a_cursor_the_feed_did_not_give_is_bad_input(
    local_partner: Callable[[str], Partner], moment: str
) -> None:
    forged = base64.urlsafe_b64encode(f"{moment}|{'a' * 32}".encode()).decode().rstrip("=")
    body = (await local_partner("police-prevention").post(FEED, {"after": forged})).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_the_feed_counts_against_the_people_a_document_may_ask_for(
    local_partner: Callable[[str], Partner],
) -> None:
    """Each notification names a person: two full pages of the feed are more than one page of people."""
    hub = local_partner("family-hub-outreach")  # runs any document: the refusal is the cost rule's
    document = (
        "query Two { a: notifications(first: 100) { edges { cursor } } "
        "b: notifications(first: 100) { edges { cursor } } }"
    )
    body = (await hub.post(document)).json()
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert body.get("data") is None


async def test_a_disabled_recipient_is_named_so_the_council_tells_it_another_way(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    asgi: httpx.AsyncClient,
    engine: AsyncEngine,
    person: int,
    partner_jwks_dir: Path,
) -> None:
    police = await enrol(engine, asgi, "police-prevention", ref_secret=REF_SECRET, jwks_dir=partner_jwks_dir)
    assert (await police.data(PERSON, {"r": police.ref(person)}))["person"] is not None
    async with engine.begin() as conn:
        await conn.execute(
            update(clients)
            .where(clients.c.client_id == police.client_id)
            .values(disabled_at=datetime.now(UTC))
        )
    printed = _closed(cli, "rectification", person, "--changed", "givenName")
    assert (
        f"notified: {police.client_id} (police-prevention), which received givenName (its client is disabled"
        in printed
    )
