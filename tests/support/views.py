"""Each view's SDL as the tests read it: the checked-in snapshot and what the code builds now."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from graphql import GraphQLSchema, build_schema, is_introspection_type

from policies import load_agreements
from schema import build_view

_SNAPSHOTS = Path(__file__).resolve().parents[2] / "schema" / "views"


@cache
def view_schemas(agreement_id: str) -> tuple[GraphQLSchema, GraphQLSchema]:
    """The view as checked in (schema/views/) and as the code builds it: a name in either counts."""
    snapshot = (_SNAPSHOTS / f"{agreement_id}.graphql").read_text(encoding="utf-8")
    live = build_view(load_agreements()[agreement_id]).sdl
    return build_schema(snapshot), build_schema(live)


@cache
def view_names(agreement_id: str) -> frozenset[str]:
    """Every name in the view's SDL (either version): types, fields, arguments, enum values."""
    out: set[str] = set()
    for schema in view_schemas(agreement_id):
        for name, t in schema.type_map.items():
            if is_introspection_type(t):
                continue
            out.add(name)
            for field_name, definition in getattr(t, "fields", {}).items():
                out.add(field_name)
                out.update(getattr(definition, "args", {}))
            out.update(getattr(t, "values", {}))
    return frozenset(out)
