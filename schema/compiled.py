"""The compiled path: a person view's document planned once, then answered without a resolver per field.

strawberry and graphql-core build an object per person, wrap every field in a resolver call and
complete each value through the type system: for a page of 100 people that was most of a request's
CPU. The documents partners send are few and fixed (trusted documents, or the same text every time),
so each (view, document, operation) is planned once: parsed and validated as the general path would,
its selections collected through fragments and @skip/@include into a tree of response keys, and
the fields each root field reads worked out (where a condition is a variable, once per set of its
values). A request then coerces its variables, reads rows
with the resolvers' own SQL and writes the answer as plain dicts, recording the same disclosures.

The general path (the view's strawberry schema) stays the one answer's definition. This path covers
what it can answer exactly like it and gives way, before anything is disclosed, whenever it cannot:
a document it does not plan (a mutation, introspection, a validation error), a request that would
end in an error (variables that do not coerce, a condition without a value, a page size out of
range, a cursor or a search value the resolver refuses, a document over the people limit), a row
the general path would answer with an error, or any exception while answering (a value the
database refuses, the database gone). `execute` then returns None and nothing about the
request has been changed; the gateway runs the general path. tests/schema/test_compiled.py holds
both paths to identical answers and disclosures on every shipped document and on generated ones.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from graphql import (
    BooleanValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.utilities import get_operation_ast
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, Tracer

from policies import field_order
from resolvers import (
    PersonRecord,
    RefKind,
    count_people,
    get_person,
    household_members,
    list_people,
    match_people,
)
from schema.context import Disclosure, ViewContext
from schema.limits import people_cost
from schema.pipeline import PeopleLimit, parsed, validated

PLANS_PER_VIEW: Final = 256
CONDITIONS_PER_PLAN: Final = 16  # sets of @skip/@include values kept per plan
MAX_MATCH_TEXT: Final = 100  # as schema.views: a longer search value is the general path's error
_ADDRESS_PARTS: Final = frozenset({"line1", "line2", "town", "postcode"})
_NON_NULL_ADDRESS_PARTS: Final = ("line1", "town", "postcode")


class _Uncovered(Exception):
    """This document or request is the general path's to answer."""


class _Conditional(Exception):
    """The document's selections depend on variables (@skip/@include): planned per request."""


# A selection set collected: response key -> (field name, the selection set under it, collected).
Tree = tuple[tuple[str, str, "Tree"], ...]


@dataclass(frozen=True, slots=True)
class _Root:
    key: str
    name: str
    node: FieldNode  # the first field node under this key: its arguments (validation made them agree)
    definition: GraphQLField | None
    tree: Tree  # the selection under the root field
    person: Tree  # the person's selection: the root's own, or under people.edges.node
    names: frozenset[str]  # person field names selected (for what to read), through every path
    member_names: frozenset[str]


@dataclass(frozen=True, slots=True)
class Plan:
    operation: OperationDefinitionNode
    fragments: Mapping[str, FragmentDefinitionNode]
    operation_name: str | None
    roots: tuple[_Root, ...] | None  # None: @skip/@include name variables; see `conditions`
    conditions: tuple[str, ...] = ()  # the variables @skip and @include name
    # The roots for each set of those variables' values seen so far (a few at most).
    by_condition: dict[tuple[Any, ...], tuple[_Root, ...]] = field(default_factory=dict)


