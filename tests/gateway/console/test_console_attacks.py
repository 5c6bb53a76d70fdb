"""The console attacked from outside, on SQLite and PostgreSQL: sessions, CSRF, races between readers,
hostile text, the ledger failing, cross-site links. Written by an outside tester against the first
version of the console; each test that failed then is a defence now (the findings are in the history)."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import Settings
from gateway.console.tables import alert_acknowledgements, console_sessions
from gateway.guard.alerts import QUOTA_EXCEEDED, Alert
from gateway.guard.tables import break_glass
from gateway.keys import SigningKeys
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.gateway.console.conftest import open_break_glass
from tests.support.console import ANALYST_EMAIL, Reader, error_code, recorded_as
from tests.support.partners import Partner

COOKIE = "__Host-console"
PAGES = ("/console/", "/console/events", "/console/alerts", "/console/break-glass", "/console/people",
         "/console/chains", "/console/agreements", "/console/me")  # fmt: skip
STRICT = ("content-security-policy", "cache-control", "x-frame-options", "referrer-policy")


def new_browser(app: Starlette, *, raise_errors: bool = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors),
        base_url="https://testserver",
    )


async def _console_events(engine: AsyncEngine, **where: Any) -> list[Any]:
    stmt = select(audit_events).where(audit_events.c.client_id == "console")
    for name, value in where.items():
        stmt = stmt.where(getattr(audit_events.c, name) == value)
    async with engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def _alert(app: Starlette) -> str:
    alert_id = await app.state.gateway.guard.alerts.raise_alert(
        Alert(kind=QUOTA_EXCEEDED, client_id=f"client-{uuid.uuid4().hex[:8]}")
    )
    assert alert_id is not None
    return alert_id


# == what the outside tester found, now defended ==================================================


async def test_a_note_with_a_nul_is_refused_before_anything_is_recorded(
    console_app: Starlette, engine: AsyncEngine
) -> None:
    """A NUL in an acknowledgement's note: 400 expected. PostgreSQL: the insert fails after the ledger
    recorded the acknowledgement as allowed -> unhandled 500 without the console's security headers.
    SQLite: the NUL is stored and later rendered raw."""
    async with new_browser(console_app, raise_errors=False) as client:
        reader = await Reader(client).signed_in("INV-NUL")
        alert_id = await _alert(console_app)
        answer = await reader.post(f"/console/alerts/{alert_id}/acknowledge", {"note": "a\x00b"})
        allowed = await _console_events(
            engine, operation_name=f"console acknowledge alert {alert_id}", outcome="allowed"
        )
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(alert_acknowledgements).where(alert_acknowledgements.c.event_id == alert_id)
                )
            ).first()
        assert (answer.status_code, error_code(answer), len(allowed), stored) == (
            400,
            "CONSOLE_BAD_INPUT",
            0,
            None,
        ), (answer.status_code, answer.text[:200], len(allowed), stored)


async def test_a_review_note_with_a_nul_is_refused_before_anything_is_recorded(
    console_app: Starlette, engine: AsyncEngine
) -> None:
    async with new_browser(console_app, raise_errors=False) as client:
        reader = await Reader(client).signed_in("INV-NUL2")
        entry_id = await open_break_glass(engine)
        answer = await reader.post(
            f"/console/break-glass/{entry_id}/review", {"outcome": "justified", "note": "ok\x00"}
        )
        allowed = await _console_events(
            engine, operation_name=f"console review break-glass {entry_id}", outcome="allowed"
        )
        async with engine.connect() as conn:
            row = (await conn.execute(select(break_glass).where(break_glass.c.id == entry_id))).one()
        assert (answer.status_code, len(allowed), row.reviewed_at) == (400, 0, None), (
            answer.status_code, answer.text[:200], len(allowed), row.review_note,
        )  # fmt: skip


@pytest.mark.parametrize("start", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_time_filter_at_the_edge_of_the_calendar_is_bad_input(
    console_app: Starlette, start: str
) -> None:
    async with new_browser(console_app, raise_errors=False) as client:
        reader = await Reader(client).signed_in("INV-OVERFLOW")
        answer = await reader.post("/console/events", {"start": start})
        missing = [name for name in STRICT if name not in answer.headers]
        assert (answer.status_code, error_code(answer), missing) == (400, "CONSOLE_BAD_INPUT", []), (
            answer.status_code, answer.headers.get("content-type"), answer.text[:80], missing,
        )  # fmt: skip


async def test_two_readers_acknowledging_at_once_make_one_acknowledgement_and_one_refusal(
    console_app: Starlette, engine: AsyncEngine
) -> None:
    async with new_browser(console_app) as one, new_browser(console_app) as two:
        first = await Reader(one).signed_in("INV-RACE-1")
        second = await Reader(two).signed_in("INV-RACE-2")
        doubled = []
        for _ in range(5):
            alert_id = await _alert(console_app)
            answers = await asyncio.gather(
                first.post(f"/console/alerts/{alert_id}/acknowledge", {"note": "mine"}),
                second.post(f"/console/alerts/{alert_id}/acknowledge", {"note": "no, mine"}),
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [303, 409], statuses
            allowed = await _console_events(
                engine, operation_name=f"console acknowledge alert {alert_id}", outcome="allowed"
            )
            if len(allowed) != 1:
                doubled.append(alert_id)
    # One acknowledgement was made each time; the ledger must say so once.
    assert not doubled, f"{len(doubled)} of 5 acknowledgements recorded as allowed twice"


async def test_two_readers_reviewing_at_once_make_one_review_and_one_refusal(
    console_app: Starlette, engine: AsyncEngine
) -> None:
    async with (
        new_browser(console_app, raise_errors=False) as one,
        new_browser(console_app, raise_errors=False) as two,
    ):
        first = await Reader(one).signed_in("INV-RACE-3")
        second = await Reader(two).signed_in("INV-RACE-4")
        entry_id = await open_break_glass(engine)
        answers = await asyncio.gather(
            first.post(f"/console/break-glass/{entry_id}/review", {"outcome": "justified", "note": "a"}),
            second.post(f"/console/break-glass/{entry_id}/review", {"outcome": "escalated", "note": "b"}),
        )
    statuses = sorted(a.status_code for a in answers)
    allowed = await _console_events(
        engine, operation_name=f"console review break-glass {entry_id}", outcome="allowed"
    )
    async with engine.connect() as conn:
        row = (await conn.execute(select(break_glass).where(break_glass.c.id == entry_id))).one()
    assert statuses == [303, 409], statuses
    assert len(allowed) == 1, [(e.case_reference, e.id) for e in allowed]
    assert row.review_note in ("a", "b")


async def test_actions_are_recorded_with_the_status_sent(console_app: Starlette, engine: AsyncEngine) -> None:
    async with new_browser(console_app) as client:
        reader = Reader(client)
        signed = await reader.sign_in_demo()
        await reader.give_purpose("INV-STATUS")
        alert_id = await _alert(console_app)
        acked = await reader.post(f"/console/alerts/{alert_id}/acknowledge", {"note": ""})
    assert signed.status_code == 303 and acked.status_code == 303
    [event] = await _console_events(engine, operation_name=f"console acknowledge alert {alert_id}")
    assert event.http_status == 303, event.http_status


async def test_changing_the_case_reference_is_recorded(console_app: Starlette, engine: AsyncEngine) -> None:
    async with new_browser(console_app) as client:
        reader = await Reader(client).signed_in("INV-PURPOSE-A")
        await reader.get("/console/agreements")
        changed = await reader.give_purpose("INV-PURPOSE-B")
        assert changed.status_code == 303
    purpose_events = [e for e in await _console_events(engine, acting_user=ANALYST_EMAIL)
                      if e.operation_name == "console purpose" and e.outcome == "allowed"]  # fmt: skip
    assert purpose_events, "no ledger event for a change of purpose"


async def test_no_purpose_is_kept_while_the_ledger_cannot_be_written(
    console_settings: Settings, signing: SigningKeys, engine: AsyncEngine
) -> None:
    app = create_app(
        console_settings, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY,
        console_demo_sign_in=True,
    )  # fmt: skip
    async with new_browser(app) as client:
        reader = await Reader(client).signed_in("INV-LEDGER-UP")
        await app.state.gateway.ledger.close()
        # Every page refuses (holds) ...
        for path in PAGES:
            page = await client.get(path)
            assert page.status_code == 503 and error_code(page) == "AUDIT_UNAVAILABLE", path
            assert "<table" not in page.text
        # ... but the action that decides what every later event says is taken unrecorded.
        changed = await reader.give_purpose("INV-LEDGER-DOWN")
        assert changed.status_code == 503, changed.status_code


async def test_a_reader_the_agreement_no_longer_admits_is_out_at_the_next_page(
    console_app: Starlette, console_settings: Settings, signing: SigningKeys, engine: AsyncEngine,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The security-audit agreement is changed (the analyst's group taken out) and the gateway
    restarted: the analyst's session, made under the old rule, still reads everything."""
    async with new_browser(console_app) as client:
        await Reader(client).signed_in("INV-ADMIT")
        cookie = client.cookies.get(COOKIE)
    source = Path(console_settings.agreements_dir)
    changed = tmp_path / "agreements"
    shutil.copytree(source, changed)
    audit = changed / "security-audit.yaml"
    audit.write_text(audit.read_text().replace("any_of: [information-security]", "any_of: [dpo-office]"))
    app = create_app(
        console_settings.model_copy(update={"agreements_dir": changed}), engine=engine, signing=signing,
        ref_secret=REF_SECRET, today=lambda: FIXED_TODAY, console_demo_sign_in=True,
    )  # fmt: skip
    try:
        async with new_browser(app) as fresh:
            refused = await Reader(fresh).sign_in_demo()
            assert refused.status_code == 403 and error_code(refused) == "CONSOLE_NOT_A_READER"
        async with new_browser(app) as old:
            old.cookies.set(COOKIE, cookie, domain="testserver.local", path="/console")
            page = await old.get("/console/events")
            assert page.status_code != 200, "a reader the agreement refuses still reads the timeline"
    finally:
        await app.state.gateway.ledger.close()


