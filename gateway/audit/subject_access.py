"""Subject access reports: what the council holds about a person and every disclosure of it.

For UK GDPR Art 15: the data held, and the recipients to whom it was disclosed (Art 15(1)(c)),
with when, under which agreement, for which purpose and which fields. The individual officers at a
partner (acting user) and the partner's case references are left out of the report to the person:
they are other people's data and may concern an investigation; the security team sees them in the
ledger itself. The council's own reads of the ledger (the security team, earlier reports) are not
disclosures to a recipient and are left out too: listing them could tip off an investigation.
A person whose record has been erased still has the disclosures the ledger holds reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.queries import LedgerQueries
from gateway.rights.tables import rights_requests
from policies import Agreement
from policies.retention import RetentionPolicy, add_years
from resolvers.models import (
    EVERY_AGREEMENT,
    OUTCOMES,
    addresses,
    assessments,
    contributions,
    households,
    objections,
    people,
    person_records,
    referrals,
    restrictions,
)


@dataclass(frozen=True)
class SubjectAccessReport:
    person_id: int
    held: dict[str, Any] | None  # None: the record has been erased; its disclosures remain
    disclosures: list[dict[str, Any]]
    requests: list[dict[str, Any]] = field(default_factory=list)  # the person's own requests (Arts 15-21)
    # What partners reported about the person (two-way sharing), and whether it counts.
    contributions: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "held": self.held,
            "disclosures": self.disclosures,
            "requests": self.requests,
            "contributions": self.contributions,
        }


class UnknownPersonError(Exception):
    pass


async def subject_access_report(
    engine: AsyncEngine,
    person_id: int,
    *,
    agreements: Mapping[str, Agreement],
    retention: RetentionPolicy | None = None,
) -> SubjectAccessReport:
    """`retention`: the schedules, to say how long each of the person's records is kept."""
    held = await _held(engine, person_id, agreements, retention)
    internal = {agreement_id for agreement_id, agreement in agreements.items() if agreement.is_ledger}
    records = await LedgerQueries(engine, agreements).all_disclosures_of(person_id)
    disclosures = [
        {
            "time": record.occurred_at.isoformat(),
            "partner": record.partner,
            "agreement": record.agreement_id,
            "agreement_version": record.agreement_version,
            "purpose": record.purpose,
            "lawful_basis": list(record.lawful_basis),
            "fields": list(record.fields),
        }
        for record in records
        if record.agreement_id not in internal
    ]
    requests = await _requests(engine, person_id, agreements)
    reported = await _contributions(engine, person_id, agreements)
    if held is None and not records and not requests:
        raise UnknownPersonError(f"no person with id {person_id}")
    return SubjectAccessReport(
        person_id=person_id, held=held, disclosures=disclosures, requests=requests, contributions=reported
    )


# What each indicator a partner may report is, in words for the person it is about.
INDICATOR_WORDS: Final = {
    "proven_offence": "a proven offence or caution",
    "antisocial_behaviour_intervention": "an anti-social behaviour intervention",
    "out_of_work_benefits": "out-of-work benefits",
    "school_attendance": "school attendance",
    "two_year_old_offer": "a referral for the two-year-old childcare offer (name, date of birth, address)",
}


