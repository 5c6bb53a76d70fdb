"""What the console reads beyond the security-audit view's own queries: the alert queue and the
figures behind its charts. Counts and identifiers only; nothing here reads a person's record."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from sqlalchemy import and_, distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit import parse_time_text, time_text
from gateway.audit.queries import event_record
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import COUNCIL_TIMEZONE
from gateway.console.tables import alert_acknowledgements
from policies import Agreement
from schema.ledger_records import AuditEventRecord

ALERTS_SHOWN: Final = 200
LATENCY_SAMPLE: Final = 5_000


class AcknowledgeError(Exception):
    """An acknowledgement that cannot be recorded; `str()` says why (no personal data)."""


class UnknownAlertError(AcknowledgeError):
    """No alert has this id."""


@dataclass(frozen=True, slots=True)
class AlertItem:
    event: AuditEventRecord
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    note: str | None


async def alert_queue(engine: AsyncEngine) -> list[AlertItem]:
    """The newest alerts, each with its acknowledgement if it has one."""
    stmt = (
        select(
            audit_events,
            alert_acknowledgements.c.acknowledged_at,
            alert_acknowledgements.c.reader,
            alert_acknowledgements.c.note,
        )
        .select_from(
            audit_events.outerjoin(
                alert_acknowledgements, alert_acknowledgements.c.event_id == audit_events.c.id
            )
        )
        .where(audit_events.c.outcome == "alert")
        .order_by(audit_events.c.occurred_at.desc(), audit_events.c.id.desc())
        .limit(ALERTS_SHOWN)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        AlertItem(
            event=event_record(row._mapping),
            acknowledged_at=datetime.fromtimestamp(row.acknowledged_at, UTC) if row.acknowledged_at else None,
            acknowledged_by=row.reader,
            note=row.note,
        )
        for row in rows
    ]


async def check_acknowledgeable(conn: AsyncConnection, event_id: str) -> None:
    found = (await conn.execute(select(audit_events.c.outcome).where(audit_events.c.id == event_id))).first()
    if found is None or found.outcome != "alert":
        raise UnknownAlertError("no alert has this id")
    done = (
        await conn.execute(
            select(alert_acknowledgements.c.reader).where(alert_acknowledgements.c.event_id == event_id)
        )
    ).first()
    if done is not None:
        raise AcknowledgeError("this alert was acknowledged already")


async def acknowledge(
    conn: AsyncConnection, event_id: str, *, reader: str, note: str, ledger_event_id: str
) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(
                alert_acknowledgements.insert().values(
                    event_id=event_id,
                    acknowledged_at=int(time.time()),
                    reader=reader,
                    note=note,
                    ledger_event_id=ledger_event_id,
                )
            )
    except IntegrityError:
        raise AcknowledgeError("this alert was acknowledged already") from None


# -- the charts' figures --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    days: list[date]  # the days shown, oldest first (UTC)
    disclosures_per_day: dict[str, list[int]]  # agreement id -> people disclosed on each day
    refusals: list[tuple[str, int]]  # error code -> refused requests over the days shown, most first
    people_today: list[tuple[str, str, int, int | None]]  # (client, agreement, distinct people, quota)
    commit_ms: list[float]  # request-to-commit times of the newest events, in milliseconds


def _utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def figures(
    engine: AsyncEngine, agreements: Mapping[str, Agreement], *, today: date, days: int = 14
) -> Figures:
    shown = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    start = time_text(_utc_midnight(shown[0]))
    end = time_text(_utc_midnight(today + timedelta(days=1)))
    # The council's day for quotas runs from midnight in London.
    uk_midnight = datetime(today.year, today.month, today.day, tzinfo=COUNCIL_TIMEZONE).astimezone(UTC)
    day_of = func.substr(audit_events.c.occurred_at, 1, 10)
    joined = audit_disclosures.join(audit_events, audit_events.c.id == audit_disclosures.c.event_id)
    async with engine.connect() as conn:
        per_day = (
            await conn.execute(
                select(audit_events.c.agreement_id, day_of.label("day"), func.count().label("n"))
                .select_from(joined)
                .where(audit_events.c.occurred_at >= start, audit_events.c.occurred_at < end)
                .group_by(audit_events.c.agreement_id, day_of)
            )
        ).all()
        refused = (
            await conn.execute(
                # A summary event stands for request_count refusals; any other event for one.
                select(audit_events.c.error_code, func.sum(func.coalesce(audit_events.c.request_count, 1)))
                .where(
                    audit_events.c.outcome == "denied",
                    audit_events.c.occurred_at >= start,
                    audit_events.c.occurred_at < end,
                )
                .group_by(audit_events.c.error_code)
            )
        ).all()
        people = (
            await conn.execute(
                select(
                    audit_events.c.client_id,
                    audit_events.c.agreement_id,
                    func.count(distinct(audit_disclosures.c.person_id)),
                )
                .select_from(joined)
                .where(
                    and_(
                        audit_events.c.occurred_at >= time_text(uk_midnight),
                        audit_events.c.occurred_at < end,
                        audit_events.c.endpoint == "graphql",
                    )
                )
                .group_by(audit_events.c.client_id, audit_events.c.agreement_id)
            )
        ).all()
        commits = (
            await conn.execute(
                select(audit_events.c.occurred_at, audit_events.c.recorded_at)
                .where(
                    audit_events.c.endpoint.in_(("graphql", "token")),
                    audit_events.c.recorded_at.is_not(None),
                    audit_events.c.request_count.is_(None),
                )
                .order_by(audit_events.c.occurred_at.desc())
                .limit(LATENCY_SAMPLE)
            )
        ).all()
    index = {day.isoformat(): i for i, day in enumerate(shown)}
    disclosures: dict[str, list[int]] = {agreement_id: [0] * days for agreement_id in sorted(agreements)}
    for agreement_id, day, count in per_day:
        if agreement_id is None or day not in index:
            continue
        disclosures.setdefault(agreement_id, [0] * days)[index[day]] += int(count)
    totals: dict[str, int] = {}
    for code, count in refused:
        totals[code or "(none)"] = totals.get(code or "(none)", 0) + int(count or 0)
    refusals = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    today_people = []
    for client_id, agreement_id, count in people:
        agreement = agreements.get(agreement_id or "")
        quota = agreement.limits.people_per_day if agreement else None
        today_people.append((client_id or "-", agreement_id or "-", int(count), quota))
    today_people.sort(key=lambda item: (-item[2], item[0]))
    commit_ms = []
    for occurred_at, recorded_at in commits:
        seconds = (parse_time_text(recorded_at) - parse_time_text(occurred_at)).total_seconds()
        commit_ms.append(max(seconds, 0.0) * 1000)
    return Figures(
        days=shown,
        disclosures_per_day=disclosures,
        refusals=refusals,
        people_today=today_people,
        commit_ms=commit_ms,
    )
