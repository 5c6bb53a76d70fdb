"""Two-way sharing over HTTP with real tokens, on SQLite and PostgreSQL: the police and the DWP report
indicators about people in their own views; a report counts once its request's event is written, a retry
with the same key gets the first answer, a conflict is kept and surfaced, and a family moves into the
police's cohort on the DWP's report and out again on a later one.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from gateway.audit import render_html, subject_access_report
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import Settings
from gateway.keys import SigningKeys, write_key_file
from policies import load_agreements
from resolvers.models import contributions, eligibility_intervals, people
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.gateway.cli.conftest import run_gateway
from tests.support.ledger import allow_ledger_inserts, refuse_ledger_inserts
from tests.support.partners import Partner, enrol
from tests.support.processes import gateway_env
from tests.support.sharing import FAMILY, Sharing

OFFENCE = (
    "mutation Offence($ref: ID!, $date: Date!, $key: String!) { "
    "reportProvenOffence(ref: $ref, date: $date, idempotencyKey: $key) "
    "{ id ref indicator observedOn recordedAt conflicting retried } }"
)
BENEFITS = (
    "mutation Benefits($ref: ID!, $on: Boolean!, $asOf: Date!, $key: String!) { "
    "reportBenefitStatus(ref: $ref, outOfWorkBenefits: $on, asOf: $asOf, idempotencyKey: $key) "
    "{ id ref indicator observedOn recordedAt conflicting retried } }"
)


async def _in_view(partner: Partner, person: int) -> bool:
    return any(partner.person_id(node["ref"]) == person for node in await partner.all_people("ref"))


async def _report(partner: Partner, query: str, variables: dict[str, Any]) -> httpx.Response:
    return await partner.post(query, variables)


async def test_the_dwps_report_moves_a_family_into_the_police_cohort_and_a_later_one_out(
    sharing: Sharing,
) -> None:
    police, dwp = sharing.police, sharing.dwp
    assert await _in_view(dwp, FAMILY) and not await _in_view(police, FAMILY)
    yes = {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "dwp-2026-10-01-0001"}
    answered = await _report(dwp, BENEFITS, yes)
    assert answered.status_code == 200, answered.text
    made = answered.json()["data"]["reportBenefitStatus"]
    assert made["ref"] == dwp.ref(FAMILY) and made["indicator"] == "out_of_work_benefits"
    assert (made["observedOn"], made["conflicting"], made["retried"]) == ("2026-10-01", False, False)
    # Housing, health and now financial stability: three outcomes. The police see the family next request.
    assert await _in_view(police, FAMILY)
    # Its provenance, and its event: the person named in the ledger as a contribution, not a disclosure.
    event_id = answered.headers["x-audit-event-id"]
    async with sharing.fresh.engine.connect() as conn:
        row = (await conn.execute(select(contributions))).one()
        named = (
            await conn.execute(
                select(audit_disclosures.c.person_id, audit_disclosures.c.fields).where(
                    audit_disclosures.c.event_id == event_id
                )
            )
        ).all()
        event = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).one()
    assert (row.client_id, row.agreement_id, row.event_id, row.state) == (
        dwp.client_id, "dwp-worklessness", event_id, "recorded",
    )  # fmt: skip
    assert [tuple(n) for n in named] == [(FAMILY, "contribution")]
    assert (event.outcome, event.operation_name) == ("allowed", "Benefits")

    no = {**yes, "on": False, "asOf": "2026-11-01", "key": "dwp-2026-11-01-0002"}
    assert (await _report(dwp, BENEFITS, no)).status_code == 200
    assert not await _in_view(police, FAMILY)
    assert await _in_view(dwp, FAMILY)  # two needs: the DWP's population still has the family


async def test_a_retry_gets_the_first_answer_and_the_same_key_for_another_report_is_refused(
    sharing: Sharing,
) -> None:
    dwp = sharing.dwp
    sent = {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "retry-key-0001"}
    first = (await _report(dwp, BENEFITS, sent)).json()["data"]["reportBenefitStatus"]
    again = (await _report(dwp, BENEFITS, sent)).json()["data"]["reportBenefitStatus"]
    assert again == {**first, "retried": True}
    other = (await _report(dwp, BENEFITS, {**sent, "on": False})).json()
    assert other["data"] is None
    assert [e["extensions"]["code"] for e in other["errors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    async with sharing.fresh.engine.connect() as conn:
        assert len((await conn.execute(select(contributions))).all()) == 1


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"date": "2026-11-23"}, "The day reported must be between 2000-01-01 and today."),
        ({"date": "1999-12-31"}, "The day reported must be between 2000-01-01 and today."),
        ({"key": "short"}, "idempotencyKey must be 8 to 200 letters, digits, '.', '_', ':' or '-'."),
        (
            {"key": "has spaces in it"},
            "idempotencyKey must be 8 to 200 letters, digits, '.', '_', ':' or '-'.",
        ),
        ({"ref": "per_notarefnotarefnotarefnotarefnot"}, "No person with this ref is in your view."),
    ],
)
async def test_a_bad_report_is_refused_with_its_code_and_records_nothing(
    sharing: Sharing, variables: dict[str, str], message: str
) -> None:
    police = sharing.police
    plain = sharing.fresh.cases.id("cohort_plain")
    sent = {"ref": police.ref(plain), "date": "2026-10-01", "key": "k-12345678", **variables}
    body = (await _report(police, OFFENCE, sent)).json()
    assert body["data"] is None
    assert [(e["extensions"]["code"], e["message"]) for e in body["errors"]] == [("BAD_USER_INPUT", message)]
    async with sharing.fresh.engine.connect() as conn:
        assert (await conn.execute(select(contributions))).all() == []


async def test_a_person_outside_the_view_is_refused_like_a_ref_never_issued(sharing: Sharing) -> None:
    police = sharing.police
    outside = {"ref": police.ref(FAMILY), "date": "2026-10-01", "key": "k-outside-1"}  # not in the cohort
    body = (await _report(police, OFFENCE, outside)).json()
    assert [e["message"] for e in body["errors"]] == ["No person with this ref is in your view."]


async def test_reports_that_disagree_are_kept_side_by_side_and_neither_counts(sharing: Sharing) -> None:
    dwp, police = sharing.dwp, sharing.police
    yes = {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "conflict-0001"}
    assert (await _report(dwp, BENEFITS, yes)).json()["data"]["reportBenefitStatus"]["conflicting"] is False
    no = {**yes, "on": False, "key": "conflict-0002"}
    assert (await _report(dwp, BENEFITS, no)).json()["data"]["reportBenefitStatus"]["conflicting"] is True
    assert not await _in_view(police, FAMILY)
    async with sharing.fresh.engine.connect() as conn:
        kept = (
            (await conn.execute(select(contributions.c.flag).order_by(contributions.c.flag))).scalars().all()
        )
    assert kept == [False, True]


async def test_a_report_whose_event_cannot_be_written_never_counts_and_its_retry_carries_it(
    sharing: Sharing,
) -> None:
    dwp, police, engine = sharing.dwp, sharing.police, sharing.fresh.engine
    sent = {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "ledger-down-0001"}
    token = await dwp.token()  # before the ledger is refused: a token request is audited too
    async with engine.begin() as conn:
        await refuse_ledger_inserts(conn)
    try:
        refused = await dwp.post(BENEFITS, sent, token=token)
    finally:
        async with engine.begin() as conn:
            await allow_ledger_inserts(conn)
    assert (
        refused.status_code == 503
        and refused.json()["errors"][0]["extensions"]["code"] == "AUDIT_UNAVAILABLE"
    )
    async with engine.connect() as conn:
        assert (await conn.execute(select(contributions.c.state))).scalars().all() == ["pending"]
        assert (await conn.execute(select(eligibility_intervals))).all() == []
    assert not await _in_view(police, FAMILY)
    retried = await dwp.post(BENEFITS, sent)
    assert retried.json()["data"]["reportBenefitStatus"]["retried"] is True
    async with engine.connect() as conn:
        row = (await conn.execute(select(contributions))).one()
    assert (row.state, row.event_id) == ("recorded", retried.headers["x-audit-event-id"])
    assert await _in_view(police, FAMILY)


async def test_the_council_sees_why_the_family_is_eligible_on_whose_evidence_and_since_when(
    sharing: Sharing, tmp_path: Path, signing: SigningKeys
) -> None:
    dwp = sharing.dwp
    sent = {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "explain-0001"}
    answered = await _report(dwp, BENEFITS, sent)
    write_key_file(tmp_path / "signing.jwk.json", [signing.active])
    env = gateway_env(tmp_path, sharing.fresh.url)
    command = ["eligibility", "explain", str(FAMILY), "--on", FIXED_TODAY.isoformat()]
    who = ["--acting-user", "dpo@council.test.invalid", "--case-reference", "EXPLAIN-1"]
    shown = run_gateway(env, tmp_path, *command, "--json", *who)
    assert shown.returncode == 0, shown.stderr
    made = json.loads(shown.stdout)
    assert (made["eligible"], made["since"], made["outcomes_met"]) == (True, "2026-10-01", 3)
    met = {o["outcome"]: o for o in made["outcomes"] if o["met"]}
    assert set(met) == {"Improved mental and physical health", "Secure housing", "Financial stability"}
    [benefits] = met["Financial stability"]["evidence"]
    assert (benefits["source"], benefits["client"], benefits["event"], benefits["value"]) == (
        "dwp-worklessness", dwp.client_id, answered.headers["x-audit-event-id"], True,
    )  # fmt: skip
    assert met["Secure housing"]["evidence"][0]["source"] == "the council's assessment"
    assert made["assessor"] == {"assessed_on": "2026-05-01", "recorded_eligible": False}
    assert made["eligible_periods"] == [{"from": "2026-10-01", "until": "2027-10-01"}]
    # The read is in the ledger, naming the person, before the answer.
    async with sharing.fresh.engine.connect() as conn:
        read = (
            await conn.execute(
                select(
                    audit_events.c.operation_name,
                    audit_events.c.case_reference,
                    audit_disclosures.c.person_id,
                )
                .join(audit_disclosures, audit_disclosures.c.event_id == audit_events.c.id)
                .where(audit_events.c.endpoint == "cli")
            )
        ).all()
    assert [tuple(r) for r in read] == [("eligibility explain", "EXPLAIN-1", FAMILY)]
    text = run_gateway(env, tmp_path, *command)
    assert text.stdout.startswith(
        f"person {FAMILY} on 2026-11-22: eligible since 2026-10-01: 3 outcomes met, 3 needed under "
        "supporting-families-2022 (Supporting Families programme (from October 2022))\n"
    )
    assert "  Financial stability: met since 2026-10-01" in text.stdout
    assert "    on out_of_work_benefits = True dated 2026-10-01 from dwp-worklessness (client " in text.stdout


async def test_a_subject_access_pack_lists_what_partners_told_the_council(sharing: Sharing) -> None:
    dwp = sharing.dwp
    await _report(
        dwp, BENEFITS, {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "sar-0001"}
    )
    report = await subject_access_report(sharing.fresh.engine, FAMILY, agreements=load_agreements())
    keys = ("partner", "what", "value", "about_day", "counted")
    assert [{k: c[k] for k in keys} for c in report.contributions] == [
        {"partner": "Department for Work and Pensions", "what": "out-of-work benefits", "value": "yes",
         "about_day": "2026-10-01", "counted": True},
    ]  # fmt: skip
    html = render_html(report, council="Westminster City Council", today=FIXED_TODAY)
    assert "What partners told the council about you" in html and "out-of-work benefits: yes" in html
    # The request is in the recipients' table as what it was: nothing sent to the DWP.
    assert "nothing: it told the council something about you (below)" in html
    assert dwp.client_id not in html


async def test_a_school_reports_a_terms_attendance_and_the_family_follows_it(
    sharing: Sharing, settings: Settings
) -> None:
    """The school finds its pupil by family name and date of birth, and reports a term below 90%: with the
    two needs the assessor recorded, the education outcome makes three, and the police see the family."""
    engine = sharing.fresh.engine
    child = FAMILY + 1
    async with engine.begin() as conn:
        await conn.execute(
            insert(people).values(id=child, household_id=FAMILY, given_name="Tia", family_name="Reportley",
                                  date_of_birth=date(2014, 9, 9), retention_until=date(2033, 1, 1))
        )  # fmt: skip
    school = await enrol(engine, sharing.police.http, "school-attendance", ref_secret=REF_SECRET,
                         jwks_dir=settings.partner_jwks_dir)  # fmt: skip
    find = (
        "query Find($familyName: String!, $dateOfBirth: Date!) "
        "{ findPeople(familyName: $familyName, dateOfBirth: $dateOfBirth) { ref } }"
    )
    found = await school.data(find, {"familyName": "Reportley", "dateOfBirth": "2014-09-09"})
    ref = found["findPeople"]["ref"]
    attendance = (
        "mutation Term($ref: ID!, $term: String!, $percent: Float!, $key: String!) "
        "{ reportAttendance(ref: $ref, term: $term, percent: $percent, idempotencyKey: $key) "
        "{ ref indicator observedOn } }"
    )
    unfinished = await school.post(
        attendance, {"ref": ref, "term": "2026-autumn", "percent": 80.0, "key": "term-0001"}
    )
    assert (
        unfinished.json()["errors"][0]["message"] == "The day reported must be between 2000-01-01 and today."
    )
    bad_term = await school.post(
        attendance, {"ref": ref, "term": "summer 2026", "percent": 80.0, "key": "term-0002"}
    )
    assert bad_term.json()["errors"][0]["message"] == "term must be a year and a season, such as 2026-autumn."
    too_much = await school.post(
        attendance, {"ref": ref, "term": "2026-summer", "percent": 101.0, "key": "term-0003"}
    )
    assert too_much.json()["errors"][0]["message"] == "percent must be between 0 and 100."
    assert not await _in_view(sharing.police, FAMILY)
    made = await school.data(
        attendance, {"ref": ref, "term": "2026-summer", "percent": 86.5, "key": "term-0004"}
    )
    assert made["reportAttendance"] == {
        "ref": ref,
        "indicator": "school_attendance",
        "observedOn": "2026-07-31",
    }
    assert await _in_view(sharing.police, FAMILY)


WHY = (
    "query Why($p: ID!) { eligibility(personId: $p) { personId rule eligible since outcomesMet "
    "outcomesNeeded "
    "outcomes { outcome met since evidence { indicator source value aboutPersonId clientId eventId } "
    "conflicts { indicator value } } assessedOn assessorRecordedEligible eligiblePeriods { from until } "
    "pendingReports } }"
)


async def test_the_security_view_explains_a_familys_eligibility_and_records_the_read(
    sharing: Sharing, settings: Settings
) -> None:
    dwp = sharing.dwp
    answered = await _report(
        dwp, BENEFITS, {"ref": dwp.ref(FAMILY), "on": True, "asOf": "2026-10-01", "key": "why-0001"}
    )
    security = await enrol(sharing.fresh.engine, dwp.http, "security-audit", ref_secret=REF_SECRET,
                           jwks_dir=settings.partner_jwks_dir)  # fmt: skip
    response = await security.post(WHY, {"p": str(FAMILY)})
    why = response.json()["data"]["eligibility"]
    assert (why["personId"], why["rule"], why["eligible"], why["since"]) == (
        str(FAMILY), "supporting-families-2022", True, "2026-10-01",
    )  # fmt: skip
    assert (why["outcomesMet"], why["outcomesNeeded"], why["pendingReports"]) == (3, 3, 0)
    money = next(o for o in why["outcomes"] if o["outcome"] == "Financial stability")
    assert money["evidence"] == [
        {"indicator": "out_of_work_benefits", "source": "dwp-worklessness", "value": "true",
         "aboutPersonId": str(FAMILY), "clientId": dwp.client_id,
         "eventId": answered.headers["x-audit-event-id"]},
    ]  # fmt: skip
    housing = next(o for o in why["outcomes"] if o["outcome"] == "Secure housing")
    assert (
        housing["evidence"][0]["source"] == "the council's assessment"
        and housing["evidence"][0]["aboutPersonId"] is None
    )
    assert (why["assessedOn"], why["assessorRecordedEligible"]) == ("2026-05-01", False)
    assert why["eligiblePeriods"] == [{"from": "2026-10-01", "until": "2027-10-01"}]
    async with sharing.fresh.engine.connect() as conn:
        named = (
            await conn.execute(
                select(audit_disclosures.c.person_id, audit_disclosures.c.fields).where(
                    audit_disclosures.c.event_id == response.headers["x-audit-event-id"]
                )
            )
        ).all()
    assert [tuple(n) for n in named] == [(FAMILY, "eligibility")]
    nobody = await security.post(WHY, {"p": "99999999"})
    assert nobody.json()["data"] == {"eligibility": None}