async def _contributions(
    engine: AsyncEngine, person_id: int, agreements: Mapping[str, Agreement]
) -> list[dict[str, Any]]:
    """What partners told the council about the person, oldest first: who, what, about which day, and
    whether it counts (officers and clients are left out, as from the disclosures)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(contributions)
                .where(contributions.c.person_id == person_id)
                .order_by(contributions.c.recorded_at, contributions.c.id)
            )
        ).all()
    out = []
    for row in rows:
        agreement = agreements.get(row.agreement_id)
        value = (
            ("yes" if row.flag else "no")
            if row.flag is not None
            else f"{row.percent}%"
            if row.percent is not None
            else None
        )
        out.append(
            {
                "partner": agreement.partner if agreement else row.agreement_id,
                "agreement": row.agreement_id,
                "what": INDICATOR_WORDS.get(row.indicator, row.indicator),
                "about_day": _day(row.observed_on),
                "value": value,
                "reported_on": row.recorded_at.date().isoformat(),
                "counted": row.state == "recorded",
            }
        )
    async with engine.connect() as conn:
        referred = (
            await conn.execute(
                select(referrals)
                .where(referrals.c.person_id == person_id)
                .order_by(referrals.c.recorded_at, referrals.c.id)
            )
        ).all()
    for row in referred:
        agreement = agreements.get(row.agreement_id)
        out.append(
            {
                "partner": agreement.partner if agreement else row.agreement_id,
                "agreement": row.agreement_id,
                "what": INDICATOR_WORDS.get(row.kind, row.kind),
                "about_day": _day(row.recorded_at.date()),
                "value": None,
                "reported_on": row.recorded_at.date().isoformat(),
                "counted": True,
            }
        )
    out.sort(key=lambda c: c["reported_on"])
    return out


async def _requests(
    engine: AsyncEngine, person_id: int, agreements: Mapping[str, Agreement]
) -> list[dict[str, Any]]:
    """The person's own requests, oldest first: what they asked, when, and what came of it (who in the
    council handled them is left out, as officers are from the disclosures)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(rights_requests)
                .where(rights_requests.c.person_id == person_id)
                .order_by(rights_requests.c.received_on, rights_requests.c.id)
            )
        ).all()
    out = []
    for row in rows:
        scope = row.agreement_id
        out.append(
            {
                "kind": row.kind,
                "about": None if scope is None else "every partner" if scope == EVERY_AGREEMENT
                else agreements[scope].partner if scope in agreements else scope,
                "received_on": _day(row.received_on),
                "status": row.status,
                "outcome_note": row.outcome_note,
                "closed_on": _day(row.closed_at.date()) if row.closed_at else None,
            }
        )  # fmt: skip
    return out


async def _held(
    engine: AsyncEngine,
    person_id: int,
    agreements: Mapping[str, Agreement],
    retention: RetentionPolicy | None,
) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        person = (
            await conn.execute(
                select(people, addresses)
                .select_from(
                    people.join(households, households.c.id == people.c.household_id).join(
                        addresses, addresses.c.id == households.c.address_id
                    )
                )
                .where(people.c.id == person_id)
            )
        ).first()
        if person is None:
            return None
        row = person._mapping
        assessment = (
            await conn.execute(select(assessments).where(assessments.c.household_id == row["household_id"]))
        ).first()
        objected = (await conn.execute(select(objections).where(objections.c.person_id == person_id))).all()
        restricted = (
            await conn.execute(select(restrictions).where(restrictions.c.person_id == person_id))
        ).all()
        records = (
            await conn.execute(
                select(person_records)
                .where(person_records.c.person_id == person_id)
                .order_by(person_records.c.record_class)
            )
        ).all()

    held: dict[str, Any] = {
        "given_name": row["given_name"],
        "family_name": row["family_name"],
        "date_of_birth": _day(row["date_of_birth"]),
        "address": {part: row[part] for part in ("line1", "line2", "town", "postcode")},
        "uprn": row["uprn"],
        "phone": row["phone"],
        "email": row["email"],
        "school": row["school"],
        "protected_address": bool(row["protected_address"]),
        "restriction_of_processing": bool(row["restricted"]),
        "retention_until": _day(row["retention_until"]),
        "legal_hold": bool(row["legal_hold"]),
        "records": [_record(r.record_class, r.counted_from, retention) for r in records],
        "supporting_families_assessment": None,
        "objections": [
            {
                "agreement": o.agreement_id,
                "partner": agreements[o.agreement_id].partner if o.agreement_id in agreements else None,
                "recorded_on": _day(o.recorded_on),
            }
            for o in objected
        ],
        "restrictions": [
            {
                "agreement": r.agreement_id,
                "partner": "every partner"
                if r.agreement_id == EVERY_AGREEMENT
                else agreements[r.agreement_id].partner
                if r.agreement_id in agreements
                else None,
                "recorded_on": _day(r.recorded_on),
            }
            for r in restricted
        ],
    }
    if assessment is not None:
        a = assessment._mapping
        held["supporting_families_assessment"] = {
            "assessed_on": _day(a["assessed_on"]),
            "needs": [label for name, label in OUTCOMES if a[name]],
            "eligible": bool(a["eligible"]),
            "coordinated_support": bool(a["coordinated_support"]),
        }
    return held


def _record(
    record_class: str, counted_from: date | None, retention: RetentionPolicy | None
) -> dict[str, Any]:
    """One of the person's records by class, with the schedule it is kept under and until when."""
    schedule = retention.schedules.get(record_class) if retention is not None else None
    return {
        "record_class": record_class,
        "counted_from": _day(counted_from) if counted_from is not None else None,  # None: still open
        "schedule": f"{schedule.keep_years} year{'' if schedule.keep_years == 1 else 's'} from "
        f"{schedule.counted_from}"
        if schedule
        else None,
        "kept_until": _day(add_years(counted_from, schedule.keep_years))
        if schedule is not None and counted_from is not None
        else None,
    }


