"""QueryComplexityRule: bounds on root fields, depth and total fields, with fragments expanded.

Queries run through the view's own schema (its validation rules included); no database is needed
because `person` with a ref the view never issued resolves to null without a connection.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NoReturn

import pytest
from graphql import get_introspection_query, parse, specified_rules, validate

from policies import PurposeContext, evaluate, load_agreements
from resolvers import RefCodec
from schema import View, ViewContext, build_view, classify
from schema.limits import MAX_DEPTH, MAX_FIELDS, MAX_ROOT_FIELDS, QueryComplexityRule
from tests.conftest import FIXED_TODAY, REF_SECRET

AGREEMENTS = load_agreements()
POLICE = build_view(AGREEMENTS["police-prevention"])
TOO_COMPLEX = "QUERY_TOO_COMPLEX"


def _no_database() -> NoReturn:
    raise AssertionError("these queries must not reach the database")


async def run(query: str, view: View = POLICE) -> tuple[Any, list[tuple[str, str]]]:
    agreement = view.agreement
    decision = evaluate(agreement, PurposeContext("u", "c", acting_user_verified=True), today=FIXED_TODAY)
    context = ViewContext(decision=decision, refs=RefCodec(REF_SECRET, agreement.id), connect=_no_database)
    result = await view.schema.execute(query, context_value=context)
    return result.data, [(classify(e).code, e.message) for e in result.errors or []]


def too_complex(problem: str) -> list[tuple[str, str]]:
    """The code partners see, with the rule's own message (see the test of the public message)."""
    return [(TOO_COMPLEX, f"Query too complex: an operation may {problem}.")]


def roots(count: int, body: str = "ref") -> str:
    return " ".join(f'r{i}: person(ref: "x") {{ {body} }}' for i in range(count))


def test_the_limits_are_what_this_file_assumes() -> None:
    assert (MAX_ROOT_FIELDS, MAX_DEPTH, MAX_FIELDS) == (5, 6, 200)


async def test_root_fields_at_the_limit_pass() -> None:
    data, errors = await run("{ " + roots(MAX_ROOT_FIELDS) + " __typename }")
    assert errors == []
    assert data == {**{f"r{i}": None for i in range(MAX_ROOT_FIELDS)}, "__typename": "Query"}


async def test_one_root_field_over_the_limit_is_too_complex() -> None:
    data, errors = await run("{ " + roots(MAX_ROOT_FIELDS + 1) + " }")
    assert data is None
    assert errors == too_complex("select at most 5 root fields")


async def test_root_fields_are_counted_through_fragments() -> None:
    two = 'a: person(ref: "a") { ref } b: person(ref: "b") { ref }'
    query = "{ ...Two ... on Query { %s } %s } fragment Two on Query { %s }"
    _, errors = await run(
        query % (two.replace("a:", "c:").replace("b:", "d:"), 'e: person(ref: "e") { ref }', two)
    )
    assert errors == []
    _, errors = await run(query % (two.replace("a:", "c:").replace("b:", "d:"), roots(2), two))
    assert errors == too_complex("select at most 5 root fields")


def nested(depth: int) -> str:
    """A document `depth` levels deep, each level through a fragment and an inline fragment."""
    fragments = []
    for level in range(2, depth):
        fragments.append(f"fragment L{level} on T {{ ... on T {{ f{level} {{ ...L{level + 1} }} }} }}")
    fragments.append(f"fragment L{depth} on T {{ leaf __typename }}")
    return '{ person(ref: "x") { ...L2 } } ' + " ".join(fragments)


@pytest.mark.parametrize(
    ("depth", "expected"), [(MAX_DEPTH, []), (MAX_DEPTH + 1, too_complex("nest at most 6 levels deep"))]
)
def test_depth_is_measured_through_nested_fragments(depth: int, expected: list[tuple[str, str]]) -> None:
    # The rule alone: no view is deep enough to build a valid 7-level query.
    errors = validate(POLICE.schema._schema, parse(nested(depth)), [QueryComplexityRule])
    assert [(classify(e).code, e.message) for e in errors] == expected


