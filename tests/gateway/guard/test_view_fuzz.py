"""Property: whatever GraphQL document a partner sends within its own view, the answer is a 200 with
data or errors or a 4xx with a stable code, never a 5xx; it names no field that only another view
has; and it never holds a value of a protected-address person's location or contact fields.

Hypothesis writes the documents from each view's SDL (the checked-in snapshot and the schema the
code builds): random selections of the view's real fields, nested as deep as its types go, with
aliases, inline and named fragments, directives and `__typename`; argument values as literals or
variables, real ones (refs of the people below, their names and dates of birth, a real cursor) and
hostile ones (text meant for SQL and shells, huge and negative numbers, wrong types, bad dates, long
text); and now and then a field, root field, argument or type of another view, or of none. Half the
documents are clean (only what the view has, every value of the right type), three in four for the
views that run registered documents only (police, DWP, ONS: each document is registered first where
it can be, as `Partner.post` does), so that those answer many of them rather than refusing all.
Hostile text carries a mark that no answer may hold: no value sent is quoted back.

The people the values come from include those with a protected address, so that the views that
exclude them, and MASH that withholds their location, are asked about them over and over. No
request here breaks the glass, and each view's client is enrolled afresh (no window of another test
can open anything for it).

Each view's figures (examples per database, statuses, error codes, and the answers that disclosed
people, as their audit events count them) are printed once at the end of the session: `pytest -s`
shows them. Hypothesis is derandomised, so a run sends the same documents every time.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import httpx
import hypothesis
import pytest
from graphql import (
    GraphQLField,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
    is_introspection_type,
)
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from policies import load_agreements
from resolvers import RefCodec, RefKind
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.oracle import Oracle, Person
from tests.support.partners import PURPOSE, Partner, enrol
from tests.support.population import FIRST_ID, EdgeCases
from tests.support.requests import event_of
from tests.support.views import view_names, view_schemas

EXAMPLES: Final = 50  # documents per view and database: about 25 s for the file on two cores
PERSON_VIEWS: Final = [
    "police-prevention",
    "dwp-worklessness",
    "ons-evaluation",
    "family-hub-outreach",
    "youth-justice",
    "mash-safeguarding",
]
ALL_VIEWS: Final = [*PERSON_VIEWS, "security-audit"]
_AGREEMENTS: Final = load_agreements()
# The codes of the contract (README, "The GraphQL contract"): every error carries one of them.
CODES: Final = frozenset(
    {
        "UNAUTHENTICATED", "FORBIDDEN", "ACTING_USER_NOT_VERIFIED", "ACTING_USER_MISMATCH",
        "AGREEMENT_EXPIRED", "AGREEMENT_NOT_IN_EFFECT", "AGREEMENT_REVIEW_OVERDUE",
        "PURPOSE_CONTEXT_REQUIRED", "BAD_REQUEST", "BATCHING_NOT_SUPPORTED", "OPERATION_NOT_ALLOWED",
        "UNSUPPORTED_MEDIA_TYPE", "PAYLOAD_TOO_LARGE", "METHOD_NOT_ALLOWED", "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT", "QUERY_TOO_COMPLEX", "DOCUMENT_NOT_TRUSTED",
        "DOCUMENT_NOT_FOUND", "RATE_LIMITED", "QUOTA_EXCEEDED", "BREAK_GLASS_ONE_PERSON",
    }
)  # fmt: skip
HOSTILE_MARK: Final = "Qx9Hostile"  # in every hostile text: an answer that holds it quoted the input
HOSTILE_TEXT: Final = [
    f"' OR '1'='1 {HOSTILE_MARK}",
    f'"; DROP TABLE people; -- {HOSTILE_MARK}',
    f"%s%s%n {HOSTILE_MARK}",
    f"$(reboot) `id` {HOSTILE_MARK}",
    f"{{{{7*7}}}} ${{jndi:ldap://x/{HOSTILE_MARK}}}",
    f"<script>{HOSTILE_MARK}</script>",
    f"{HOSTILE_MARK}\u0000nul",
    f"{HOSTILE_MARK}\u202e\u200bzw\u00e9\u4e2d\U0001f600",
    f"..\\..\\{HOSTILE_MARK}/etc/passwd",
    f"per_{HOSTILE_MARK}",
    f"fam_{HOSTILE_MARK}",
    f"{HOSTILE_MARK} " * 400,
    HOSTILE_MARK * 7_000,  # past the 64 KiB body limit
    "",
    " ",
]
BAD_DATES: Final = ["2011-02-30", "0000-00-00", "9999-99-99", "2026-11-22T00:00:00", "22/11/2026", "-1"]
BIG_INTS: Final = [0, -1, 1, 2, 99, 100, 101, 500, 501, 2**31 - 1, -(2**31), 2**31, 2**53 + 1, 10**40]
WRONG_DECLARED: Final = ["Int", "String", "ID!", "Date", "[Int]", "Boolean!", "Float", "Nope", "Person"]
VOLATILE_HEADERS: Final = frozenset({"x-audit-event-id", "dpop-nonce", "date"})
BUILT_IN_SCALARS: Final = frozenset({"String", "Boolean", "ID", "Int", "Float"})
# Words of GraphQL over HTTP itself, which messages may name whatever view has them as fields.
PROTOCOL_WORDS: Final = frozenset(
    {"operationName", "query", "variables", "extensions", "documentId", "persistedQuery", "sha256Hash",
     "message", "locations", "path", "code", "data", "errors"}
)  # fmt: skip


# -- the views as their SDL says ----------------------------------------------------------------


@cache
def _foreign_names(agreement_id: str) -> frozenset[str]:
    """Names of fields, types and arguments that only other views have (4 letters or more, so that
    none is a word an error message could use)."""
    others = {name for other in ALL_VIEWS if other != agreement_id for name in view_names(other)}
    # Introspection's own fields and arguments (`fields`, `name`, `types`, ...) are in every view.
    schema = view_schemas(agreement_id)[1]
    introspection = {
        name
        for t in schema.type_map.values()
        if is_introspection_type(t)
        for field_name, definition in getattr(t, "fields", {}).items()
        for name in (field_name, *getattr(definition, "args", {}))
    }
    return frozenset(
        n
        for n in others - view_names(agreement_id) - PROTOCOL_WORDS - introspection - BUILT_IN_SCALARS
        if len(n) >= 4 and not n.isupper()
    )


@dataclass(frozen=True)
class Shape:
    agreement_id: str
    schema: GraphQLSchema  # what the gateway serves
    foreign_fields: tuple[tuple[str, GraphQLField], ...]  # of other views' object types
    foreign_roots: tuple[tuple[str, GraphQLField], ...]  # root fields of other views
    foreign_types: tuple[str, ...]


@cache
def _shape(agreement_id: str) -> Shape:
    live = view_schemas(agreement_id)[1]
    own = view_names(agreement_id)
    fields: dict[str, GraphQLField] = {}
    roots: dict[str, GraphQLField] = {}
    types: set[str] = set()
    for other in ALL_VIEWS:
        if other == agreement_id:
            continue
        schema = view_schemas(other)[1]
        for name, t in schema.type_map.items():
            if is_introspection_type(t) or name in own:
                continue
            types.add(name)
        for name, t in schema.type_map.items():
            if isinstance(t, GraphQLObjectType) and not is_introspection_type(t):
                target = roots if name == "Query" else fields
                for field_name, definition in t.fields.items():
                    if field_name not in own:
                        target.setdefault(field_name, definition)
    return Shape(
        agreement_id,
        live,
        tuple(sorted(fields.items())),
        tuple(sorted(roots.items())),
        tuple(sorted(types)),
    )


# -- the values a document may carry ------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    people: tuple[dict[str, str], ...]  # givenName, familyName, dateOfBirth of one person each
    refs: tuple[str, ...]
    names: tuple[str, ...]
    dates: tuple[str, ...]
    cursors: tuple[str, ...]


def _pool_people(oracle: Oracle, cases: EdgeCases, agreement_id: str) -> list[Person]:
    """The people whose refs, names and dates of birth documents carry: the edge cases (protected
    ones among them), protected people of the seeded population, and people the view reaches."""
    keys = [
        "cohort_plain", "cohort_protected", "child_protected", "refuge_adult", "refuge_child", "child_17",
        "child_10_today", "mash_adult", "mash_child", "cohort_restricted", "cohort_past_retention",
        "twin_a", "supported", "criterion_only",
    ]  # fmt: skip
    chosen = [oracle.people[cases.id(key)] for key in keys]
    seeded = sorted((p for p in oracle.people.values() if p.id < FIRST_ID), key=lambda p: p.id)
    chosen += [p for p in seeded if p.protected][:6]  # protected people of the seeded population
    chosen += seeded[:4]
    reached = sorted(oracle.expected(_AGREEMENTS[agreement_id], FIXED_TODAY))
    chosen += [oracle.people[i] for i in reached[:: max(1, len(reached) // 8)][:8]]
    return chosen


def _protected_values(oracle: Oracle) -> frozenset[str]:
    """Location and contact values that only people with a protected address have: any of them in
    an answer came from a protected person (a value shared with anyone else proves nothing)."""

    def values(p: Person) -> set[str]:
        a = p.address
        found = {a["postcode"], a["line1"], a["line2"], a["uprn"], p.phone, p.email, p.school}
        return {str(v) for v in found if v}

    protected: set[str] = set()
    others: set[str] = set()
    for person in oracle.people.values():
        (protected if person.protected else others).update(values(person))
    return frozenset(v for v in protected - others if len(v) >= 5)


@st.composite
def _value(
    draw: st.DrawFn, type_name: str, pool: Pool, *, right_type: bool, literal: bool, argument: str = ""
) -> Any:
    """A value for `argument` (or a variable) of `type_name`; of that type when `right_type`."""
    if not right_type and draw(st.integers(0, 99)) >= 70:
        return draw(
            st.one_of(
                st.none(), st.booleans(), st.sampled_from(BIG_INTS), st.floats(-1e9, 1e9),
                st.sampled_from(HOSTILE_TEXT), st.lists(st.sampled_from(pool.names), max_size=2),
                st.dictionaries(st.sampled_from(["a", "ref", "n"]), st.sampled_from(pool.names), max_size=2),
            )
        )  # fmt: skip
    text = st.sampled_from(HOSTILE_TEXT if not literal else HOSTILE_TEXT[:12])
    if argument == "after":  # a real cursor half the time, so that paging goes on
        return draw(st.one_of(st.just(pool.cursors[-1]), st.sampled_from(pool.cursors), text))
    if argument in ("givenName", "familyName"):
        return draw(st.one_of(st.sampled_from(pool.names), st.sampled_from(pool.names), text))
    if type_name == "ID":
        return draw(st.one_of(st.sampled_from(pool.refs), st.sampled_from(pool.refs), text))
    if type_name == "String":
        return draw(st.one_of(st.sampled_from(pool.names), st.sampled_from(pool.cursors), text))
    if type_name == "Date":
        if literal or right_type:
            return draw(st.sampled_from(pool.dates))
        return draw(st.one_of(st.sampled_from(pool.dates), st.sampled_from(BAD_DATES), text))
    if type_name == "Int":
        if right_type:
            usual = st.sampled_from([1, 2, 3, 5, 10, 50, 100])
            return draw(st.one_of(usual, usual, usual, st.integers(-(2**31), 2**31 - 1)))
        return draw(st.one_of(st.sampled_from(BIG_INTS), st.integers(-(2**70), 2**70)))
    if type_name == "Boolean":
        return draw(st.booleans())
    return draw(st.one_of(st.none(), st.sampled_from(pool.names)))


def _literal(value: Any) -> str:
    """A value written as GraphQL."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"
    raise AssertionError(value)


