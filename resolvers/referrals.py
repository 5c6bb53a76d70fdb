"""Referrals as rows: a partner names someone the council may not yet know (the DWP's two-year-old offer).

A referral is recorded pending its request's audit event, like a contribution; once the event is written
it is matched against the council's records, under a lock so that two referrals of the same new child
cannot both open a record:
- one person with the same names, date of birth and postcode: `matched` to that person;
- nobody born that day who shares a name or the postcode: a record is `opened` (a household at the
  address, the person, a Family Hub record counting from today);
- anything else (a near match, two exact ones): `review`, with the people it might be, for an officer to
  decide (`decide`): the same person (`linked`) or someone new (`opened`). Never a duplicate silently.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from policies.eligibility import add_months
from resolvers.contributions import answered_event
from resolvers.models import (
    LINKED,
    MATCHED,
    OPENED,
    PENDING_REFERRAL,
    REFERRAL_KEY,
    REVIEW,
    addresses,
    households,
    id_high_water,
    people,
    person_records,
    referrals,
    report_keys,
)

OPENED_CLASS: Final = "family-hub"  # a referred child's record: kept six years from the last contact
OPENED_KEEP_MONTHS: Final = 72


class ReferralKeyReusedError(Exception):
    """The client used this idempotency key before, for something else."""


class ReferralDecisionError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class NewReferral:
    kind: str
    given_name: str
    family_name: str
    date_of_birth: date
    address_line1: str
    town: str
    postcode: str  # normalised: upper case, one space before the inward code
    idempotency_key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredReferral:
    id: str
    recorded_at: datetime
    retried: bool


async def store_referral(
    conn: AsyncConnection,
    new: NewReferral,
    *,
    client_id: str,
    agreement_id: str,
    acting_user: str | None,
    event_id: str,
) -> StoredReferral:
    """Record a referral pending its event, or find the first one made with this key (a pending one now
    waits for this request's event instead)."""
    mine = (referrals.c.client_id == client_id) & (referrals.c.idempotency_key == new.idempotency_key)
    found = (await conn.execute(select(referrals).where(mine))).first()
    if found is None:
        made, now = uuid.uuid4().hex, datetime.now(UTC)
        row = {
            "id": made, "kind": new.kind, "given_name": new.given_name,
            "family_name": new.family_name, "date_of_birth": new.date_of_birth,
            "address_line1": new.address_line1, "town": new.town, "postcode": new.postcode,
            "client_id": client_id, "agreement_id": agreement_id, "acting_user": acting_user,
            "event_id": event_id, "recorded_at": now, "state": PENDING_REFERRAL,
            "idempotency_key": new.idempotency_key, "fingerprint": new.fingerprint,
        }  # fmt: skip
        try:
            async with conn.begin_nested():
                # One key, one thing: taken here by a report or a referral, whichever came first.
                key = {"client_id": client_id, "idempotency_key": new.idempotency_key, "kind": REFERRAL_KEY}
                await conn.execute(insert(report_keys).values(**key))
                await conn.execute(insert(referrals).values(**row))
        except IntegrityError:
            found = (await conn.execute(select(referrals).where(mine))).first()
            if found is None:
                raise ReferralKeyReusedError from None  # the key names a report
        else:
            return StoredReferral(made, now, retried=False)
    first = found._mapping
    if first["fingerprint"] != new.fingerprint:
        raise ReferralKeyReusedError
    if first["state"] == PENDING_REFERRAL:
        await conn.execute(update(referrals).where(mine).values(event_id=event_id))
    return StoredReferral(str(first["id"]), first["recorded_at"], retried=True)


MATCH_GROUP: Final = 100  # referrals matched per transaction: the lock is held briefly, however many


async def match_referrals(
    conn: AsyncConnection, event_id: str | None, *, today: date, limit: int = MATCH_GROUP
) -> list[str]:
    """Up to `limit` referrals still pending whose request's event is written (those of `event_id`, or with
    None, those whose event the ledger holds), each matched, opened or left for review. Call first in its
    transaction, and again until it returns fewer than `limit`. Returns what became of each (for tests and
    counts: never shown to the partner)."""
    await serialise(conn)
    query = select(referrals).where(referrals.c.state == PENDING_REFERRAL)
    if event_id is not None:
        query = query.where(referrals.c.event_id == event_id)
    else:
        query = query.where(answered_event(referrals.c.event_id))
    pending = await conn.execute(query.order_by(referrals.c.recorded_at, referrals.c.id).limit(limit))
    states: list[str] = []
    for row in pending.all():
        states.append(await _match(conn, dict(row._mapping), today=today))
    return states


async def serialise(conn: AsyncConnection) -> None:
    """One matcher at a time, so that two referrals of the same new child cannot both open a record."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('referral_matching'))"))
    else:
        # SQLite: a writer from the first statement, so nobody else opens a record between our read and ours.
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


async def _match(conn: AsyncConnection, referral: dict[str, Any], *, today: date) -> str:
    exact, near = await candidates(conn, referral)
    if len(exact) == 1:
        state, person_id, maybe = MATCHED, exact[0], None
    elif not exact and not near:
        state, person_id, maybe = OPENED, await open_record(conn, referral, today=today), None
    else:
        state, person_id, maybe = REVIEW, None, ",".join(str(i) for i in sorted(exact + near))
    await conn.execute(
        update(referrals)
        .where(referrals.c.id == referral["id"])
        .values(state=state, person_id=person_id, candidates=maybe, decided_at=datetime.now(UTC))
    )
    return state


async def candidates(conn: AsyncConnection, referral: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Who the referral might be. Exact: born that day, the same names and postcode. Near: born that day
    sharing a name or the postcode (a spelling, a move, a sibling's record), or the same names born within
    a year of it (a mistyped or swapped day and month). Everyone born within the year is read (by the index
    on the date of birth: for a child under three, other young children) and compared as matching compares
    names, in Python: no SQL `lower()` folds accents, ß or every alphabet's case as `name_key` does."""
    born = referral["date_of_birth"]
    typo = timedelta(days=366)
    found = await conn.execute(
        select(
            people.c.id,
            people.c.given_name,
            people.c.family_name,
            people.c.date_of_birth,
            addresses.c.postcode,
        )
        .join(households, households.c.id == people.c.household_id)
        .join(addresses, addresses.c.id == households.c.address_id)
        .where(people.c.date_of_birth.between(born - typo, born + typo))
    )
    given, family = name_key(referral["given_name"]), name_key(referral["family_name"])
    postcode = postcode_key(referral["postcode"])
    exact: list[int] = []
    near: list[int] = []
    for person_id, their_given, their_family, their_birthday, their_postcode in found:
        same = (name_key(their_given) == given, name_key(their_family) == family)
        here = postcode_key(their_postcode) == postcode
        if their_birthday != born:
            if all(same):
                near.append(person_id)
        elif all(same) and here:
            exact.append(person_id)
        elif any(same) or here:
            near.append(person_id)
    return exact, near


async def reserve_ids(conn: AsyncConnection) -> tuple[int, int, int]:
    """Ids for a record to be opened (address, household, person), never given before nor after."""
    return (
        await next_id(conn, addresses.c.id),
        await next_id(conn, households.c.id),
        await next_id(conn, people.c.id),
    )


async def open_record(
    conn: AsyncConnection,
    referral: dict[str, Any],
    *,
    today: date,
    reserved: tuple[int, int, int] | None = None,
) -> int:
    """A new record for someone the council did not know: an address, a household there, the person, each
    with an id never given before (not even to someone since purged); `reserved`: ids taken earlier."""
    address_id, household_id, person_id = reserved or await reserve_ids(conn)
    await conn.execute(
        insert(addresses).values(
            id=address_id,
            line1=referral["address_line1"],
            town=referral["town"],
            postcode=referral["postcode"],
        )
    )
    await conn.execute(insert(households).values(id=household_id, address_id=address_id))
    await conn.execute(
        insert(people).values(
            id=person_id, household_id=household_id, given_name=referral["given_name"],
            family_name=referral["family_name"], date_of_birth=referral["date_of_birth"],
            retention_until=add_months(today, OPENED_KEEP_MONTHS),
        )
    )  # fmt: skip
    await conn.execute(
        insert(person_records).values(person_id=person_id, record_class=OPENED_CLASS, counted_from=today)
    )
    return person_id


async def next_id(conn: AsyncConnection, column: Any) -> int:
    """An id for a new row of `column`'s table, above every id it holds and every id it ever held."""
    name = column.table.name
    held = int((await conn.execute(select(func.coalesce(func.max(column), 0)))).scalar_one())
    made = max(held, await _high_water(conn, name)) + 1
    await raise_high_water(conn, name, made)
    return made


async def _high_water(conn: AsyncConnection, name: str) -> int:
    found = await conn.execute(select(id_high_water.c.last_id).where(id_high_water.c.name == name))
    return int(found.scalar_one_or_none() or 0)


async def raise_high_water(conn: AsyncConnection, name: str, last_id: int) -> None:
    """Remember that `last_id` was given in `name` (a record opened, or purged: never given again)."""
    if last_id <= await _high_water(conn, name):
        return
    changed = await conn.execute(
        update(id_high_water).where(id_high_water.c.name == name).values(last_id=last_id)
    )
    if changed.rowcount == 0:
        await conn.execute(insert(id_high_water).values(name=name, last_id=last_id))


async def in_review(conn: AsyncConnection, referral_id: str) -> dict[str, Any]:
    """The referral, if an officer may decide it; else a ReferralDecisionError with its code."""
    row = (await conn.execute(select(referrals).where(referrals.c.id == referral_id))).first()
    if row is None:
        raise ReferralDecisionError("UNKNOWN_REFERRAL", "no referral has this id")
    referral = dict(row._mapping)
    if referral["state"] != REVIEW:
        raise ReferralDecisionError("NOT_IN_REVIEW", f"this referral is {referral['state']}, not in review")
    return referral


async def decide(
    conn: AsyncConnection,
    referral_id: str,
    *,
    person_id: int | None,
    officer: str,
    today: date,
    reserved: tuple[int, int, int] | None = None,
) -> tuple[str, int]:
    """An officer's decision on a referral under review: it is `person_id` (linked), or someone new (a
    record opened, with the `reserved` ids if given). Returns the state and the person."""
    await serialise(conn)
    referral = await in_review(conn, referral_id)
    if person_id is None:
        state, person_id = OPENED, await open_record(conn, referral, today=today, reserved=reserved)
    else:
        if (await conn.execute(select(people.c.id).where(people.c.id == person_id))).first() is None:
            raise ReferralDecisionError("UNKNOWN_PERSON", "no person has this id")
        state = LINKED
    await conn.execute(
        update(referrals)
        .where(referrals.c.id == referral_id)
        .values(state=state, person_id=person_id, decided_at=datetime.now(UTC), decided_by=officer)
    )
    return state, person_id


async def list_referrals(conn: AsyncConnection, *, states: Sequence[str] = ()) -> list[dict[str, Any]]:
    query = select(referrals).order_by(referrals.c.recorded_at, referrals.c.id)
    if states:
        query = query.where(or_(*(referrals.c.state == s for s in states)))
    return [dict(row._mapping) for row in await conn.execute(query)]


def name_key(name: str) -> str:
    """A name as matching compares it: case, accents (combining marks), spaces, hyphens, apostrophes and
    full stops set aside; every letter of every alphabet kept (Анна is not Мария, nor 李)."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(c for c in decomposed if c.isalpha() and not unicodedata.combining(c))


def postcode_key(postcode: str) -> str:
    return re.sub(r"\s+", "", postcode).upper()
