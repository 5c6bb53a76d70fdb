"""The evidence a data protection officer reviews an agreement with, for a period.

Per month: requests, those answered, people disclosed (distinct), people disclosed in all; the fields
disclosed and withheld (requests that carried each); refusals by code; break-glass windows and their
reviews; restrictions and objections in effect over the period, and whether the agreement honoured
them; alerts by kind; and the agreement's changes since the version in force when the period began, as
a diff of its files (kept from every start-up: `agreement_versions`). Counts, field names and the
ledger's own identifiers: no person's record.
"""

from __future__ import annotations

import difflib
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import case, distinct, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import time_text
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.db import utc
from gateway.guard.tables import break_glass
from gateway.reviews.tables import agreement_versions
from gateway.rights.tables import rights_requests
from policies import Agreement
from resolvers.models import EVERY_AGREEMENT, objections, restrictions

_PAGES: Final = Environment(
    loader=PackageLoader("gateway.reviews", "templates"), autoescape=True, undefined=StrictUndefined
)


class EvidenceError(Exception):
    """An evidence pack that cannot be made; `str()` says why."""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def remember_versions(engine: AsyncEngine, agreements: Mapping[str, Agreement]) -> None:
    """Keep the text of each agreement as loaded now, once per distinct file."""
    now = datetime.now(UTC)
    async with engine.connect() as conn:
        known = {
            (row.agreement_id, row.sha256)
            for row in await conn.execute(
                select(agreement_versions.c.agreement_id, agreement_versions.c.sha256)
            )
        }
    for agreement in agreements.values():
        key = (agreement.id, digest(agreement.text))
        if key in known or not agreement.text:
            continue
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    agreement_versions.insert().values(
                        agreement_id=agreement.id,
                        sha256=key[1],
                        version=agreement.version,
                        text=agreement.text,
                        first_seen_at=now,
                    )
                )
        except IntegrityError:  # another process kept it first
            continue