class Planner:
    """Plans for one person view, cached by document text and operation name."""

    def __init__(
        self,
        *,
        schema: GraphQLSchema,
        rules: tuple[Any, ...],
        cost: PeopleLimit | None,
        max_tokens: int,
        withheld: bool,
        tracer: Tracer,
        counts: tuple[tuple[str, ...], int] | None = None,
    ) -> None:
        """`counts`: what the view's `peopleCounts` is grouped by, and the smallest group it gives."""
        self._schema = schema
        self._counts = counts
        self._tracer = tracer
        self._rules = rules
        self._cost = cost
        self._max_tokens = max_tokens
        self._withheld = withheld
        self.plan = lru_cache(maxsize=PLANS_PER_VIEW)(self._plan)

    def _plan(self, query: str, operation_name: str | None) -> Plan | None:
        try:
            document = parsed(query, self._max_tokens)
        except GraphQLError:
            return None
        if validated(self._schema, document, self._rules):
            return None
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) > 1 and operation_name is None:
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return None
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        roots: tuple[_Root, ...] | None
        try:
            roots = tuple(self._roots(operation, fragments, None))
        except _Conditional:
            roots = None  # planned again for each set of the conditions' values
        except _Uncovered:
            return None
        name = (
            operation_name
            if operation_name is not None
            else (operation.name.value if operation.name else None)
        )
        conditions = _directive_variables(operation, fragments) if roots is None else ()
        return Plan(
            operation=operation, fragments=fragments, operation_name=name, roots=roots, conditions=conditions
        )

    def _roots_for(self, plan: Plan, coerced: Mapping[str, Any]) -> tuple[_Root, ...]:
        if plan.roots is not None:
            return plan.roots
        key = tuple(coerced.get(name) for name in plan.conditions)
        roots = plan.by_condition.get(key)
        if roots is None:
            roots = tuple(self._roots(plan.operation, plan.fragments, coerced))
            if len(plan.by_condition) >= CONDITIONS_PER_PLAN:
                plan.by_condition.clear()
            plan.by_condition[key] = roots
        return roots

    def _roots(
        self,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any] | None,
    ) -> list[_Root]:
        """`variables`: the coerced values, for @skip and @include that name them; None when
        planning without them (such a directive raises _Conditional)."""
        query_type = self._schema.query_type
        assert query_type is not None
        roots = []
        for key, nodes in _collect([operation.selection_set], fragments, variables).items():
            name = nodes[0].name.value
            if name.startswith("__") and name != "__typename":
                raise _Uncovered  # introspection
            tree = _tree([n.selection_set for n in nodes if n.selection_set], fragments, variables)
            person = tree
            if name == "people":
                person = _under(tree, "edges", "node")
            names, members = _person_names(person)
            roots.append(
                _Root(
                    key=key,
                    name=name,
                    node=nodes[0],
                    definition=query_type.fields.get(name),
                    tree=tree,
                    person=person,
                    names=names,
                    member_names=members,
                )
            )
        return roots

    async def execute(
        self,
        context: ViewContext,
        query: str,
        variables: Mapping[str, Any] | None,
        operation_name: str | None,
        *,
        unavailable: Callable[[BaseException], bool] = lambda _: False,
    ) -> dict[str, Any] | None:
        """The answer's `data`, its disclosures recorded in the context; or None, and the context
        unchanged, for the general path to answer. `unavailable`: errors that mean the database
        cannot be read now, raised as they are (the general path would only meet them again)."""
        plan = self.plan(query, operation_name)
        if plan is None:
            return None
        if isinstance(self._tracer, NoOpTracer):  # nothing records spans: none is made
            return await self._attempt(plan, context, variables, unavailable, INVALID_SPAN)
        # One span for the request's part here: no query text, no values (as schema.pipeline).
        with self._tracer.start_as_current_span(
            "graphql.compiled", record_exception=False, set_status_on_exception=False
        ) as span:
            if context.decision.agreement_label:
                span.set_attribute("gateway.agreement", context.decision.agreement_label)
            if plan.operation_name:
                span.set_attribute("graphql.operation.name", plan.operation_name)
            data = await self._attempt(plan, context, variables, unavailable, span)
            if data is not None:
                span.set_attribute("gateway.people_count", len({d.person_id for d in context.disclosures}))
            return data

    async def _attempt(
        self,
        plan: Plan,
        context: ViewContext,
        variables: Mapping[str, Any] | None,
        unavailable: Callable[[BaseException], bool],
        span: Span,
    ) -> dict[str, Any] | None:
        try:
            return await self._execute(plan, context, variables)
        except _Uncovered:
            span.set_attribute("graphql.compiled.gave_way", True)
            return None
        except Exception as error:
            if unavailable(error):
                raise
            # Anything else (a value the database refuses, the database gone, a fault here): the
            # general path answers as it would, an error on that root field beside the rest, or
            # 503 for a database that cannot be read. Nothing was recorded in the context yet.
            span.set_attribute("graphql.compiled.gave_way", True)
            span.set_attribute("graphql.compiled.error_type", type(error).__name__)
            return None

    async def _execute(
        self, plan: Plan, context: ViewContext, variables: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        if variables is not None and not isinstance(variables, dict):
            raise _Uncovered
        coerced = get_variable_values(
            self._schema, plan.operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):
            raise _Uncovered  # the general path reports each variable that does not coerce
        if self._cost is not None and (
            people_cost(plan.operation, plan.fragments, variables or {}, pages=self._cost.pages)
            > self._cost.maximum
        ):
            raise _Uncovered
        shaper = _Shaper(context, self._withheld, self._counts)
        data: dict[str, Any] = {}
        async with context.connect() as conn:
            for root in self._roots_for(plan, coerced.coerced):
                if root.name == "__typename":
                    data[root.key] = "Query"
                    continue
                assert root.definition is not None
                try:
                    arguments = get_argument_values(root.definition, root.node, coerced)
                except GraphQLError:
                    raise _Uncovered from None
                data[root.key] = await shaper.root(conn, root, arguments)
        context.disclosures.extend(shaper.disclosures)
        context.operation_name = plan.operation_name
        return data


# -- planning --------------------------------------------------------------------------------------


def _collect(
    selection_sets: Sequence[SelectionSetNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
) -> dict[str, list[FieldNode]]:
    """Fields by response key, in the order graphql-core's collect_fields gives them."""
    fields: dict[str, list[FieldNode]] = {}
    visited: set[str] = set()

    def walk(selection_set: SelectionSetNode) -> None:
        for selection in selection_set.selections:
            if not _included(selection, variables):
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                fields.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visited:
                    continue
                visited.add(name)
                walk(fragments[name].selection_set)

    for selection_set in selection_sets:
        walk(selection_set)
    return fields


def _included(selection: Any, variables: Mapping[str, Any] | None) -> bool:
    """@skip and @include as graphql-core reads them: @skip first (true excludes, and @include is
    not read), then @include; a condition a literal or a variable's coerced value. A condition that
    is not a boolean (a variable without a value, or null) is the general path's error to report."""
    skip = include = None
    for directive in selection.directives or ():
        name = directive.name.value
        if name == "skip":
            skip = skip or directive
        elif name == "include":
            include = include or directive
        else:
            raise _Uncovered
    if skip is not None and _condition(skip, variables):
        return False
    return include is None or _condition(include, variables)


def _condition(directive: Any, variables: Mapping[str, Any] | None) -> bool:
    argument = next((a for a in directive.arguments or () if a.name.value == "if"), None)
    if argument is None:
        raise _Uncovered
    value: Any
    if isinstance(argument.value, BooleanValueNode):
        value = argument.value.value
    elif isinstance(argument.value, VariableNode):
        if variables is None:
            raise _Conditional
        value = variables.get(argument.value.name.value)
    else:
        raise _Uncovered
    if not isinstance(value, bool):
        raise _Uncovered
    return value


def _directive_variables(
    operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> tuple[str, ...]:
    """The variables that @skip and @include name anywhere in the operation and its fragments."""
    names: set[str] = set()

    def walk(selection_set: SelectionSetNode | None) -> None:
        for selection in selection_set.selections if selection_set else ():
            for directive in selection.directives or ():
                for argument in directive.arguments or ():
                    if isinstance(argument.value, VariableNode):
                        names.add(argument.value.name.value)
            walk(getattr(selection, "selection_set", None))

    walk(operation.selection_set)
    for fragment in fragments.values():
        walk(fragment.selection_set)
    return tuple(sorted(names))


def _tree(
    selection_sets: Sequence[SelectionSetNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
) -> Tree:
    return tuple(
        (
            key,
            nodes[0].name.value,
            _tree([n.selection_set for n in nodes if n.selection_set], fragments, variables),
        )
        for key, nodes in _collect(selection_sets, fragments, variables).items()
    )


def _under(tree: Tree, *path: str) -> Tree:
    """The merged selections under a path of field names (every response key that names them)."""
    if not path:
        return tree
    merged: list[tuple[str, str, Tree]] = []
    for _, name, sub in tree:
        if name == path[0]:
            merged.extend(_under(sub, *path[1:]))
    return tuple(merged)


def _person_names(person: Tree) -> tuple[frozenset[str], frozenset[str]]:
    names = frozenset(name for _, name, _ in person)
    members = frozenset(name for _, name, sub in person if name == "members" for _, name, _ in sub)
    return names, members


# -- answering -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wanted:
    ref: bool
    fields: tuple[str, ...]
    members: _Wanted | None


@lru_cache(maxsize=1024)
def _wanted(names: frozenset[str], member_names: frozenset[str], allowed: tuple[str, ...]) -> _Wanted:
    """As schema.views._wanted: the fields to read, within the decision (members excluded)."""
    members = None
    if "members" in names and "members" in allowed:
        members = _wanted(member_names, frozenset(), tuple(name for name in allowed if name != "members"))
    fields = field_order({name for name in names if name in allowed and name != "members"})
    return _Wanted(ref="ref" in names, fields=fields, members=members)


class _Shaper:
    def __init__(
        self, context: ViewContext, withheld: bool, counts: tuple[tuple[str, ...], int] | None
    ) -> None:
        self.counts = counts
        self.context = context
        self.refs = context.refs
        self.decision = context.decision
        self.withheld = withheld
        self.disclosures: list[Disclosure] = []

    async def root(self, conn: Any, root: _Root, arguments: dict[str, Any]) -> Any:
        decision = self.decision
        if root.name == "peopleCounts":
            return await self.people_counts(conn, root)
        wanted = _wanted(root.names, root.member_names, decision.fields)
        if root.name == "people":
            return await self.page(conn, root, wanted, arguments)
        if root.name == "person":
            person_id = self.refs.decode(RefKind.PERSON, arguments["ref"])
            if person_id is None:
                return None
            record = await get_person(conn, decision=decision, fields=wanted.fields, person_id=person_id)
            found = [] if record is None else [record]
        elif root.name == "findPeople":
            criteria: dict[str, str | datetime.date] = {}
            for name in decision.match:
                value = arguments[name]
                if isinstance(value, str):
                    value = " ".join(value.split())
                    if not 1 <= len(value) <= MAX_MATCH_TEXT:
                        raise _Uncovered
                criteria[name] = value
            # Two rows are enough to know a match is not single.
            found = await match_people(
                conn, decision=decision, fields=wanted.fields, criteria=criteria, limit=2
            )
        else:
            raise _Uncovered
        if len(found) != 1:
            return None
        members = await self._members(conn, wanted, found)
        self.disclose(root.key, found[0], wanted, members)
        return self.shape(_steps(root.tree, wanted, False), found[0], wanted, members)

    async def people_counts(self, conn: Any, root: _Root) -> list[dict[str, Any]]:
        """As the general path's resolver: the groups, no one disclosed (a count names no one)."""
        if self.counts is None:
            raise _Uncovered
        by, suppress_below = self.counts
        groups = await count_people(conn, decision=self.decision, by=by, suppress_below=suppress_below)
        out = []
        for values, people in groups:
            group: dict[str, Any] = {}
            for key, name, _ in root.tree:
                if name == "__typename":
                    group[key] = "PeopleCount"
                elif name == "people":
                    group[key] = people
                elif name in values and (values[name] is None or type(values[name]) in (str, int)):
                    group[key] = values[name]
                else:
                    raise _Uncovered
            out.append(group)
        return out

    async def page(self, conn: Any, root: _Root, wanted: _Wanted, arguments: dict[str, Any]) -> Any:
        decision = self.decision
        size = arguments.get("first")
        if size is None:
            assert root.definition is not None
            size = root.definition.args["first"].default_value  # `first: null` is the default page
        if not isinstance(size, int) or not 1 <= size <= (decision.max_page_size or 0):
            raise _Uncovered
        after = arguments.get("after")
        after_id = None
        if after is not None:
            after_id = self.refs.decode(RefKind.CURSOR, after)
            if after_id is None:
                raise _Uncovered
        edges_selected = any(name == "edges" for _, name, _ in root.tree)
        page = await list_people(conn, decision=decision, fields=wanted.fields, first=size, after=after_id)
        records = page.people if edges_selected else []
        members = await self._members(conn, wanted, records)
        for record in records:
            self.disclose(root.key, record, wanted, members)
        last = page.people[-1].person_id if page.people else None
        out: dict[str, Any] = {}
        for key, name, sub in root.tree:
            if name == "__typename":
                out[key] = "PersonConnection"
            elif name == "edges":
                plan = tuple(
                    (edge_key, edge_name, _steps(node, wanted, False) if edge_name == "node" else ())
                    for edge_key, edge_name, node in sub
                )
                if any(edge_name not in ("node", "cursor", "__typename") for _, edge_name, _ in plan):
                    raise _Uncovered
                out[key] = [self._edge(plan, record, wanted, members) for record in records]
            elif name == "pageInfo":
                info: dict[str, Any] = {}
                for info_key, info_name, _ in sub:
                    if info_name == "hasNextPage":
                        info[info_key] = page.has_next
                    elif info_name == "endCursor":
                        info[info_key] = None if last is None else self.refs.encode(RefKind.CURSOR, last)
                    elif info_name == "__typename":
                        info[info_key] = "PageInfo"
                    else:
                        raise _Uncovered
                out[key] = info
            else:
                raise _Uncovered
        return out

    def _edge(
        self,
        plan: tuple[tuple[str, str, Steps], ...],
        record: PersonRecord,
        wanted: _Wanted,
        members: dict[int, list[PersonRecord]],
    ) -> dict[str, Any]:
        edge: dict[str, Any] = {}
        for key, name, steps in plan:
            if name == "node":
                edge[key] = self.shape(steps, record, wanted, members)
            elif name == "cursor":
                edge[key] = self.refs.encode(RefKind.CURSOR, record.person_id)
            else:
                edge[key] = "PersonEdge"
        return edge

    async def _members(
        self, conn: Any, wanted: _Wanted, records: list[PersonRecord]
    ) -> dict[int, list[PersonRecord]]:
        if wanted.members is None or not records:
            return {}
        return await household_members(conn, decision=self.decision, fields=wanted.members.fields, of=records)

    def disclose(
        self, root: str, record: PersonRecord, wanted: _Wanted, members: dict[int, list[PersonRecord]]
    ) -> None:
        """As the general path's presenter: the person once, and each household member it carries."""
        if record.withheld and not self.withheld:
            raise AssertionError("a view without `withheld` was given a person with withheld fields")
        if wanted.members is not None:
            for other in members.get(record.person_id, []):
                self._disclosed(root, other, wanted.members, member=True)
        self._disclosed(root, record, wanted, member=False)

    def _disclosed(self, root: str, record: PersonRecord, wanted: _Wanted, *, member: bool) -> None:
        sent, withheld = _sent(wanted, record.withheld)
        self.disclosures.append(Disclosure(root, record.person_id, sent, withheld, member))

    def shape(
        self,
        steps: Steps,
        record: PersonRecord,
        wanted: _Wanted,
        members: dict[int, list[PersonRecord]],
        *,
        as_member: bool = False,
    ) -> dict[str, Any]:
        values = record.values
        flat = _flat(steps)
        if flat is not None:
            # Scalars only (most selections): each kind of key in one loop, into the keys' own order.
            template, texts, ints, refs, dates = flat
            out: dict[str, Any] = dict(template)
            for key, name in texts:
                value = values.get(name)
                if value is not None and type(value) is not str:
                    raise _Uncovered  # the general path's scalar completion decides
                out[key] = value
            for key, name in ints:
                value = values.get(name)
                if value is not None and type(value) is not int:
                    raise _Uncovered
                out[key] = value
            if refs:
                ref = self.refs.encode(RefKind.PERSON, record.person_id)
                for key in refs:
                    out[key] = ref
            for key, name in dates:
                born = values.get(name)
                out[key] = None if born is None else born.isoformat()
            return out
        out = {}
        for key, step, name, sub in steps:
            if step == _TEXT:
                value = values.get(name)
                if value is not None and type(value) is not str:
                    raise _Uncovered  # the general path's scalar completion decides
                out[key] = value
            elif step == _INT:
                value = values.get(name)
                if value is not None and type(value) is not int:
                    raise _Uncovered  # the general path's scalar completion decides
                out[key] = value
            elif step == _REF:
                out[key] = self.refs.encode(RefKind.PERSON, record.person_id)
            elif step == _DATE:
                born = values.get(name)
                out[key] = None if born is None else born.isoformat()
            elif step == _NULL:
                out[key] = None  # in the view, outside this decision
            elif step == _ADDRESS:
                out[key] = _address(values.get("address"), sub)
            elif step == _FAMILY:
                out[key] = self.refs.encode(RefKind.FAMILY, record.household_id)
            elif step == _TYPENAME:
                out[key] = "HouseholdMember" if as_member else "Person"
            elif step == _WITHHELD:
                out[key] = list(record.withheld)
            elif step == _MEMBERS:
                assert wanted.members is not None and isinstance(sub, tuple)
                inner = _steps(sub, wanted.members, True)
                out[key] = [
                    self.shape(inner, other, wanted.members, {}, as_member=True)
                    for other in members.get(record.person_id, [])
                ]
            else:
                out[key] = []  # members outside the decision, or under a member
        return out


# How one response key of a person is written (ints: compared in the loop over every person's fields).
_TEXT, _REF, _DATE, _NULL, _ADDRESS, _FAMILY, _TYPENAME, _WITHHELD, _MEMBERS, _NO_MEMBERS, _INT = range(11)


Steps = tuple[tuple[str, int, str, Tree], ...]


_Flat = tuple[
    dict[str, Any], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[str, ...],
    tuple[tuple[str, str], ...],
]  # fmt: skip


@lru_cache(maxsize=4096)
def _flat(steps: Steps) -> _Flat | None:
    """A selection of scalars only, as (every key in order, null until written; text keys; int keys;
    ref keys; date keys); None for one with anything else (an address, members, __typename)."""
    texts, ints, refs, dates = [], [], [], []
    for key, step, name, _ in steps:
        if step == _TEXT:
            texts.append((key, name))
        elif step == _INT:
            ints.append((key, name))
        elif step == _REF:
            refs.append(key)
        elif step == _DATE:
            dates.append((key, name))
        elif step != _NULL:
            return None
    return dict.fromkeys(key for key, _, _, _ in steps), tuple(texts), tuple(ints), tuple(refs), tuple(dates)


@lru_cache(maxsize=4096)
def _steps(tree: Tree, wanted: _Wanted, as_member: bool) -> Steps:
    """How to write each response key of a person's selection, worked out once per selection and
    decision rather than once per person."""
    steps = []
    for key, name, sub in tree:
        if name == "ref":
            step = _REF
        elif name == "__typename":
            step = _TYPENAME
        elif name == "withheld":
            step = _WITHHELD
        elif name == "members":
            step = _MEMBERS if wanted.members is not None and not as_member else _NO_MEMBERS
        elif name not in wanted.fields:
            step = _NULL
        elif name == "familyRef":
            step = _FAMILY
        elif name == "address":
            step = _ADDRESS
        elif name == "dateOfBirth":
            step = _DATE
        elif name == "yearOfBirth":
            step = _INT
        else:
            step = _TEXT
        steps.append((key, step, name, sub))
    return tuple(steps)


@lru_cache(maxsize=1024)
def _sent(wanted: _Wanted, withheld: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The fields sent for a person and those withheld, as the general path's presenter records them."""
    sent = (("ref",) if wanted.ref else ()) + tuple(f for f in wanted.fields if f not in withheld)
    return sent, tuple(f for f in wanted.fields if f in withheld)


def _address(parts: Mapping[str, Any] | None, tree: Tree) -> dict[str, Any] | None:
    if parts is None:
        return None
    if any(parts.get(part) is None for part in _NON_NULL_ADDRESS_PARTS):
        raise _Uncovered  # the general path answers a missing part with an error
    out: dict[str, Any] = {}
    for key, name, _ in tree:
        if name == "__typename":
            out[key] = "Address"
        elif name in _ADDRESS_PARTS:
            out[key] = parts.get(name)
        else:
            raise _Uncovered
    return out
