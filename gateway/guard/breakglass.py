"""Break-glass (MASH): one person's protected fields, for a stated risk, for a short time, reviewed.

A request under an agreement with `break_glass: true`, from a verified officer with a case reference
and an `X-Break-Glass-Reason`, that reaches exactly one person with a protected-address marker opens a
window for that person only: for `GATEWAY_BREAK_GLASS_MINUTES` that officer, on that case, sees the
person's location and contact fields. Household members and everyone else stay withheld. A request
that would reach several protected people is refused: the glass is broken one person at a time.

Every break-glass request raises an alert before its answer leaves; every window joins the review
queue (`gateway breakglass list|review`, and the security-audit view), where a reviewer records
`justified` or `escalated` with a note. An unreviewed window older than
`GATEWAY_BREAK_GLASS_REVIEW_HOURS` raises a BREAK_GLASS_UNREVIEWED alert.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db import utc
from gateway.guard.tables import break_glass
from schema.ledger_records import BreakGlassEntry

ReviewOutcome = Literal["justified", "escalated"]
OUTCOMES: Final = ("justified", "escalated")


class BreakGlassError(Exception):
    """A review that cannot be recorded; `str()` says why."""


# The record the security-audit view reads is the one kept here.
BreakGlassRecord = BreakGlassEntry


class BreakGlassWindows:
    def __init__(self, engine: AsyncEngine, *, minutes: int) -> None:
        self._engine = engine
        self._minutes = minutes

    async def open_for(self, *, client_id: str, officer: str, case_reference: str) -> dict[int, str]:
        """The people whose window is open for this officer on this case, with the reason given."""
        now = int(time.time())
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(break_glass.c.person_id, break_glass.c.reason)
                .where(
                    break_glass.c.client_id == client_id,
                    break_glass.c.officer == officer,
                    break_glass.c.case_reference == case_reference,
                    break_glass.c.expires_at > now,
                )
                .order_by(break_glass.c.opened_at)
            )
            return {int(person): str(reason) for person, reason in rows}

    async def open(
        self,
        *,
        event_id: str,
        client_id: str,
        agreement_id: str,
        officer: str,
        officer_issuer: str,
        case_reference: str,
        reason: str,
        person_id: int,
    ) -> str:
        opened = datetime.now(UTC)
        row = {
            "id": uuid.uuid4().hex,
            "event_id": event_id,
            "opened_at": opened,
            "expires_at": int((opened + timedelta(minutes=self._minutes)).timestamp()),
            "client_id": client_id,
            "agreement_id": agreement_id,
            "officer": officer,
            "officer_issuer": officer_issuer,
            "case_reference": case_reference,
            "reason": reason,
            "person_id": person_id,
        }
        async with self._engine.begin() as conn:
            await conn.execute(break_glass.insert().values(row))
        return str(row["id"])


async def list_break_glass(conn: AsyncConnection, *, pending: bool = False) -> list[BreakGlassRecord]:
    stmt = select(break_glass).order_by(break_glass.c.opened_at.desc())
    if pending:
        stmt = stmt.where(break_glass.c.reviewed_at.is_(None))
    return [break_glass_record(row._mapping) for row in (await conn.execute(stmt)).all()]


async def review_break_glass(
    conn: AsyncConnection, break_glass_id: str, *, outcome: str, reviewer: str, note: str
) -> BreakGlassRecord:
    if outcome not in OUTCOMES:
        raise BreakGlassError(f"the outcome must be one of: {', '.join(OUTCOMES)}")
    if not reviewer.strip() or not note.strip():
        raise BreakGlassError("a review needs a reviewer and a note")
    found = (await conn.execute(select(break_glass).where(break_glass.c.id == break_glass_id))).first()
    if found is None:
        raise BreakGlassError("no break-glass has this id")
    if found.reviewed_at is not None:
        raise BreakGlassError(f"this break-glass was reviewed already ({found.review_outcome})")
    done = await conn.execute(
        update(break_glass)
        .where(break_glass.c.id == break_glass_id, break_glass.c.reviewed_at.is_(None))
        .values(
            reviewed_at=datetime.now(UTC),
            reviewer=reviewer.strip()[:200],
            review_outcome=outcome,
            review_note=note.strip(),
        )
    )
    if done.rowcount != 1:  # another review got there between the read and the update
        raise BreakGlassError("this break-glass was reviewed already")
    reviewed = (await conn.execute(select(break_glass).where(break_glass.c.id == break_glass_id))).one()
    return break_glass_record(reviewed._mapping)


async def overdue_reviews(conn: AsyncConnection, *, older_than: timedelta) -> list[BreakGlassRecord]:
    """Unreviewed windows opened longer ago than `older_than` that have not been alerted yet; they are
    marked as alerted in the same transaction."""
    cutoff = datetime.now(UTC) - older_than
    rows = (
        await conn.execute(
            select(break_glass).where(
                break_glass.c.reviewed_at.is_(None),
                break_glass.c.overdue_alerted_at.is_(None),
                break_glass.c.opened_at < cutoff,
            )
        )
    ).all()
    if rows:
        await conn.execute(
            update(break_glass)
            .where(break_glass.c.id.in_([row.id for row in rows]), break_glass.c.overdue_alerted_at.is_(None))
            .values(overdue_alerted_at=datetime.now(UTC))
        )
    return [break_glass_record(row._mapping) for row in rows]


def break_glass_record(row: Any) -> BreakGlassRecord:
    opened = utc(row["opened_at"])
    assert opened is not None
    return BreakGlassRecord(
        id=row["id"],
        event_id=row["event_id"],
        opened_at=opened,
        expires_at=datetime.fromtimestamp(row["expires_at"], UTC),
        client_id=row["client_id"],
        agreement_id=row["agreement_id"],
        officer=row["officer"],
        officer_issuer=row["officer_issuer"],
        case_reference=row["case_reference"],
        reason=row["reason"],
        person_id=int(row["person_id"]),
        reviewed_at=utc(row["reviewed_at"]),
        reviewer=row["reviewer"],
        review_outcome=row["review_outcome"],
        review_note=row["review_note"],
    )
