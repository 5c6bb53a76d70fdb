"""Executing a view directly: what is fetched, what is sent, and what is recorded as disclosed.

Each person a resolver returns is recorded in the ViewContext with exactly the view fields sent for
them, keyed by the root field's response key, so the gateway can write the audit event.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from policies import Agreement, PurposeContext, evaluate
from resolvers import RefCodec, RefKind
from schema import Disclosure, View, ViewContext, build_view
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.oracle import Oracle
from tests.support.population import EdgeCases, date_of_birth
from tests.support.sql import statements

VIEWS: dict[str, View] = {}


def context(engine: AsyncEngine, agreement: Agreement) -> ViewContext:
    decision = evaluate(
        agreement,
        PurposeContext(acting_user="u", case_reference="c", acting_user_verified=True),
        today=FIXED_TODAY,
    )
    return ViewContext(decision=decision, refs=RefCodec(REF_SECRET, agreement.id), connect=engine.connect)


async def execute(
    engine: AsyncEngine, agreement: Agreement, query: str, variables: dict[str, Any] | None = None
) -> tuple[Any, list[Any], ViewContext]:
    if agreement.id not in VIEWS:
        VIEWS[agreement.id] = build_view(agreement)
    ctx = context(engine, agreement)
    result = await VIEWS[agreement.id].schema.execute(query, variable_values=variables, context_value=ctx)
    return result.data, list(result.errors or []), ctx


def ref(agreement: Agreement, person_id: int) -> str:
    return RefCodec(REF_SECRET, agreement.id).encode(RefKind.PERSON, person_id)


def by_root(disclosures: list[Disclosure]) -> list[Disclosure]:
    return sorted(disclosures, key=lambda d: (d.root, d.person_id))


async def test_disclosures_hold_exactly_the_fields_sent_keyed_by_alias(
    engine: AsyncEngine, agreements: dict[str, Agreement], cases: EdgeCases
) -> None:
    police = agreements["police-prevention"]
    ada, bea = cases.id("cohort_plain"), cases.id("cohort_protected")
    query = """query($a: ID!, $b: ID!) {
      plain: person(ref: $a) { postcode givenName }
      hidden: person(ref: $b) { ref postcode givenName }
    }"""
    data, errors, ctx = await execute(engine, police, query, {"a": ref(police, ada), "b": ref(police, bea)})
    assert errors == []
    # Bea has a protected address: outside MASH she is not there at all, as if she had no record.
    assert data == {"plain": {"postcode": "W2 1ZZ", "givenName": "Ada"}, "hidden": None}
    assert by_root(ctx.disclosures) == [
        Disclosure(root="plain", person_id=ada, fields=("givenName", "postcode"), withheld=()),
    ]
    assert by_root(ctx.disclosed_in(data)) == by_root(ctx.disclosures)


async def test_a_page_records_each_person_under_the_alias_of_the_connection(
    engine: AsyncEngine, agreements: dict[str, Agreement], oracle: Oracle
) -> None:
    police = agreements["police-prevention"]
    query = "{ page: people(first: 3) { edges { node { familyName } } pageInfo { hasNextPage } } }"
    data, errors, ctx = await execute(engine, police, query)
    first_three = sorted(oracle.expected(police, FIXED_TODAY))[:3]
    assert errors == [] and len(data["page"]["edges"]) == 3
    assert [e["node"]["familyName"] for e in data["page"]["edges"]] == [
        oracle.people[i].family_name for i in first_three
    ]
    assert ctx.disclosures == [Disclosure("page", i, ("familyName",), ()) for i in first_three]


async def test_a_page_without_edges_discloses_no_one(
    engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    data, errors, ctx = await execute(
        engine, agreements["police-prevention"], "{ people(first: 3) { pageInfo { hasNextPage endCursor } } }"
    )
    assert errors == []
    assert data["people"]["pageInfo"]["hasNextPage"] is True
    assert data["people"]["pageInfo"]["endCursor"].startswith("cur_")
    assert ctx.disclosures == []


async def test_household_members_are_recorded_with_their_own_fields(
    engine: AsyncEngine, agreements: dict[str, Agreement], cases: EdgeCases
) -> None:
    mash = agreements["mash-safeguarding"]
    born = date_of_birth(cases.case("mash_adult"), FIXED_TODAY).isoformat()
    query = f"""{{
      found: findPeople(givenName: "Sol", familyName: "Underwood-Voss", dateOfBirth: "{born}") {{
        ref members {{ givenName school }}
      }}
      refuge: person(ref: "{ref(mash, cases.id("refuge_adult"))}") {{
        givenName email members {{ givenName school }}
      }}
    }}"""
    data, errors, ctx = await execute(engine, mash, query)
    assert errors == []
    assert data["found"]["members"] == [{"givenName": "Val", "school": "Voss Primary School"}]
    assert data["refuge"] == {
        "givenName": "Wyn",
        "email": None,
        "members": [{"givenName": "Xan", "school": None}],
    }
    assert by_root(ctx.disclosures) == [
        Disclosure("found", cases.id("mash_adult"), ("ref",), ()),
        Disclosure("found", cases.id("mash_child"), ("givenName", "school"), (), member=True),
        Disclosure("refuge", cases.id("refuge_adult"), ("givenName",), ("email",)),
        Disclosure("refuge", cases.id("refuge_child"), ("givenName",), ("school",), member=True),
    ]


async def test_disclosed_in_keeps_only_roots_that_reached_the_response(
    engine: AsyncEngine, agreements: dict[str, Agreement], cases: EdgeCases
) -> None:
    police = agreements["police-prevention"]
    good = ref(police, cases.id("cohort_plain"))
    query = f'{{ a: person(ref: "{good}") {{ givenName }} b: person(ref: "per_unknown") {{ givenName }} }}'
    data, errors, ctx = await execute(engine, police, query)
    assert errors == [] and data["b"] is None
    assert (
        ctx.disclosed_in(data)
        == ctx.disclosures
        == [Disclosure("a", cases.id("cohort_plain"), ("givenName",), ())]
    )

    # people(first: 0) fails, and a failed non-null root field nulls the whole response.
    query = f'{{ a: person(ref: "{good}") {{ givenName }} b: people(first: 0) {{ edges {{ cursor }} }} }}'
    data, errors, ctx = await execute(engine, police, query)
    assert data is None and len(errors) == 1
    assert ctx.disclosed_in(data) == []


def test_disclosed_in_drops_disclosures_whose_root_is_null_or_missing(
    agreements: dict[str, Agreement], engine: AsyncEngine
) -> None:
    ctx = context(engine, agreements["police-prevention"])
    kept, nulled, absent = (
        Disclosure("a", 1, ("ref",), ()),
        Disclosure("b", 2, (), ()),
        Disclosure("c", 3, ("ref",), ()),
    )
    ctx.disclosures.extend([kept, nulled, absent, Disclosure("a", 4, (), ())])
    assert ctx.disclosed_in({"a": {"edges": []}, "b": None}) == [kept, Disclosure("a", 4, (), ())]
    assert ctx.disclosed_in({}) == []
    assert ctx.disclosed_in(None) == []


QUERY = """query($r: ID!, $w: Boolean!) {
  x: person(ref: $r) {
    givenName
    postcode @skip(if: true)
    ref @include(if: $w)
    ...Born @skip(if: $w)
    ... on Person @include(if: $w) { familyName }
  }
}
fragment Born on Person { dateOfBirth }"""


@pytest.mark.parametrize(
    ("included", "fields", "columns", "absent"),
    [
        (
            True,
            ("ref", "givenName", "familyName"),
            ("given_name", "family_name"),
            ("date_of_birth", "addresses"),
        ),
        (False, ("givenName", "dateOfBirth"), ("given_name", "date_of_birth"), ("family_name", "addresses")),
    ],
)
async def test_skip_and_include_decide_what_is_fetched_and_recorded(
    engine: AsyncEngine,
    agreements: dict[str, Agreement],
    cases: EdgeCases,
    included: bool,
    fields: tuple[str, ...],
    columns: tuple[str, ...],
    absent: tuple[str, ...],
) -> None:
    police, ada = agreements["police-prevention"], cases.id("cohort_plain")
    with statements(engine) as seen:
        data, errors, ctx = await execute(engine, police, QUERY, {"r": ref(police, ada), "w": included})
    assert errors == []
    assert set(data["x"]) == set(fields)
    assert ctx.disclosures == [Disclosure("x", ada, fields, ())]
    assert len(seen) == 1
    assert all(f"people.{column}" in seen[0] for column in columns)
    assert not any(name in seen[0] for name in absent)