# -- documents ----------------------------------------------------------------------------------


@dataclass
class Sent:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    clean: bool


class _Writer:
    """Writes one document for a view, drawing every choice from Hypothesis."""

    def __init__(self, draw: st.DrawFn, shape: Shape, pool: Pool, clean: bool) -> None:
        self.draw, self.shape, self.pool, self.clean = draw, shape, pool, clean
        self.declared: list[str] = []
        self.variables: dict[str, Any] = {}
        self.fragments: list[str] = []
        self.budget = 40  # selections left to write: past it, only leaves
        self.made = 0  # aliases and fragments named so far, so that clean documents never repeat one

    def chance(self, percent: int) -> bool:
        """True `percent` times in a hundred; shrinks towards False (the plainer document)."""
        return self.draw(st.integers(0, 99)) >= 100 - percent

    def fault(self, percent: int) -> bool:
        return not self.clean and self.chance(percent)

    def alias(self) -> str:
        """An alias (never a name any view has); unique in a clean document, so nothing conflicts."""
        self.made += 1
        unique = str(self.made) if self.clean else ""
        return "al_" + self.draw(st.text(string.ascii_lowercase, min_size=1, max_size=5)) + unique + ": "

    def document(self) -> Sent:
        roots = self.draw(st.integers(1, 6 if not self.clean else 3))
        body = "{ " + " ".join(self.root() for _ in range(roots)) + " }"
        kind = "query"
        if self.fault(6):
            kind = self.draw(st.sampled_from(["mutation", "subscription"]))
        name = self.draw(st.sampled_from(["", "Op", "Fuzz", "Lookup"]))
        header = f"{kind} {name}".strip()
        if self.declared:
            header += "(" + ", ".join(self.declared) + ")"
        elif not name and kind == "query" and self.chance(50):
            header = ""  # the shorthand form
        text = " ".join([f"{header} {body}".strip(), *self.fragments])
        operation_name = None
        if self.fault(8):
            text += " query Other { __typename }"
            operation_name = self.draw(st.sampled_from([None, "Other", name or None, "Missing"]))
        elif name and self.chance(20):
            operation_name = name
        variables = dict(self.variables)
        if self.fault(8):
            extra = self.draw(st.sampled_from(["unused", "v0", "v9"]))
            variables[extra] = self.draw(_value("String", self.pool, right_type=False, literal=False))
        # No `variables` at all: now and then whatever the document declares, or when it declares none.
        omitted = self.fault(5) or (not variables and self.chance(50))
        return Sent(text, None if omitted else variables, operation_name, self.clean)

    def root(self) -> str:
        query = self.shape.schema.query_type
        assert query is not None
        if self.fault(8) and self.shape.foreign_roots:
            name, definition = self.draw(st.sampled_from(self.shape.foreign_roots))
            return self.field(name, definition, depth=1)
        if self.chance(6):
            return (self.alias() if self.fault(30) else "") + self.draw(
                st.sampled_from(
                    [
                        '__type(name: "Person") { name fields { name } }',
                        "__schema { queryType { name fields { name args { name } } } }",
                        "__schema { types { name } }",
                        '__type(name: "Address") { name }',
                    ]
                )
            )
        if self.chance(4):
            return (self.alias() if self.chance(40) else "") + "__typename"
        name = self.draw(st.sampled_from(sorted(query.fields)))
        return self.field(name, query.fields[name], depth=1)

    def selection(self, owner: GraphQLObjectType, depth: int) -> str:
        count = self.draw(st.integers(1, 4)) if self.budget > 0 and depth < 6 else 1
        self.budget -= count
        parts = [self.item(owner, depth) for _ in range(count)]
        return "{ " + " ".join(parts) + " }"

    def item(self, owner: GraphQLObjectType, depth: int) -> str:
        if self.fault(8):
            if self.shape.foreign_fields and self.chance(80):
                name, definition = self.draw(st.sampled_from(self.shape.foreign_fields))
                return self.field(name, definition, depth)
            return self.draw(st.sampled_from(["zzNowhere", "id", "password", "__secret"]))
        choice = self.draw(st.integers(0, 99)) if self.budget > 0 else 99
        if choice < 8 and depth < 6:
            on = f"on {owner.name} " if self.chance(80) else ""
            if self.fault(20) and self.shape.foreign_types:
                on = f"on {self.draw(st.sampled_from(self.shape.foreign_types))} "
            return f"... {on}{self.selection(owner, depth + 1)}"
        if choice < 14 and depth < 6:
            self.made += 1
            name = f"F{self.made}"
            on = owner.name
            if self.fault(20) and self.shape.foreign_types:
                on = self.draw(st.sampled_from(self.shape.foreign_types))
            self.fragments.append(f"fragment {name} on {on} {self.selection(owner, depth + 1)}")
            if self.fault(10):
                return "...Undefined"
            return f"...{name}"
        if choice < 18:
            return (self.alias() if self.chance(40) else "") + "__typename"
        name = self.draw(st.sampled_from(sorted(owner.fields)))
        return self.field(name, owner.fields[name], depth)

    def field(self, name: str, definition: GraphQLField, depth: int) -> str:
        # In a clean document a field with arguments always has an alias of its own: two of them
        # with different arguments under one name would not merge.
        aliased = (self.clean and bool(definition.args)) or self.chance(25)
        alias = self.alias() if aliased else ""
        arguments = self.arguments(definition)
        directive = self.directive() if self.chance(8) else ""
        inner = get_named_type(definition.type)
        sub = ""
        if isinstance(inner, GraphQLObjectType):
            if depth >= 6 or self.budget <= 0:
                sub = "{ __typename }"
            elif not self.fault(4):
                sub = self.selection(inner, depth + 1)
        elif self.fault(3):
            sub = "{ ref }"
        return f"{alias}{name}{arguments}{directive} {sub}".strip()

    def arguments(self, definition: GraphQLField) -> str:
        parts = []
        # findPeople: most often one real person's name and date of birth, so that it finds them.
        person = self.draw(st.sampled_from(self.pool.people)) if self.chance(60) else {}
        for name, argument in definition.args.items():
            required = isinstance(argument.type, GraphQLNonNull)
            if (not required and self.chance(40)) or self.fault(5):
                continue
            parts.append(f"{name}: {self.value(argument.type, name, person.get(name))}")
        if self.fault(5):
            extra = self.draw(st.sampled_from(["postcode", "uprn", "personId", "filter", "zzNowhere"]))
            parts.append(f"{extra}: {_literal(self.draw(st.sampled_from(self.pool.names)))}")
        return f"({', '.join(parts)})" if parts else ""

    def value(self, graphql_type: Any, argument: str = "", known: str | None = None) -> str:
        """A literal, or a variable (declared, and given a value in `variables`); `known` if given."""
        named = get_named_type(graphql_type).name
        right = self.clean or self.chance(60)
        values = _value(named, self.pool, right_type=right, literal=False, argument=argument)
        literals = _value(named, self.pool, right_type=right, literal=True, argument=argument)
        if known is not None and not self.fault(20):
            values = literals = st.just(known)
        if self.chance(60):
            variable = f"v{len(self.declared)}"
            declared = str(graphql_type)
            if self.fault(10):
                declared = self.draw(st.sampled_from(WRONG_DECLARED))
            elif self.chance(30) and not isinstance(graphql_type, GraphQLNonNull):
                declared += "!"  # stricter than the position needs: still valid
            self.declared.append(f"${variable}: {declared}")
            if not self.fault(5):
                self.variables[variable] = self.draw(values)
            return f"${variable}"
        return _literal(self.draw(literals))

    def directive(self) -> str:
        if self.fault(30):
            return self.draw(st.sampled_from([" @nope", " @include", " @deprecated", " @skip(if: 1)"]))
        if self.chance(50):
            variable = f"v{len(self.declared)}"
            self.declared.append(f"${variable}: Boolean!")
            self.variables[variable] = self.draw(st.booleans())
            return f" @include(if: ${variable})"
        return f" @skip(if: {_literal(self.draw(st.booleans()))})"


