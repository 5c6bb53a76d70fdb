"""Partners' contributions as rows: recorded pending, made evidence once their request's event is written.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, column, exists, insert, or_, select, table, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from resolvers.models import CONTRIBUTION_KEY, contributions, people, report_keys

PENDING, RECORDED = "pending", "recorded"


class KeyReusedError(Exception):
    """The client used this idempotency key before, for a different report."""


@dataclass(frozen=True, slots=True)
class Stored:
    row: dict[str, Any]
    conflicting: bool
    retried: bool


async def store(
    conn: AsyncConnection,
    *,
    person_id: int,
    indicator: str,
    observed_on: date,
    flag: bool | None,
    percent: float | None,
    term: str | None,
    client_id: str,
    agreement_id: str,
    acting_user: str | None,
    event_id: str,
    idempotency_key: str,
    fingerprint: str,
) -> Stored:
    """Record a report pending its event, or find the first one made with this key. A report found still
    pending (its request's event was never written) now waits for this request's event instead."""
    mine = and_(contributions.c.client_id == client_id, contributions.c.idempotency_key == idempotency_key)
    found = (await conn.execute(select(contributions).where(mine))).first()
    if found is None:
        household = (
            await conn.execute(select(people.c.household_id).where(people.c.id == person_id))
        ).scalar_one()
        row = {
            "id": uuid.uuid4().hex, "person_id": person_id, "household_id": household, "indicator": indicator,
            "observed_on": observed_on, "flag": flag,
            "percent": None if percent is None else Decimal(str(percent)), "term": term,
            "client_id": client_id, "agreement_id": agreement_id, "acting_user": acting_user,
            "event_id": event_id, "recorded_at": datetime.now(UTC), "state": PENDING,
            "idempotency_key": idempotency_key, "fingerprint": fingerprint,
        }  # fmt: skip
        try:
            async with conn.begin_nested():
                # One key, one thing: taken here by a report or a referral, whichever came first.
                key = {"client_id": client_id, "idempotency_key": idempotency_key, "kind": CONTRIBUTION_KEY}
                await conn.execute(insert(report_keys).values(**key))
                await conn.execute(contributions.insert().values(**row))
        except IntegrityError:
            found = (await conn.execute(select(contributions).where(mine))).first()
            if found is None:
                raise KeyReusedError from None  # the key names a referral
        else:
            return Stored(row, await _conflicting(conn, row), retried=False)
    first = dict(found._mapping)
    if first["fingerprint"] != fingerprint:
        raise KeyReusedError
    if first["state"] == PENDING:
        await conn.execute(update(contributions).where(mine).values(event_id=event_id))
    return Stored(first, await _conflicting(conn, first), retried=True)


async def _conflicting(conn: AsyncConnection, row: dict[str, Any]) -> bool:
    """Whether another report of the same indicator, person and day says otherwise."""
    c = contributions.c
    other = exists().where(
        c.id != row["id"], c.person_id == row["person_id"], c.indicator == row["indicator"],
        c.observed_on == row["observed_on"], c.state.in_((PENDING, RECORDED)),
        or_(c.flag.is_distinct_from(row["flag"]), c.percent.is_distinct_from(row["percent"])),
    )  # fmt: skip
    return bool((await conn.execute(select(other))).scalar())


async def make_evidence(
    conn: AsyncConnection, event_id: str, *, limit: int | None = None
) -> tuple[list[int], int]:
    """The reports made in the request whose event was just written become evidence (at most `limit` of
    them: call again until fewer come back); their families, and how many reports."""
    pending: ColumnElement[bool] = (contributions.c.event_id == event_id) & (contributions.c.state == PENDING)
    if limit is not None:
        pending = contributions.c.id.in_(select(contributions.c.id).where(pending).limit(limit))
    made = await conn.execute(
        update(contributions).where(pending).values(state=RECORDED).returning(contributions.c.household_id)
    )
    households = [row.household_id for row in made]
    return sorted(set(households)), len(households)


# The ledger's events, by name: whether a request's event is written, and whether its answer went out.
_EVENTS = table("audit_events", column("id"), column("endpoint"), column("http_status"))


def answered_event(event_id: ColumnElement[str]) -> ColumnElement[bool]:
    """The event is written, and is a request answered 2xx or 3xx (its report reached the partner's answer)
    or a batch's (whose accepted rows count even when it stopped): a refused answer's reports never count."""
    return exists().where(
        _EVENTS.c.id == event_id,
        or_(and_(_EVENTS.c.http_status >= 200, _EVENTS.c.http_status < 400), _EVENTS.c.endpoint == "batch"),
    )


async def make_written_evidence(conn: AsyncConnection) -> tuple[list[int], int]:
    """Every report still pending whose request's event is written and was answered (a process stopped
    between the two) made evidence: the families they are about, and how many."""
    made = await conn.execute(
        update(contributions)
        .where(contributions.c.state == PENDING, answered_event(contributions.c.event_id))
        .values(state=RECORDED)
        .returning(contributions.c.household_id)
    )
    households = [row.household_id for row in made]
    return sorted(set(households)), len(households)
