"""Data subjects' requests as records, and the effect of a restriction or an objection.

Every privacy notice the gateway serves promises access (Art 15), rectification (Art 16), erasure
(Art 17), restriction (Art 18) and objection (Art 21). Each request is recorded here with who recorded
it, when it was received, from whom (the person or a representative), on what basis, and its outcome.

A restriction takes the person out of one agreement's view, or every view ('*'), from the next
request until it is lifted, whatever the agreement's lawful basis. An objection does the same only in
views whose agreement honours objections (`honours_objection: true`); a legal gateway does not, and the
objection is recorded without effect there. Access, rectification and erasure are recorded as open and
closed with an outcome (what carrying them out changes comes with their own workflows).

Functions take a connection in a transaction the caller commits; each raises `RightsError` with a
stable code and a message that quotes nothing personal.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db import utc
from gateway.rights.tables import rights_requests
from policies import Agreement
from resolvers.models import EVERY_AGREEMENT, objections, people, restrictions
from schema.ledger_records import RightsRequestEntry

Kind = Literal["access", "rectification", "erasure", "restriction", "objection"]
KINDS: Final[tuple[Kind, ...]] = ("access", "rectification", "erasure", "restriction", "objection")
EFFECTS: Final = ("restriction", "objection")  # kinds that change what partners see until lifted
REQUESTERS: Final = ("subject", "representative")
CLOSED_OUTCOMES: Final = ("completed", "refused")


class RightsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# The record the security-audit view reads is the one kept here.
RightsRequest = RightsRequestEntry


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request checked and ready to record: `record` writes it (and its effect) under `id`."""

    id: str
    person_id: int
    kind: Kind
    agreement_id: str | None
    received_on: date
    requested_by: str
    legal_basis: str
    recorded_by: str
    not_honoured_by: tuple[str, ...]  # agreements whose views an objection will not change


def _plain(text: str, what: str, limit: int) -> str:
    text = text.strip()
    if (
        not text
        or len(text) > limit
        or any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") for c in text)
    ):
        raise RightsError("BAD_INPUT", f"{what} must be plain text of 1 to {limit} characters")
    return text


async def check_new(
    conn: AsyncConnection,
    *,
    person_id: int,
    kind: str,
    agreement_id: str | None,
    received_on: date,
    requested_by: str,
    legal_basis: str,
    recorded_by: str,
    agreements: Mapping[str, Agreement],
    today: date,
) -> NewRequest:
    """Everything about a new request that can be refused, checked before anything is written."""
    if kind not in KINDS:
        raise RightsError("BAD_INPUT", f"the kind must be one of: {', '.join(KINDS)}")
    if requested_by not in REQUESTERS:
        raise RightsError("BAD_INPUT", f"requested by must be one of: {', '.join(REQUESTERS)}")
    if received_on > today:
        raise RightsError("BAD_INPUT", "a request cannot be received after today")
    person_agreements = sorted(a for a, agreement in agreements.items() if not agreement.is_ledger)
    if kind in EFFECTS:
        if agreement_id is None:
            raise RightsError("BAD_INPUT", f"a {kind} names one agreement, or '*' for every one")
        if agreement_id != EVERY_AGREEMENT and agreement_id not in person_agreements:
            raise RightsError(
                "UNKNOWN_AGREEMENT", f"no agreement over person records has the id {agreement_id!r}"
            )
    elif agreement_id is not None:
        raise RightsError("BAD_INPUT", f"a request of {kind} is about the person's data, not one agreement")
    basis = _plain(legal_basis, "the legal basis", 200)
    who = _plain(recorded_by, "who recorded it", 200)
    if not (await conn.execute(select(people.c.id).where(people.c.id == person_id))).first():
        raise RightsError("UNKNOWN_PERSON", f"no person has the id {person_id}")
    if kind in EFFECTS and await _effect_exists(conn, kind, person_id, agreement_id):
        raise RightsError(
            "ALREADY_IN_EFFECT",
            f"this person already has a {kind} for {agreement_id} in effect: lift it first",
        )
    reached = person_agreements if agreement_id == EVERY_AGREEMENT else [agreement_id]
    not_honoured = tuple(
        a for a in reached if kind == "objection" and a is not None and not agreements[a].honours_objection
    )
    return NewRequest(
        id=uuid.uuid4().hex, person_id=person_id, kind=kind, agreement_id=agreement_id,
        received_on=received_on, requested_by=requested_by, legal_basis=basis, recorded_by=who,
        not_honoured_by=not_honoured,
    )  # fmt: skip


