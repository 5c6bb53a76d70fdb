"""The synthetic population: deterministic, exactly sized, plausible, and contactable by no one.

Each test seeds its own fresh SQLite file, never the shared database.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import create_engine, upgrade
from resolvers import PopulationNotEmptyError, SeedSummary, metadata, seed_population
from resolvers.models import people
from tests.conftest import FIXED_TODAY, SEED

TABLES = ("addresses", "households", "people", "assessments", "objections")
PHONE = re.compile(r"^(07700 900\d{3}|020 7946 0\d{3})$")
EMAIL = re.compile(r"^[a-z0-9]+\.[a-z0-9]+\d+@example\.org$")


async def _fresh(directory: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{directory / 'seeded.db'}")
    await upgrade(engine)
    return engine


async def _seed(
    directory: Path, *, count: int, seed: int
) -> tuple[dict[str, list[tuple[Any, ...]]], SeedSummary]:
    engine = await _fresh(directory)
    try:
        async with engine.begin() as conn:
            summary = await seed_population(conn, people_count=count, seed=seed, today=FIXED_TODAY)
        return await _dump(engine), summary
    finally:
        await engine.dispose()


async def _dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with engine.connect() as conn:
        for name in TABLES:
            table = metadata.tables[name]
            rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
            out[name] = [tuple(row) for row in rows]
    return out


@pytest.fixture(scope="module")
async def population(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[dict[str, Any]]]:
    """5,000 people, as dictionaries per table."""
    engine = await _fresh(tmp_path_factory.mktemp("population"))
    async with engine.begin() as conn:
        await seed_population(conn, people_count=5_000, seed=SEED, today=FIXED_TODAY)
    out = {}
    async with engine.connect() as conn:
        for name in TABLES:
            out[name] = [dict(r._mapping) for r in await conn.execute(select(metadata.tables[name]))]
    await engine.dispose()
    return out


async def test_the_same_seed_gives_identical_rows_in_every_table(tmp_path: Path) -> None:
    first, first_summary = await _seed(tmp_path / "a", count=1_234, seed=SEED)
    second, second_summary = await _seed(tmp_path / "b", count=1_234, seed=SEED)
    assert first == second
    assert first_summary == second_summary
    assert all(first[name] for name in TABLES)


async def test_a_different_seed_gives_different_rows(tmp_path: Path) -> None:
    first, _ = await _seed(tmp_path / "a", count=300, seed=SEED)
    other, _ = await _seed(tmp_path / "b", count=300, seed=SEED + 1)
    assert len(first["people"]) == len(other["people"]) == 300
    for name in ("addresses", "people"):
        assert first[name] != other[name]
    names = {(row[2], row[3]) for row in first["people"]}
    other_names = {(row[2], row[3]) for row in other["people"]}
    assert len(names & other_names) < 30


@pytest.mark.parametrize("count", [1, 2, 7, 1_234, 5_001])
async def test_exactly_the_people_asked_for(tmp_path: Path, count: int) -> None:
    dump, summary = await _seed(tmp_path, count=count, seed=SEED)
    assert len(dump["people"]) == count
    assert summary.people == count
    assert summary.tables["people"] == count
    assert summary.households == len(dump["households"]) == len(dump["addresses"])
    assert summary.tables.get("assessments", 0) == len(dump["assessments"])
    assert summary.objections == len(dump["objections"])
    assert [row[0] for row in dump["people"]] == list(range(1, count + 1))


@pytest.mark.parametrize("count", [0, -1])
async def test_an_empty_population_is_refused(tmp_path: Path, count: int) -> None:
    engine = await _fresh(tmp_path)
    try:
        async with engine.begin() as conn:
            with pytest.raises(ValueError, match="at least 1"):
                await seed_population(conn, people_count=count, seed=SEED, today=FIXED_TODAY)
    finally:
        await engine.dispose()


async def test_seeding_a_non_empty_database_raises_and_changes_nothing(tmp_path: Path) -> None:
    engine = await _fresh(tmp_path)
    try:
        async with engine.begin() as conn:
            await seed_population(conn, people_count=40, seed=SEED, today=FIXED_TODAY)
        before = await _dump(engine)
        async with engine.begin() as conn:
            with pytest.raises(PopulationNotEmptyError, match="already holds 40 people"):
                await seed_population(conn, people_count=10, seed=SEED + 5, today=FIXED_TODAY)
            count = (await conn.execute(select(func.count()).select_from(people))).scalar_one()
            assert count == 40
        assert await _dump(engine) == before
    finally:
        await engine.dispose()


def _age(born: date, today: date = FIXED_TODAY) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _share(part: int, whole: int) -> float:
    return part / whole


async def test_households_hold_several_people(population: dict[str, list[dict[str, Any]]]) -> None:
    sizes: dict[int, int] = {}
    for person in population["people"]:
        sizes[person["household_id"]] = sizes.get(person["household_id"], 0) + 1
    assert set(sizes) == {h["id"] for h in population["households"]}
    assert min(sizes.values()) == 1
    assert max(sizes.values()) == 6
    assert 2.3 <= 5_000 / len(sizes) <= 3.6
    assert 0.6 <= _share(sum(size > 1 for size in sizes.values()), len(sizes)) <= 0.9


async def test_ages_cover_children_10_to_17_and_adults(population: dict[str, list[dict[str, Any]]]) -> None:
    ages = [_age(p["date_of_birth"]) for p in population["people"]]
    assert min(ages) == 0
    assert max(ages) <= 85
    assert 0.08 <= _share(sum(10 <= a <= 17 for a in ages), len(ages)) <= 0.35
    assert 0.45 <= _share(sum(a >= 18 for a in ages), len(ages)) <= 0.8
    schools = [p for p in population["people"] if p["school"] is not None]
    assert schools and all(4 <= _age(p["date_of_birth"]) <= 17 for p in schools)


async def test_markers_appear_in_plausible_proportions(population: dict[str, list[dict[str, Any]]]) -> None:
    persons = population["people"]
    total = len(persons)
    assert 0.005 <= _share(sum(p["protected_address"] for p in persons), total) <= 0.05
    assert 0.002 <= _share(sum(p["restricted"] for p in persons), total) <= 0.03
    assert 0.005 <= _share(sum(p["retention_until"] < FIXED_TODAY for p in persons), total) <= 0.04
    assert sum(p["legal_hold"] for p in persons) > 0
    by_household: dict[int, set[bool]] = {}
    for p in persons:
        by_household.setdefault(p["household_id"], set()).add(bool(p["protected_address"]))
    assert all(len(markers) == 1 for markers in by_household.values()), "a marker covers the household"


async def test_assessments_and_objections(population: dict[str, list[dict[str, Any]]]) -> None:
    households = len(population["households"])
    assessed = population["assessments"]
    assert 0.3 <= _share(len(assessed), households) <= 0.5
    assert len({a["household_id"] for a in assessed}) == len(assessed)
    eligible = [a for a in assessed if a["eligible"]]
    assert 0.4 <= _share(len(eligible), len(assessed)) <= 0.8
    assert any(a["coordinated_support"] for a in eligible)
    assert not any(a["coordinated_support"] for a in assessed if not a["eligible"])
    agreements = {o["agreement_id"] for o in population["objections"]}
    assert agreements == {"family-hub-outreach", "police-prevention", "ons-evaluation"}
    per_agreement = [o for o in population["objections"] if o["agreement_id"] == "family-hub-outreach"]
    assert 0.02 <= _share(len(per_agreement), 5_000) <= 0.08


async def test_uprns_are_unique_strings_many_of_twelve_digits(
    population: dict[str, list[dict[str, Any]]],
) -> None:
    uprns = [a["uprn"] for a in population["addresses"]]
    present = [u for u in uprns if u is not None]
    assert len(present) == len(set(present))
    assert 0.01 <= _share(len(uprns) - len(present), len(uprns)) <= 0.1
    assert all(isinstance(u, str) and u.isdigit() and 10 <= len(u) <= 12 for u in present)
    twelve = [u for u in present if len(u) == 12]
    assert _share(len(twelve), len(present)) >= 0.2
    assert max(int(u) for u in twelve) > 2**31


async def test_contact_details_reach_no_one(population: dict[str, list[dict[str, Any]]]) -> None:
    phones = [p["phone"] for p in population["people"] if p["phone"] is not None]
    emails = [p["email"] for p in population["people"] if p["email"] is not None]
    assert len(phones) > 2_000 and len(emails) > 1_500
    assert [p for p in phones if not PHONE.match(p)] == []
    assert [e for e in emails if not EMAIL.match(e)] == []
    assert {p[:5] for p in phones} == {"07700", "020 7"}


async def test_the_seeded_database_satisfies_its_constraints(tmp_path: Path) -> None:
    engine = await _fresh(tmp_path)
    try:
        async with engine.begin() as conn:
            await seed_population(conn, people_count=500, seed=SEED, today=FIXED_TODAY)
        async with engine.connect() as conn:
            problems = (await conn.execute(text("PRAGMA foreign_key_check"))).all()
            assert problems == []
            integrity = (await conn.execute(text("PRAGMA integrity_check"))).scalar_one()
            assert integrity == "ok"
    finally:
        await engine.dispose()
