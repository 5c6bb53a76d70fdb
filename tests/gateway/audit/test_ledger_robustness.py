"""What a careful review found the ledger must survive: hostile values, half-failed batches,
requests that stop waiting, appended forgeries, requests that fail oddly. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import (
    AuditUnavailableError,
    EventDraft,
    LedgerWriter,
    subject_access_report,
    verify_ledger,
)
from gateway.audit.events import event_row
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import Settings
from gateway.keys import SigningKeys
from policies import Agreement
from resolvers.models import objections, people
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.ledger import Fresh, app_on, fresh_database
from tests.support.partners import Partner

PAGE = "query Page($first: Int) { people(first: $first) { edges { node { ref } } } }"


@pytest.fixture
async def fresh(database_url: str, tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY) as made:
        yield made


def _draft(**fields: Any) -> EventDraft:
    return EventDraft(endpoint="graphql", outcome="allowed", http_status=200, latency_us=1, **fields)


async def _stored(engine: AsyncEngine, event_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).first()
    return None if row is None else dict(row._mapping)


async def test_hostile_values_are_stored_clean_and_do_not_fail_their_neighbours(
    fresh: Fresh, signing: SigningKeys
) -> None:
    writer = LedgerWriter(fresh.engine, signing=signing)
    hostile = _draft(operation_name="Q" * 300 + "\x00\x1b[31m", client_id="evil\x00" + "x" * 100)
    good = [_draft(operation_name=f"Good{i}") for i in range(3)]
    await asyncio.gather(*(writer.record(d) for d in [good[0], hostile, good[1], good[2]]))
    await writer.close()
    stored = await _stored(fresh.engine, hostile.id)
    assert stored is not None
    assert stored["operation_name"] == "Q" * 100  # cut to the column, control characters gone
    assert stored["client_id"] == "evil" + "x" * 60
    for draft in good:
        assert await _stored(fresh.engine, draft.id) is not None
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.events == 4


def test_the_hash_covers_the_stored_text_not_the_raw_one() -> None:
    raw = _draft(acting_user="officer\x00-1")
    row = event_row(raw, chain_id="c", seq=1, prev_hash="0" * 64)
    assert row["acting_user"] == "officer-1"
    clean = _draft(acting_user="officer-1", id=raw.id, occurred_at=raw.occurred_at)
    same = event_row(clean, chain_id="c", seq=1, prev_hash="0" * 64)
    assert row["hash"] == same["hash"]


async def test_an_event_the_database_refuses_fails_alone(fresh: Fresh, signing: SigningKeys) -> None:
    writer = LedgerWriter(fresh.engine, signing=signing)
    first = _draft()
    await writer.record(first)
    # The same event again: the primary key refuses it (on PostgreSQL the key is the id and the time,
    # the partition key, so the time is the same too).
    clash = _draft(id=first.id, occurred_at=first.occurred_at)
    others = [_draft() for _ in range(3)]
    results = await asyncio.gather(*(writer.record(d) for d in [others[0], clash, others[1], others[2]]),
                                   return_exceptions=True)  # fmt: skip
    await writer.close()
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "AuditUnavailableError",
        "NoneType",
        "NoneType",
    ]
    for draft in others:
        assert await _stored(fresh.engine, draft.id) is not None
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.events == 4


async def test_a_request_that_stops_waiting_leaves_no_disclosure_behind(
    fresh: Fresh, signing: SigningKeys
) -> None:
    writer = LedgerWriter(fresh.engine, signing=signing, commit_timeout=0.5)
    await writer.record(_draft())  # the chain exists before the lock
    withdrawn = _draft(disclosures=((fresh.cases.id("cohort_plain"), ("ref", "givenName")),))
    release = await _lock_ledger(fresh)
    try:
        with pytest.raises(AuditUnavailableError):
            await writer.record(withdrawn)
    finally:
        await release()
    later = _draft()
    await writer.record(later)
    await writer.close()
    assert await _stored(fresh.engine, withdrawn.id) is None
    assert await _stored(fresh.engine, later.id) is not None
    async with fresh.engine.connect() as conn:
        people_recorded = (await conn.execute(select(audit_disclosures.c.person_id))).scalars().all()
    assert fresh.cases.id("cohort_plain") not in people_recorded
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and report.events == 2


async def _lock_ledger(fresh: Fresh) -> Callable[[], Any]:
    """Hold the ledger's table locked from another connection, as a long transaction would."""
    url = make_url(fresh.url)
    if url.get_backend_name() == "sqlite":
        blocker = sqlite3.connect(str(url.database), isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")

        async def release_sqlite() -> None:
            blocker.execute("ROLLBACK")
            blocker.close()

        return release_sqlite
    conn = await fresh.engine.connect()
    transaction = await conn.begin()
    await conn.execute(text("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE"))

    async def release_postgres() -> None:
        await transaction.rollback()
        await conn.close()

    return release_postgres


async def test_an_event_added_after_a_chain_was_closed_is_found(fresh: Fresh, signing: SigningKeys) -> None:
    writer = LedgerWriter(fresh.engine, signing=signing)
    for _ in range(3):
        await writer.record(_draft())
    await writer.close()
    [closed] = await verify_ledger(fresh.engine, signing.verification)
    assert closed.ok and closed.closed and closed.unsigned_events == 0
    with pytest.raises(AuditUnavailableError):
        await writer.record(_draft())  # a closed writer takes nothing more
    # A forger with INSERT rights continues the chain correctly, hash and all.
    async with fresh.engine.begin() as conn:
        last = (await conn.execute(select(audit_events).order_by(audit_events.c.seq.desc()).limit(1))).one()
        forged = event_row(_draft(disclosures=((1, ("ref",)),)), chain_id=last.chain_id, seq=last.seq + 1,
                           prev_hash=last.hash)  # fmt: skip
        await conn.execute(insert(audit_events).values(**forged))
        await conn.execute(
            insert(audit_disclosures).values(
                event_id=forged["id"], person_id=1, fields="ref", recorded_at=forged["occurred_at"]
            )
        )
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert not report.ok and report.event_id == forged["id"]
    assert "after the chain was closed" in (report.problem or "")


async def test_an_unsigned_tail_is_reported_and_fails_when_strict(fresh: Fresh, signing: SigningKeys) -> None:
    writer = LedgerWriter(fresh.engine, signing=signing)  # never closed: as if the process died
    for _ in range(2):
        await writer.record(_draft())
    [report] = await verify_ledger(fresh.engine, signing.verification)
    assert report.ok and not report.closed and report.unsigned_events == 2
    assert "not yet signed" in report.describe()
    soon = await verify_ledger(fresh.engine, signing.verification, strict_age=timedelta(minutes=5))
    assert soon[0].ok
    later = datetime.now(UTC) + timedelta(minutes=6)
    [stale] = await verify_ledger(
        fresh.engine, signing.verification, strict_age=timedelta(minutes=5), now=later
    )
    assert not stale.ok and "never signed" in (stale.problem or "")
    await writer.close()


async def test_every_request_is_recorded_even_when_it_fails_oddly(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    async with app_on(fresh, settings, signing, REF_SECRET, FIXED_TODAY, "police-prevention") as (_, police):
        undecodable = "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode()
        bad_basic = await police.http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": undecodable}
        )
        assert bad_basic.status_code == 401 and bad_basic.json()["error"] == "invalid_client"
        assert bad_basic.headers["www-authenticate"].startswith("Basic")
        wrong_method = await police.http.get("/graphql")
        assert wrong_method.status_code == 405
        token = await police.token()
        async with fresh.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE clients RENAME TO clients_elsewhere"))
        broken = await police.post(PAGE, {"first": 1}, token=token)
        assert broken.status_code == 500
        assert broken.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        responses = [bad_basic, wrong_method, broken]
        for response in responses:
            assert "x-audit-event-id" in response.headers
        events = [await _stored(fresh.engine, r.headers["x-audit-event-id"]) for r in responses]
        assert [(e["endpoint"], e["outcome"], e["http_status"], e["error_code"]) for e in events if e] == [
            ("token", "denied", 401, "invalid_client"),
            ("graphql", "denied", 405, "METHOD_NOT_ALLOWED"),
            ("graphql", "error", 500, "INTERNAL_SERVER_ERROR"),
        ]
        async with fresh.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE clients_elsewhere RENAME TO clients"))


async def test_repeated_root_fields_are_answered_in_full(
    local_partner: Callable[[str], Partner], cases: Any
) -> None:
    police = local_partner("police-prevention")
    ref = police.ref(cases.id("cohort_plain"))
    data = await police.data(
        "query($r: ID!) { person(ref: $r) { givenName } person(ref: $r) { familyName ref } }", {"r": ref}
    )
    assert data["person"] == {"givenName": "Ada", "familyName": "Brackenridge-Vale", "ref": ref}


# Superscript two and full-width digits pass str.isdigit(); they are not council ids.
@pytest.mark.parametrize("person_id", ["\u00b2", "\uff11\uff12", "99999999999", "-1", "1e3"])
async def test_person_ids_are_plain_council_ids(
    person_id: str, local_partner: Callable[[str], Partner]
) -> None:
    security = local_partner("security-audit")
    response = await security.post(
        "query($p: ID!) { disclosures(personId: $p) { edges { cursor } } }", {"p": person_id}
    )
    assert response.status_code == 200
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_report_still_lists_the_disclosures_of_an_erased_person(
    fresh: Fresh, settings: Settings, signing: SigningKeys, agreements: dict[str, Agreement]
) -> None:
    person_id = fresh.cases.id("cohort_plain")
    async with app_on(fresh, settings, signing, REF_SECRET, FIXED_TODAY, "police-prevention") as (_, police):
        data = await police.data(
            "query($r: ID!) { person(ref: $r) { givenName } }", {"r": police.ref(person_id)}
        )
        assert data["person"] == {"givenName": "Ada"}
    async with fresh.engine.begin() as conn:  # erasure (Art 17): the record goes, the ledger stays
        await conn.execute(delete(objections).where(objections.c.person_id == person_id))
        await conn.execute(delete(people).where(people.c.id == person_id))
    report = await subject_access_report(fresh.engine, person_id, agreements=agreements)
    assert report.held is None
    assert [(d["agreement"], d["fields"]) for d in report.disclosures] == [
        ("police-prevention", ["givenName"])
    ]


async def test_the_report_leaves_out_the_councils_own_reads(
    fresh: Fresh, settings: Settings, signing: SigningKeys, agreements: dict[str, Agreement]
) -> None:
    person_id = fresh.cases.id("cohort_plain")
    async with app_on(fresh, settings, signing, REF_SECRET, FIXED_TODAY, "security-audit") as (_, security):
        response = await security.post(
            "query($p: ID!) { disclosures(personId: $p) { edges { cursor } } }", {"p": str(person_id)}
        )
        assert response.status_code == 200 and "errors" not in response.json()
    async with fresh.engine.connect() as conn:
        rows = (
            await conn.execute(select(audit_disclosures).where(audit_disclosures.c.person_id == person_id))
        ).all()
    assert [r.fields for r in rows] == ["disclosures"]  # the read is in the ledger...
    report = await subject_access_report(fresh.engine, person_id, agreements=agreements)
    assert report.disclosures == []  # ...but is not a disclosure to a recipient