async def record(conn: AsyncConnection, new: NewRequest, *, today: date) -> RightsRequest:
    """Write the request, and for a restriction or an objection its effect (on the next request)."""
    if new.kind in EFFECTS:
        if await _effect_exists(conn, new.kind, new.person_id, new.agreement_id):  # recorded meanwhile
            raise RightsError("ALREADY_IN_EFFECT", f"this person already has a {new.kind} in effect")
        table = restrictions if new.kind == "restriction" else objections
        try:
            async with conn.begin_nested():
                await conn.execute(
                    table.insert().values(
                        person_id=new.person_id, agreement_id=new.agreement_id, recorded_on=today
                    )
                )
        except IntegrityError:  # another operator's, recorded at the same moment
            raise RightsError(
                "ALREADY_IN_EFFECT", f"this person already has a {new.kind} in effect"
            ) from None
    await conn.execute(
        rights_requests.insert().values(
            id=new.id,
            person_id=new.person_id,
            kind=new.kind,
            agreement_id=new.agreement_id,
            received_on=new.received_on,
            requested_by=new.requested_by,
            legal_basis=new.legal_basis,
            recorded_at=datetime.now(UTC),
            recorded_by=new.recorded_by,
            status="in effect" if new.kind in EFFECTS else "open",
        )
    )
    return await get(conn, new.id)


async def get(conn: AsyncConnection, request_id: str) -> RightsRequest:
    row = (await conn.execute(select(rights_requests).where(rights_requests.c.id == request_id))).first()
    if row is None:
        raise RightsError("UNKNOWN_REQUEST", "no request has this id")
    return _request(row._mapping)


def check_close(
    found: RightsRequest, *, outcome: str | None, note: str | None = None, closed_by: str | None = None
) -> None:
    """A request may be closed (access, rectification, erasure) or lifted (restriction, objection) once,
    with a plain note and the name of who closed it (checked here too, before anything is written)."""
    if note is not None:
        _plain(note, "the note", 2_000)
    if closed_by is not None:
        _plain(closed_by, "who closed it", 200)
    if outcome is None:  # lifting
        if found.kind not in EFFECTS:
            raise RightsError("BAD_INPUT", f"a request of {found.kind} is closed, not lifted")
        if found.status != "in effect":
            raise RightsError("NOT_IN_EFFECT", f"this {found.kind} is {found.status}, not in effect")
        return
    if outcome not in CLOSED_OUTCOMES:
        raise RightsError("BAD_INPUT", f"the outcome must be one of: {', '.join(CLOSED_OUTCOMES)}")
    if found.kind in EFFECTS:
        raise RightsError("BAD_INPUT", f"a {found.kind} is lifted, not closed")
    if found.status != "open":
        raise RightsError("NOT_OPEN", f"this request is {found.status} already")


async def close(
    conn: AsyncConnection, request_id: str, *, outcome: str | None, note: str, closed_by: str
) -> RightsRequest:
    """Close an open request with its outcome, or (outcome None) lift a restriction or objection: the
    person is back in those views on the next request."""
    found = await get(conn, request_id)
    check_close(found, outcome=outcome)
    text = _plain(note, "the note", 2_000)
    who = _plain(closed_by, "who closed it", 200)
    expected = "in effect" if outcome is None else "open"
    done = await conn.execute(
        update(rights_requests)
        .where(rights_requests.c.id == request_id, rights_requests.c.status == expected)
        .values(status=outcome or "lifted", outcome_note=text, closed_at=datetime.now(UTC), closed_by=who)
    )
    if done.rowcount != 1:  # someone else closed it between the read and the update
        raise RightsError("NOT_OPEN", "this request was closed already")
    if outcome is None:
        table = restrictions if found.kind == "restriction" else objections
        await conn.execute(
            delete(table).where(
                table.c.person_id == found.person_id, table.c.agreement_id == found.agreement_id
            )
        )
    return await get(conn, request_id)


async def list_requests(
    conn: AsyncConnection, *, person_id: int | None = None, current_only: bool = False
) -> list[RightsRequest]:
    """Newest first; `current_only`: open requests and restrictions or objections in effect."""
    stmt = select(rights_requests).order_by(rights_requests.c.recorded_at.desc(), rights_requests.c.id)
    if person_id is not None:
        stmt = stmt.where(rights_requests.c.person_id == person_id)
    if current_only:
        stmt = stmt.where(rights_requests.c.status.in_(("open", "in effect")))
    return [_request(row._mapping) for row in (await conn.execute(stmt)).all()]


async def _effect_exists(conn: AsyncConnection, kind: str, person_id: int, agreement_id: str | None) -> bool:
    table = restrictions if kind == "restriction" else objections
    found = await conn.execute(
        select(exists().where(table.c.person_id == person_id, table.c.agreement_id == agreement_id))
    )
    return bool(found.scalar())


def _request(row: Mapping[Any, Any]) -> RightsRequest:
    recorded = utc(row["recorded_at"])
    assert recorded is not None
    return RightsRequest(
        id=row["id"], person_id=int(row["person_id"]), kind=row["kind"], agreement_id=row["agreement_id"],
        received_on=row["received_on"], requested_by=row["requested_by"], legal_basis=row["legal_basis"],
        recorded_at=recorded, recorded_by=row["recorded_by"], status=row["status"],
        outcome_note=row["outcome_note"], closed_at=utc(row["closed_at"]), closed_by=row["closed_by"],
    )  # fmt: skip
