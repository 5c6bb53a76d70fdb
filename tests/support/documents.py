"""Writing GraphQL documents for a view with Hypothesis: random selections of its real fields,
nested as deep as its types go, with aliases, inline and named fragments, directives and
`__typename`; argument values as literals or variables, real ones (refs, names, dates of birth,
cursors from a `Pool`) and hostile ones; and now and then a field, root field, argument or type of
another view, or of none. A clean document holds only what the view has, every value of the right
type. Used by the view fuzz test (tests/gateway/guard/test_view_fuzz.py) and by the test that holds
the compiled and general paths to one answer (tests/schema/test_compiled.py)."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from graphql import (
    GraphQLField,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
    is_introspection_type,
)
from hypothesis import HealthCheck
from hypothesis import strategies as st

from policies import load_agreements
from tests.conftest import FIXED_TODAY
from tests.support.oracle import Oracle, Person
from tests.support.population import FIRST_ID, EdgeCases
from tests.support.views import view_names, view_schemas

PERSON_VIEWS: Final = [
    "police-prevention",
    "dwp-worklessness",
    "ons-evaluation",
    "family-hub-outreach",
    "youth-justice",
    "mash-safeguarding",
    "public-health-planning",
    "school-attendance",
]
ALL_VIEWS: Final = [*PERSON_VIEWS, "security-audit"]
# How Hypothesis runs the document tests: derandomised (the same documents every run), no example
# database, no deadline; the checks that suit data-driven strategies off.
DOCUMENT_SETTINGS: Final = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
_AGREEMENTS: Final = load_agreements()
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


@dataclass(frozen=True)
class Shape:
    agreement_id: str
    schema: GraphQLSchema  # what the gateway serves
    foreign_fields: tuple[tuple[str, GraphQLField], ...]  # of other views' object types
    foreign_roots: tuple[tuple[str, GraphQLField], ...]  # root fields of other views
    foreign_types: tuple[str, ...]


@cache
def view_shape(agreement_id: str) -> Shape:
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


def pool_of(people: list[Person], refs: list[str], cursors: list[str], names: list[str]) -> Pool:
    """The values documents draw from: these people's names and dates of birth, with the refs,
    cursors and extra names given."""
    return Pool(
        people=tuple(
            {
                "givenName": p.given_name,
                "familyName": p.family_name,
                "dateOfBirth": p.date_of_birth.isoformat(),
            }
            for p in people
        ),
        refs=tuple(refs),
        names=tuple(n for p in people for n in (p.given_name, p.family_name)) + tuple(names),
        dates=tuple(p.date_of_birth.isoformat() for p in people),
        cursors=tuple(cursors),
    )


def pool_people(oracle: Oracle, cases: EdgeCases, agreement_id: str) -> list[Person]:
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
        # The feed of Art 19 notifications is a root of every person view, but not of people: drawn now
        # and then, like introspection, so that most documents still ask for people.
        people_roots = sorted(name for name in query.fields if name != "notifications")
        name = (
            "notifications"
            if "notifications" in query.fields and self.chance(6)
            else self.draw(st.sampled_from(people_roots))
        )
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
