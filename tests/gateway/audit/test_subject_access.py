"""Subject access reports (UK GDPR Art 15): what the council holds about a person, and every
disclosure of it, checked against the raw rows and the ledger. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import (
    UnknownPersonError,
    parse_time_text,
    render_html,
    render_text,
    subject_access_report,
)
from gateway.audit.tables import audit_disclosures, audit_events
from policies import Agreement
from resolvers.models import OUTCOMES
from tests.conftest import FIXED_TODAY
from tests.support.oracle import Oracle
from tests.support.partners import PURPOSE, Partner
from tests.support.population import EdgeCases

PartnerFactory = Callable[[str], Partner]
POLICE = "police-prevention"
DISCLOSURE_KEYS = {"time", "partner", "agreement", "agreement_version", "purpose", "lawful_basis", "fields"}


def _day(value: Any) -> str:
    """An ISO date from whatever the raw SELECT gave (SQLite hands dates back as text)."""
    return value.isoformat() if isinstance(value, date) else date.fromisoformat(str(value)).isoformat()


def _expected_held(
    oracle: Oracle, cases: EdgeCases, key: str, agreements: dict[str, Agreement]
) -> dict[str, Any]:
    person = oracle.people[cases.id(key)]
    address, assessment = person.address, person.assessment
    return {
        "given_name": person.given_name,
        "family_name": person.family_name,
        "date_of_birth": person.date_of_birth.isoformat(),
        "address": {part: address[part] for part in ("line1", "line2", "town", "postcode")},
        "uprn": address["uprn"],
        "phone": person.phone,
        "email": person.email,
        "school": person.school,
        "protected_address": person.protected,
        "restriction_of_processing": person.restricted,
        "retention_until": person.retention_until.isoformat(),
        "legal_hold": cases.case(key).legal_hold,
        "records": [],  # the edge cases have no records by class
        "supporting_families_assessment": None
        if assessment is None
        else {
            "assessed_on": _day(assessment["assessed_on"]),
            "needs": [label for name, label in OUTCOMES if assessment[name]],
            "eligible": bool(assessment["eligible"]),
            "coordinated_support": bool(assessment["coordinated_support"]),
        },
        "objections": [
            {
                "agreement": agreement_id,
                "partner": agreements[agreement_id].partner,
                "recorded_on": (FIXED_TODAY - timedelta(days=3)).isoformat(),
            }
            for agreement_id in sorted(person.objections)
        ],
        "restrictions": [],
    }


async def _disclose_to_police(local_partner: PartnerFactory, person_id: int) -> str:
    police = local_partner(POLICE)
    response = await police.post(
        "query($ref: ID!) { person(ref: $ref) { ref givenName familyName } }", {"ref": police.ref(person_id)}
    )
    assert response.json()["data"]["person"] is not None, response.text
    return response.headers["X-Audit-Event-Id"]


async def test_the_report_holds_the_persons_record_and_the_police_disclosure(
    local_partner: PartnerFactory,
    engine: AsyncEngine,
    cases: EdgeCases,
    oracle: Oracle,
    agreements: dict[str, Agreement],
) -> None:
    person_id = cases.id("cohort_plain")
    event_id = await _disclose_to_police(local_partner, person_id)
    report = await subject_access_report(engine, person_id, agreements=agreements)

    assert report.person_id == person_id
    assert report.held == _expected_held(oracle, cases, "cohort_plain", agreements)
    # And against the case as it was written, not only as the oracle reads it back.
    assert (report.held["given_name"], report.held["family_name"]) == ("Ada", "Brackenridge-Vale")
    assert report.held["email"] == "ada.bv@example.org" and report.held["objections"] == []
    assessment = report.held["supporting_families_assessment"]
    assert assessment["needs"] == [label for _, label in OUTCOMES[:4]] and assessment["eligible"] is True

    async with engine.connect() as conn:
        occurred_at = (
            await conn.execute(select(audit_events.c.occurred_at).where(audit_events.c.id == event_id))
        ).scalar_one()
        # Every disclosure to a partner; the council's own reads (security-audit) are not reported.
        recorded = (
            await conn.execute(
                select(func.count())
                .select_from(
                    audit_disclosures.join(audit_events, audit_events.c.id == audit_disclosures.c.event_id)
                )
                .where(
                    audit_disclosures.c.person_id == person_id,
                    audit_events.c.agreement_id != "security-audit",
                )
            )
        ).scalar_one()
    police = agreements[POLICE]
    expected = {
        "time": parse_time_text(occurred_at).isoformat(),
        "partner": "Metropolitan Police Service",
        "agreement": POLICE,
        "agreement_version": police.version,
        "purpose": police.purpose,
        "lawful_basis": list(police.lawful_basis),
        "fields": ["ref", "givenName", "familyName"],
    }
    assert expected in report.disclosures
    assert len(report.disclosures) == recorded
    for disclosure in report.disclosures:
        assert set(disclosure) == DISCLOSURE_KEYS  # no acting_user, no case_reference
    text = json.dumps(report.as_json())
    assert PURPOSE["X-Acting-User"] not in text and PURPOSE["X-Case-Reference"] not in text
    times = [datetime.fromisoformat(d["time"]) for d in report.disclosures]
    assert times == sorted(times), "disclosures are listed oldest first"


async def test_a_later_disclosure_comes_after_an_earlier_one(
    local_partner: PartnerFactory, engine: AsyncEngine, cases: EdgeCases, agreements: dict[str, Agreement]
) -> None:
    person_id = cases.id("supported")
    await _disclose_to_police(local_partner, person_id)
    await _disclose_to_police(local_partner, person_id)
    report = await subject_access_report(engine, person_id, agreements=agreements)
    police = [d for d in report.disclosures if d["agreement"] == POLICE]
    assert len(police) >= 2
    assert datetime.fromisoformat(police[-2]["time"]) < datetime.fromisoformat(police[-1]["time"])
    assert report.disclosures[-1] == police[-1]


async def test_objections_name_the_partner_objected_to(
    engine: AsyncEngine, cases: EdgeCases, oracle: Oracle, agreements: dict[str, Agreement]
) -> None:
    report = await subject_access_report(engine, cases.id("fh_objector"), agreements=agreements)
    assert report.held == _expected_held(oracle, cases, "fh_objector", agreements)
    assert report.held["objections"] == [
        {
            "agreement": "family-hub-outreach",
            "partner": agreements["family-hub-outreach"].partner,
            "recorded_on": (FIXED_TODAY - timedelta(days=3)).isoformat(),
        }
    ]
    assert f"to sharing with {agreements['family-hub-outreach'].partner}" in render_text(report)


@pytest.mark.parametrize(
    "key",
    ["cohort_protected", "cohort_legal_hold_past_retention", "unassessed", "criterion_only", "child_17"],
)
async def test_held_data_matches_the_record_for_every_kind_of_person(
    key: str, engine: AsyncEngine, cases: EdgeCases, oracle: Oracle, agreements: dict[str, Agreement]
) -> None:
    report = await subject_access_report(engine, cases.id(key), agreements=agreements)
    assert report.held == _expected_held(oracle, cases, key, agreements)


async def test_the_text_report_names_the_person_and_each_recipient(
    local_partner: PartnerFactory, engine: AsyncEngine, cases: EdgeCases, agreements: dict[str, Agreement]
) -> None:
    person_id = cases.id("cohort_plain")
    await _disclose_to_police(local_partner, person_id)
    report = await subject_access_report(engine, person_id, agreements=agreements)
    text = render_text(report)
    assert text.startswith(f"Subject access report for person {person_id}\n")
    assert "Ada Brackenridge-Vale" in text
    assert f"Disclosures ({len(report.disclosures)})" in text
    assert (
        f"Metropolitan Police Service  (police-prevention version {agreements['police-prevention'].version})"
        in text
    )
    assert "Disclosures (0)" not in text and text.endswith("Requests (0)\n  None.\n")
    assert PURPOSE["X-Acting-User"] not in text and PURPOSE["X-Case-Reference"] not in text


async def test_a_person_no_partner_can_see_has_no_disclosures(
    engine: AsyncEngine, cases: EdgeCases, agreements: dict[str, Agreement]
) -> None:
    # Under restriction of processing: invisible to every partner, so never disclosed.
    report = await subject_access_report(engine, cases.id("cohort_restricted"), agreements=agreements)
    assert report.disclosures == []
    assert report.held["restriction_of_processing"] is True
    text = render_text(report)
    assert "Cal Holloway-Quince" in text
    assert "Restriction of processing: yes" in text
    assert text.endswith(
        "Disclosures (0)\n  None.\n\nWhat partners told the council about you (0)\n  None.\n\n"
        "Requests (0)\n  None.\n"
    )


async def test_an_unknown_person_is_an_error(
    engine: AsyncEngine, oracle: Oracle, agreements: dict[str, Agreement]
) -> None:
    unknown = max(oracle.people) + 1_000
    with pytest.raises(UnknownPersonError, match=f"^no person with id {unknown}$"):
        await subject_access_report(engine, unknown, agreements=agreements)


class _Page(HTMLParser):
    """The text of each element with an id, and every text on the page, as a reader would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.texts: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs).get("id")
        if found:
            self._open.append(found)
            self.by_id[found] = ""

    def handle_endtag(self, tag: str) -> None:
        pass

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        for open_id in self._open:
            self.by_id[open_id] += data


