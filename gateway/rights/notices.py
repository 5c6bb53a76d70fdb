"""Art 19: telling every past recipient of a person's data that it was rectified or erased.

The recipients come from the access ledger's disclosure register (read by the caller): each client,
under each agreement (its ref space), that ever received any of the fields affected, for the person.
Each gets one notification naming the affected fields it received. The council's own reads of the
ledger are not recipients. The store also serves each client's feed to its view
(`schema.notice_records.NoticeReader`).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db import utc
from gateway.rights.tables import notifications
from policies import Agreement
from schema.ledger_records import InvalidCursorError, LedgerPage
from schema.notice_records import NoticeRecord, UnknownNoticeError

KINDS: Final = ("rectification", "erasure")
# A correction of one of these changes what a recipient of the others holds too: a new address is a new
# postcode and property reference; a corrected postcode corrects the address sent with it; a value
# derived from a corrected one (a year of birth, an age band, a postcode district) may have changed with
# it, and the gateway does not know the old value to tell: every recipient of it is told.
OVERLAPS: Final[dict[str, tuple[str, ...]]] = {
    "dateOfBirth": ("yearOfBirth", "ageBand"),
    "address": ("postcode", "uprn", "postcodeDistrict"),
    "postcode": ("address", "postcodeDistrict"),
    "uprn": ("address", "postcode", "postcodeDistrict"),
}


@dataclass(frozen=True, slots=True)
class Recipient:
    client_id: str
    agreement_id: str
    fields: tuple[str, ...]  # the affected fields it received


def past_recipients(
    received: list[tuple[str | None, str | None, tuple[str, ...]]],
    *,
    changed: tuple[str, ...] | None,
    agreements: Mapping[str, Agreement],
) -> list[Recipient]:
    """From what the ledger says the person's data went to (client, agreement, fields, per disclosure),
    everyone outside the council with the fields among `changed` (None: every field, an erasure) each
    received."""
    by_recipient: dict[tuple[str, str], set[str]] = {}
    for client_id, agreement_id, fields in received:
        agreement = agreements.get(agreement_id or "")
        if client_id is None or agreement is None or agreement.is_ledger:
            continue
        # The view's own fields only: not `ref`, nor what the register records of reads that disclosed
        # no field of the person (the feed of notifications itself).
        view = set(agreement.fields)
        by_recipient.setdefault((client_id, agreement.id), set()).update(f for f in fields if f in view)
    touched = None if changed is None else {n for name in changed for n in (name, *OVERLAPS.get(name, ()))}
    out = []
    for (client_id, agreement_id), names in sorted(by_recipient.items()):
        affected = names if touched is None else names & touched
        if affected:
            order = agreements[agreement_id].fields
            out.append(Recipient(client_id, agreement_id, tuple(sorted(affected, key=_position(order)))))
    return out


def _position(order: tuple[str, ...]) -> Any:
    return lambda name: (order.index(name) if name in order else len(order), name)


async def notify(
    conn: AsyncConnection, recipients: list[Recipient], *, person_id: int, kind: str, request_id: str
) -> None:
    now = datetime.now(UTC)
    for recipient in recipients:
        await conn.execute(
            notifications.insert().values(
                id=uuid.uuid4().hex, client_id=recipient.client_id, agreement_id=recipient.agreement_id,
                person_id=person_id, kind=kind, fields=",".join(recipient.fields), request_id=request_id,
                created_at=now,
            )
        )  # fmt: skip


class NoticeStore:
    """Each client's feed, oldest first, for its own view."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def notices(
        self, *, client_id: str, agreement_id: str, first: int, after: str | None
    ) -> LedgerPage[NoticeRecord]:
        key = (notifications.c.created_at, notifications.c.id)
        stmt = select(notifications).where(
            notifications.c.client_id == client_id, notifications.c.agreement_id == agreement_id
        )
        if after is not None:
            stmt = stmt.where(tuple_(*key) > tuple_(*_position_of(after)))
        stmt = stmt.order_by(*key).limit(first + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        items = [(_cursor(row), _record(row._mapping)) for row in rows[:first]]
        return LedgerPage(items=items, has_next=len(rows) > first)

    async def acknowledge(self, *, client_id: str, agreement_id: str, notice_id: str) -> NoticeRecord:
        mine = (
            notifications.c.id == notice_id,
            notifications.c.client_id == client_id,
            notifications.c.agreement_id == agreement_id,
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                update(notifications)
                .where(*mine, notifications.c.acknowledged_at.is_(None))
                .values(acknowledged_at=datetime.now(UTC))
            )
            row = (await conn.execute(select(notifications).where(*mine))).first()
        if row is None:
            raise UnknownNoticeError
        return _record(row._mapping)


def _record(row: Mapping[Any, Any]) -> NoticeRecord:
    created = utc(row["created_at"])
    assert created is not None
    return NoticeRecord(
        id=row["id"],
        person_id=int(row["person_id"]),
        kind=row["kind"],
        fields=tuple(name for name in row["fields"].split(",") if name),
        created_at=created,
        acknowledged_at=utc(row["acknowledged_at"]),
    )


def _cursor(row: Any) -> str:
    moment = utc(row.created_at)
    assert moment is not None
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{row.id}".encode()).decode().rstrip("=")


def _position_of(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, notice_id = text.partition("|")
        created = datetime.fromisoformat(moment)
        if created.tzinfo is None:
            raise ValueError("a cursor's time is in UTC")
        created = created.astimezone(UTC)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise InvalidCursorError from None
    if len(notice_id) != 32 or not all(c in "0123456789abcdef" for c in notice_id):
        raise InvalidCursorError
    return created, notice_id