@pytest.mark.parametrize("case", ["INV-\x7fDEL", "INV-\u202e1234-TNEDICNI", "INV-\u200b1"])
async def test_a_case_reference_with_control_or_format_characters_is_refused(
    console_app: Starlette, engine: AsyncEngine, case: str
) -> None:
    """Partners' X-Case-Reference must be printable ASCII; the console's takes DEL, bidi overrides and
    zero-width characters. DEL: the page shows one reference, the ledger holds another."""
    async with new_browser(console_app) as client:
        reader = Reader(client)
        await reader.sign_in_demo()
        given = await reader.give_purpose(case)
        assert given.status_code == 400, "accepted"
        if given.status_code == 303:
            page = await reader.get("/console/agreements")
            event = (await _console_events(engine, id=recorded_as(page)))[0]
            shown = re.search(r'<span class="case">case (.*?) ·', page.text)
            assert shown is not None
            assert shown.group(1) == event.case_reference, (shown.group(1), event.case_reference)


async def test_a_cross_site_link_records_nothing_until_the_reader_follows_it(
    reader: Reader, engine: AsyncEngine, partner: Callable[[str], Partner]
) -> None:
    """A link on another site (top-level GET: the Lax cookie goes along) makes the analyst's browser
    open an event page, which the ledger records as the analyst reading those people's history."""
    police = partner("police-prevention")
    answer = await police.post("query P { people(first: 2) { edges { node { ref } } } }")
    police_event = answer.headers["X-Audit-Event-Id"]
    page = await reader.http.get(
        f"/console/events/{police_event}",
        headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
    )
    read = recorded_as(page)
    disclosed = []
    if read:
        async with engine.connect() as conn:
            disclosed = list(
                await conn.execute(select(audit_disclosures).where(audit_disclosures.c.event_id == read))
            )
    assert not disclosed, f"{len(disclosed)} people recorded as read on a cross-site navigation"


