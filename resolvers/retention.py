"""People with their records by class, for the retention schedules; and the purge of people past them.

Nothing here commits: the caller owns the transaction, and a purge is all or nothing within it. The
purge removes a person's rows from the council's records (their objections, restrictions, records by
class, partners' contributions about them, then the person; the family's eligibility is judged again
without them), then every household it left with nobody (with its assessment) and every
address no household uses any more. What outlives the record is not touched here: the access ledger
and its disclosure register, data subjects' requests, notifications to past recipients and break-glass
reviews keep the person's internal id, so a subject access request still answers who received what.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Row, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from policies.eligibility import EligibilityRule, load_eligibility
from resolvers.eligibility import refresh_households
from resolvers.models import (
    addresses,
    assessments,
    batch_rows,
    contributions,
    eligibility_intervals,
    households,
    objections,
    people,
    person_records,
    referrals,
    restrictions,
)
from resolvers.referrals import raise_high_water

_Row = Row[*tuple[Any, ...]]

# Tables keyed by person (a foreign key to people.id): emptied for a person before the person goes.
PERSON_TABLES = (objections, restrictions, person_records, contributions, referrals)


@dataclass(frozen=True, slots=True)
class PersonRecords:
    person_id: int
    legal_hold: bool
    retention_until: date  # the person's own retention date, which every view obeys
    records: tuple[tuple[str, date | None], ...]  # (record class, counted from; None: still open)


@dataclass(frozen=True, slots=True)
class PurgeCount:
    people: int
    households: int
    addresses: int


async def read_people_records(
    conn: AsyncConnection, *, after: int = 0, limit: int = 5_000
) -> list[PersonRecords]:
    """The next `limit` people by id after `after`, each with their records by class."""
    found = await conn.execute(
        select(people.c.id, people.c.legal_hold, people.c.retention_until)
        .where(people.c.id > after)
        .order_by(people.c.id)
        .limit(limit)
    )
    rows = found.all()
    if not rows:
        return []
    first, last = rows[0].id, rows[-1].id
    records = await conn.execute(
        select(person_records.c.person_id, person_records.c.record_class, person_records.c.counted_from)
        .where(person_records.c.person_id.between(first, last))
        .order_by(person_records.c.person_id, person_records.c.record_class)
    )
    return _joined(rows, records.all())


async def lock_people_records(conn: AsyncConnection, person_ids: Sequence[int]) -> list[PersonRecords]:
    """These people as they are now, with their records, locked until the transaction ends
    (PostgreSQL: FOR UPDATE on the people, their records and their households, so that no hold, record
    or member can be added while they are decided again and purged; SQLite serialises writers, and the
    caller begins the transaction as a writer). People no longer on record are left out."""
    if not person_ids:
        return []
    ids = sorted(set(person_ids))
    rows = (
        await conn.execute(
            select(people.c.id, people.c.legal_hold, people.c.retention_until, people.c.household_id)
            .where(people.c.id.in_(ids))
            .order_by(people.c.id)
            .with_for_update()
        )
    ).all()
    household_ids = sorted({row.household_id for row in rows})
    if household_ids:
        await conn.execute(
            select(households.c.id)
            .where(households.c.id.in_(household_ids))
            .order_by(households.c.id)
            .with_for_update()
        )
    records = await conn.execute(
        select(person_records.c.person_id, person_records.c.record_class, person_records.c.counted_from)
        .where(person_records.c.person_id.in_(ids))
        .order_by(person_records.c.person_id, person_records.c.record_class)
        .with_for_update()
    )
    return _joined(rows, records.all())


def _joined(rows: Sequence[_Row], records: Sequence[_Row]) -> list[PersonRecords]:
    by_person: dict[int, list[tuple[str, date | None]]] = {}
    for record in records:
        by_person.setdefault(record.person_id, []).append((record.record_class, record.counted_from))
    return [
        PersonRecords(row.id, bool(row.legal_hold), row.retention_until, tuple(by_person.get(row.id, ())))
        for row in rows
    ]


async def purge_people(
    conn: AsyncConnection, person_ids: Sequence[int], rules: Mapping[str, EligibilityRule] | None = None
) -> PurgeCount:
    """Delete these people and what only they kept: call inside the transaction that locked and decided
    them (`lock_people_records`)."""
    ids = sorted(set(person_ids))
    if not ids:
        return PurgeCount(0, 0, 0)
    household_ids = sorted(
        (await conn.execute(select(people.c.household_id).where(people.c.id.in_(ids)).distinct())).scalars()
    )
    for table in PERSON_TABLES:
        await conn.execute(delete(table).where(table.c.person_id.in_(ids)))
    # A batch's row keeps its result, not whom it was about.
    await conn.execute(update(batch_rows).where(batch_rows.c.person_id.in_(ids)).values(person_id=None))
    # A purged id is never given again (a referred child's new record): it names this person in the ledger.
    await raise_high_water(conn, people.name, max(ids))
    gone = (await conn.execute(delete(people).where(people.c.id.in_(ids)))).rowcount
    empty = sorted(
        (
            await conn.execute(
                select(households.c.id).where(
                    households.c.id.in_(household_ids),
                    ~exists().where(people.c.household_id == households.c.id),
                )
            )
        ).scalars()
    )
    address_ids = sorted(
        (
            await conn.execute(select(households.c.address_id).where(households.c.id.in_(empty)).distinct())
        ).scalars()
    )
    # A family that keeps members is judged again without the evidence that went with the others.
    await refresh_households(conn, sorted(set(household_ids) - set(empty)), rules or load_eligibility())
    await conn.execute(delete(eligibility_intervals).where(eligibility_intervals.c.household_id.in_(empty)))
    await conn.execute(delete(assessments).where(assessments.c.household_id.in_(empty)))
    if empty:
        await raise_high_water(conn, households.name, max(empty))
    if address_ids:
        await raise_high_water(conn, addresses.name, max(address_ids))
    emptied = (await conn.execute(delete(households).where(households.c.id.in_(empty)))).rowcount
    unused = (
        await conn.execute(
            delete(addresses).where(
                addresses.c.id.in_(address_ids),
                ~exists().where(households.c.address_id == addresses.c.id),
            )
        )
    ).rowcount
    return PurgeCount(people=gone, households=emptied, addresses=unused)
