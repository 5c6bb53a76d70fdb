"""Shape and cost limits a view checks before anything runs (schema/limits.py): aliases, directives,
introspection, the people a document may ask for, and an agreement's own overrides.

Run through the views' own schemas (every rule they apply); no database is reached, because a ref the
view never issued resolves to null before a connection is opened.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

import pytest
from graphql import get_introspection_query

from policies import Agreement, PurposeContext, evaluate, load_agreements
from resolvers import RefCodec
from schema import View, ViewContext, build_view, classify
from schema.limits import MAX_ALIASES, MAX_DIRECTIVES
from tests.conftest import FIXED_TODAY, REF_SECRET

AGREEMENTS = load_agreements()
POLICE = build_view(AGREEMENTS["police-prevention"])
DWP = build_view(AGREEMENTS["dwp-worklessness"])
YOUTH = build_view(AGREEMENTS["youth-justice"])


def _no_database() -> NoReturn:
    raise AssertionError("these queries must not reach the database")


async def run(
    query: str, view: View = POLICE, variables: dict[str, Any] | None = None
) -> tuple[Any, list[tuple[str, str]]]:
    decision = evaluate(
        view.agreement, PurposeContext("u", "c", acting_user_verified=True), today=FIXED_TODAY
    )
    context = ViewContext(
        decision=decision, refs=RefCodec(REF_SECRET, view.agreement.id), connect=_no_database
    )
    result = await view.schema.execute(query, variable_values=variables, context_value=context)
    return result.data, [(classify(e).code, e.message) for e in result.errors or []]


def aliased(count: int) -> str:
    return "{ " + 'p: person(ref: "x") { ' + " ".join(f"a{i}: ref" for i in range(count)) + " } }"


async def test_aliases_are_counted_up_to_the_limit() -> None:
    assert MAX_ALIASES == 30
    _, errors = await run(aliased(MAX_ALIASES - 1))  # and the root field's own alias
    assert errors == []
    _, errors = await run(aliased(MAX_ALIASES))
    assert errors == [("QUERY_TOO_COMPLEX", "Query too complex: an operation may use at most 30 aliases.")]


async def test_aliases_are_counted_where_a_fragment_is_spread() -> None:
    query = '{ person(ref: "x") { ...A ...A ...A } } fragment A on Person { x1: ref x2: ref x3: ref x4: ref }'
    # A fragment spread three times merges into one selection, but it is counted each time: 12 aliases.
    _, errors = await run(query)
    assert errors == []
    query = '{ person(ref: "x") { ...B } } fragment B on Person { ...A ...A ...A ...A ...A ...A ...A ...A } '
    query += "fragment A on Person { x1: ref x2: ref x3: ref x4: ref }"
    _, errors = await run(query)
    assert [code for code, _ in errors] == ["QUERY_TOO_COMPLEX"]


async def test_directives_are_counted_up_to_the_limit() -> None:
    def with_directives(count: int) -> str:
        return '{ person(ref: "x") { ref ' + " ".join(["givenName @include(if: true)"] * count) + " } }"

    assert MAX_DIRECTIVES == 10
    _, errors = await run(with_directives(MAX_DIRECTIVES))
    assert errors == []
    _, errors = await run(with_directives(MAX_DIRECTIVES + 1))
    assert errors == [("QUERY_TOO_COMPLEX", "Query too complex: an operation may use at most 10 directives.")]


async def test_ninety_schema_aliases_are_refused_not_answered() -> None:
    query = "{ " + " ".join(f"s{i}: __schema {{ types {{ name }} }}" for i in range(90)) + " }"
    data, errors = await run(query)
    assert data is None
    assert [code for code, _ in errors] == ["QUERY_TOO_COMPLEX"]


@pytest.mark.parametrize(
    "query",
    [
        "{ __schema { t: types { name } } }",
        '{ __type(name: "Person") { f: fields { name } } }',
        "{ __schema { types { ...T } } } fragment T on __Type { n: name }",
    ],
    ids=["an alias inside", "an alias inside __type", "an alias in a fragment inside"],
)
async def test_introspection_takes_no_aliases(query: str) -> None:
    data, errors = await run(query)
    assert data is None and [code for code, _ in errors] == ["QUERY_TOO_COMPLEX"]
    assert "alias" in errors[0][1]


async def test_introspection_lists_nest_three_deep_and_no_deeper() -> None:
    three = "{ __schema { types { fields { args { name } } } } }"
    data, errors = await run(three)
    assert errors == [] and data["__schema"]["types"]
    four = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    data, errors = await run(four)
    assert data is None
    # (graphql-core's own introspection depth rule may say so too.)
    assert (
        "QUERY_TOO_COMPLEX",
        "Query too complex: an operation may nest introspection lists at most 3 deep.",
    ) in errors


@pytest.mark.parametrize("view", [POLICE, DWP, YOUTH], ids=lambda v: v.agreement.id)
async def test_the_standard_introspection_query_still_passes(view: View) -> None:
    data, errors = await run(get_introspection_query(descriptions=True, specified_by_url=True), view)
    assert errors == [] and data["__schema"]["queryType"]["name"] == "Query"


async def test_aliased_introspection_roots_are_root_fields_like_any_other() -> None:
    types = " ".join(f'{name}: __type(name: "{name}") {{ name }}' for name in ("Person", "Query", "PageInfo"))
    data, errors = await run("{ s: __schema { queryType { name } } " + types + " }")
    assert errors == [] and data["Person"] == {"name": "Person"}
    six = " ".join(f"s{i}: __schema {{ queryType {{ name }} }}" for i in range(6))
    _, errors = await run("{ " + six + " }")
    assert errors == [
        ("QUERY_TOO_COMPLEX", "Query too complex: an operation may select at most 5 root fields.")
    ]


async def test_schema_and_type_count_as_root_fields() -> None:
    roots = " ".join(f'r{i}: person(ref: "x") {{ ref }}' for i in range(4))
    _, errors = await run("{ " + roots + " __schema { queryType { name } } }")
    assert errors == []
    _, errors = await run("{ " + roots + ' __schema { queryType { name } } __type(name: "Person") { name } }')
    assert errors == [
        ("QUERY_TOO_COMPLEX", "Query too complex: an operation may select at most 5 root fields.")
    ]


PAGE = "{ people(first: %d) { edges { node { ref } } } }"


async def test_five_full_pages_in_one_document_are_refused_for_the_people_they_would_return() -> None:
    five = (
        "{ " + " ".join(f"p{i}: people(first: 100) {{ edges {{ node {{ ref }} }} }}" for i in range(5)) + " }"
    )
    data, errors = await run(five)
    assert data is None
    assert errors == [
        ("QUERY_TOO_COMPLEX", "Query too complex: a document may ask for at most 100 people (this one 500).")
    ]


async def test_the_people_cost_reads_variables_and_defaults_and_counts_lookups() -> None:
    query = 'query($n: Int) { people(first: $n) { edges { node { ref } } } one: person(ref: "x") { ref } }'
    _, errors = await run(query, variables={"n": 99})
    assert "QUERY_TOO_COMPLEX" not in {
        code for code, _ in errors
    }  # 99 + 1: it runs (and reaches the database)
    _, errors = await run(query, variables={"n": 100})
    assert [message for _, message in errors] == [
        "Query too complex: a document may ask for at most 100 people (this one 101)."
    ]
    # No page size: the default page (50) counts; two of them and a lookup are 101.
    _, errors = await run(
        '{ a: people { edges { cursor } } b: people { edges { cursor } } c: person(ref: "x") { ref } }'
    )
    assert [code for code, _ in errors] == ["QUERY_TOO_COMPLEX"]
    # A page size over the page limit is refused by the field itself, with its own message.
    _, errors = await run(PAGE % 101)
    assert errors == [("BAD_USER_INPUT", "first must be between 1 and 100.")]


def test_a_lookup_view_may_ask_for_as_many_people_as_it_has_root_fields() -> None:
    # The Art 19 feed names a person per notification: a lookup view reads it five at a time.
    assert YOUTH.cost is not None and YOUTH.cost.maximum == 5
    assert dict(YOUTH.cost.pages) == {"notifications": (50, 100)}
    assert POLICE.cost is not None and POLICE.cost.maximum == 100
    assert dict(POLICE.cost.pages) == {"people": (50, 100), "notifications": (50, 100)}


def _with_limits(agreement: Agreement, **limits: Any) -> View:
    return build_view(dataclasses.replace(agreement, limits=dataclasses.replace(agreement.limits, **limits)))


async def test_an_agreement_may_set_its_own_limits() -> None:
    strict = _with_limits(AGREEMENTS["police-prevention"], max_depth=3, max_fields=5, max_aliases=1,
                          people_per_request=150)  # fmt: skip
    _, errors = await run("{ people(first: 2) { edges { node { ref } } } }", strict)
    assert errors == [
        ("QUERY_TOO_COMPLEX", "Query too complex: an operation may nest at most 3 levels deep.")
    ]
    _, errors = await run('{ person(ref: "x") { ref givenName familyName dateOfBirth postcode } }', strict)
    assert errors == [("QUERY_TOO_COMPLEX", "Query too complex: an operation may select at most 5 fields.")]
    _, errors = await run('{ a: person(ref: "x") { b: ref } }', strict)
    assert errors == [("QUERY_TOO_COMPLEX", "Query too complex: an operation may use at most 1 aliases.")]
    assert strict.cost is not None and strict.cost.maximum == 150


TWO_PAGES = (
    "query Two($f: Int = 100, $c: String) { a: people(first: $f) { edges { cursor } } "
    "b: people(first: $f, after: $c) { edges { cursor } } }"
)


@pytest.mark.parametrize(
    "variables",
    [{}, {"f": 100.0}, {"f": 100}, {"c": "x"}],
    ids=["the variable's default", "a float GraphQL takes as an Int", "an int", "only the cursor"],
)
async def test_a_page_size_in_a_variable_counts_as_it_will_run(variables: dict[str, Any]) -> None:
    """Found by an outside tester: a default or a float was priced at the field's default (50)."""
    data, errors = await run(TWO_PAGES, variables=variables)
    assert data is None
    assert errors == [
        ("QUERY_TOO_COMPLEX", "Query too complex: a document may ask for at most 100 people (this one 200).")
    ]


def test_a_document_is_registered_at_its_largest_page_sizes() -> None:
    from gateway.guard import DocumentError, check_against_view

    ons = build_view(AGREEMENTS["ons-evaluation"])
    five = (
        "query OnsBig($f: Int = 500) { "
        + " ".join(f"p{i}: people(first: $f) {{ edges {{ cursor }} }}" for i in range(5))
        + " }"
    )
    with pytest.raises(DocumentError, match="at most 500 people"):
        check_against_view(five, ons, max_tokens=2_000)
    one = "query Page($f: Int, $a: String) { people(first: $f, after: $a) { edges { cursor } } }"
    assert check_against_view(one, ons, max_tokens=2_000) == ("Page",)