# == what held ==========================================================================================


async def test_session_fixation_tamper_replay_and_expiry(
    browser: httpx.AsyncClient, console_app: Starlette, engine: AsyncEngine
) -> None:
    page = await browser.get("/console/sign-in")
    before = browser.cookies.get(COOKIE)
    assert before and page.status_code == 200
    reader = Reader(browser)
    await reader.sign_in_demo()
    await reader.give_purpose("INV-FIX")
    after = browser.cookies.get(COOKIE)
    assert after != before
    # The pre-sign-in cookie opens nothing.
    async with new_browser(console_app) as planted:
        planted.cookies.set(COOKIE, before, domain="testserver.local", path="/console")
        assert (await planted.get("/console/events")).headers["location"] == "/console/sign-in"
        # A tampered cookie (a bit of the signature flipped, or the payload changed) opens nothing.
        _, _, rest = after.partition(".")
        for forged in (
            after[:-2] + ("A" if after[-2] != "A" else "B") + after[-1],
            "eyJzaWQiOiAieCJ9" + "." + rest,
        ):
            planted.cookies.set(COOKIE, forged, domain="testserver.local", path="/console")
            assert (await planted.get("/console/events")).status_code == 303
    # An old session's CSRF token does not sign out a new session.
    old_csrf = reader.csrf
    # Idle too long: seen_at pushed back past console_idle_minutes.
    async with engine.begin() as conn:
        await conn.execute(update(console_sessions).where(console_sessions.c.case_reference == "INV-FIX")
                           .values(seen_at=int(time.time()) - 31 * 60))  # fmt: skip
    assert (await browser.get("/console/events")).headers["location"] == "/console/sign-in"
    refused = await browser.post("/console/people", data={"csrf": old_csrf, "person_id": "1"})
    assert refused.status_code == 403 and error_code(refused) == "CONSOLE_SIGN_IN_REQUIRED"
    # Past its lifetime while active.
    await reader.sign_in_demo()
    await reader.give_purpose("INV-FIX-2")
    async with engine.begin() as conn:
        await conn.execute(update(console_sessions).where(console_sessions.c.case_reference == "INV-FIX-2")
                           .values(expires_at=int(time.time()) - 1))  # fmt: skip
    assert (await browser.get("/console/")).headers["location"] == "/console/sign-in"
    await reader.sign_in_demo()
    await reader.give_purpose("INV-FIX-3")
    refused = await browser.post("/console/sign-out", data={"csrf": old_csrf})
    assert refused.status_code == 403 and error_code(refused) == "CONSOLE_CSRF_FAILED"
    assert (await browser.get("/console/")).status_code == 200


