"""Property: whatever GraphQL document a partner sends within its own view, the answer is a 200 with
data or errors or a 4xx with a stable code, never a 5xx; it names no field that only another view
has; and it never holds a value of a protected-address person's location or contact fields.

Hypothesis writes the documents (tests/support/documents.py) from each view's SDL (the checked-in
snapshot and the schema the code builds): random selections of the view's real fields, nested as
deep as its types go, with aliases, inline and named fragments, directives and `__typename`;
argument values as literals or variables, real ones (refs of the people below, their names and dates
of birth, a real cursor) and hostile ones (text meant for SQL and shells, huge and negative numbers,
wrong types, bad dates, long text); and now and then a field, root field, argument or type of
another view, or of none. Half the documents are clean (only what the view has, every value of the
right type), three in four for the views that run registered documents only (police, DWP, ONS: each
document is registered first where it can be, as `Partner.post` does), so that those answer many of
them rather than refusing all. Hostile text carries a mark that no answer may hold: no value sent is
quoted back.

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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import httpx
import hypothesis
import pytest
from graphql import (
    is_introspection_type,
)
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from policies import load_agreements
from resolvers import RefCodec, RefKind
from tests.conftest import REF_SECRET
from tests.support.documents import (
    ALL_VIEWS,
    DOCUMENT_SETTINGS,
    HOSTILE_MARK,
    PERSON_VIEWS,
    Pool,
    Sent,
    Shape,
    documents,
    pool_of,
    pool_people,
    view_shape,
)
from tests.support.oracle import Oracle, Person
from tests.support.partners import PURPOSE, Partner, enrol
from tests.support.population import EdgeCases
from tests.support.requests import event_of
from tests.support.views import view_names, view_schemas

EXAMPLES: Final = 50  # documents per view and database: about 25 s for the file on two cores
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
    people = pool_people(oracle, cases, agreement_id)
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
    pool = pool_of(people, refs, cursors, [p.family_name.upper() + "  " for p in people[:3]])
    forbidden = _protected_values(oracle)
    assert {"NW8 9ZZ", "bea.fo@example.org", "wyn.vw@example.org", "Selwood Academy"} <= forbidden
    return Rig(
        shape=view_shape(agreement_id),
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
@hypothesis.settings(max_examples=EXAMPLES, **DOCUMENT_SETTINGS)
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
