"""No oracles, checked as pairs: what a partner cannot be told, it cannot work out from a difference.

Each test sends two (or more) requests that must not be told apart and compares the whole answers:
status, body and headers (all but the ids and clocks of one request: X-Audit-Event-Id, DPoP-Nonce,
Date). A field of another view must be refused exactly like a field that exists nowhere; a person
who is restricted, past retention, outside the population, protected (every view but MASH's) or
named by another partner's ref must be answered exactly like a person who was never seeded. Where
a view lists people, a protected person is simply absent: the listing is the oracle's own reading
of the rules (tests/support/oracle.py), field for field. And no error message quotes a value sent.

Over SQLite and PostgreSQL, in-process (the `local_partner` fixture: the transport is the HTTP
contract tests' concern), with real tokens.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import httpx
import pytest
from graphql import GraphQLObjectType, get_named_type, is_introspection_type
from graphql import GraphQLSchema as CoreSchema

from policies import Agreement, load_agreements
from resolvers import RefCodec, RefKind
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.documents import PERSON_VIEWS
from tests.support.oracle import Oracle, Person
from tests.support.partners import PURPOSE, Partner
from tests.support.population import FIRST_ID
from tests.support.views import view_names, view_schemas

PartnerFactory = Callable[[str], Partner]

_AGREEMENTS: Final = load_agreements()
LISTING: Final = [a for a in PERSON_VIEWS if _AGREEMENTS[a].listing]
FINDING: Final = [a for a in PERSON_VIEWS if _AGREEMENTS[a].match]
EXCLUDING: Final = [a for a in PERSON_VIEWS if _AGREEMENTS[a].protected_address == "exclude"]
# Ids and clocks of one request: the only things two answers that cannot be told apart may differ in.
VOLATILE_HEADERS: Final = frozenset({"x-audit-event-id", "dpop-nonce", "date"})
MARKER: Final = "Zyxwvut-4821"  # a synthetic value no answer may quote
HUGE: Final = 48214821482148214821  # past any Int
BIG: Final = 48214821  # an Int, past any page size
PERSON_QUERY: Final = "query Who($ref: ID!) {{ person(ref: $ref) {{ {selection} }} }}"
TYPES: Final = {"givenName": "String!", "familyName": "String!", "dateOfBirth": "Date!"}


# -- the views as their SDL says ----------------------------------------------------------------


def _own_types(schema: CoreSchema) -> list[Any]:
    return [
        t
        for name, t in schema.type_map.items()
        if not is_introspection_type(t) and name not in {"String", "Boolean", "ID", "Int", "Float"}
    ]


@cache
def _person_fields(agreement_id: str) -> dict[str, str]:
    """The fields of the view's person types (Person, HouseholdMember): name -> a sub-selection."""
    out: dict[str, str] = {}
    for schema in view_schemas(agreement_id):
        for type_name in ("Person", "HouseholdMember"):
            t = schema.type_map.get(type_name)
            if not isinstance(t, GraphQLObjectType):
                continue
            for name, field in t.fields.items():
                inner = get_named_type(field.type)
                out[name] = (
                    f"{{ {next(iter(inner.fields))} }}" if isinstance(inner, GraphQLObjectType) else ""
                )
    return out


def _root_fields(agreement_id: str) -> set[str]:
    return {name for schema in view_schemas(agreement_id) for name in schema.type_map["Query"].fields}  # type: ignore[attr-defined]


def _foreign_fields(agreement_id: str) -> dict[str, str]:
    """Fields of other views that exist nowhere in this one (name -> sub-selection): those of the
    other person views' Person and HouseholdMember, and those of the security team's ledger view."""
    out: dict[str, str] = {}
    for other in PERSON_VIEWS:
        if other != agreement_id:
            out.update(_person_fields(other))
    for schema in view_schemas("security-audit"):
        for t in _own_types(schema):
            if isinstance(t, GraphQLObjectType) and t.name != "Query":
                for name, field in t.fields.items():
                    inner = get_named_type(field.type)
                    out.setdefault(
                        name,
                        f"{{ {next(iter(inner.fields))} }}" if isinstance(inner, GraphQLObjectType) else "",
                    )
    return {name: sub for name, sub in sorted(out.items()) if name not in view_names(agreement_id)}