@st.composite
def documents(draw: st.DrawFn, shape: Shape, pool: Pool) -> Sent:
    # Views that run registered documents only refuse any faulty one before reading it: give them
    # more clean ones, which they register and run.
    trusted = _AGREEMENTS[shape.agreement_id].access.trusted_documents_only
    clean = draw(st.integers(0, 99)) < (75 if trusted else 50)
    return _Writer(draw, shape, pool, clean).document()


# -- the run --------------------------------------------------------------------------------------


@dataclass
class ViewFigures:
    examples: Counter[str] = field(default_factory=Counter)  # per database
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    with_people: int = 0  # answers that disclosed at least one person (as their audit events say)
    people: int = 0  # people disclosed, summed over the answers

    def line(self, view: str) -> str:
        return (
            f"fuzz {view}: {sum(self.examples.values())} examples ({dict(sorted(self.examples.items()))}); "
            f"statuses {dict(sorted(self.statuses.items()))}; {self.with_people} answers with people "
            f"({self.people} disclosures); "
            f"codes {dict(self.codes.most_common())}"
        )


@pytest.fixture(scope="session")
def fuzz_figures() -> Iterator[dict[str, ViewFigures]]:
    figures: dict[str, ViewFigures] = {}
    yield figures
    if figures:
        print()
        for view in PERSON_VIEWS:
            if view in figures:
                print(figures[view].line(view))


