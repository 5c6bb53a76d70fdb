"""Bounds on the shape and cost of a query (code QUERY_TOO_COMPLEX).

Checked during validation, with fragments counted wherever they are spread, so a small document
cannot fan out into a huge one (the size of each fragment is worked out once and reused, so
measuring costs time linear in the document however the fragments multiply):
- root fields, `__schema` and `__type` included (`__typename` costs nothing and is not counted);
- depth, total fields, aliases and directives;
- introspection: its fields answer from the view's own schema, so they are not counted as fields;
  instead an alias is refused anywhere inside `__schema` or `__type` (without aliases, repeating a
  field merges rather than multiplies; the roots themselves are root fields, at most five), and lists
  may nest at most three deep under them (the standard introspection query needs three: types,
  fields, args).

The cost in people is checked after validation, when the variables are known (`people_cost`): a
`people` page costs its page size (`first`, or the default), a `person` or `findPeople` costs one.
The view's limits come from its agreement (`limits:` in the YAML), else the defaults here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
)

MAX_DEPTH: Final = 6
MAX_ROOT_FIELDS: Final = 5
MAX_FIELDS: Final = 200
MAX_ALIASES: Final = 30
MAX_DIRECTIVES: Final = 10
MAX_INTROSPECTION_LISTS: Final = 3
CODE: Final = "QUERY_TOO_COMPLEX"

_INTROSPECTION_ROOTS: Final = frozenset({"__schema", "__type"})
# Fields of the introspection types that return lists: each level of them multiplies the answer.
_INTROSPECTION_LISTS: Final = frozenset(
    {"types", "directives", "fields", "args", "inputFields", "interfaces", "possibleTypes", "enumValues",
     "locations"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShapeLimits:
    max_depth: int = MAX_DEPTH
    max_root_fields: int = MAX_ROOT_FIELDS
    max_fields: int = MAX_FIELDS
    max_aliases: int = MAX_ALIASES
    max_directives: int = MAX_DIRECTIVES

    def overridden(self, **values: int | None) -> ShapeLimits:
        """These limits with the agreement's own where it gives one."""
        return replace(self, **{key: value for key, value in values.items() if value is not None})


@dataclass(frozen=True, slots=True)
class _Size:
    top: int  # fields directly in this selection set, through fragments
    fields: int  # fields at every level
    depth: int  # levels of fields, 1 for a set of leaves
    aliases: int
    directives: int

    def __add__(self, other: _Size) -> _Size:
        return _Size(
            self.top + other.top,
            self.fields + other.fields,
            max(self.depth, other.depth),
            self.aliases + other.aliases,
            self.directives + other.directives,
        )


_EMPTY: Final = _Size(0, 0, 0, 0, 0)