def _foreign_roots(agreement_id: str) -> list[str]:
    others = {name for other in [*PERSON_VIEWS, "security-audit"] for name in _root_fields(other)}
    return sorted(others - view_names(agreement_id))


def _nowhere(like: str) -> str:
    """A name of the same length as `like` that no view has (so the answers have the same length)."""
    every = {name for a in [*PERSON_VIEWS, "security-audit"] for name in view_names(a)}
    name = ("zq" + "x" * len(like))[: max(len(like), 2)]
    assert name not in every and len(name) == len(like), (like, name)
    return name


def _selection(agreement_id: str) -> str:
    """Every field of the view's Person, sub-selections written out in full."""
    parts = []
    for name in _person_fields(agreement_id):
        if name == "address":
            parts.append("address { line1 line2 town postcode }")
        elif name == "members":
            parts.append("members { ref givenName withheld }")
        else:
            parts.append(name)
    return " ".join(parts)


# -- answers as something to compare ------------------------------------------------------------


def _seen(response: httpx.Response, *, rename: tuple[str, str] | None = None) -> dict[str, Any]:
    """What a partner can observe of an answer, ids and clocks aside."""
    text = response.text
    headers = sorted(
        (name.lower(), value)
        for name, value in response.headers.multi_items()
        if name.lower() not in VOLATILE_HEADERS
    )
    if rename is not None:
        text = text.replace(*rename)
    return {"status": response.status_code, "body": text, "headers": headers}


def _differences(pairs: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]) -> list[str]:
    """A readable account of every pair that differs: what was sent, and both answers."""
    out = []
    for label, sent, expected, got in pairs:
        if expected != got:
            out.append(f"{label}\n  request: {json.dumps(sent)}\n  baseline: {expected}\n  this one: {got}")
    return out


# -- who is asked about -------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    label: str
    ref: str
    person: Person | None  # the real record, for findPeople with its true name and date of birth


def _visible_otherwise(oracle: Oracle, person: Person, agreement: Agreement) -> bool:
    """Not restricted, within retention, no marker, no objection this agreement honours."""
    return (
        not person.restricted
        and person.retention_until >= FIXED_TODAY
        and not person.protected
        and not (agreement.honours_objection and agreement.id in person.objections)
    )


def _match_key(agreement: Agreement, p: Person) -> tuple[Any, ...]:
    values = {"givenName": p.given_name.lower(), "familyName": p.family_name.lower()}
    values["dateOfBirth"] = p.date_of_birth.isoformat()
    return tuple(values[name] for name in agreement.match or ("familyName", "dateOfBirth"))


def _pick(oracle: Oracle, agreement: Agreement, wanted: Callable[[Person], bool]) -> Person | None:
    """The first person who fits and whom no one else in the whole table shares match values with
    (a wrong scope would find them), the hand-made edge cases before the seeded population."""
    counts = Counter(_match_key(agreement, p) for p in oracle.people.values())
    fits = [p for p in oracle.people.values() if wanted(p) and counts[_match_key(agreement, p)] == 1]
    fits.sort(key=lambda p: (p.id < FIRST_ID, p.id))
    return fits[0] if fits else None


def _in_population(oracle: Oracle, agreement: Agreement) -> Callable[[Person], bool]:
    return lambda p: oracle.in_population(p, agreement.population, FIXED_TODAY)


def _visible_person(oracle: Oracle, agreement: Agreement) -> Person:
    expected = oracle.expected(agreement, FIXED_TODAY)
    person = _pick(oracle, agreement, lambda p: p.id in expected)
    assert person is not None, agreement.id
    return person


