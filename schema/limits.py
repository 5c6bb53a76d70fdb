"""Bounds on the shape of a query, checked during validation (code QUERY_TOO_COMPLEX).

Fragments are expanded where they are spread, so a small document cannot fan out into a huge one.
Introspection fields (`__schema`, `__type`, `__typename`) are not counted: their result is bounded
by the size of the view, and a standard introspection query nests deeper than any data query.
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


@dataclass
class _Tally:
    depth: int = 0
    fields: int = 0


class QueryComplexityRule(ValidationRule):
    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        fragments = {
            d.name.value: d
            for d in self.context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        roots = _count_fields(node.selection_set, fragments, frozenset())
        tally = _Tally()
        _measure(node.selection_set, fragments, 1, tally, frozenset())
        problem = None
        if roots > MAX_ROOT_FIELDS:
            problem = f"an operation may select at most {MAX_ROOT_FIELDS} root fields"
        elif tally.depth > MAX_DEPTH:
            problem = f"an operation may nest at most {MAX_DEPTH} levels deep"
        elif tally.fields > MAX_FIELDS:
            problem = f"an operation may select at most {MAX_FIELDS} fields"
        if problem:
            self.report_error(
                GraphQLError(f"Query too complex: {problem}.", node, extensions={"code": "QUERY_TOO_COMPLEX"})
            )


def _count_fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode], seen: frozenset[str]
) -> int:
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += not selection.name.value.startswith("__")
        elif isinstance(selection, InlineFragmentNode):
            count += _count_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                count += _count_fields(fragments[name].selection_set, fragments, seen | {name})
    return count


def _measure(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    depth: int,
    tally: _Tally,
    seen: frozenset[str],
) -> None:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            tally.fields += 1
            tally.depth = max(tally.depth, depth)
            if selection.selection_set is not None:
                _measure(selection.selection_set, fragments, depth + 1, tally, seen)
        elif isinstance(selection, InlineFragmentNode):
            _measure(selection.selection_set, fragments, depth, tally, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            # A cycle is reported by graphql-core's own NoFragmentCyclesRule; here we only stop.
            if name in fragments and name not in seen:
                _measure(fragments[name].selection_set, fragments, depth, tally, seen | {name})
        if tally.fields > MAX_FIELDS:
            return