async def test_the_pack_a_caseworker_sends_reads_true_in_html(
    local_partner: PartnerFactory, engine: AsyncEngine, cases: EdgeCases, agreements: dict[str, Agreement]
) -> None:
    person_id = cases.id("cohort_plain")
    await _disclose_to_police(local_partner, person_id)
    report = await subject_access_report(engine, person_id, agreements=agreements)
    document = render_html(report, council="Westminster City Council", today=FIXED_TODAY)
    page = _Page()
    page.feed(document)
    text = " ".join(" ".join(page.texts).split())
    assert "Ada Brackenridge-Vale" in page.by_id["name"]
    assert report.held is not None and report.held["date_of_birth"] in page.by_id["date-of-birth"]
    assert report.held["address"]["postcode"] in page.by_id["address"]
    police = agreements[POLICE]
    assert police.partner in page.by_id["disclosures"] and police.purpose in " ".join(
        page.by_id["disclosures"].split()
    )
    assert "givenName, familyName" in page.by_id["disclosures"]
    assert f"Who received your information ({len(report.disclosures)})" in text
    # Officers and case references are other people's data: never in the pack.
    assert PURPOSE["X-Acting-User"] not in document and PURPOSE["X-Case-Reference"] not in document
    assert "<script" not in document


async def test_the_pack_escapes_what_the_record_holds(
    engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    """Text from the records is data, never markup, in the document a caseworker sends."""
    from gateway.audit import SubjectAccessReport

    report = SubjectAccessReport(
        person_id=1,
        held=None,
        disclosures=[
            {
                "time": "2026-11-01T10:00:00+00:00",
                "partner": "<b>Partner</b>",
                "agreement": "x",
                "agreement_version": 1,
                "purpose": "<script>alert(1)</script>",
                "lawful_basis": [],
                "fields": ["givenName"],
            }
        ],
    )
    document = render_html(report, council="Westminster City Council", today=FIXED_TODAY)
    assert "<script>alert" not in document and "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert 'id="erased"' in document
    # A partner told of a correction (Art 19) received no field: the pack says what it did receive.
    told = dict(report.disclosures[0], fields=["notifications"], purpose="p", partner="Partner")
    notice = render_html(
        SubjectAccessReport(person_id=1, held=None, disclosures=[told]), council="C", today=FIXED_TODAY
    )
    assert (
        "a notice that the council corrected or erased your data" in notice
        and ">notifications<" not in notice
    )