def _invisible_people(oracle: Oracle, agreement: Agreement) -> dict[str, Person]:
    """One real person of each kind the view must not tell from no one, that it has at all."""
    inside = _in_population(oracle, agreement)
    kinds: dict[str, Callable[[Person], bool]] = {
        "a person outside the agreement's population": lambda p: (
            not inside(p) and _visible_otherwise(oracle, p, agreement)
        ),
        "a restricted person": lambda p: (
            inside(p) and p.restricted and not p.protected and p.retention_until >= FIXED_TODAY
        ),
        "a person past retention": lambda p: (
            inside(p) and p.retention_until < FIXED_TODAY and not p.restricted and not p.protected
        ),
    }
    if agreement.protected_address == "exclude":
        kinds["a protected-address person"] = lambda p: (
            inside(p) and p.protected and not p.restricted and p.retention_until >= FIXED_TODAY
        )
    if agreement.honours_objection:
        kinds["a person who objected to this share"] = lambda p: (
            inside(p) and agreement.id in p.objections and not p.restricted and not p.protected
        )
    out = {}
    for label, wanted in kinds.items():
        person = _pick(oracle, agreement, wanted)
        if person is None:
            # Only MASH reaches every record: no one is outside its population.
            assert label.startswith("a person outside") and agreement.population == "all-records", label
            continue
        assert person.id not in oracle.expected(agreement, FIXED_TODAY), (label, person.id)
        out[label] = person
    return out


def _never_seeded(oracle: Oracle) -> int:
    internal = max(oracle.people) + 7_919
    assert internal not in oracle.people
    return internal


def _another_partner(agreement_id: str, oracle: Oracle, person: Person) -> str:
    """Another person view that reaches the same person: its ref for them is a real, issued one."""
    for other in PERSON_VIEWS:
        if other != agreement_id and person.id in oracle.expected(_AGREEMENTS[other], FIXED_TODAY):
            return other
    raise AssertionError(f"no other view reaches person {person.id}")


def _ref_subjects(client: Partner, oracle: Oracle) -> tuple[list[Subject], Subject]:
    """Everyone person(ref:) must answer like a person who was never seeded; and one it must not."""
    agreement = _AGREEMENTS[client.agreement]
    visible = _visible_person(oracle, agreement)
    own = client.ref(visible.id)
    other = _another_partner(client.agreement, oracle, visible)
    subjects = [Subject("a person who does not exist", client.ref(_never_seeded(oracle)), None)]
    subjects += [
        Subject(label, client.ref(p.id), p) for label, p in _invisible_people(oracle, agreement).items()
    ]
    subjects.append(
        Subject(
            f"a ref minted for {other} (a person this view does reach)",
            RefCodec(REF_SECRET, other).encode(RefKind.PERSON, visible.id),
            visible,
        )
    )
    altered = own[:-3] + ("AAA" if not own.endswith("AAA") else "BBB")
    subjects.append(Subject("the visible person's own ref, altered", altered, visible))
    return subjects, Subject("the visible person, by the view's own ref", own, visible)


# -- 1. fields of other views -------------------------------------------------------------------