@dataclass
class Rig:
    shape: Shape
    client: Partner
    token: str
    pool: Pool
    forbidden: frozenset[str]
    database: str
    engine: AsyncEngine
    headers: dict[str, str]
    figures: ViewFigures


@pytest.fixture
async def rig(
    agreement_id: str,
    asgi: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    oracle: Oracle,
    cases: EdgeCases,
    fuzz_figures: dict[str, ViewFigures],
) -> Rig:
    """A client of the view enrolled afresh, its token, and the values its documents draw from."""
    client = await enrol(
        engine, asgi, agreement_id, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
    )
    token = await client.token()
    people = _pool_people(oracle, cases, agreement_id)
    other = RefCodec(
        REF_SECRET, "mash-safeguarding" if agreement_id != "mash-safeguarding" else "police-prevention"
    )
    own = [client.ref(p.id) for p in people]
    refs = [*own, *(other.encode(RefKind.PERSON, p.id) for p in people[:4]), own[0][:-3] + "AAA"]
    refs.append(client.refs.encode(RefKind.FAMILY, people[0].household_id))  # a family ref, not a person's
    cursors = ["", "MQ", "bm90LWEtY3Vyc29y"]
    if _AGREEMENTS[agreement_id].listing:
        page = await client.data("query First { people(first: 1) { pageInfo { endCursor } } }", token=token)
        cursors.append(page["people"]["pageInfo"]["endCursor"])
    names = [n for p in people for n in (p.given_name, p.family_name)]
    names += [p.family_name.upper() + "  " for p in people[:3]]
    pool = Pool(
        people=tuple(
            {
                "givenName": p.given_name,
                "familyName": p.family_name,
                "dateOfBirth": p.date_of_birth.isoformat(),
            }
            for p in people
        ),
        refs=tuple(refs),
        names=tuple(names),
        dates=tuple(p.date_of_birth.isoformat() for p in people),
        cursors=tuple(cursors),
    )
    forbidden = _protected_values(oracle)
    assert {"NW8 9ZZ", "bea.fo@example.org", "wyn.vw@example.org", "Selwood Academy"} <= forbidden
    return Rig(
        shape=_shape(agreement_id),
        client=client,
        token=token,
        pool=pool,
        forbidden=forbidden,
        database=engine.dialect.name,
        engine=engine,
        headers={**PURPOSE, "X-Case-Reference": f"CASE-FUZZ-{secrets.token_hex(4)}"},
        figures=fuzz_figures.setdefault(agreement_id, ViewFigures()),
    )