def complexity_rule(limits: ShapeLimits) -> type[ValidationRule]:
    """A validation rule bound to one view's limits (one class per view, so validation caches hit)."""

    class _Rule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
            fragments = {
                d.name.value: d
                for d in self.context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            measure = _Measure(fragments)
            size = measure.selection_set(node.selection_set)
            size += _Size(0, 0, 0, 0, len(node.directives or ()))
            problem = measure.introspection_problem or _problem(size, limits)
            if problem:
                self.report_error(
                    GraphQLError(f"Query too complex: {problem}.", node, extensions={"code": CODE})
                )

    _Rule.__name__ = "QueryComplexityRule"
    return _Rule


QueryComplexityRule: Final = complexity_rule(ShapeLimits())


def _problem(size: _Size, limits: ShapeLimits) -> str | None:
    if size.top > limits.max_root_fields:
        return f"an operation may select at most {limits.max_root_fields} root fields"
    if size.depth > limits.max_depth:
        return f"an operation may nest at most {limits.max_depth} levels deep"
    if size.fields > limits.max_fields:
        return f"an operation may select at most {limits.max_fields} fields"
    if size.aliases > limits.max_aliases:
        return f"an operation may use at most {limits.max_aliases} aliases"
    if size.directives > limits.max_directives:
        return f"an operation may use at most {limits.max_directives} directives"
    return None


class _Measure:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.known: dict[str, _Size] = {}
        self.introspection_problem: str | None = None

    def selection_set(
        self, selection_set: SelectionSetNode, open_fragments: frozenset[str] = frozenset()
    ) -> _Size:
        total = _EMPTY
        for selection in selection_set.selections:
            directives = len(selection.directives or ())
            if isinstance(selection, FieldNode):
                name = selection.name.value
                aliased = 1 if selection.alias is not None else 0
                if name.startswith("__"):
                    if name in _INTROSPECTION_ROOTS:
                        # An alias here is a root field like any other (at most five); inside, none.
                        self._introspection_tree(selection.selection_set, lists=0)
                        total += _Size(1, 1, 1, aliased, directives)
                    else:
                        total += _Size(0, 0, 0, aliased, directives)  # __typename: free
                    continue
                below = (
                    self.selection_set(selection.selection_set, open_fragments)
                    if selection.selection_set is not None
                    else _EMPTY
                )
                total += _Size(1, 1 + below.fields, 1 + below.depth, aliased + below.aliases,
                               directives + below.directives)  # fmt: skip
            elif isinstance(selection, InlineFragmentNode):
                total += self.selection_set(selection.selection_set, open_fragments)
                total += _Size(0, 0, 0, 0, directives)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value, open_fragments)
                total += _Size(0, 0, 0, 0, directives)
        return total

    def fragment(self, name: str, open_fragments: frozenset[str]) -> _Size:
        if name in self.known:
            return self.known[name]
        # An unknown fragment, or one that spreads itself, is reported by graphql-core's own rules.
        if name not in self.fragments or name in open_fragments:
            return _EMPTY
        definition = self.fragments[name]
        size = self.selection_set(definition.selection_set, open_fragments | {name})
        size += _Size(0, 0, 0, 0, len(definition.directives or ()))
        self.known[name] = size
        return size

    def _introspection_tree(
        self, selection_set: SelectionSetNode | None, *, lists: int, seen: frozenset[str] = frozenset()
    ) -> None:
        """Inside `__schema` or `__type`: no aliases, and lists nested at most three deep."""
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    self._introspection("may not use aliases inside introspection")
                    return
                deeper = lists + (1 if selection.name.value in _INTROSPECTION_LISTS else 0)
                if deeper > MAX_INTROSPECTION_LISTS:
                    self._introspection(
                        f"may nest introspection lists at most {MAX_INTROSPECTION_LISTS} deep"
                    )
                    return
                self._introspection_tree(selection.selection_set, lists=deeper, seen=seen)
            elif isinstance(selection, InlineFragmentNode):
                self._introspection_tree(selection.selection_set, lists=lists, seen=seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in self.fragments and name not in seen:
                    self._introspection_tree(
                        self.fragments[name].selection_set, lists=lists, seen=seen | {name}
                    )

    def _introspection(self, problem: str) -> None:
        self.introspection_problem = self.introspection_problem or f"an operation {problem}"


# -- the cost in people, once the variables are known ------------------------------------------


def people_cost(
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
    *,
    pages: Mapping[str, tuple[int, int]],
) -> int:
    """People a document may return: for each root field named in `pages` (a list field, its default
    page size and its largest), its `first` argument, or the default when it gives none; one for
    every other root field that reaches a person (`person`, `findPeople`). A page size given as a
    variable counts as sent, else as the variable's default; without the variables (when a document
    is registered) or with a value that is not a plain whole number, it counts as the largest page.
    Fragments are costed once each, however often they are spread."""
    known: dict[str, int] = {}
    defaults = {
        definition.variable.name.value: int(definition.default_value.value)
        for definition in operation.variable_definitions or ()
        if isinstance(definition.default_value, IntValueNode)
    }

    def cost(selection_set: SelectionSetNode, seen: frozenset[str]) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name.startswith("__"):
                    continue
                if name in pages:
                    default, largest = pages[name]
                    total += min(max(_first(selection, variables, defaults, default, largest), 0), largest)
                else:
                    total += 1
            elif isinstance(selection, InlineFragmentNode):
                total += cost(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in known and name in fragments and name not in seen:
                    known[name] = cost(fragments[name].selection_set, seen | {name})
                total += known.get(name, 0)
        return total

    return cost(operation.selection_set, frozenset())


def _first(
    field: FieldNode,
    variables: Mapping[str, Any] | None,
    defaults: Mapping[str, int],
    default: int,
    largest: int,
) -> int:
    for argument in field.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return int(value.value)
        if not isinstance(value, VariableNode) or variables is None:
            return largest  # unknown until the request: the worst case
        name = value.name.value
        given = variables.get(name, defaults.get(name)) if name in variables or name in defaults else None
        if given is None:
            return default  # a variable neither sent nor defaulted: the field's own default applies
        if isinstance(given, bool):
            return largest
        if isinstance(given, int):
            return given
        if isinstance(given, float) and given.is_integer():
            return int(given)  # GraphQL takes 100.0 as the Int 100
        return largest
    return default