@pytest.mark.parametrize("agreement_id", PERSON_VIEWS)
async def test_a_field_of_another_view_is_refused_exactly_like_a_field_that_exists_nowhere(
    agreement_id: str, local_partner: PartnerFactory, oracle: Oracle
) -> None:
    client = local_partner(agreement_id)
    token = await client.token()
    ref = client.ref(_visible_person(oracle, _AGREEMENTS[agreement_id]).id)
    foreign = _foreign_fields(agreement_id)
    assert {"httpStatus", "fieldsDisclosed"} <= set(foreign)  # the ledger view's, in every person view
    if agreement_id in EXCLUDING:
        assert {"withheld", "members"} <= set(foreign)
    pairs = []
    for name, sub in foreign.items():
        nowhere = _nowhere(name)
        query = PERSON_QUERY.format(selection=f"ref {name} {sub}".strip())
        baseline = await client.post(
            PERSON_QUERY.format(selection=f"ref {nowhere} {sub}".strip()), {"ref": ref}, token=token
        )
        answer = await client.post(query, {"ref": ref}, token=token)
        assert baseline.status_code in (200, 400), baseline.text
        pairs.append((name, {"query": query}, _seen(baseline, rename=(nowhere, name)), _seen(answer)))
    for name in _foreign_roots(agreement_id):
        nowhere = _nowhere(name)
        query = f"query Root {{ {name} {{ ref }} }}"
        baseline = await client.post(query.replace(name, nowhere), token=token)
        answer = await client.post(query, token=token)
        pairs.append(
            (f"root {name}", {"query": query}, _seen(baseline, rename=(nowhere, name)), _seen(answer))
        )
    differences = _differences(pairs)
    assert not differences, "\n".join(differences)


# -- 2. people a view must not tell from no one -------------------------------------------------


@pytest.mark.parametrize("agreement_id", PERSON_VIEWS)
async def test_person_by_ref_answers_every_invisible_person_exactly_like_one_who_does_not_exist(
    agreement_id: str, local_partner: PartnerFactory, oracle: Oracle
) -> None:
    client = local_partner(agreement_id)
    token = await client.token()
    subjects, visible = _ref_subjects(client, oracle)
    query = PERSON_QUERY.format(selection=_selection(agreement_id))

    async def seen(subject: Subject) -> dict[str, Any]:
        response = await client.post(query, {"ref": subject.ref}, token=token)
        assert response.status_code == 200, (subject.label, response.text)
        return _seen(response)

    baseline_subject, *others = subjects
    baseline = await seen(baseline_subject)
    assert json.loads(baseline["body"]) == {"data": {"person": None}}
    # The query can see a person at all: the view's own ref for someone it reaches is answered.
    control = await seen(visible)
    assert json.loads(control["body"])["data"]["person"] is not None
    assert control != baseline
    labels = {s.label.split(" (")[0] for s in others}
    assert "a restricted person" in labels and "a person past retention" in labels
    if agreement_id in EXCLUDING:
        assert "a protected-address person" in labels
    pairs = [
        (s.label, {"query": query, "variables": {"ref": s.ref}}, baseline, await seen(s)) for s in others
    ]
    differences = _differences(pairs)
    assert not differences, "\n".join(differences)


def _match_variables(agreement: Agreement, person: Person | None) -> dict[str, str]:
    values = (
        {"givenName": "Quennell", "familyName": "Zorrington-Quaye", "dateOfBirth": "1901-02-03"}
        if person is None
        else {
            "givenName": person.given_name,
            "familyName": person.family_name,
            "dateOfBirth": person.date_of_birth.isoformat(),
        }
    )
    return {name: values[name] for name in agreement.match}


@pytest.mark.parametrize("agreement_id", FINDING)
async def test_find_people_answers_every_invisible_person_exactly_like_one_who_does_not_exist(
    agreement_id: str, local_partner: PartnerFactory, oracle: Oracle
) -> None:
    agreement = _AGREEMENTS[agreement_id]
    client = local_partner(agreement_id)
    token = await client.token()
    declared = ", ".join(f"${name}: {TYPES[name]}" for name in agreement.match)
    arguments = ", ".join(f"{name}: ${name}" for name in agreement.match)
    query = f"query Find({declared}) {{ findPeople({arguments}) {{ {_selection(agreement_id)} }} }}"

    async def seen(person: Person | None) -> tuple[dict[str, str], dict[str, Any]]:
        variables = _match_variables(agreement, person)
        response = await client.post(query, variables, token=token)
        assert response.status_code == 200, response.text
        return variables, _seen(response)

    nobody = _match_variables(agreement, None)
    assert not [p for p in oracle.people.values() if _match_variables(agreement, p) == nobody]
    _, baseline = await seen(None)
    assert json.loads(baseline["body"]) == {"data": {"findPeople": None}}
    _, control = await seen(_visible_person(oracle, agreement))
    assert json.loads(control["body"])["data"]["findPeople"] is not None
    invisible = _invisible_people(oracle, agreement)
    assert "a restricted person" in invisible and "a person past retention" in invisible
    if agreement_id in EXCLUDING:
        assert "a protected-address person" in invisible
    pairs = []
    for label, person in invisible.items():
        variables, answer = await seen(person)
        pairs.append((label, {"query": query, "variables": variables}, baseline, answer))
    differences = _differences(pairs)
    assert not differences, "\n".join(differences)