async def _send(rig: Rig, sent: Sent) -> httpx.Response:
    """As a partner sends it: registered first where the view runs registered documents only."""
    client = rig.client
    await client.trust(sent.query)
    body: dict[str, Any] = {"query": sent.query}
    if sent.variables is not None:
        body["variables"] = sent.variables
    if sent.operation_name is not None:
        body["operationName"] = sent.operation_name
    for _ in range(2):
        response = await client.http.post(
            "/graphql", json=body, headers={**client.authorization(rig.token), **rig.headers}
        )
        client.nonce = response.headers.get("dpop-nonce", client.nonce)
        if 'error="use_dpop_nonce"' not in response.headers.get("www-authenticate", ""):
            break
    return response


_WORD = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


def _check(rig: Rig, sent: Sent, response: httpx.Response) -> None:
    """Every property an answer must have, whatever was sent."""
    status, text = response.status_code, response.text
    context = f"{sent}\n-> {status} {text[:2_000]}"
    assert status < 500, context
    assert status == 200 or 400 <= status < 500, context
    body = response.json()
    assert isinstance(body, dict), context
    errors = body.get("errors", [])
    if status == 200:
        assert body and set(body) <= {"data", "errors"}, context
    else:
        assert set(body) == {"errors"} and errors, context
    assert isinstance(errors, list), context
    for error in errors:
        code = error.get("extensions", {}).get("code")
        assert code in CODES, context
        rig.figures.codes[code] += 1
    # No field, type or argument that only another view has, unless the partner wrote it itself
    # (then it is refused like a name that exists nowhere); no suggestions of names, ever.
    assert "Did you mean" not in text, context
    written = set(_WORD.findall(sent.query))
    for name in _foreign_names(rig.shape.agreement_id) - written:
        for quoted in (f'"{name}"', f"'{name}'", f'\\"{name}\\"'):
            assert quoted not in text, (name, context)
    # No location or contact value of anyone with a protected address, in any view (no glass broken).
    leaked = [v for v in rig.forbidden if v in text or json.dumps(v)[1:-1] in text]
    assert not leaked, (leaked, context)
    headers = json.dumps([(k, v) for k, v in response.headers.multi_items() if k not in VOLATILE_HEADERS])
    assert HOSTILE_MARK not in text + headers, context


@pytest.mark.parametrize("agreement_id", PERSON_VIEWS)
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
async def test_any_document_in_a_view_is_answered_within_the_contract_and_leaks_nothing(
    agreement_id: str, rig: Rig, data: st.DataObject
) -> None:
    sent = data.draw(documents(rig.shape, rig.pool), label="document")
    response = await _send(rig, sent)
    rig.figures.examples[rig.database] += 1
    rig.figures.statuses[response.status_code] += 1
    _check(rig, sent, response)
    event = await event_of(rig.engine, response.headers.get("x-audit-event-id", ""))
    if event is not None and event["people_count"]:
        rig.figures.with_people += 1
        rig.figures.people += event["people_count"]