async def test_login_csrf_and_the_sign_in_token_is_not_a_session_token(
    console_app: Starlette,
) -> None:
    async with new_browser(console_app) as victim, new_browser(console_app) as attacker:
        page = await attacker.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        # Cross-site POST: the Lax cookie stays behind; the attacker's own token is not the victim's.
        forced = await victim.post("/console/sign-in/demo", data={"csrf": token, "identity": "analyst"})
        assert forced.status_code == 403 and error_code(forced) == "CONSOLE_CSRF_FAILED"
        await victim.get("/console/sign-in")
        forced = await victim.post("/console/sign-in/demo", data={"csrf": token, "identity": "analyst"})
        assert forced.status_code == 403
        # The sign-in page's token does not pass as the session's CSRF token.
        reader = Reader(victim)
        sign_in_page = await victim.get("/console/sign-in")
        sign_in_token = re.search(r'name="csrf" value="([^"]+)"', sign_in_page.text).group(1)  # type: ignore[union-attr]
        await victim.post("/console/sign-in/demo", data={"csrf": sign_in_token, "identity": "analyst"})
        await reader.give_purpose("INV-LOGIN")
        refused = await victim.post("/console/chains", data={"csrf": sign_in_token})
        assert refused.status_code == 403 and error_code(refused) == "CONSOLE_CSRF_FAILED"
        # The CSRF token of a refusal of sign-out leaves the session alive.
        assert (await victim.post("/console/sign-out", data={"csrf": "wrong"})).status_code == 403
        assert (await victim.get("/console/")).status_code == 200