# -- 3. views that exclude protected people: nothing marks them -----------------------------------


@pytest.mark.parametrize("agreement_id", EXCLUDING)
async def test_no_view_but_mashs_has_a_withheld_field_anywhere_in_its_schema(
    agreement_id: str, local_partner: PartnerFactory
) -> None:
    data = await local_partner(agreement_id).data(
        "query Schema { __schema { types { name fields { name } inputFields { name } } } }"
    )
    names = {t["name"] for t in data["__schema"]["types"]}
    fields = {f["name"] for t in data["__schema"]["types"] for f in (t["fields"] or [])}
    inputs = {f["name"] for t in data["__schema"]["types"] for f in (t["inputFields"] or [])}
    assert "Person" in names and "ref" in fields
    assert "withheld" not in fields | inputs | names
    assert "withheld" not in view_names(agreement_id)  # nor in the checked-in SDL


def _age_band(age: int) -> str:
    """Written out here, not taken from the code under test."""
    for youngest, band in ((65, "AGE_65_AND_OVER"), (45, "AGE_45_TO_64"), (25, "AGE_25_TO_44"),
                           (18, "AGE_18_TO_24"), (10, "AGE_10_TO_17"), (5, "AGE_5_TO_9")):  # fmt: skip
        if age >= youngest:
            return band
    return "AGE_0_TO_4"


def _programme_status(assessment: Any) -> str:
    if assessment is None:
        return "NOT_ASSESSED"
    if assessment["coordinated_support"]:
        return "COORDINATED_SUPPORT"
    return "ELIGIBLE" if assessment["eligible"] else "NOT_ELIGIBLE"


def _projection(client: Partner, person: Person, name: str) -> Any:
    """What the view must say of `person` for field `name`: the record as it is, nothing masked."""
    address = person.address
    assessment = person.assessment
    values: dict[str, Any] = {
        "ref": client.ref(person.id),
        "givenName": person.given_name,
        "familyName": person.family_name,
        "dateOfBirth": person.date_of_birth.isoformat(),
        "postcode": address["postcode"],
        "address": {part: address[part] for part in ("line1", "line2", "town", "postcode")},
        "uprn": address["uprn"],
        "phone": person.phone,
        "email": person.email,
        "familyRef": client.refs.encode(RefKind.FAMILY, person.household_id),
        "assessmentOutcome": None
        if assessment is None
        else ("ELIGIBLE" if assessment["eligible"] else "NOT_ELIGIBLE"),
        "yearOfBirth": person.date_of_birth.year,
        # The age reached this calendar year: bands change on 1 January, never on a birthday.
        "ageBand": _age_band(FIXED_TODAY.year - person.date_of_birth.year),
        # The outward code: the postcode without spaces, upper case, less its inward code.
        "postcodeDistrict": address["postcode"].replace(" ", "").upper()[:-3],
        "programmeStatus": _programme_status(assessment),
    }
    return values[name]


