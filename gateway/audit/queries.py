"""Reading the access ledger: event search and the disclosure register, newest first.

Implements `schema.ledger_records.LedgerReader` for the security-audit view, and serves the CLI.
Cursors are opaque to the caller: the (time, event id) of the last row, checked on the way back in.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.events import parse_time_text, time_text
from gateway.audit.tables import audit_disclosures, audit_events
from policies import Agreement
from schema.ledger_records import (
    AuditEventRecord,
    DisclosureRecord,
    EventFilter,
    InvalidCursorError,
    LedgerPage,
)

_TIME_TEXT: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_EVENT_ID: Final = re.compile(r"^[0-9a-f]{32}$")


def _cursor(occurred_at: str, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{occurred_at}|{event_id}".encode()).decode().rstrip("=")


def _position(cursor: str) -> tuple[str, str]:
    try:
        occurred_at, _, event_id = (
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursorError from None
    if not _TIME_TEXT.match(occurred_at) or not _EVENT_ID.match(event_id):
        raise InvalidCursorError
    return occurred_at, event_id


def _split(text: str | None, separator: str) -> tuple[str, ...]:
    return tuple(part for part in (text or "").split(separator) if part)


class LedgerQueries:
    def __init__(self, engine: AsyncEngine, agreements: Mapping[str, Agreement]) -> None:
        self._engine = engine
        self._partners = {agreement_id: a.partner for agreement_id, a in agreements.items()}

    async def search_events(
        self, criteria: EventFilter, *, first: int, after: str | None
    ) -> LedgerPage[AuditEventRecord]:
        stmt: Select[Any] = select(audit_events)
        if criteria.client is not None:
            stmt = stmt.where(audit_events.c.client_id == criteria.client)
        if criteria.agreement is not None:
            stmt = stmt.where(audit_events.c.agreement_id == criteria.agreement)
        if criteria.outcome is not None:
            stmt = stmt.where(audit_events.c.outcome == criteria.outcome)
        if criteria.acting_user is not None:
            stmt = stmt.where(audit_events.c.acting_user == criteria.acting_user)
        if criteria.case_reference is not None:
            stmt = stmt.where(audit_events.c.case_reference == criteria.case_reference)
        if criteria.error_code is not None:
            stmt = stmt.where(audit_events.c.error_code == criteria.error_code)
        if criteria.start is not None:
            stmt = stmt.where(audit_events.c.occurred_at >= time_text(criteria.start))
        if criteria.end is not None:
            stmt = stmt.where(audit_events.c.occurred_at < time_text(criteria.end))
        key = (audit_events.c.occurred_at, audit_events.c.id)
        rows = await self._page(stmt, key, first=first, after=after)
        return LedgerPage(
            items=[(_cursor(r.occurred_at, r.id), event_record(r._mapping)) for r in rows[:first]],
            has_next=len(rows) > first,
        )

    async def event(self, event_id: str) -> AuditEventRecord | None:
        if not _EVENT_ID.match(event_id):
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).first()
        return None if row is None else event_record(row._mapping)

    async def people_of(self, event_id: str) -> list[tuple[int, tuple[str, ...]]]:
        """The people an event disclosed, by internal id, with the fields each was sent."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(audit_disclosures.c.person_id, audit_disclosures.c.fields)
                .where(audit_disclosures.c.event_id == event_id)
                .order_by(audit_disclosures.c.person_id)
            )
            return [(int(person), _split(fields, ",")) for person, fields in rows]

    async def received_by(self, person_id: int) -> list[tuple[str | None, str | None, tuple[str, ...]]]:
        """Every disclosure of the person as (client, agreement, fields sent): who holds what of it."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(audit_events.c.client_id, audit_events.c.agreement_id, audit_disclosures.c.fields)
                .select_from(
                    audit_disclosures.join(audit_events, audit_events.c.id == audit_disclosures.c.event_id)
                )
                .where(audit_disclosures.c.person_id == person_id)
            )
            return [(client, agreement, _split(fields, ",")) for client, agreement, fields in rows]

    async def disclosures_of(
        self, person_id: int, *, first: int, after: str | None
    ) -> LedgerPage[DisclosureRecord]:
        stmt: Select[Any] = (
            select(audit_events, audit_disclosures.c.fields)
            .select_from(
                audit_disclosures.join(audit_events, audit_events.c.id == audit_disclosures.c.event_id)
            )
            .where(audit_disclosures.c.person_id == person_id)
        )
        key = (audit_events.c.occurred_at, audit_events.c.id)
        rows = await self._page(stmt, key, first=first, after=after)
        return LedgerPage(
            items=[(_cursor(r.occurred_at, r.id), self._disclosure_record(r._mapping)) for r in rows[:first]],
            has_next=len(rows) > first,
        )

    async def all_disclosures_of(self, person_id: int) -> list[DisclosureRecord]:
        """Every disclosure, oldest first (for subject access reports)."""
        records: list[DisclosureRecord] = []
        after = None
        while True:
            page = await self.disclosures_of(person_id, first=500, after=after)
            records += [record for _, record in page.items]
            if not page.has_next:
                return list(reversed(records))
            after = page.items[-1][0]

    async def _page(
        self, stmt: Select[Any], key: tuple[Any, Any], *, first: int, after: str | None
    ) -> list[Any]:
        if after is not None:
            stmt = stmt.where(tuple_(*key) < tuple_(*_position(after)))
        stmt = stmt.order_by(key[0].desc(), key[1].desc()).limit(first + 1)
        async with self._engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    def _disclosure_record(self, row: Mapping[str, Any]) -> DisclosureRecord:
        return DisclosureRecord(
            event_id=row["id"],
            occurred_at=parse_time_text(row["occurred_at"]),
            client_id=row["client_id"],
            partner=self._partners.get(row["agreement_id"] or ""),
            agreement_id=row["agreement_id"],
            agreement_version=row["agreement_version"],
            purpose=row["purpose"],
            lawful_basis=_split(row["lawful_basis"], "; "),
            fields=_split(row["fields"], ","),
            acting_user=row["acting_user"],
            case_reference=row["case_reference"],
        )


def event_record(row: Mapping[Any, Any]) -> AuditEventRecord:
    return AuditEventRecord(
        id=row["id"],
        occurred_at=parse_time_text(row["occurred_at"]),
        endpoint=row["endpoint"],
        outcome=row["outcome"],
        http_status=int(row["http_status"]),
        latency_ms=int(row["latency_us"]) / 1000,
        people_count=int(row["people_count"]),
        client_id=row["client_id"],
        agreement_id=row["agreement_id"],
        agreement_version=row["agreement_version"],
        purpose=row["purpose"],
        lawful_basis=_split(row["lawful_basis"], "; "),
        decision_rule=row["decision_rule"],
        acting_user=row["acting_user"],
        officer_issuer=row["officer_issuer"],
        case_reference=row["case_reference"],
        break_glass_reason=row["break_glass_reason"],
        operation_name=row["operation_name"],
        document_sha256=row["document_sha256"],
        fields_disclosed=_split(row["fields_disclosed"], ","),
        fields_withheld=_split(row["fields_withheld"], ","),
        error_code=row["error_code"],
        client_address=row["client_address"],
        trace_id=row["trace_id"],
        token_jti=row["token_jti"],
        request_count=row["request_count"],
    )