def render_text(report: SubjectAccessReport) -> str:
    lines = [f"Subject access report for person {report.person_id}", ""]
    if report.held is None:
        lines += ["What the council holds", "  Nothing: the record has been erased."]
    else:
        lines += _render_held(report.held)
    lines += ["", f"Disclosures ({len(report.disclosures)})"]
    if not report.disclosures:
        lines.append("  None.")
    for d in report.disclosures:
        lines += [
            f"  {d['time']}  {d['partner'] or '-'}  ({d['agreement']} version {d['agreement_version']})",
            f"    Purpose: {d['purpose'] or '-'}",
            f"    Lawful basis: {'; '.join(d['lawful_basis']) or '-'}",
            f"    Fields: {', '.join(d['fields']) or '-'}",
        ]
    lines += ["", f"What partners told the council about you ({len(report.contributions)})"]
    if not report.contributions:
        lines.append("  None.")
    for c in report.contributions:
        value = f": {c['value']}" if c["value"] else ""
        counted = "" if c["counted"] else " (not counted: never confirmed)"
        lines.append(
            f"  {c['reported_on']}  {c['partner']}: {c['what']}{value}, dated {c['about_day']}{counted}"
        )
    lines += ["", f"Requests ({len(report.requests)})"]
    if not report.requests:
        lines.append("  None.")
    for r in report.requests:
        about = f" (about {r['about']})" if r["about"] else ""
        closed = f" on {r['closed_on']}" if r["closed_on"] else ""
        note = f": {r['outcome_note']}" if r["outcome_note"] else ""
        lines.append(f"  {r['received_on']}  {r['kind']}{about}  {r['status']}{closed}{note}")
    return "\n".join(lines) + "\n"


def _render_held(held: dict[str, Any]) -> list[str]:
    lines = [
        "What the council holds",
        f"  Name:            {held['given_name']} {held['family_name']}",
        f"  Date of birth:   {held['date_of_birth']}",
        "  Address:         " + ", ".join(p for p in held["address"].values() if p),
        f"  UPRN:            {held['uprn'] or '-'}",
        f"  Phone:           {held['phone'] or '-'}",
        f"  Email:           {held['email'] or '-'}",
        f"  School:          {held['school'] or '-'}",
        f"  Protected address marker: {'yes' if held['protected_address'] else 'no'}",
        f"  Restriction of processing: {'yes' if held['restriction_of_processing'] else 'no'}",
        f"  Kept until:      {held['retention_until']}{' (legal hold)' if held['legal_hold'] else ''}",
    ]
    for record in held["records"]:
        lines.append(f"  Record:          {_record_text(record)}")
    assessment = held["supporting_families_assessment"]
    if assessment:
        lines += [
            f"  Supporting Families assessment on {assessment['assessed_on']}: "
            f"{'eligible' if assessment['eligible'] else 'not eligible'}"
            f"{', receiving coordinated support' if assessment['coordinated_support'] else ''}",
            "    Needs: " + ("; ".join(assessment["needs"]) or "none"),
        ]
    for objection in held["objections"]:
        recipient = objection["partner"] or objection["agreement"]
        lines.append(f"  Objected on {objection['recorded_on']} to sharing with {recipient}")
    for restriction in held["restrictions"]:
        recipient = restriction["partner"] or restriction["agreement"]
        lines.append(f"  Restricted since {restriction['recorded_on']}: not shared with {recipient}")
    return lines


def _record_text(record: dict[str, Any]) -> str:
    since = f"dated {record['counted_from']}" if record["counted_from"] else "still open"
    kept = f"; kept {record['schedule']}" if record["schedule"] else ""
    until = f", until {record['kept_until']}" if record["kept_until"] else ""
    return f"{record['record_class']}, {since}{kept}{until}"


def render_html(report: SubjectAccessReport, *, council: str, today: date) -> str:
    """The report as a self-contained HTML document a caseworker can send (or print to PDF)."""
    return _PAGES.get_template("subject_access.html").render(report=report, council=council, today=today)


_PAGES: Final = Environment(
    loader=PackageLoader("gateway.audit", "templates"), autoescape=True, undefined=StrictUndefined
)


def _day(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)