@pytest.mark.parametrize("agreement_id", [a for a in LISTING if a in EXCLUDING])
async def test_a_listing_has_one_shape_for_everyone_and_protected_people_are_simply_absent(
    agreement_id: str, local_partner: PartnerFactory, oracle: Oracle, agreements: dict[str, Agreement]
) -> None:
    agreement = agreements[agreement_id]
    client = local_partner(agreement_id)
    page_size = agreement.limits.max_page_size or 50
    selection = _selection(agreement_id)
    keys = list(_person_fields(agreement_id))
    token = await client.token()
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        data = await client.data(
            "query Page($first: Int, $after: String) { people(first: $first, after: $after) "
            f"{{ edges {{ cursor node {{ {selection} }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
            {"first": page_size, "after": after},
            token=token,
        )
        pages.append(data["people"])
        if not data["people"]["pageInfo"]["hasNextPage"]:
            break
        after = data["people"]["pageInfo"]["endCursor"]
        assert len(pages) < 100, "paging did not end"
    # Every page but the last is full: no hole where someone was left out.
    assert all(len(page["edges"]) == page_size for page in pages[:-1])
    assert 1 <= len(pages[-1]["edges"]) <= page_size
    mismatched = []
    for page in pages:
        for edge in page["edges"]:
            node = edge["node"]
            assert list(edge) == ["cursor", "node"] and isinstance(edge["cursor"], str)
            assert list(node) == keys, node  # the same keys, in the same order, for everyone
            person = oracle.people[client.person_id(node["ref"])]
            assert not person.protected, person.id
            expected = {name: _projection(client, person, name) for name in keys}
            if node != expected:
                mismatched.append((person.id, node, expected))
    # Field for field the record itself: no value is masked (a null where others have one would mark).
    assert not mismatched, mismatched[:3]


@pytest.mark.parametrize("agreement_id", [a for a in LISTING if a in EXCLUDING])
async def test_a_listing_counts_exactly_the_people_the_oracle_expects_and_no_protected_person(
    agreement_id: str, local_partner: PartnerFactory, oracle: Oracle, agreements: dict[str, Agreement]
) -> None:
    agreement = agreements[agreement_id]
    client = local_partner(agreement_id)
    listed = await client.all_people(page_size=agreement.limits.max_page_size or 50)
    ids = [client.person_id(node["ref"]) for node in listed]
    expected = oracle.expected(agreement, FIXED_TODAY)
    protected = {p.id for p in oracle.people.values() if p.protected}
    # The exclusion has someone to exclude: protected people who would otherwise be in the listing.
    would_be = {
        p.id
        for p in oracle.people.values()
        if p.protected
        and not p.restricted
        and p.retention_until >= FIXED_TODAY
        and oracle.in_population(p, agreement.population, FIXED_TODAY)
    }
    assert would_be and not would_be & expected
    assert not expected & protected
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected


# -- 4. no echo -----------------------------------------------------------------------------------


