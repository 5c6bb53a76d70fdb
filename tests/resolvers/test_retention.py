"""People's records by class: seeded in agreement with their retention dates, read a page at a time,
and purged with whatever only they kept, on SQLite and PostgreSQL (each test its own database)."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, select

from gateway.db import _alembic_config, upgrade
from policies.retention import Verdict, decide, load_retention
from resolvers import metadata, seed_population
from resolvers.models import addresses, assessments, households, people, person_records
from resolvers.retention import lock_people_records, purge_people, read_people_records
from resolvers.seeding import _Generator
from tests.conftest import FIXED_TODAY, SEED
from tests.support.retention import Households, count_rows, exists, fresh_engine

TODAY = FIXED_TODAY


async def test_every_seeded_person_runs_out_on_their_retention_date(tmp_path: Path) -> None:
    policy = load_retention()
    async with fresh_engine("sqlite", tmp_path) as (_, engine):
        async with engine.begin() as conn:
            summary = await seed_population(conn, people_count=3_000, seed=SEED, today=TODAY)
        async with engine.connect() as conn:
            until = {
                row.id: row.retention_until
                for row in await conn.execute(select(people.c.id, people.c.retention_until))
            }
            everyone = await read_people_records(conn, limit=10_000)
    assert summary.tables["person_records"] >= 3_000
    verdicts: Counter[Verdict] = Counter()
    open_records = 0
    for person in everyone:
        decision = decide(person.records, legal_hold=person.legal_hold, today=TODAY, policy=policy)
        verdicts[decision.verdict] += 1
        past = until[person.person_id] < TODAY
        if decision.verdict is Verdict.UNCLASSIFIED:
            assert past and not person.records, person  # only young children no schedule explains
        elif decision.kept_until is None:
            assert not past and decision.verdict is Verdict.KEPT, person
            open_records += 1
        else:
            # Exactly on the day; from 29 February, the day after (nothing runs out on a 29 February
            # that a schedule of whole years counts to from a common year).
            expected = until[person.person_id]
            assert decision.kept_until in (expected, expected + timedelta(days=1)), (person, expected)
            if decision.kept_until != expected:
                assert (expected.month, expected.day) == (2, 29)
            assert (decision.verdict is Verdict.KEPT) == (not past)
        assert all(counted is None or counted <= TODAY for _, counted in person.records), person
    assert len(everyone) == 3_000
    assert verdicts[Verdict.DUE] and verdicts[Verdict.HELD] and verdicts[Verdict.UNCLASSIFIED]
    assert 0 < open_records < 3_000 * 0.15  # a few records still open
    assert {name for person in everyone for name, _ in person.records} == set(policy.schedules)


async def test_records_leave_the_rest_of_the_seeded_population_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records come from a stream of their own: without them, every other row is the same."""

    async def dump(directory: Path) -> dict[str, list[tuple[Any, ...]]]:
        async with fresh_engine("sqlite", directory) as (_, engine):
            async with engine.begin() as conn:
                await seed_population(conn, people_count=800, seed=SEED, today=TODAY)
            async with engine.connect() as conn:
                return {
                    name: [
                        tuple(row) for row in await conn.execute(select(table).order_by(*table.primary_key))
                    ]
                    for name, table in metadata.tables.items()
                }

    with_records = await dump(tmp_path / "with")
    monkeypatch.setattr(_Generator, "_records", lambda self, person, *, assessed: [])
    without = await dump(tmp_path / "without")
    assert with_records["person_records"] and not without["person_records"]
    for name in metadata.tables:
        if name != "person_records":
            assert with_records[name] == without[name], name


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_purge_takes_the_person_and_only_what_they_alone_kept(kind: str, tmp_path: Path) -> None:
    old = ("family-hub", TODAY - timedelta(days=8 * 365))
    async with fresh_engine(kind, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            make = Households(conn)
            alone, alone_address = await make.household()
            gone_alone = await make.person(alone, old, today=TODAY, objection=True, restriction=True)
            shared, shared_address = await make.household()
            gone_shared = await make.person(shared, old, today=TODAY)
            stays = await make.person(shared, ("family-hub", TODAY), today=TODAY)
            # Two households at one address: the address stays while the other household uses it.
            first_at_flat, flat = await make.household(assessed=False)
            gone_at_flat = await make.person(first_at_flat, old, today=TODAY)
            second_at_flat, _ = await make.household(assessed=False, address_id=flat)
            neighbour = await make.person(second_at_flat, old, today=TODAY, legal_hold=True)
        before = await count_rows(engine)
        async with engine.begin() as conn:
            locked = await lock_people_records(conn, [gone_alone, gone_shared, gone_at_flat, 123_456_789])
            assert [person.person_id for person in locked] == sorted([gone_alone, gone_shared, gone_at_flat])
            assert locked[0].records == (old,)
            count = await purge_people(conn, [person.person_id for person in locked])
        assert (count.people, count.households, count.addresses) == (3, 2, 1)
        after = await count_rows(engine)
        assert before["people"] - after["people"] == 3
        assert (after["objections"], after["restrictions"]) == (0, 0)
        assert before["person_records"] - after["person_records"] == 3
        assert not await exists(engine, households, id=alone)
        assert not await exists(engine, assessments, household_id=alone)
        assert not await exists(engine, addresses, id=alone_address)
        assert await exists(engine, households, id=shared) and await exists(
            engine, addresses, id=shared_address
        )
        assert await exists(engine, assessments, household_id=shared)
        assert not await exists(engine, households, id=first_at_flat)
        assert await exists(engine, addresses, id=flat)
        for person_id in (stays, neighbour):
            assert await exists(engine, people, id=person_id)
            assert await exists(engine, person_records, person_id=person_id)
        async with engine.begin() as conn:
            assert await purge_people(conn, [gone_alone]) == type(count)(0, 0, 0)  # already gone


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_people_are_read_a_page_at_a_time_with_their_records(kind: str, tmp_path: Path) -> None:
    async with fresh_engine(kind, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            make = Households(conn)
            home, _ = await make.household()
            first = await make.person(
                home, ("family-hub", date(2020, 1, 1)), ("youth-justice", None), today=TODAY
            )
            second = await make.person(home, today=TODAY, legal_hold=True)
            third = await make.person(home, ("supporting-families", date(2025, 3, 1)), today=TODAY)
        async with engine.connect() as conn:
            page = await read_people_records(conn, after=0, limit=2)
            rest = await read_people_records(conn, after=page[-1].person_id, limit=2)
            assert await read_people_records(conn, after=third, limit=2) == []
    assert [(p.person_id, p.legal_hold, p.records) for p in page] == [
        (first, False, (("family-hub", date(2020, 1, 1)), ("youth-justice", None))),
        (second, True, ()),
    ]
    assert [(p.person_id, p.records) for p in rest] == [(third, (("supporting-families", date(2025, 3, 1)),))]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_migration_to_records_by_class_goes_down_and_up_again(kind: str, tmp_path: Path) -> None:
    def tables(sync: Connection) -> set[str]:
        return set(inspect(sync).get_table_names())

    async with fresh_engine(kind, tmp_path) as (_, engine):
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), "0011"))
            assert "person_records" not in await conn.run_sync(tables)
        await upgrade(engine)
        async with engine.connect() as conn:
            assert "person_records" in await conn.run_sync(tables)
            indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("person_records"))
        assert [index["name"] for index in indexes] == ["ix_person_records_record_class"]