async def test_sign_out_with_a_non_form_body_is_refused_not_a_500(console_app: Starlette) -> None:
    async with new_browser(console_app, raise_errors=False) as client:
        await Reader(client).signed_in("INV-SIGNOUT")
        answer = await client.post("/console/sign-out", content=b"{}", headers={"content-type": "text/plain"})
        missing = [name for name in STRICT if name not in answer.headers]
        assert (answer.status_code, missing) == (415, []), (answer.status_code, answer.text[:60], missing)


async def test_forms_duplicate_huge_and_not_utf8(reader: Reader) -> None:
    dup = await reader.http.post(
        "/console/people", content=f"csrf={reader.csrf}&csrf=x&person_id=1".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert dup.status_code == 400
    huge = await reader.http.post(
        "/console/events", content=f"csrf={reader.csrf}&client=".encode() + b"a" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert huge.status_code == 413
    many = "&".join(f"f{i}=1" for i in range(60))
    assert (await reader.http.post("/console/events", content=f"csrf={reader.csrf}&{many}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"})).status_code == 400  # fmt: skip
    raw = await reader.http.post(
        "/console/events", content=f"csrf={reader.csrf}&client=".encode() + b"\xff\xfe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert raw.status_code == 400
    multipart = await reader.http.post("/console/events", files={"csrf": (None, reader.csrf)})
    assert multipart.status_code == 415
    ctl = await reader.post("/console/events", {"client": "a\x00b"})
    assert ctl.status_code == 400


async def test_static_traversal(reader: Reader) -> None:
    for path in ("/console/static/../pages.py", "/console/static/%2e%2e/pages.py",
                 "/console/static/..%2fpages.py", "/console/static/%2e%2e%2f%2e%2e%2fconfig.py",
                 "/console/static//etc/passwd", "/console/static/..%5cpages.py"):  # fmt: skip
        answer = await reader.http.get(path)
        assert answer.status_code in (303, 404), (path, answer.status_code)
        assert "import" not in answer.text and "root:" not in answer.text
    css = await reader.http.get("/console/static/console.css")
    assert css.status_code == 200 and "default-src 'none'" in css.headers["content-security-policy"]


async def test_stored_html_is_escaped_everywhere(
    console_app: Starlette, engine: AsyncEngine, partner: Callable[[str], Partner]
) -> None:
    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    hub = partner("family-hub-outreach")
    answer = await hub.post(
        "query H { people(first: 1) { edges { node { ref } } } }",
        headers={"X-Acting-User": "off" + evil[:40], "X-Case-Reference": "C" + evil},
    )
    hub_event = answer.headers.get("X-Audit-Event-Id")
    print("HUB", answer.status_code, hub_event)
    async with new_browser(console_app) as one, new_browser(console_app) as two:
        writer = await Reader(one).signed_in("R" + evil)
        alert_id = await _alert(console_app)
        await writer.post(f"/console/alerts/{alert_id}/acknowledge", {"note": evil})
        entry_id = await open_break_glass(engine)
        await writer.post(f"/console/break-glass/{entry_id}/review", {"outcome": "justified", "note": evil})
        other = await Reader(two).signed_in()
        pages = [await other.get(p) for p in PAGES]
        pages.append(await other.post("/console/events", {"case": "R" + evil}))
        if hub_event:
            pages.append(await other.get(f"/console/events/{hub_event}"))
        pages.append(await writer.get("/console/me"))
        for page in pages:
            assert page.status_code == 200
            assert "<script" not in page.text and "<img" not in page.text and " style=" not in page.text
            assert "onerror=alert" not in page.text.replace("onerror=alert(2)&gt;", "")
            for name in STRICT:
                assert name in page.headers
            urls = re.findall(r'(?:href|action|src)="([^"]*)"', page.text)
            assert all(u.startswith(("/console/", "http://127.0.0.1:16686/trace/")) for u in urls), urls


async def test_ids_that_are_not_hex_or_not_theirs(reader: Reader, engine: AsyncEngine) -> None:
    page = await reader.get("/console/agreements")
    own_event = recorded_as(page)
    assert own_event is not None
    paths = (
        f"/console/alerts/{own_event}/acknowledge",
        "/console/alerts/../../sign-out/acknowledge",
        f"/console/alerts/{own_event.upper()}/acknowledge",
        f"/console/alerts/{own_event}%0a/acknowledge",
        f"/console/break-glass/{own_event}/review",
        "/console/break-glass/x' OR '1'='1/review",
    )
    for path in paths:
        answer = await reader.post(path, {"outcome": "justified", "note": "n"})
        assert answer.status_code in (404, 409), (path, answer.status_code)
    async with engine.connect() as conn:
        assert (await conn.execute(select(alert_acknowledgements).where(
            alert_acknowledgements.c.event_id == own_event))).first() is None  # fmt: skip
    for path in ("/console/events/zz", f"/console/events/{uuid.uuid4().hex}", f"/console/events/{own_event}"):
        answer = await reader.get(path)
        assert answer.status_code in (200, 404)


async def test_nothing_is_done_or_shown_while_the_ledger_cannot_be_written(
    console_settings: Settings, signing: SigningKeys, engine: AsyncEngine
) -> None:
    app = create_app(
        console_settings, engine=engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY,
        console_demo_sign_in=True,
    )  # fmt: skip
    async with new_browser(app) as client, new_browser(app) as later:
        reader = await Reader(client).signed_in("INV-DOWN")
        alert_id = await _alert(app)
        entry_id = await open_break_glass(engine)
        await app.state.gateway.ledger.close()
        acked = await reader.post(f"/console/alerts/{alert_id}/acknowledge", {"note": "x"})
        reviewed = await reader.post(
            f"/console/break-glass/{entry_id}/review", {"outcome": "justified", "note": "x"}
        )
        person = await reader.post("/console/people", {"person_id": "1"})
        assert [a.status_code for a in (acked, reviewed, person)] == [503, 503, 503]
        assert "<table" not in person.text
        async with engine.connect() as conn:
            assert (
                await conn.execute(
                    select(alert_acknowledgements).where(alert_acknowledgements.c.event_id == alert_id)
                )
            ).first() is None
            assert (await conn.execute(select(break_glass.c.reviewed_at).where(
                break_glass.c.id == entry_id))).scalar_one() is None  # fmt: skip
        signed = await Reader(later).sign_in_demo()
        assert signed.status_code == 503 and not later.cookies.get(COOKIE, "").startswith("eyJzaWQi")
        assert (await later.get("/console/")).status_code == 303


async def test_an_event_page_is_recorded_with_the_fields_it_shows(
    reader: Reader, engine: AsyncEngine, partner: Callable[[str], Partner]
) -> None:
    """The event page shows the people an event disclosed and records each as a `disclosures` read,
    but the event's own fields_disclosed says only auditEvents (a person-history page says disclosures)."""
    police = partner("police-prevention")
    answer = await police.post("query P { people(first: 2) { edges { node { ref } } } }")
    page = await reader.get(f"/console/events/{answer.headers['X-Audit-Event-Id']}")
    [event] = await _console_events(engine, id=recorded_as(page))
    assert "disclosures" in event.fields_disclosed.split(","), event.fields_disclosed