def _echo_cases(agreement: Agreement) -> list[tuple[str, str, dict[str, Any] | None, str | None]]:
    """(what is wrong, document, variables, operationName): each fails, each carries a marked value."""
    cases: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
        ("a ref of the wrong type", "query Who($ref: ID!) { person(ref: $ref) { ref } }",
         {"ref": {"value": MARKER}}, None),
        ("a ref that is a list", "query Who($ref: ID!) { person(ref: $ref) { ref } }",
         {"ref": [MARKER]}, None),
        ("a literal ref of the wrong type", f"query Who {{ person(ref: {{v: \"{MARKER}\"}}) {{ ref }} }}",
         None, None),
        ("an operation name that names no operation", "query Who($ref: ID!) { person(ref: $ref) { ref } }",
         {"ref": MARKER}, MARKER),
        ("a variable that is not declared, and a missing one",
         "query Who($ref: ID!) { person(ref: $ref) { ref } }", {MARKER: MARKER}, None),
    ]  # fmt: skip
    if agreement.listing:
        page = (
            "query Page($first: Int, $after: String) "
            "{ people(first: $first, after: $after) { edges { cursor } } }"
        )
        cases += [
            ("a page size that is text", page, {"first": MARKER}, None),
            ("a page size past any Int", page, {"first": HUGE}, None),
            ("a page size past the limit", page, {"first": BIG}, None),
            ("a negative page size", page, {"first": -BIG}, None),
            ("a cursor that is not one", page, {"first": 2, "after": MARKER}, None),
            ("a cursor of the wrong type", page, {"first": 2, "after": {"c": MARKER}}, None),
            ("a literal page size that is text",
             f'query Page {{ people(first: "{MARKER}") {{ edges {{ cursor }} }} }}', None, None),
            ("a literal page size past any Int",
             f"query Page {{ people(first: {HUGE}) {{ edges {{ cursor }} }} }}", None, None),
            ("a literal cursor that is not one",
             f'query Page {{ people(first: 2, after: "{MARKER}") {{ edges {{ cursor }} }} }}', None, None),
        ]  # fmt: skip
    if agreement.match:
        declared = ", ".join(f"${name}: {TYPES[name]}" for name in agreement.match)
        arguments = ", ".join(f"{name}: ${name}" for name in agreement.match)
        find = f"query Find({declared}) {{ findPeople({arguments}) {{ ref }} }}"
        good = {"givenName": "Ada", "familyName": "Brackenridge-Vale", "dateOfBirth": "1992-10-13"}
        good = {name: good[name] for name in agreement.match}
        cases += [
            ("a date of birth that is not a date", find, {**good, "dateOfBirth": MARKER}, None),
            ("a date of birth that is nearly a date", find, {**good, "dateOfBirth": "4821-02-30"}, None),
            ("a date of birth that is a number", find, {**good, "dateOfBirth": HUGE}, None),
            ("a family name that is a number", find, {**good, "familyName": HUGE}, None),
            ("a family name that is an object", find, {**good, "familyName": {"n": MARKER}}, None),
            ("a family name far too long", find, {**good, "familyName": MARKER * 40}, None),
            ("a family name that is null", find, {**good, "familyName": None, "x": MARKER}, None),
            ("literal values of the wrong types",
             f'query Find {{ findPeople({", ".join(f"{n}: {HUGE}" for n in agreement.match)}) {{ ref }} }}',
             None, None),
            ("a literal date that is not one",
             "query Find { findPeople("
             + ", ".join(f'{n}: "{MARKER}"' for n in agreement.match) + ") { ref } }", None, None),
            ("an argument this view does not have",
             "query Find { findPeople("
             + ", ".join(f'{n}: "1990-01-01"' for n in agreement.match)
             + f', postcode: "{MARKER}") {{ ref }} }}',
             None, None),
        ]  # fmt: skip
    return cases


@pytest.mark.parametrize("agreement_id", PERSON_VIEWS)
async def test_no_error_message_quotes_a_value_that_was_sent(
    agreement_id: str, local_partner: PartnerFactory
) -> None:
    client = local_partner(agreement_id)
    token = await client.token()
    echoed, refused_without_error = [], []
    for label, query, variables, operation in _echo_cases(_AGREEMENTS[agreement_id]):
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        if operation is not None:
            body["operationName"] = operation
        await client.trust(query)  # where documents must be registered, a valid one is
        response = await client.http.post(
            "/graphql", json=body, headers={**client.authorization(token), **PURPOSE}
        )
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in VOLATILE_HEADERS]
        answer = response.text + json.dumps(headers)
        if not (response.status_code >= 400 or "errors" in response.json()):
            refused_without_error.append((label, response.status_code, response.text))
        for value in (MARKER, "Zyxwvut", "4821-02-30", str(HUGE), str(BIG)):
            if value in answer:
                echoed.append((label, value, response.status_code, response.text))
    assert not refused_without_error, refused_without_error
    assert not echoed, echoed
