"""The ledger as the security-audit view reads it: the audit's own queries and the break-glass queue."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import LedgerQueries
from gateway.guard.breakglass import BreakGlassError, break_glass_record, review_break_glass
from gateway.guard.tables import break_glass
from gateway.rights import list_requests
from policies import Agreement
from policies.eligibility import EligibilityRule
from resolvers.eligibility import explain
from schema.ledger_records import (
    BreakGlassEntry,
    InvalidCursorError,
    LedgerPage,
    ReviewRefusedError,
    RightsRequestEntry,
)


class SecurityLedger(LedgerQueries):
    def __init__(
        self,
        engine: AsyncEngine,
        agreements: Mapping[str, Agreement],
        rules: Mapping[str, EligibilityRule] | None = None,
    ) -> None:
        """`rules`: the programme's eligibility rules, for `eligibility` (the console reads none)."""
        super().__init__(engine, agreements)
        self._rules = rules or {}

    async def eligibility(self, person_id: int, day: date) -> dict[str, Any] | None:
        if not any(rule.in_force_on(day) for rule in self._rules.values()):
            return None  # no rule judged that day
        async with self._engine.connect() as conn:
            return await explain(conn, person_id, self._rules, day)

    async def rights_requests(self, person_id: int) -> list[RightsRequestEntry]:
        async with self._engine.connect() as conn:
            return await list_requests(conn, person_id=person_id)

    async def review_break_glass(
        self, break_glass_id: str, *, outcome: str, reviewer: str, note: str
    ) -> BreakGlassEntry:
        try:
            async with self._engine.begin() as conn:
                return await review_break_glass(
                    conn, break_glass_id, outcome=outcome, reviewer=reviewer, note=note
                )
        except BreakGlassError as error:
            raise ReviewRefusedError(str(error)) from None

    async def break_glass(
        self, *, pending: bool, first: int, after: str | None
    ) -> LedgerPage[BreakGlassEntry]:
        stmt = select(break_glass)
        if pending:
            stmt = stmt.where(break_glass.c.reviewed_at.is_(None))
        if after is not None:
            opened, entry_id = _position(after)
            stmt = stmt.where(tuple_(break_glass.c.opened_at, break_glass.c.id) < tuple_(opened, entry_id))
        stmt = stmt.order_by(break_glass.c.opened_at.desc(), break_glass.c.id.desc()).limit(first + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        items = []
        for row in rows[:first]:
            record = break_glass_record(row._mapping)
            items.append((_cursor(row.opened_at, record.id), record))
        return LedgerPage(items=items, has_next=len(rows) > first)


def _cursor(opened_at: datetime, entry_id: str) -> str:
    moment = (opened_at if opened_at.tzinfo else opened_at.replace(tzinfo=UTC)).isoformat()
    return base64.urlsafe_b64encode(f"{moment}|{entry_id}".encode()).decode().rstrip("=")


def _position(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, entry_id = text.partition("|")
        opened = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursorError from None
    if len(entry_id) != 32 or not all(c in "0123456789abcdef" for c in entry_id):
        raise InvalidCursorError
    return opened, entry_id
