"""Data access within a Decision, on the real seeded database (SQLite and PostgreSQL).

Every refusal is checked to happen before any SQL reaches the database.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from policies import Agreement, Decision, PurposeContext, evaluate
from resolvers import (
    DecisionNotAllowedError,
    FieldNotAllowedError,
    LookupNotAllowedError,
    PageSizeError,
    PersonRecord,
    get_person,
    household_members,
    list_people,
    match_people,
)
from resolvers.models import objections
from tests.conftest import FIXED_TODAY
from tests.support.oracle import Oracle
from tests.support.population import EdgeCases, date_of_birth
from tests.support.sql import statements

PURPOSE = PurposeContext(acting_user="u", case_reference="c", acting_user_verified=True)
MASH_FIELDS = ("givenName", "familyName", "dateOfBirth", "address", "uprn", "phone", "email", "school")
MASH_LOCATION = ("address", "uprn", "phone", "email", "school")
Call = Callable[[AsyncConnection], Awaitable[Any]]


def decide(agreement: Agreement, context: PurposeContext = PURPOSE) -> Decision:
    return evaluate(agreement, context, today=FIXED_TODAY)


@pytest.fixture(scope="module")
def decisions(agreements: dict[str, Agreement]) -> dict[str, Decision]:
    return {agreement_id: decide(agreement) for agreement_id, agreement in agreements.items()}


async def fetch(engine: AsyncEngine, decision: Decision, person_id: int, fields: tuple[str, ...] = ()) -> Any:
    async with engine.connect() as conn:
        return await get_person(conn, decision=decision, fields=fields, person_id=person_id)


def dob(cases: EdgeCases, key: str) -> date:
    return date_of_birth(cases.case(key), FIXED_TODAY)


async def test_list_people_reads_only_the_requested_columns(
    engine: AsyncEngine, decisions: dict[str, Decision]
) -> None:
    fields = ("familyName", "dateOfBirth")
    async with engine.connect() as conn:
        with statements(engine) as seen:
            page = await list_people(
                conn, decision=decisions["police-prevention"], fields=fields, first=5, after=None
            )
    assert len(page.people) == 5 and page.has_next
    assert all(set(p.values) == set(fields) for p in page.people)
    assert len(seen) == 1 and "family_name" in seen[0] and "date_of_birth" in seen[0]
    assert "given_name" not in seen[0] and "postcode" not in seen[0]


async def test_get_person_returns_only_the_requested_fields(
    engine: AsyncEngine, decisions: dict[str, Decision], cases: EdgeCases
) -> None:
    record = await fetch(
        engine, decisions["police-prevention"], cases.id("cohort_plain"), ("familyName", "postcode")
    )
    assert record == PersonRecord(
        person_id=cases.id("cohort_plain"),
        household_id=cases.household_ids["h_plain"],
        withheld=(),
        values={"familyName": "Brackenridge-Vale", "postcode": "W2 1ZZ"},
    )


async def test_match_people_normalises_names_and_returns_only_the_requested_fields(
    engine: AsyncEngine, decisions: dict[str, Decision], cases: EdgeCases
) -> None:
    criteria = {"familyName": "  BRACKENRIDGE-vale ", "dateOfBirth": dob(cases, "cohort_plain")}
    async with engine.connect() as conn:
        found = await match_people(
            conn, decision=decisions["police-prevention"], fields=("givenName",), criteria=criteria, limit=2
        )
    assert [(p.person_id, p.values) for p in found] == [(cases.id("cohort_plain"), {"givenName": "Ada"})]


@pytest.mark.parametrize(
    "key", ["cohort_restricted", "cohort_past_retention", "cohort_legal_hold_past_retention"]
)
async def test_restricted_and_past_retention_people_are_invisible(
    engine: AsyncEngine, decisions: dict[str, Decision], cases: EdgeCases, key: str
) -> None:
    assert await fetch(engine, decisions["mash-safeguarding"], cases.id(key)) is None
    assert await fetch(engine, decisions["police-prevention"], cases.id(key)) is None
    assert await fetch(engine, decisions["mash-safeguarding"], cases.id("cohort_retention_today")) is not None


def call(
    kind: str,
    decision: Decision,
    cases: EdgeCases,
    *,
    fields: tuple[str, ...] = ("givenName",),
    size: int = 2,
    names: tuple[str, ...] = ("familyName", "dateOfBirth"),
) -> Call:
    if kind == "list":
        return lambda c: list_people(c, decision=decision, fields=fields, first=size, after=None)
    if kind == "get":
        return lambda c: get_person(c, decision=decision, fields=fields, person_id=cases.id("cohort_plain"))
    if kind == "match":
        values: dict[str, Any] = {"familyName": "Brackenridge-Vale", "givenName": "Ada", "postcode": "W2 1ZZ"}
        criteria = {name: values.get(name, dob(cases, "cohort_plain")) for name in names}
        return lambda c: match_people(c, decision=decision, fields=fields, criteria=criteria, limit=size)
    of = [PersonRecord(cases.id("mash_adult"), cases.household_ids["h_mash"], (), {})]
    return lambda c: household_members(c, decision=decision, fields=fields, of=of)


POLICE, MASH, DENIED = "police-prevention", "mash-safeguarding", PurposeContext()
KINDS = [(POLICE, "list"), (POLICE, "get"), (POLICE, "match"), (MASH, "members")]
OUTSIDE = {POLICE: ("uprn", "members", "assessmentOutcome"), MASH: ("postcode", "noSuchField")}
BAD_CRITERIA = [
    (POLICE, ()),
    (POLICE, ("familyName",)),
    (POLICE, ("dateOfBirth",)),
    (POLICE, ("familyName", "dateOfBirth", "givenName")),
    (POLICE, ("familyName", "postcode")),
    (MASH, ("familyName", "dateOfBirth")),
]


def refusal(
    agreement_id: str, kind: str, error: type, message: str, purpose: Any = PURPOSE, **options: Any
) -> Any:
    label = "-".join([agreement_id, kind, *(f"{k}={v}" for k, v in options.items())])
    return pytest.param(
        agreement_id, purpose, kind, options, error, message, id=label + ("-denied" * (purpose is DENIED))
    )


REFUSALS = [
    *(
        refusal(a, k, FieldNotAllowedError, f"^{f}$", fields=("givenName", f))
        for a, k in KINDS
        for f in OUTSIDE[a]
    ),
    *(refusal(a, k, DecisionNotAllowedError, "requires.acting_user", DENIED) for a, k in KINDS),
    *(
        refusal(POLICE, "list", PageSizeError, r"^first must be between 1 and 100$", size=n)
        for n in (0, -1, 101, 10**9)
    ),
    *(
        refusal(POLICE, "match", PageSizeError, r"^first must be between 1 and 10$", size=n)
        for n in (0, -1, 11)
    ),
    *(refusal(a, "list", LookupNotAllowedError, "does not include listing") for a in (MASH, "youth-justice")),
    *(
        refusal(a, "match", LookupNotAllowedError, "exactly the agreement's match", names=n)
        for a, n in BAD_CRITERIA
    ),
]


@pytest.mark.parametrize(("agreement_id", "purpose", "kind", "options", "error", "message"), REFUSALS)
async def test_refusals_happen_before_any_sql(
    engine: AsyncEngine,
    agreements: dict[str, Agreement],
    cases: EdgeCases,
    agreement_id: str,
    purpose: PurposeContext,
    kind: str,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    decision = decide(agreements[agreement_id], purpose)
    assert decision.allowed is (purpose is PURPOSE)
    async with engine.connect() as conn:
        with statements(engine) as seen, pytest.raises(error, match=message):
            await call(kind, decision, cases, **options)(conn)
    assert seen == [], "the refusal came after SQL was sent"


async def test_withhold_nulls_location_fields_inside_the_sql(
    engine: AsyncEngine, decisions: dict[str, Decision], cases: EdgeCases
) -> None:
    with statements(engine) as seen:
        wyn = await fetch(engine, decisions["mash-safeguarding"], cases.id("refuge_adult"), MASH_FIELDS)
        bea = await fetch(
            engine, decisions["mash-safeguarding"], cases.id("cohort_protected"), ("givenName", "email")
        )
    nothing = dict.fromkeys(MASH_LOCATION)
    assert (
        wyn.values
        == {"givenName": "Wyn", "familyName": "Vickery-Wolde", "dateOfBirth": dob(cases, "refuge_adult")}
        | nothing
    )
    assert wyn.withheld == MASH_LOCATION
    assert (bea.values, bea.withheld) == ({"givenName": "Bea", "email": None}, MASH_LOCATION)
    assert len(seen) == 2 and all(re.search(r"CASE WHEN \(?people\.protected_address", sql) for sql in seen)
    # Every other view leaves the person out altogether (no withheld list to mark them).
    assert (
        await fetch(engine, decisions["police-prevention"], cases.id("cohort_protected"), ("givenName",))
        is None
    )


async def test_break_glass_discloses_only_the_opened_person_and_exclude_hides_protected_people(
    engine: AsyncEngine, agreements: dict[str, Agreement], decisions: dict[str, Decision], cases: EdgeCases
) -> None:
    glass = decide(agreements["mash-safeguarding"], dataclasses.replace(PURPOSE, break_glass_reason="risk"))
    assert glass.scope is not None
    bea_id, wyn_id = cases.id("cohort_protected"), cases.id("refuge_adult")
    # The decision alone opens no one: the gateway names the person whose window is open.
    closed = await fetch(engine, glass, bea_id, ("email", "address"))
    assert (closed.values, closed.withheld) == ({"email": None, "address": None}, MASH_LOCATION)
    opened = dataclasses.replace(glass, scope=dataclasses.replace(glass.scope, opened=frozenset({bea_id})))
    with statements(engine) as seen:
        bea = await fetch(engine, opened, bea_id, ("email", "address"))
        wyn = await fetch(engine, opened, wyn_id, ("email", "address"))
    assert bea.withheld == () and bea.values["email"] == "bea.fo@example.org"
    assert bea.values["address"]["postcode"] == "NW8 9ZZ"
    # Another protected person stays withheld, in the SQL itself.
    assert (wyn.values, wyn.withheld) == ({"email": None, "address": None}, MASH_LOCATION)
    assert len(seen) == 2 and all(re.search(r"CASE WHEN \(?people\.protected_address", sql) for sql in seen)
    assert await fetch(engine, decisions["dwp-worklessness"], bea_id, ("uprn",)) is None
    ada = await fetch(engine, decisions["dwp-worklessness"], cases.id("cohort_plain"), ("uprn",))
    assert ada.values == {"uprn": str(200_000_000_000 + cases.household_ids["h_plain"])}


def postcode_search(agreements: dict[str, Agreement]) -> Decision:
    mash = agreements["mash-safeguarding"]
    return decide(
        dataclasses.replace(mash, match=("familyName", "postcode"), fields=(*mash.fields, "postcode"))
    )


async def search(
    engine: AsyncEngine, decision: Decision, fields: tuple[str, ...], **criteria: Any
) -> list[Any]:
    async with engine.connect() as conn:
        found = await match_people(conn, decision=decision, fields=fields, criteria=criteria, limit=10)
    return [(p.person_id, p.values) for p in found]


async def test_a_search_on_a_location_field_never_matches_a_protected_person(
    engine: AsyncEngine, agreements: dict[str, Agreement], decisions: dict[str, Decision], cases: EdgeCases
) -> None:
    decision, fields = postcode_search(agreements), ("givenName", "postcode")
    assert await search(engine, decision, fields, familyName="Ferncastle-Orme", postcode="NW8 9ZZ") == []
    assert await search(engine, decision, fields, familyName="brackenridge-vale", postcode=" w21zz") == [
        (cases.id("cohort_plain"), {"givenName": "Ada", "postcode": "W2 1ZZ"})
    ]
    bea = {"givenName": "Bea", "familyName": "Ferncastle-Orme", "dateOfBirth": dob(cases, "cohort_protected")}
    assert await search(engine, decisions[MASH], (), **bea) == [(cases.id("cohort_protected"), {})]


@pytest.mark.filterwarnings("ignore:SELECT statement has a cartesian product")
async def test_a_postcode_search_matches_only_people_at_that_postcode(
    engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    decision = postcode_search(agreements)  # NW8 9ZZ is in the database, but Ada does not live there
    assert await search(engine, decision, (), familyName="Brackenridge-Vale", postcode="NW8 9ZZ") == []


@pytest.mark.parametrize(
    ("agreement_id", "first"), [("police-prevention", 100), ("dwp-worklessness", 37), ("ons-evaluation", 500)]
)
async def test_keyset_paging_yields_everyone_once_in_id_order(
    engine: AsyncEngine, agreements: dict[str, Agreement], oracle: Oracle, agreement_id: str, first: int
) -> None:
    decision, seen, after = decide(agreements[agreement_id]), [], None
    async with engine.connect() as conn:
        while True:
            page = await list_people(conn, decision=decision, fields=(), first=first, after=after)
            seen += [p.person_id for p in page.people]
            if not page.has_next:
                break
            assert len(page.people) == first
            after = page.people[-1].person_id
        beyond = await list_people(conn, decision=decision, fields=(), first=first, after=seen[-1])
    assert seen == sorted(oracle.expected(agreements[agreement_id], FIXED_TODAY))
    assert len(seen) > first and 0 < len(page.people) <= first
    assert beyond.people == [] and not beyond.has_next


async def test_household_members_are_the_other_visible_members(
    engine: AsyncEngine, decisions: dict[str, Decision], cases: EdgeCases
) -> None:
    mash = decisions["mash-safeguarding"]
    of = [await fetch(engine, mash, cases.id(key)) for key in ("mash_adult", "mash_child", "refuge_adult")]
    async with engine.connect() as conn:
        members = await household_members(conn, decision=mash, fields=("givenName", "school"), of=of)
        assert await household_members(conn, decision=mash, fields=(), of=[]) == {}
        with pytest.raises(FieldNotAllowedError, match=r"^members$"):
            await household_members(conn, decision=decisions["youth-justice"], fields=(), of=of)
    assert {pid: [(m.person_id, m.values, m.withheld) for m in found] for pid, found in members.items()} == {
        cases.id("mash_adult"): [
            (cases.id("mash_child"), {"givenName": "Val", "school": "Voss Primary School"}, ())
        ],
        cases.id("mash_child"): [(cases.id("mash_adult"), {"givenName": "Sol", "school": None}, ())],
        cases.id("refuge_adult"): [
            (cases.id("refuge_child"), {"givenName": "Xan", "school": None}, MASH_LOCATION)
        ],
    }


async def test_an_objection_takes_effect_at_once_where_the_agreement_honours_it(
    engine: AsyncEngine, decisions: dict[str, Decision], cases: EdgeCases
) -> None:
    person, hub, police = cases.id("cohort_plain"), decisions["family-hub-outreach"], decisions[POLICE]
    async with engine.connect() as conn:
        trans = await conn.begin()
        assert await get_person(conn, decision=hub, fields=(), person_id=person) is not None
        row = {"person_id": person, "agreement_id": hub.agreement_id, "recorded_on": FIXED_TODAY}
        await conn.execute(insert(objections).values(row))
        assert await get_person(conn, decision=hub, fields=(), person_id=person) is None
        assert await get_person(conn, decision=police, fields=(), person_id=person) is not None
        await trans.rollback()
    assert await fetch(engine, hub, person) is not None
