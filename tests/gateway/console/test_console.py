"""The security console over HTTP, on SQLite and PostgreSQL: who gets in, what every read leaves in the
ledger, what forms need, and that nothing personal reaches a URL or a log."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import Settings, SettingsError
from gateway.console.tables import console_sessions
from gateway.guard.alerts import QUOTA_EXCEEDED, Alert
from gateway.guard.tables import break_glass
from gateway.keys import SigningKeys
from gateway.rights import rights_requests
from policies import load_agreements
from resolvers.models import addresses, households, people
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.gateway.console.conftest import open_break_glass
from tests.support.console import ANALYST_EMAIL, Reader, error_code, recorded_as
from tests.support.partners import Partner

POLICE = "police-prevention"
POLICE_PAGE = "query ConsolePolicePage { people(first: 5) { edges { node { ref givenName postcode } } } }"
PAGES = ("/console/", "/console/events", "/console/alerts", "/console/break-glass", "/console/people",
         "/console/chains", "/console/agreements", "/console/me")  # fmt: skip
FORMS = ("/console/events", "/console/people", "/console/chains", "/console/me", "/console/purpose")


async def _event(engine: AsyncEngine, event_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).one()


async def _console_events(engine: AsyncEngine, acting_user: str) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_events).where(
                audit_events.c.client_id == "console", audit_events.c.acting_user == acting_user
            )
        )
        return list(rows)


async def _disclosed(engine: AsyncEngine, event_id: str) -> dict[int, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_disclosures.c.person_id, audit_disclosures.c.fields).where(
                audit_disclosures.c.event_id == event_id
            )
        )
        return {int(person): fields for person, fields in rows}


async def _police_page(partner: Callable[[str], Partner]) -> tuple[str, list[int]]:
    """A real police request: its event id and the people it disclosed."""
    police = partner(POLICE)
    response = await police.post(POLICE_PAGE)
    assert response.status_code == 200, response.text
    refs = [edge["node"]["ref"] for edge in response.json()["data"]["people"]["edges"]]
    return response.headers["X-Audit-Event-Id"], [police.person_id(ref) for ref in refs]


# -- who gets in ------------------------------------------------------------------------------------


async def test_without_sign_in_every_page_sends_to_the_sign_in_and_every_form_is_refused(
    browser: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    for path in PAGES:
        response = await browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/console/sign-in"
    for path in FORMS:
        response = await browser.post(path, data={"person_id": "1", "csrf": "x"})
        assert response.status_code in (303, 403), path
        assert "auditEvents" not in response.text and "<table" not in response.text
    refused = await browser.post("/console/people", data={"person_id": "1", "csrf": "x"})
    assert refused.status_code == 403 and error_code(refused) == "CONSOLE_SIGN_IN_REQUIRED"


async def test_a_partners_token_opens_nothing(
    browser: httpx.AsyncClient, partner: Callable[[str], Partner]
) -> None:
    """The console reads no bearer or DPoP token: a partner of the security-audit agreement itself,
    with a valid token, is a stranger to it."""
    auditor = partner("security-audit")
    token = await auditor.token()
    headers = auditor.authorization(token)
    for path in PAGES:
        response = await browser.get(path, headers=headers)
        assert response.status_code == 303 and response.headers["location"] == "/console/sign-in", path
    refused = await browser.post("/console/people", data={"person_id": "1"}, headers=headers)
    assert refused.status_code == 403 and error_code(refused) == "CONSOLE_SIGN_IN_REQUIRED"


async def test_someone_outside_the_security_team_is_refused_and_the_attempt_recorded(
    browser: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = len(await _console_events(engine, "housing.officer@council.demo.invalid"))
    refused = await Reader(browser).sign_in_demo("housing")
    assert refused.status_code == 403 and error_code(refused) == "CONSOLE_NOT_A_READER"
    assert (await browser.get("/console/events")).headers["location"] == "/console/sign-in"
    events = await _console_events(engine, "housing.officer@council.demo.invalid")
    assert len(events) == before + 1
    assert (events[-1].outcome, events[-1].error_code, events[-1].operation_name) == (
        "denied", "CONSOLE_NOT_A_READER", "console sign-in"
    )  # fmt: skip


async def test_a_case_reference_is_asked_for_before_anything_is_shown(browser: httpx.AsyncClient) -> None:
    reader = Reader(browser)
    assert (await reader.sign_in_demo()).headers["location"] == "/console/purpose"
    for path in PAGES:
        response = await browser.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/console/purpose", path
    page = await browser.get("/console/purpose")
    empty = await browser.post(
        "/console/purpose",
        data={"csrf": re.findall(r'name="csrf" value="([^"]+)"', page.text)[0], "case_reference": "  "},
    )
    assert empty.status_code == 400
    assert (await reader.give_purpose("INV-1")).headers["location"] == "/console/"
    assert (await browser.get("/console/events")).status_code == 200


async def test_the_session_is_kept_on_the_server_and_signing_out_ends_it(
    browser: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    reader = await Reader(browser).signed_in()
    cookie = browser.cookies.get("__Host-console")
    assert cookie
    async with engine.connect() as conn:
        stored = [row.token_sha256 for row in await conn.execute(select(console_sessions))]
    assert all(cookie not in digest for digest in stored)  # the table holds hashes, not tokens
    signed_out = await reader.post("/console/sign-out")
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/console/sign-in"
    # The old cookie, replayed, opens nothing: the session is gone from the server.
    replay = httpx.AsyncClient(
        transport=browser._transport, base_url="https://testserver", cookies={"__Host-console": cookie}
    )
    async with replay:
        assert (await replay.get("/console/events")).headers["location"] == "/console/sign-in"


async def test_the_cookie_is_secure_httponly_samesite_and_the_pages_lock_everything_down(
    browser: httpx.AsyncClient,
) -> None:
    signed = await Reader(browser).sign_in_demo()
    cookie = signed.headers["set-cookie"].lower()
    for flag in ("secure", "httponly", "samesite=lax", "path=/;"):
        assert flag in cookie
    assert cookie.startswith("__host-console=") and "domain=" not in cookie
    page = await browser.get("/console/purpose")
    policy = page.headers["content-security-policy"]
    assert (
        "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src" not in policy
    )
    assert "<script" not in page.text and " style=" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"


# -- forms need their CSRF token ---------------------------------------------------------------------


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    reader: Reader, engine: AsyncEngine, console_app: Starlette
) -> None:
    entry_id = await open_break_glass(engine)
    for data in (
        {"outcome": "justified", "note": "fine"},
        {"outcome": "justified", "note": "fine", "csrf": "forged"},
    ):
        refused = await reader.post(f"/console/break-glass/{entry_id}/review", data, csrf=False)
        assert refused.status_code == 403 and error_code(refused) == "CONSOLE_CSRF_FAILED"
    async with engine.connect() as conn:
        row = (await conn.execute(select(break_glass).where(break_glass.c.id == entry_id))).one()
    assert row.reviewed_at is None
    # The refusal is itself recorded, naming the reader.
    events = await _console_events(engine, ANALYST_EMAIL)
    assert any(e.outcome == "denied" and e.error_code == "CONSOLE_CSRF_FAILED" for e in events)


async def test_another_sessions_csrf_token_does_not_work(reader: Reader, console_app: Starlette) -> None:
    transport = httpx.ASGITransport(app=console_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as other_browser:
        other = await Reader(other_browser).signed_in()
    refused = await reader.http.post("/console/people", data={"person_id": "1", "csrf": other.csrf})
    assert refused.status_code == 403 and error_code(refused) == "CONSOLE_CSRF_FAILED"


# -- every read is recorded ----------------------------------------------------------------------------


async def test_every_page_is_recorded_before_it_is_shown_as_a_security_audit_read(
    reader: Reader, engine: AsyncEngine
) -> None:
    for path in PAGES:
        page = await reader.get(path)
        assert page.status_code == 200, path
        event_id = recorded_as(page)
        assert event_id is not None, path
        event = await _event(engine, event_id)
        assert event.endpoint == "console" and event.client_id == "console" and event.outcome == "allowed"
        assert (event.agreement_id, event.agreement_version) == (
            "security-audit",
            load_agreements()["security-audit"].version,
        )
        assert event.acting_user == ANALYST_EMAIL
        assert event.case_reference == "INV-2026-0042"
        assert event.officer_issuer == "demo sign-in (gateway demo only)"
        assert event.operation_name.startswith("console ")
    timeline = await _event(engine, recorded_as(await reader.get("/console/events")) or "")
    assert timeline.fields_disclosed == "auditEvents"


async def test_a_persons_history_shows_every_recipient_and_is_recorded_as_a_read_of_that_person(
    reader: Reader, engine: AsyncEngine, partner: Callable[[str], Partner]
) -> None:
    police_event, disclosed = await _police_page(partner)
    person_id = disclosed[0]
    page = await reader.post("/console/people", {"person_id": str(person_id)})
    assert page.status_code == 200
    assert "Metropolitan Police Service" in page.text and police_event in page.text
    read = recorded_as(page)
    assert read is not None
    assert await _disclosed(engine, read) == {person_id: "disclosures"}
    bad = await reader.post("/console/people", {"person_id": "12; DROP"})
    assert bad.status_code == 400 and error_code(bad) == "CONSOLE_BAD_INPUT"


async def test_an_events_page_names_its_people_links_its_trace_and_is_recorded_as_a_read_of_them(
    reader: Reader, engine: AsyncEngine, partner: Callable[[str], Partner]
) -> None:
    police_event, disclosed = await _police_page(partner)
    page = await reader.get(f"/console/events/{police_event}")
    assert page.status_code == 200
    event = await _event(engine, police_event)
    assert f'href="http://127.0.0.1:16686/trace/{event.trace_id}"' in page.text
    assert "ref, givenName, postcode" in page.text and "people-list" in page.text
    for person_id in disclosed:
        assert f'name="person_id" value="{person_id}"' in page.text
    read = recorded_as(page)
    assert read is not None
    assert await _disclosed(engine, read) == {person_id: "disclosures" for person_id in disclosed}
    missing = await reader.get(f"/console/events/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and error_code(missing) == "CONSOLE_NOT_FOUND"


async def test_the_timeline_filters_by_agreement_outcome_officer_and_case(
    reader: Reader, partner: Callable[[str], Partner]
) -> None:
    police_event, _ = await _police_page(partner)
    page = await reader.post(
        "/console/events",
        {"agreement": POLICE, "outcome": "allowed", "officer": "officer-1234", "case": "CASE-2026-0042"},
    )
    assert page.status_code == 200 and police_event in page.text
    rows = re.findall(r'<tr class="outcome-(\w+)">(.*?)</tr>', page.text, re.S)
    assert rows and all(outcome == "allowed" and f"{POLICE}@" in row for outcome, row in rows)
    none = await reader.post("/console/events", {"agreement": POLICE, "case": "no-such-case"})
    assert "No events match." in none.text
    bad = await reader.post("/console/events", {"agreement": "not-an-agreement"})
    assert bad.status_code == 400 and error_code(bad) == "CONSOLE_BAD_INPUT"
    bad_time = await reader.post("/console/events", {"start": "yesterday"})
    assert bad_time.status_code == 400 and error_code(bad_time) == "CONSOLE_BAD_INPUT"


async def test_your_reads_lists_the_readers_own_console_reads(reader: Reader) -> None:
    await reader.get("/console/agreements")
    page = await reader.get("/console/me")
    assert "console agreements" in page.text and "console my reads" not in page.text.split("<tbody>")[0]


# -- the queues ------------------------------------------------------------------------------------------


async def test_a_break_glass_is_reviewed_once_under_the_readers_name_and_recorded(
    reader: Reader, engine: AsyncEngine, console_app: Starlette
) -> None:
    entry_id = await open_break_glass(engine)
    queue = await reader.get("/console/break-glass")
    assert f'id="break-glass-{entry_id}"' in queue.text
    queue_read = recorded_as(queue)
    assert queue_read is not None and (await _disclosed(engine, queue_read))  # the people it names
    missing_note = await reader.post(
        f"/console/break-glass/{entry_id}/review", {"outcome": "justified", "note": ""}
    )
    assert missing_note.status_code == 400
    done = await reader.post(
        f"/console/break-glass/{entry_id}/review", {"outcome": "escalated", "note": "refer to DPO"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/break-glass"
    async with engine.connect() as conn:
        row = (await conn.execute(select(break_glass).where(break_glass.c.id == entry_id))).one()
    assert (row.review_outcome, row.reviewer, row.review_note) == ("escalated", ANALYST_EMAIL, "refer to DPO")
    events = await _console_events(engine, ANALYST_EMAIL)
    review = next(e for e in events if e.operation_name == f"console review break-glass {entry_id}")
    assert review.outcome == "allowed" and await _disclosed(engine, review.id) == {
        row.person_id: "breakGlass"
    }
    again = await reader.post(
        f"/console/break-glass/{entry_id}/review", {"outcome": "justified", "note": "x"}
    )
    assert again.status_code == 409 and error_code(again) == "CONSOLE_CONFLICT"


async def test_an_alert_is_acknowledged_once_and_leaves_the_queue(
    reader: Reader, engine: AsyncEngine, console_app: Starlette
) -> None:
    alert_id = await console_app.state.gateway.guard.alerts.raise_alert(
        Alert(kind=QUOTA_EXCEEDED, client_id="client-x")
    )
    assert alert_id is not None
    queue = await reader.get("/console/alerts")
    assert f'id="alert-{alert_id}"' in queue.text
    done = await reader.post(f"/console/alerts/{alert_id}/acknowledge", {"note": "spoke to the partner"})
    assert done.status_code == 303
    queue = await reader.get("/console/alerts")
    assert f'id="alert-{alert_id}"' not in queue.text and "spoke to the partner" in queue.text
    again = await reader.post(f"/console/alerts/{alert_id}/acknowledge", {"note": ""})
    assert again.status_code == 409 and error_code(again) == "CONSOLE_CONFLICT"
    not_an_alert = await reader.post(f"/console/alerts/{recorded_as(queue)}/acknowledge", {"note": ""})
    assert not_an_alert.status_code == 404 and error_code(not_an_alert) == "CONSOLE_NOT_FOUND"


async def test_chain_verification_reports_every_chain(reader: Reader) -> None:
    page = await reader.post("/console/chains")
    assert page.status_code == 200
    assert re.search(r"All \d+ chains intact\.", page.text), page.text
    assert "The witness agrees" in page.text, page.text.split("<main>")[1].split("</main>")[0]


async def test_the_agreement_register_lists_every_agreement_with_its_review(
    reader: Reader, agreements: dict[str, Any]
) -> None:
    page = await reader.get("/console/agreements")
    for agreement_id, agreement in agreements.items():
        assert f"<td>{agreement_id}</td>" in page.text
        assert agreement.review_due.isoformat() in page.text


async def test_the_overview_draws_its_four_charts_as_svg(
    reader: Reader, partner: Callable[[str], Partner]
) -> None:
    await _police_page(partner)
    page = await reader.get("/console/")
    for chart in ("chart-disclosures", "chart-refusals", "chart-quota", "chart-latency"):
        figure = page.text.split(f'id="{chart}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in figure, chart
    disclosures = page.text.split('id="chart-disclosures"', 1)[1].split("</figure>", 1)[0]
    assert "<rect" in disclosures and POLICE in disclosures


# -- the agreement decides, and only the demo has a local sign-in -------------------------------------------


async def test_the_console_closes_when_the_security_audit_agreement_is_out_of_force(
    reader: Reader, console_settings: Settings, signing: SigningKeys, engine: AsyncEngine
) -> None:
    """Signed in while it was in force, the reader is refused once it is not; nobody signs in then."""
    app = create_app(
        console_settings, engine=engine, signing=signing, ref_secret=REF_SECRET,
        today=lambda: date(2028, 1, 1), console_demo_sign_in=True,
    )  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    cookies = {"__Host-console": reader.http.cookies["__Host-console"]}
    async with httpx.AsyncClient(
        transport=transport, base_url="https://testserver", cookies=cookies
    ) as later:
        refused = await later.get("/console/events")
        assert refused.status_code == 403 and error_code(refused) == "AGREEMENT_EXPIRED"
        assert "<table" not in refused.text
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as newcomer:
        signed = await Reader(newcomer).sign_in_demo()
        assert signed.status_code == 403 and error_code(signed) == "AGREEMENT_EXPIRED"
        assert (await newcomer.get("/console/events")).headers["location"] == "/console/sign-in"
    await app.state.gateway.ledger.close()


async def test_the_demo_sign_in_exists_only_in_the_demo(
    console_settings: Settings, signing: SigningKeys, engine: AsyncEngine
) -> None:
    public = console_settings.model_copy(update={"issuer": "https://gateway.council.example"})
    with pytest.raises(SettingsError, match="demo"):
        create_app(public, engine=engine, signing=signing, ref_secret=REF_SECRET, console_demo_sign_in=True)
    app = create_app(
        console_settings, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://testserver"
    ) as client:
        page = await client.get("/console/sign-in")
        assert page.status_code == 503 and error_code(page) == "CONSOLE_NOT_CONFIGURED"
        forced = await client.post("/console/sign-in/demo", data={"identity": "analyst", "csrf": "x"})
        assert forced.status_code == 404
        assert (await client.get("/console/events")).headers["location"] == "/console/sign-in"
    await app.state.gateway.ledger.close()


# -- nothing personal in URLs, pages or logs ----------------------------------------------------


async def test_no_url_page_or_log_line_carries_a_persons_data(
    reader: Reader, engine: AsyncEngine, partner: Callable[[str], Partner], caplog: pytest.LogCaptureFixture
) -> None:
    police_event, disclosed = await _police_page(partner)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    people.c.given_name, people.c.family_name, people.c.date_of_birth, addresses.c.postcode
                )
                .select_from(
                    people.join(households, households.c.id == people.c.household_id).join(
                        addresses, addresses.c.id == households.c.address_id
                    )
                )
                .where(people.c.id.in_(disclosed))
            )
        ).all()
    personal = {
        value
        for row in rows
        for value in (row.given_name, row.family_name, str(row.date_of_birth), row.postcode)
        if value
    }
    assert personal
    caplog.set_level(logging.DEBUG, logger="gateway")
    caplog.set_level(logging.INFO)
    pages = [await reader.get(path) for path in PAGES]
    pages.append(await reader.get(f"/console/events/{police_event}"))
    pages.append(await reader.post("/console/people", {"person_id": str(disclosed[0])}))
    pages.append(await reader.post("/console/events", {"agreement": POLICE}))
    pages.append(await reader.post("/console/chains"))
    for page in pages:
        assert page.status_code == 200
        urls = re.findall(r'(?:href|action)="([^"]*)"', page.text)
        assert urls
        for url in urls:
            assert not any(value.lower() in url.lower() for value in personal), url
            assert "person_id" not in url and "?" not in url
        # The console shows the ledger, never a person's record: not a name, a date of birth or a postcode.
        assert not any(f">{value}<" in page.text or f" {value} " in page.text for value in personal)
    # The gateway's own lines at every level, anything else from INFO up (a driver's DEBUG lines quote
    # bound values by design, and production logs at INFO).
    logged = "\n".join(
        record.getMessage() + " " + str(record.__dict__)
        for record in caplog.records
        if record.name.startswith("gateway") or record.levelno >= logging.INFO
    )
    for value in [*personal, ANALYST_EMAIL, "INV-2026-0042"]:
        assert value not in logged


async def test_an_agreements_evidence_pack_downloads_from_the_register_and_is_recorded(
    reader: Reader, engine: AsyncEngine, partner: Callable[[str], Partner]
) -> None:
    await _police_page(partner)
    register = await reader.get("/console/agreements")
    assert f'href="/console/agreements/{POLICE}/evidence"' in register.text
    before = len(await _console_events(engine, ANALYST_EMAIL))
    pack = await reader.get(f"/console/agreements/{POLICE}/evidence")
    assert pack.status_code == 200
    assert pack.headers["content-disposition"].startswith(f'attachment; filename="evidence-{POLICE}-')
    assert "Metropolitan Police Service: police-prevention" in pack.text and 'id="months"' in pack.text
    events = await _console_events(engine, ANALYST_EMAIL)
    assert len(events) == before + 1 and events[-1].operation_name == f"console evidence {POLICE}"
    missing = await reader.get("/console/agreements/no-such-agreement/evidence")
    assert missing.status_code == 404 and error_code(missing) == "CONSOLE_NOT_FOUND"


async def test_a_persons_history_lists_their_own_requests(reader: Reader, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        person = (await conn.execute(select(people.c.id).order_by(people.c.id.desc()).limit(1))).scalar_one()
    async with engine.begin() as conn:
        await conn.execute(
            rights_requests.insert().values(
                id=uuid.uuid4().hex, person_id=person, kind="access", agreement_id=None,
                received_on=date(2026, 11, 20), requested_by="subject", legal_basis="UK GDPR Art 15",
                recorded_at=datetime.now(UTC), recorded_by="dpo@council.test.invalid", status="open",
            )
        )  # fmt: skip
    try:
        page = await reader.post("/console/people", {"person_id": str(person)})
        table = page.text.split('id="rights-requests"', 1)[1].split("</table>", 1)[0]
        assert "2026-11-20" in table and "access" in table and "dpo@council.test.invalid" in table
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(rights_requests).where(rights_requests.c.person_id == person))
