"""Hand-made synthetic people for the retention tests, each in a fresh database of their own.

Retention purges people: never from the session's shared database, whose population other tests read.
Ids start at 800000, above the seeded people and below the edge cases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db import create_engine, upgrade
from resolvers.models import (
    OUTCOMES,
    addresses,
    assessments,
    households,
    objections,
    people,
    person_records,
    restrictions,
)
from tests.support.databases import postgres_database

FIRST_ID = 800_000


@asynccontextmanager
async def fresh_engine(kind: str, directory: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A new, migrated, empty database of `kind` (sqlite or postgresql), dropped afterwards."""

    @asynccontextmanager
    async def made() -> AsyncIterator[str]:
        if kind == "sqlite":
            yield f"sqlite+aiosqlite:///{directory / 'retention.db'}"
        else:
            async with postgres_database() as url:
                yield url

    async with made() as url:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            yield url, engine
        finally:
            await engine.dispose()


@dataclass
class Households:
    """Makes households, each at an address of its own unless told to share one."""

    conn: AsyncConnection
    next_id: int = FIRST_ID

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    async def household(self, *, assessed: bool = True, address_id: int | None = None) -> tuple[int, int]:
        """A new household (and address, unless given): (household id, address id)."""
        if address_id is None:
            address_id = self._id()
            await self.conn.execute(
                insert(addresses).values(
                    id=address_id,
                    uprn=None,
                    line1=f"{address_id} Quill Lane",
                    town="London",
                    postcode="W2 1ZZ",
                )
            )
        household_id = self._id()
        await self.conn.execute(insert(households).values(id=household_id, address_id=address_id))
        if assessed:
            await self.conn.execute(
                insert(assessments).values(
                    id=household_id,
                    household_id=household_id,
                    assessed_on=date(2020, 1, 6),
                    eligible=True,
                    **{name: i < 3 for i, (name, _) in enumerate(OUTCOMES)},
                )
            )
        return household_id, address_id

    async def person(
        self,
        household_id: int,
        *records: tuple[str, date | None],
        today: date,
        born: date = date(1980, 5, 17),
        legal_hold: bool = False,
        retention_until: date | None = None,
        objection: bool = False,
        restriction: bool = False,
    ) -> int:
        person_id = self._id()
        await self.conn.execute(
            insert(people).values(
                id=person_id,
                household_id=household_id,
                given_name="Wren",
                family_name=f"Retention-Test-{person_id}",
                date_of_birth=born,
                retention_until=retention_until or today - timedelta(days=30),
                legal_hold=legal_hold,
            )
        )
        if records:
            await self.conn.execute(
                insert(person_records),
                [{"person_id": person_id, "record_class": c, "counted_from": d} for c, d in records],
            )
        if objection:
            await self.conn.execute(
                insert(objections).values(person_id=person_id, agreement_id="*", recorded_on=today)
            )
        if restriction:
            await self.conn.execute(
                insert(restrictions).values(person_id=person_id, agreement_id="*", recorded_on=today)
            )
        return person_id


async def count_rows(engine: AsyncEngine) -> dict[str, int]:
    tables = (addresses, households, people, assessments, objections, restrictions, person_records)
    async with engine.connect() as conn:
        return {
            table.name: (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in tables
        }


async def exists(engine: AsyncEngine, table: Any, **where: int) -> bool:
    async with engine.connect() as conn:
        clause = [table.c[name] == value for name, value in where.items()]
        return (await conn.execute(select(func.count()).select_from(table).where(*clause))).scalar_one() > 0
