"""Bounds on the shape of a query, checked during validation (code QUERY_TOO_COMPLEX).

Fragments count wherever they are spread, so a small document cannot fan out into a huge one; the
size of each fragment is worked out once and reused, so measuring costs time linear in the
document however the fragments multiply. Introspection fields (`__schema`, `__type`, `__typename`)
are not counted: their result is bounded by the size of the view, and a standard introspection
query nests deeper than any data query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)

MAX_DEPTH: Final = 6
MAX_ROOT_FIELDS: Final = 5
MAX_FIELDS: Final = 200
CODE: Final = "QUERY_TOO_COMPLEX"


@dataclass(frozen=True, slots=True)
class _Size:
    top: int  # fields directly in this selection set, through fragments
    fields: int  # fields at every level
    depth: int  # levels of fields, 1 for a set of leaves

    def __add__(self, other: _Size) -> _Size:
        return _Size(self.top + other.top, self.fields + other.fields, max(self.depth, other.depth))


_EMPTY: Final = _Size(0, 0, 0)


class QueryComplexityRule(ValidationRule):
    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        fragments = {
            d.name.value: d
            for d in self.context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        size = _measure(node.selection_set, fragments, {}, frozenset())
        problem = None
        if size.top > MAX_ROOT_FIELDS:
            problem = f"an operation may select at most {MAX_ROOT_FIELDS} root fields"
        elif size.depth > MAX_DEPTH:
            problem = f"an operation may nest at most {MAX_DEPTH} levels deep"
        elif size.fields > MAX_FIELDS:
            problem = f"an operation may select at most {MAX_FIELDS} fields"
        if problem:
            self.report_error(GraphQLError(f"Query too complex: {problem}.", node, extensions={"code": CODE}))


def _measure(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    known: dict[str, _Size],
    open_fragments: frozenset[str],
) -> _Size:
    total = _EMPTY
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            below = (
                _measure(selection.selection_set, fragments, known, open_fragments)
                if selection.selection_set is not None
                else _EMPTY
            )
            total += _Size(1, 1 + below.fields, 1 + below.depth)
        elif isinstance(selection, InlineFragmentNode):
            total += _measure(selection.selection_set, fragments, known, open_fragments)
        elif isinstance(selection, FragmentSpreadNode):
            total += _fragment(selection.name.value, fragments, known, open_fragments)
    return total


def _fragment(
    name: str,
    fragments: dict[str, FragmentDefinitionNode],
    known: dict[str, _Size],
    open_fragments: frozenset[str],
) -> _Size:
    if name in known:
        return known[name]
    # An unknown fragment, or one that spreads itself, is reported by graphql-core's own rules.
    if name not in fragments or name in open_fragments:
        return _EMPTY
    size = _measure(fragments[name].selection_set, fragments, known, open_fragments | {name})
    known[name] = size
    return size
