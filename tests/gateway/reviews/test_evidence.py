"""The evidence pack for an agreement review, on SQLite and PostgreSQL: its figures held to the raw
ledger rows counted here, its diff to the versions kept, its HTML to what a reviewer reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import time_text
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.reviews import agreement_versions, evidence, remember_versions, render_html
from gateway.reviews.evidence import digest
from policies import Agreement
from resolvers.models import objections
from tests.support.partners import Partner

POLICE = "police-prevention"
PAGE = "query EvidencePage { people(first: 4) { edges { node { ref givenName postcode } } } }"


@pytest.fixture
async def older_version(engine: AsyncEngine, agreements: dict[str, Agreement]) -> AsyncIterator[str]:
    """The police agreement as it stood a year ago: version 2, without postcode. Removed afterwards."""
    police = agreements[POLICE]
    text = police.text.replace(f"version: {police.version}", "version: 2").replace(", postcode]", "]")
    assert text != police.text
    async with engine.begin() as conn:
        await conn.execute(
            agreement_versions.insert().values(
                agreement_id=POLICE, sha256=digest(text), version=2, text=text,
                first_seen_at=datetime.now(UTC) - timedelta(days=365),
            )
        )  # fmt: skip
    yield digest(text)
    async with engine.begin() as conn:
        await conn.execute(delete(agreement_versions).where(agreement_versions.c.sha256 == digest(text)))


async def test_the_pack_counts_what_the_ledger_holds(
    local_partner: Callable[[str], Partner], engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    police = local_partner(POLICE)
    for _ in range(3):
        assert (await police.post(PAGE)).status_code == 200
    refused = await police.post(PAGE, purpose=False)
    assert refused.status_code in (400, 403)
    today = datetime.now(UTC).date()
    pack = await evidence(engine, agreements[POLICE], start=today - timedelta(days=1), end=today)

    since = time_text(datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=1))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(audit_events).where(
                    audit_events.c.agreement_id == POLICE, audit_events.c.occurred_at >= since
                )
            )
        ).all()
        people = (
            await conn.execute(
                select(audit_events.c.occurred_at, audit_disclosures.c.person_id)
                .select_from(
                    audit_disclosures.join(audit_events, audit_events.c.id == audit_disclosures.c.event_id)
                )
                .where(audit_events.c.agreement_id == POLICE, audit_events.c.occurred_at >= since)
            )
        ).all()
    graphql = [r for r in rows if r.endpoint == "graphql"]
    months = {r.occurred_at[:7] for r in graphql}
    expected_months = [
        {
            "month": m,
            "requests": sum(r.request_count or 1 for r in graphql if r.occurred_at[:7] == m),
            "answered": sum(1 for r in graphql if r.occurred_at[:7] == m and r.outcome == "allowed"),
            "people": len({p for t, p in people if t[:7] == m}),
            "disclosures": sum(1 for t, _ in people if t[:7] == m),
        }
        for m in sorted(months)
    ]
    assert pack["months"] == expected_months
    assert sum(m["answered"] for m in pack["months"]) >= 3
    fields = Counter(f for r in graphql if r.outcome == "allowed" for f in r.fields_disclosed.split(",") if f)
    assert pack["fields_disclosed"] == dict(sorted(fields.items(), key=lambda item: (-item[1], item[0])))
    assert pack["fields_disclosed"]["postcode"] >= 3
    refusals = Counter()
    for r in rows:
        if r.outcome == "denied" and r.error_code != "use_dpop_nonce":
            refusals[r.error_code or "(none)"] += r.request_count or 1
    assert pack["refusals"] == dict(sorted(refusals.items(), key=lambda item: (-item[1], item[0])))
    assert pack["refusals"]["PURPOSE_CONTEXT_REQUIRED"] >= 1
    assert (
        pack["agreement"]["version"] == agreements[POLICE].version
        and pack["period"]["to"] == today.isoformat()
    )
    # Objections in effect however they were recorded (the seeded ones came from the case system).
    async with engine.connect() as conn:
        objected = (
            await conn.execute(
                select(func.count())
                .select_from(objections)
                .where(objections.c.agreement_id.in_((POLICE, "*")))
            )
        ).scalar_one()
    assert pack["in_effect_now"]["objections"] == objected
    assert pack["in_effect_now"]["objections_honoured"] is False


async def test_the_changes_since_the_period_began_are_a_diff_of_the_kept_versions(
    engine: AsyncEngine, agreements: dict[str, Agreement], older_version: str
) -> None:
    await remember_versions(engine, agreements)  # as every start-up does
    today = datetime.now(UTC).date()
    pack = await evidence(engine, agreements[POLICE], start=today - timedelta(days=30), end=today)
    changes = pack["changes"]
    assert changes["compared_with"] == {"version": 2, "sha256": older_version, "in_force_at_start": True}
    assert not changes["unchanged"]
    assert "-version: 2" in changes["diff"] and f"+version: {agreements[POLICE].version}" in changes["diff"]
    assert any(line.startswith("+fields:") and "postcode" in line for line in changes["diff"])
    assert [v["version"] for v in changes["history"]][:1] == [2]
    # Looking from before the older version was kept, there is nothing to compare with but it.
    old = await evidence(engine, agreements[POLICE], start=today - timedelta(days=800), end=today)
    assert old["changes"]["compared_with"]["in_force_at_start"] is False


async def test_the_same_version_with_another_text_is_called_out(
    engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    police = agreements[POLICE]
    sneaky = police.text + "\n# edited without a version bump\n"
    async with engine.begin() as conn:
        await conn.execute(
            agreement_versions.insert().values(
                agreement_id=POLICE, sha256=digest(sneaky), version=police.version, text=sneaky,
                first_seen_at=datetime.now(UTC) - timedelta(days=2),
            )
        )  # fmt: skip
    try:
        await remember_versions(engine, agreements)
        today = datetime.now(UTC).date()
        pack = await evidence(engine, police, start=today, end=today)
        assert pack["changes"]["changed_without_version_bump"] == [police.version]
        page = render_html(pack, council="Westminster City Council")
        assert 'id="unbumped"' in page
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                delete(agreement_versions).where(agreement_versions.c.sha256 == digest(sneaky))
            )


class _Ids(HTMLParser):
    """The text inside each element with an id."""

    VOID = frozenset({"br", "meta", "link", "input", "img", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        found = dict(attrs).get("id")
        if found:
            self.ids[found] = ""
        self._open.append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, open_id in self._open:
            if open_id:
                self.ids[open_id] += data


async def test_the_html_pack_says_what_the_json_says(
    local_partner: Callable[[str], Partner],
    engine: AsyncEngine,
    agreements: dict[str, Agreement],
    older_version: str,
) -> None:
    assert (await local_partner(POLICE).post(PAGE)).status_code == 200
    today = datetime.now(UTC).date()
    pack = await evidence(engine, agreements[POLICE], start=today - timedelta(days=30), end=today)
    page = _Ids()
    page.feed(render_html(pack, council="Westminster City Council"))
    assert page.ids["period"] == f"{pack['period']['from']} to {pack['period']['to']}"
    for month in pack["months"]:
        assert month["month"] in page.ids["months"] and str(month["people"]) in page.ids["months"]
    assert "postcode" in page.ids["fields"] and "+fields:" in page.ids["diff"]