def test_a_valid_five_level_query_through_fragments_passes() -> None:
    dwp = build_view(AGREEMENTS["dwp-worklessness"])
    query = (
        "{ people(first: 1) { ...Conn } } fragment Conn on PersonConnection { edges { ...Edge } }"
        " fragment Edge on PersonEdge { node { ... on Person { address { ...Where } } } }"
        " fragment Where on Address { line1 postcode }"
    )
    errors = validate(dwp.schema._schema, parse(query), [*specified_rules, QueryComplexityRule])
    assert errors == []


def fan_out(spreads: int, extra: str = "") -> str:
    body = " ".join(["...F"] * spreads)
    query = "{ " + roots(MAX_ROOT_FIELDS, body) + " }"
    return (
        query.replace("{ ...F", "{ " + extra + " ...F", 1)
        + " fragment F on Person { ref givenName familyName }"
    )


async def test_fields_are_counted_per_fragment_spread() -> None:
    # 5 root fields + 5 roots x 13 spreads x 3 fields = 200.
    _, errors = await run(fan_out(13))
    assert errors == []
    _, errors = await run(fan_out(13, extra="dateOfBirth"))
    assert errors == too_complex("select at most 200 fields")


async def test_nested_fragments_that_double_at_each_level_are_too_complex() -> None:
    fragments = ["fragment F0 on Person { ref givenName }"]
    fragments += [f"fragment F{i} on Person {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 8)]
    _, errors = await run('{ person(ref: "x") { ...F7 } } ' + " ".join(fragments))
    assert errors == too_complex("select at most 200 fields")


@pytest.mark.parametrize("where", ["Person", "Query"])
async def test_doubling_fragments_of_uncounted_fields_are_cheap(where: str) -> None:
    fragments = [f"fragment F0 on {where} {{ __typename }}"]
    fragments += [
        f"fragment F{i} on {where} {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 21)
    ]  # 2**21 spreads
    query = '{ person(ref: "x") { ...F20 } }' if where == "Person" else "{ ...F20 }"
    started = time.perf_counter()
    await run(query + " " + " ".join(fragments))
    assert time.perf_counter() - started < 0.25  # a linear walk of 22 fragments takes milliseconds


async def test_fragment_cycles_are_reported_and_do_not_hang() -> None:
    query = (
        '{ person(ref: "x") { ...A } }'
        " fragment A on Person { ref ...B } fragment B on Person { givenName ...A }"
    )
    data, errors = await run(query)
    assert data is None
    assert errors == [("GRAPHQL_VALIDATION_FAILED", "Cannot spread fragment 'A' within itself via 'B'.")]


async def test_the_introspection_query_passes() -> None:
    data, errors = await run(get_introspection_query(descriptions=True, specified_by_url=True))
    assert errors == []
    assert data["__schema"]["queryType"]["name"] == "Query"
    assert "Person" in {t["name"] for t in data["__schema"]["types"]}


async def test_introspection_can_be_switched_off_by_the_agreement() -> None:
    closed = build_view(dataclasses.replace(AGREEMENTS["police-prevention"], introspection=False))
    _, errors = await run("{ __schema { queryType { name } } }", closed)
    assert [code for code, _ in errors] == ["GRAPHQL_VALIDATION_FAILED"] * 2
    assert all(message.startswith("GraphQL introspection has been disabled") for _, message in errors)
    data, errors = await run('{ person(ref: "x") { ref } }', closed)
    assert (data, errors) == ({"person": None}, [])


async def test_partners_are_told_which_limit_they_exceeded() -> None:
    result = await POLICE.schema.execute("{ " + roots(MAX_ROOT_FIELDS + 1) + " }")
    assert result.errors is not None
    assert (
        classify(result.errors[0]).message
        == "Query too complex: an operation may select at most 5 root fields."
    )
