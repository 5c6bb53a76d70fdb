"""The floor the gateway is measured against: the gateway's own SQL, through asyncpg, behind one bare
Starlette route, answering the same JSON. No GraphQL, no audit, no authentication, no limits.

    FLOOR_DATABASE_URL=postgresql://... FLOOR_TODAY=2026-11-22 uvicorn bench.floor:app

`POST /graphql` takes the same bodies as the benchmark sends the gateway, recognised by their
operation name: `Page` (variables `first`, `after`: a page of the police view), `Lookup` (`familyName`,
`dateOfBirth`: the police `findPeople`), `DwpPage` (a page of the DWP view). The SQL is what the
resolvers build for the agreement's decision (`resolvers.people`), compiled once at start-up; refs and
cursors are made with the same codec, so the answers hold what the gateway's hold.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Date, Integer, Select, String, bindparam, func
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from policies import load_agreements
from policies.decisions import PurposeContext
from policies.evaluator import evaluate
from resolvers import RefCodec
from resolvers.models import people
from resolvers.people import _select  # the gateway's own SQL, not a copy of it
from resolvers.refs import RefKind

POLICE_FIELDS = ("givenName", "familyName", "dateOfBirth", "postcode")
DWP_FIELDS = ("address", "uprn")
ADDRESS_PARTS = ("line1", "line2", "town", "postcode")


class _Query:
    """One statement compiled for asyncpg, with its fixed parameters bound and the rest by name."""

    def __init__(self, statement: Select[Any]) -> None:
        # Expanding parameters (the restrictions' `agreement_id IN (...)`) rendered as plain ones, as the
        # gateway's own statements are (resolvers.people): asyncpg knows nothing of SQLAlchemy's placeholders.
        compiled = statement.compile(
            dialect=asyncpg_dialect.dialect(), compile_kwargs={"render_postcompile": True}
        )
        self.sql = str(compiled)
        self._names = list(compiled.positiontup or [])
        self._fixed = dict(compiled.params)

    def args(self, **given: Any) -> list[Any]:
        return [given[name] if name in given else self._fixed[name] for name in self._names]


def _decision(agreements_dir: str | None, agreement: str, today: date) -> Any:
    loaded = load_agreements(Path(agreements_dir)) if agreements_dir else load_agreements()
    purpose = PurposeContext(acting_user="bench-officer", acting_user_verified=True, case_reference="BENCH-1")
    decision = evaluate(loaded[agreement], purpose, today=today)
    assert decision.allowed, decision
    return decision


def build() -> Starlette:
    today = date.fromisoformat(os.environ.get("FLOOR_TODAY", date.today().isoformat()))
    secret = os.environ["FLOOR_REF_SECRET"].encode()
    directory = os.environ.get("FLOOR_AGREEMENTS_DIR")
    police, dwp = (
        _decision(directory, "police-prevention", today),
        _decision(directory, "dwp-worklessness", today),
    )
    police_refs, dwp_refs = RefCodec(secret, "police-prevention"), RefCodec(secret, "dwp-worklessness")
    after, first = bindparam("after", None, type_=Integer), bindparam("n", None, type_=Integer)
    police_page = _Query(
        _select(police, police.scope, POLICE_FIELDS)
        .where(people.c.id > after)
        .order_by(people.c.id)
        .limit(first)
    )
    dwp_page = _Query(
        _select(dwp, dwp.scope, DWP_FIELDS).where(people.c.id > after).order_by(people.c.id).limit(first)
    )
    lookup = _Query(
        _select(police, police.scope, POLICE_FIELDS)
        .where(func.lower(people.c.family_name) == bindparam("family", None, type_=String))  # as _criterion
        .where(people.c.date_of_birth == bindparam("born", None, type_=Date))
        .order_by(people.c.id)
        .limit(2)
    )
    pool: dict[str, asyncpg.Pool] = {}

    def police_node(row: asyncpg.Record) -> dict[str, Any]:
        born = row["dateOfBirth__0"]
        return {
            "ref": police_refs.encode(RefKind.PERSON, row["person_id"]),
            "givenName": row["givenName__0"],
            "familyName": row["familyName__0"],
            "dateOfBirth": born.isoformat() if born else None,
            "postcode": row["postcode__0"],
        }

    def dwp_node(row: asyncpg.Record) -> dict[str, Any]:
        parts = {part: row[f"address__{i}"] for i, part in enumerate(ADDRESS_PARTS)}
        return {
            "ref": dwp_refs.encode(RefKind.PERSON, row["person_id"]),
            "address": None if parts["line1"] is None else parts,
            "uprn": row["uprn__0"],
        }

    async def page(
        query: _Query,
        refs: RefCodec,
        node: Callable[[asyncpg.Record], dict[str, Any]],
        variables: dict[str, Any],
    ) -> dict[str, Any]:
        size = int(variables.get("first", 50))
        cursor = variables.get("after")
        start = refs.decode(RefKind.CURSOR, cursor) if cursor else 0
        rows = await pool["db"].fetch(query.sql, *query.args(after=start or 0, n=size + 1))
        edges = [{"node": node(row)} for row in rows[:size]]
        last = rows[:size][-1]["person_id"] if rows[:size] else None
        return {
            "people": {
                "edges": edges,
                "pageInfo": {
                    "hasNextPage": len(rows) > size,
                    "endCursor": refs.encode(RefKind.CURSOR, last) if last is not None else None,
                },
            }
        }

    async def graphql(request: Request) -> Response:
        body = json.loads(await request.body())
        variables = body.get("variables") or {}
        operation = body.get("operationName") or ""
        if operation == "Lookup":
            rows = await pool["db"].fetch(
                lookup.sql,
                *lookup.args(
                    family=" ".join(variables["familyName"].split()).lower(),
                    born=date.fromisoformat(variables["dateOfBirth"]),
                ),
            )
            data = {"findPeople": police_node(rows[0]) if len(rows) == 1 else None}
        elif operation == "DwpPage":
            data = await page(dwp_page, dwp_refs, dwp_node, variables)
        else:
            data = await page(police_page, police_refs, police_node, variables)
        return Response(json.dumps({"data": data}, separators=(",", ":")), media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = os.environ["FLOOR_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        # Planned once per statement, as the gateway's request pool does (gateway.db, generic_plans).
        pool["db"] = await asyncpg.create_pool(
            url, min_size=10, max_size=10, server_settings={"plan_cache_mode": "force_generic_plan"}
        )
        yield
        await pool["db"].close()

    return Starlette(routes=[Route("/graphql", graphql, methods=["POST"])], lifespan=lifespan)


app = build() if "FLOOR_REF_SECRET" in os.environ else None