async def evidence(engine: AsyncEngine, agreement: Agreement, *, start: date, end: date) -> dict[str, Any]:
    """The pack for `agreement` from `start` to `end`, both days included (UTC)."""
    if end < start:
        raise EvidenceError("--to is before --from")
    since = time_text(datetime(start.year, start.month, start.day, tzinfo=UTC))
    until = time_text(datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1))
    ours = (
        audit_events.c.agreement_id == agreement.id,
        audit_events.c.occurred_at >= since,
        audit_events.c.occurred_at < until,
    )
    month = func.substr(audit_events.c.occurred_at, 1, 7)
    requests_only = audit_events.c.endpoint == "graphql"
    async with engine.connect() as conn:
        monthly = {
            row.month: {"requests": int(row.requests), "answered": int(row.answered or 0)}
            for row in await conn.execute(
                select(
                    month.label("month"),
                    func.sum(func.coalesce(audit_events.c.request_count, 1)).label("requests"),
                    func.sum(case((audit_events.c.outcome == "allowed", 1), else_=0)).label("answered"),
                )
                .where(*ours, requests_only)
                .group_by(month)
            )
        }
        joined = audit_disclosures.join(audit_events, audit_events.c.id == audit_disclosures.c.event_id)
        for row in await conn.execute(
            select(month.label("month"), func.count(distinct(audit_disclosures.c.person_id)), func.count())
            .select_from(joined)
            .where(*ours)
            .group_by(month)
        ):
            entry = monthly.setdefault(row[0], {"requests": 0, "answered": 0})
            entry["people"], entry["disclosures"] = int(row[1]), int(row[2])
        field_rows = (
            await conn.execute(
                select(audit_events.c.fields_disclosed, audit_events.c.fields_withheld, func.count())
                .where(*ours, requests_only, audit_events.c.outcome == "allowed")
                .group_by(audit_events.c.fields_disclosed, audit_events.c.fields_withheld)
            )
        ).all()
        refusals = (
            await conn.execute(
                select(audit_events.c.error_code, func.sum(func.coalesce(audit_events.c.request_count, 1)))
                # A DPoP nonce challenge is a step of the protocol every client takes, not a refusal.
                .where(
                    *ours,
                    audit_events.c.outcome == "denied",
                    audit_events.c.error_code.is_distinct_from("use_dpop_nonce"),
                )
                .group_by(audit_events.c.error_code)
            )
        ).all()
        alerts = (
            await conn.execute(
                select(audit_events.c.error_code, func.count())
                .where(*ours, audit_events.c.outcome == "alert")
                .group_by(audit_events.c.error_code)
            )
        ).all()
        opened_from = datetime(start.year, start.month, start.day, tzinfo=UTC)
        opened_to = opened_from + timedelta(days=(end - start).days + 1)
        windows = (
            await conn.execute(
                select(break_glass)
                .where(
                    break_glass.c.agreement_id == agreement.id,
                    break_glass.c.opened_at >= opened_from,
                    break_glass.c.opened_at < opened_to,
                )
                .order_by(break_glass.c.opened_at)
            )
        ).all()
        limits = (
            await conn.execute(
                select(rights_requests).where(
                    rights_requests.c.kind.in_(("restriction", "objection")),
                    rights_requests.c.agreement_id.in_((agreement.id, EVERY_AGREEMENT)),
                    rights_requests.c.recorded_at < opened_to,
                    or_(rights_requests.c.closed_at.is_(None), rights_requests.c.closed_at >= opened_from),
                )
            )
        ).all()
        # What is in effect now, however it was recorded (objections also come from the case system).
        in_effect = {
            name: int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(table)
                        .where(table.c.agreement_id.in_((agreement.id, EVERY_AGREEMENT)))
                    )
                ).scalar_one()
            )
            for name, table in (("restrictions", restrictions), ("objections", objections))
        }
        versions = (
            await conn.execute(
                select(agreement_versions)
                .where(agreement_versions.c.agreement_id == agreement.id)
                .order_by(agreement_versions.c.first_seen_at)
            )
        ).all()
    disclosed: Counter[str] = Counter()
    withheld: Counter[str] = Counter()
    for shown, kept, count in field_rows:
        for name in filter(None, (shown or "").split(",")):
            disclosed[name] += int(count)
        for name in filter(None, (kept or "").split(",")):
            withheld[name] += int(count)
    honoured = {"restriction": True, "objection": agreement.honours_objection}
    return {
        "agreement": {
            "id": agreement.id,
            "version": agreement.version,
            "partner": agreement.partner,
            "purpose": agreement.purpose,
            "lawful_basis": list(agreement.lawful_basis),
            "review_due": agreement.review_due.isoformat(),
            "effective": {
                "from": agreement.effective.start.isoformat(),
                "until": agreement.effective.until.isoformat(),
            },
        },
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "months": [{"month": m, **_EMPTY_MONTH, **monthly[m]} for m in sorted(monthly)],
        "fields_disclosed": dict(sorted(disclosed.items(), key=lambda item: (-item[1], item[0]))),
        "fields_withheld": dict(sorted(withheld.items(), key=lambda item: (-item[1], item[0]))),
        "refusals": _by_count(refusals),
        "alerts": _by_count(alerts),
        "break_glass": [
            {
                "id": w.id,
                "opened_at": (utc(w.opened_at) or w.opened_at).isoformat(),
                "officer": w.officer,
                "case_reference": w.case_reference,
                "reason": w.reason,
                "review": w.review_outcome or "pending",
                "reviewer": w.reviewer,
            }
            for w in windows
        ],
        "in_effect_now": {**in_effect, "objections_honoured": agreement.honours_objection},
        "restrictions_and_objections": [
            {
                "kind": r.kind,
                "scope": r.agreement_id,
                "status": r.status,
                "honoured": honoured[r.kind],
                "recorded_on": (utc(r.recorded_at) or r.recorded_at).date().isoformat(),
                "lifted_on": (utc(r.closed_at) or r.closed_at).date().isoformat() if r.closed_at else None,
            }
            for r in limits
        ],
        "changes": _changes(agreement, versions, since=opened_from),
    }


_EMPTY_MONTH: Final = {"requests": 0, "answered": 0, "people": 0, "disclosures": 0}


def _by_count(rows: Sequence[Any]) -> dict[str, int]:
    """{code: count}, most first; a row without a code under '(none)'."""
    ordered = sorted(((code or "(none)", int(count)) for code, count in rows), key=lambda r: (-r[1], r[0]))
    return dict(ordered)


def _changes(agreement: Agreement, versions: Sequence[Any], *, since: datetime) -> dict[str, Any]:
    """The agreement's file as in force when the period began, against the file now, as a diff."""
    current = digest(agreement.text)
    before = [v for v in versions if (utc(v.first_seen_at) or v.first_seen_at) < since]
    base = before[-1] if before else (versions[0] if versions else None)
    history = [
        {
            "version": v.version,
            "sha256": v.sha256,
            "first_seen_at": (utc(v.first_seen_at) or v.first_seen_at).isoformat(),
        }
        for v in versions
    ]
    unbumped = sorted({v.version for v in versions if sum(1 for w in versions if w.version == v.version) > 1})
    if base is None:
        return {
            "compared_with": None,
            "diff": [],
            "history": history,
            "changed_without_version_bump": unbumped,
        }
    diff = list(
        difflib.unified_diff(
            base.text.splitlines(),
            agreement.text.splitlines(),
            fromfile=f"{agreement.id} version {base.version}",
            tofile=f"{agreement.id} version {agreement.version}",
            lineterm="",
        )
    )
    return {
        "compared_with": {"version": base.version, "sha256": base.sha256, "in_force_at_start": bool(before)},
        "diff": diff,
        "unchanged": base.sha256 == current,
        "history": history,
        "changed_without_version_bump": unbumped,
    }


def render_html(pack: dict[str, Any], *, council: str) -> str:
    return _PAGES.get_template("evidence.html").render(pack=pack, council=council)
