"""One answer, two paths: the compiled path (schema.compiled) answers exactly as the general path
(the view's strawberry schema) would, or gives way to it having changed nothing.

Both run on the same request against the same database: every shipped document (the demo's trusted
documents and the benchmark's) with real variables, and documents Hypothesis writes for every person
view (tests/support/documents.py: aliases, fragments, directives, `__typename`, real and hostile
values). Where the compiled path answers, the general path must have answered without an error, the
two `data` must serialise to the same bytes (key order included), the disclosures recorded for the
audit must be the same, person by person and field by field, and so must the operation name. Where it
gives way it must have recorded nothing. MASH is also asked with a break-glass window open for a
protected person, so that its withheld fields are compared opened and closed.

The shipped documents must all be covered by the compiled path (no giving way on them), and a fair
share of the generated clean documents too, so that this test cannot pass by the compiled path giving
way to everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import hypothesis
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.types.graphql import OperationType

from bench.speed import DWP_PAGE, LOOKUP, POLICE_PAGE
from policies import Agreement, PurposeContext, evaluate
from resolvers import RefCodec, RefKind
from schema import Disclosure, View, ViewContext, build_view
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.documents import (
    DOCUMENT_SETTINGS,
    PERSON_VIEWS,
    Pool,
    Sent,
    documents,
    pool_of,
    pool_people,
    view_shape,
)
from tests.support.oracle import Oracle
from tests.support.population import EdgeCases

EXAMPLES: Final = 60  # generated documents per view and database
DEMO_DOCUMENTS: Final = Path(__file__).parents[2] / "gateway" / "cli" / "demo_documents"
_VIEWS: dict[str, View] = {}


def _view(agreement: Agreement) -> View:
    if agreement.id not in _VIEWS:
        _VIEWS[agreement.id] = build_view(agreement)
    return _VIEWS[agreement.id]


def _context(engine: AsyncEngine, agreement: Agreement, opened: frozenset[int]) -> ViewContext:
    decision = evaluate(
        agreement,
        PurposeContext(acting_user="officer", case_reference="CASE-1", acting_user_verified=True),
        today=FIXED_TODAY,
    )
    assert decision.allowed and decision.scope is not None, decision
    if opened:
        decision = replace(decision, scope=replace(decision.scope, opened=opened))
    return ViewContext(decision=decision, refs=RefCodec(REF_SECRET, agreement.id), connect=engine.connect)


def _key(disclosure: Disclosure) -> tuple[Any, ...]:
    return (disclosure.root, disclosure.person_id, disclosure.fields, disclosure.withheld, disclosure.member)


async def both_paths(
    engine: AsyncEngine, agreement: Agreement, sent: Sent, opened: frozenset[int] = frozenset()
) -> bool:
    """Run `sent` both ways; True when the compiled path answered (and agreed), False when it gave way."""
    view = _view(agreement)
    assert view.planner is not None
    compiled = _context(engine, agreement, opened)
    data = await view.planner.execute(compiled, sent.query, sent.variables, sent.operation_name)
    general = _context(engine, agreement, opened)
    try:
        result = await view.schema.execute(
            sent.query,
            variable_values=sent.variables,
            context_value=general,
            operation_name=sent.operation_name,
            allowed_operation_types=(OperationType.QUERY,),
        )
    except Exception:  # the general path refused the request before running it
        refused = True
    else:
        refused = False
    if data is None or refused:
        assert data is None, sent
        assert compiled.disclosures == [] and compiled.operation_name is None, sent
        return False
    assert not result.errors, (sent, result.errors)
    assert orjson.dumps(data) == orjson.dumps(result.data), sent
    # Every disclosure recorded, not only those whose root reached the answer (without errors, all do).
    assert sorted(map(_key, compiled.disclosures)) == sorted(map(_key, general.disclosures)), sent
    assert compiled.operation_name == general.operation_name, sent
    return True


# -- the shipped documents ------------------------------------------------------------------------


def _shipped() -> Iterator[tuple[str, str]]:
    for path in sorted(DEMO_DOCUMENTS.glob("*/*.graphql")):
        document = path.read_text(encoding="utf-8")
        if not document.startswith("mutation"):  # a partner's report: the general path's alone
            yield path.parent.name, document
    yield "police-prevention", POLICE_PAGE
    yield "police-prevention", LOOKUP
    yield "dwp-worklessness", DWP_PAGE


@pytest.mark.parametrize(("agreement_id", "document"), list(_shipped()))
async def test_every_shipped_document_is_compiled_and_answers_as_the_general_path(
    agreement_id: str,
    document: str,
    engine: AsyncEngine,
    agreements: dict[str, Agreement],
    oracle: Oracle,
    cases: EdgeCases,
) -> None:
    agreement = agreements[agreement_id]
    codec = RefCodec(REF_SECRET, agreement_id)
    reached = sorted(oracle.expected(agreement, FIXED_TODAY))
    assert len(reached) > 12
    variable_sets: list[dict[str, Any]] = []
    if "$" not in document:
        variable_sets.append({})  # no variables: one request says it all (a count of the whole view)
    elif "people(" in document:
        largest = agreement.limits.max_page_size or 1
        for first in (1, 7, largest):
            variable_sets.append({"first": first})
            for after in (reached[0], reached[len(reached) // 2], reached[-2], reached[-1]):
                variable_sets.append({"first": first, "after": codec.encode(RefKind.CURSOR, after)})
        variable_sets.append({})  # the default page size
    else:
        keys = ["cohort_plain", "cohort_protected", "twin_a", "cohort_restricted", "child_17"]
        people = [oracle.people[cases.id(key)] for key in keys] + [oracle.people[i] for i in reached[::9]]
        for person in people:
            variable_sets.append(
                {"familyName": person.family_name, "dateOfBirth": person.date_of_birth.isoformat()}
            )
            variable_sets.append(
                {
                    "familyName": f"  {person.family_name.upper()} ",
                    "dateOfBirth": person.date_of_birth.isoformat(),
                }
            )
    for variables in variable_sets:
        sent = Sent(document, variables, None, clean=True)
        assert await both_paths(engine, agreement, sent), f"the compiled path gave way on {variables}"


async def test_a_request_the_general_path_refuses_is_given_way_to_with_nothing_recorded(
    engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    police = agreements["police-prevention"]
    refused = [
        Sent(POLICE_PAGE, {"first": 0}, None, clean=False),  # out of range: BAD_USER_INPUT
        Sent(POLICE_PAGE, {"first": 10, "after": "cur_notacursor"}, None, clean=False),
        Sent(POLICE_PAGE, {"first": "ten"}, None, clean=False),  # does not coerce
        Sent(LOOKUP, {"familyName": " ", "dateOfBirth": "2010-01-01"}, None, clean=False),
        Sent("{ people(first: 1) { edges { node { nope } } } }", None, None, clean=False),
        Sent("query A { __typename } query B { __typename }", None, None, clean=False),
        Sent("{ __schema { queryType { name } } }", None, None, clean=False),
    ]
    for sent in refused:
        assert not await both_paths(engine, police, sent), sent


async def test_conditions_in_variables_are_planned_for_each_set_of_values(
    engine: AsyncEngine, agreements: dict[str, Agreement], oracle: Oracle
) -> None:
    police = agreements["police-prevention"]
    document = """query Page($first: Int, $names: Boolean!, $born: Boolean = true, $info: Boolean!) {
      people(first: $first) {
        edges { node { ref ...Names @include(if: $names) dateOfBirth @skip(if: $born) } }
        pageInfo @include(if: $info) { hasNextPage }
      }
    }
    fragment Names on Person { givenName familyName @skip(if: $born) }"""
    for names in (True, False):
        for born in (True, False, None):
            for info in (True, False):
                variables: dict[str, Any] = {"first": 3, "names": names, "info": info}
                if born is not None:
                    variables["born"] = born
                sent = Sent(document, variables, None, clean=True)
                assert await both_paths(engine, police, sent), variables
    view = _view(police)
    assert view.planner is not None
    plan = view.planner.plan(document, None)
    assert plan is not None and plan.roots is None and plan.conditions == ("born", "info", "names")
    assert len(plan.by_condition) == 8  # (true, false, default) x ... as values, the default once
    # A condition without a value is the general path's error to report.
    assert not await both_paths(engine, police, Sent(document, {"first": 3, "info": True}, None, clean=False))


async def test_skip_is_read_before_include_as_graphql_core_reads_them(
    engine: AsyncEngine, agreements: dict[str, Agreement]
) -> None:
    """Found by an outside tester: with `@include(if: false) @skip(if: $s)` and `s` null, the general
    path fails on the null (it reads @skip first) and the compiled path answered, disclosing people."""
    police = agreements["police-prevention"]
    for where in (
        "givenName @include(if: false) @skip(if: $s)",
        "... @include(if: false) @skip(if: $s) { givenName }",
    ):
        document = (
            f"query Q($s: Boolean = false) {{ people(first: 2) {{ edges {{ node {{ ref {where} }} }} }} }}"
        )
        assert not await both_paths(engine, police, Sent(document, {"s": None}, None, clean=False))
        assert await both_paths(engine, police, Sent(document, {"s": True}, None, clean=True))
    root = (
        "query Q($s: Boolean = false) { __typename "
        "people(first: 2) @include(if: false) @skip(if: $s) { pageInfo { hasNextPage } } }"
    )
    assert not await both_paths(engine, police, Sent(root, {"s": None}, None, clean=False))


async def test_a_value_the_database_refuses_is_the_general_paths_to_answer(
    engine: AsyncEngine, agreements: dict[str, Agreement], oracle: Oracle, cases: EdgeCases
) -> None:
    """Found by an outside tester: a NUL in a search value (a GraphQL escape, past the JSON check) is
    refused by PostgreSQL; the compiled path raised (a 500) where the general path answers the other
    root field and an error on this one. SQLite takes the NUL: both answer alike."""
    youth = agreements["youth-justice"]
    child = oracle.people[cases.id("child_17")]
    document = (
        "query Q($r: ID!, $d: Date!) { a: person(ref: $r) { ref givenName } "
        'b: findPeople(familyName: "Radcliffe\\u0000Hume", dateOfBirth: $d) { ref } }'
    )
    variables = {
        "r": RefCodec(REF_SECRET, youth.id).encode(RefKind.PERSON, child.id),
        "d": child.date_of_birth.isoformat(),
    }
    answered = await both_paths(engine, youth, Sent(document, variables, None, clean=False))
    assert answered == (engine.dialect.name == "sqlite")


# -- generated documents ---------------------------------------------------------------------------


_INTROSPECTION = re.compile(r"\b__(?:type|schema)\b")


@dataclass
class _Figures:
    clean: int = 0
    covered: int = 0
    covered_clean: int = 0


@pytest.fixture
def figures(agreement_id: str) -> Iterator[_Figures]:
    """One per view and database, shared by all of its examples: when they are done, the compiled
    path must have answered a fair share of the clean documents, or the comparison was vacuous."""
    counted = _Figures()
    yield counted
    assert counted.clean >= 8, counted
    assert counted.covered_clean >= counted.clean // 3, (agreement_id, counted)


_POOLS: dict[tuple[str, str], tuple[Pool, list[int]]] = {}


def _pool(
    agreement: Agreement, engine: AsyncEngine, oracle: Oracle, cases: EdgeCases
) -> tuple[Pool, list[int]]:
    """The values documents draw from, and the protected people a window may open (MASH)."""
    key = (agreement.id, engine.dialect.name)
    if key not in _POOLS:
        people = pool_people(oracle, cases, agreement.id)
        own = RefCodec(REF_SECRET, agreement.id)
        other = RefCodec(
            REF_SECRET, "police-prevention" if agreement.id != "police-prevention" else "mash-safeguarding"
        )
        refs = [own.encode(RefKind.PERSON, p.id) for p in people]
        refs += [other.encode(RefKind.PERSON, p.id) for p in people[:3]]
        refs.append(own.encode(RefKind.FAMILY, people[0].household_id))
        reached = sorted(oracle.expected(agreement, FIXED_TODAY))
        cursors = ["", "cur_x"] + [
            own.encode(RefKind.CURSOR, i) for i in reached[:: max(1, len(reached) // 4)]
        ]
        pool = pool_of(people, refs, cursors, [])
        _POOLS[key] = (pool, sorted(p.id for p in people if p.protected))
    return _POOLS[key]


@pytest.mark.parametrize("agreement_id", PERSON_VIEWS)
@hypothesis.settings(max_examples=EXAMPLES, **DOCUMENT_SETTINGS)
@given(data=st.data())
async def test_generated_documents_answer_the_same_on_both_paths(
    agreement_id: str,
    engine: AsyncEngine,
    agreements: dict[str, Agreement],
    oracle: Oracle,
    cases: EdgeCases,
    figures: _Figures,
    data: st.DataObject,
) -> None:
    agreement = agreements[agreement_id]
    pool, protected = _pool(agreement, engine, oracle, cases)
    sent = data.draw(documents(view_shape(agreement_id), pool), label="document")
    opened: frozenset[int] = frozenset()
    if agreement.protected_address == "withhold" and protected and data.draw(st.booleans(), label="window"):
        opened = frozenset({data.draw(st.sampled_from(protected), label="opened")})
    covered = await both_paths(engine, agreement, sent, opened)
    # Introspection is the general path's by design: the share covered is of what the plan is for.
    plannable = sent.clean and not _INTROSPECTION.search(sent.query)
    figures.clean += plannable
    figures.covered += covered
    figures.covered_clean += covered and plannable
