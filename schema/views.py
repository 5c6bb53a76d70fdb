"""One strawberry schema per agreement, built from its field list.

Root fields: `person(ref)` always; `people(first, after)` where the agreement includes listing;
`findPeople(...)` where it names match fields, with exactly those fields as arguments. The same
resolver code serves every view; only the types differ.

Resolvers read only what the query selects (within the Decision), record every person they return
in the request's `ViewContext`, and never see or return an internal id outside it.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import strawberry
from graphql import ASTValidationRule, NoSchemaIntrospectionCustomRule, specified_rules
from opentelemetry.trace import NoOpTracer, Tracer
from sqlalchemy.ext.asyncio import AsyncConnection
from strawberry.schema.config import StrawberryConfig
from strawberry.types.execution import ExecutionContext
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from policies import Agreement, field_order
from policies.fields import COUNTABLE_FIELDS
from resolvers import (
    PersonRecord,
    RefKind,
    count_people,
    get_person,
    household_members,
    list_people,
    match_people,
)
from schema.compiled import Planner
from schema.context import Disclosure, ViewContext
from schema.contributions import contribution_mutations
from schema.errors import BadUserInputError
from schema.ledger import ledger_mutation, ledger_query
from schema.limits import MAX_ROOT_FIELDS, ShapeLimits, complexity_rule
from schema.notices import DEFAULT_PAGE as NOTICES_DEFAULT_PAGE
from schema.notices import MAX_PAGE as NOTICES_MAX_PAGE
from schema.notices import notices_mutation, notifications_field
from schema.pipeline import OperationPipeline, PeopleLimit
from schema.types import (
    ENUMS,
    FIELD_TYPES,
    Address,
    PageInfo,
    connection_types,
    counts_type,
    person_type,
)

DEFAULT_PAGE_SIZE: Final = 50
MAX_MATCH_TEXT: Final = 100
_CACHE_SIZE: Final = 512
_ARGUMENT_TYPES: Final[dict[str, type]] = {
    "givenName": str,
    "familyName": str,
    "dateOfBirth": datetime.date,
    "postcode": str,
}
_ARGUMENT_NAMES: Final = {
    "givenName": "given_name",
    "familyName": "family_name",
    "dateOfBirth": "date_of_birth",
    "postcode": "postcode",
}


@dataclass(frozen=True)
class View:
    agreement: Agreement
    schema: strawberry.Schema
    rules: tuple[type[ASTValidationRule], ...] = ()  # the view's own validation rules
    cost: PeopleLimit | None = None
    planner: Planner | None = None  # the compiled path (schema.compiled); None for the ledger's view

    @property
    def sdl(self) -> str:
        return self.schema.as_str() + "\n"


class _ViewSchema(strawberry.Schema):
    def process_errors(self, errors: Any, execution_context: ExecutionContext | None = None) -> None:
        """Do nothing: the default logs every error with the query text, which may hold personal data.

        The gateway logs each error by code instead (see `gateway.graphql`).
        """


def build_views(
    agreements: Iterable[Agreement], *, max_tokens: int = 2_000, tracer: Tracer | None = None
) -> dict[str, View]:
    return {
        agreement.id: build_view(agreement, max_tokens=max_tokens, tracer=tracer) for agreement in agreements
    }


def build_view(agreement: Agreement, *, max_tokens: int = 2_000, tracer: Tracer | None = None) -> View:
    query = ledger_query(agreement) if agreement.is_ledger else _person_query(agreement)
    limits = agreement.limits
    shape = ShapeLimits().overridden(
        max_depth=limits.max_depth, max_fields=limits.max_fields, max_aliases=limits.max_aliases
    )
    rules: list[Any] = [complexity_rule(shape)]
    if not agreement.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    validation_rules = tuple(rules)  # built once, so the validation cache can hit
    cost = people_limit(agreement)
    used_tracer = tracer or NoOpTracer()
    schema = _ViewSchema(
        query=query,
        mutation=ledger_mutation(agreement)
        if agreement.is_ledger
        else notices_mutation(contribution_mutations(agreement)),
        config=StrawberryConfig(disable_field_suggestions=True),
        extensions=[
            lambda: OperationPipeline(
                tracer=used_tracer, max_tokens=max_tokens, rules=validation_rules, cost=cost
            )
        ],
    )
    planner = None
    if not agreement.is_ledger:
        planner = Planner(
            schema=schema._schema,
            # The general path's own rules, in its order, so that both share one validation cache.
            rules=(*specified_rules, *validation_rules),
            cost=cost,
            max_tokens=max_tokens,
            withheld=agreement.protected_address == "withhold",
            tracer=used_tracer,
            counts=None
            if agreement.counts_suppress_below is None
            else (counted_by(agreement), agreement.counts_suppress_below),
        )
    return View(agreement=agreement, schema=schema, rules=validation_rules, cost=cost, planner=planner)


def people_limit(agreement: Agreement) -> PeopleLimit:
    """How many people one document of this view may ask for, and what each list field costs when it
    names no page size: the agreement's `people_per_request`, else one full page (listing views) or
    one person per root field (lookup views)."""
    largest = agreement.limits.max_page_size or DEFAULT_PAGE_SIZE
    default_page = min(DEFAULT_PAGE_SIZE, largest)
    lists = (
        ("auditEvents", "disclosures") if agreement.is_ledger else ("people",) if agreement.listing else ()
    )
    bound = agreement.limits.people_per_request or agreement.limits.max_page_size or MAX_ROOT_FIELDS
    pages = dict.fromkeys(lists, (default_page, largest))
    if not agreement.is_ledger:
        # The Art 19 feed names a person per notification: counted by its page, like a list of people.
        pages["notifications"] = (NOTICES_DEFAULT_PAGE, NOTICES_MAX_PAGE)
    return PeopleLimit(maximum=bound, pages=pages)


def _person_query(agreement: Agreement) -> type:
    member = None
    withheld = agreement.protected_address == "withhold"
    if "members" in agreement.fields:
        member = person_type(
            "HouseholdMember",
            tuple(name for name in agreement.fields if name != "members"),
            description="Another member of the person's household, as this view shows them.",
            withheld=withheld,
        )
    person = person_type(
        "Person",
        agreement.fields,
        member=member,
        description=f"A person as the {agreement.partner} may see them under agreement {agreement.id}.",
        withheld=withheld,
    )
    presenter = _Presenter(person=person, member=member, withheld=withheld)
    namespace: dict[str, Any] = {
        "person": strawberry.field(
            resolver=_person_resolver(presenter),
            description="The person with this ref, or null if the ref is not one this view issued "
            "or the person is no longer visible.",
        )
    }
    if agreement.listing:
        edge, connection = connection_types(person)
        namespace["people"] = strawberry.field(
            resolver=_people_resolver(presenter, edge, connection, agreement),
            description=f"Everyone this agreement reaches, a page at a time "
            f"(at most {agreement.limits.max_page_size} per page).",
        )
    if agreement.match:
        namespace["find_people"] = strawberry.field(
            resolver=_find_resolver(presenter, agreement),
            description="The one person matching every argument exactly (names ignore case), or null "
            "when no one or more than one person matches.",
        )
    if agreement.counts_suppress_below is not None:
        namespace["people_counts"] = strawberry.field(
            resolver=_counts_resolver(agreement, agreement.counts_suppress_below),
            description="How many people this agreement reaches, grouped by every countable field of "
            f"the view. A group of fewer than {agreement.counts_suppress_below} people is left out "
            "(small-number suppression).",
        )
    namespace["notifications"] = notifications_field()
    return strawberry.type(
        type("Query", (), {"__annotations__": {}, "__module__": __name__, **namespace}),
        name="Query",
        description=f"{agreement.partner}: agreement {agreement.id}, version {agreement.version}. "
        f"Purpose: {agreement.purpose}",
    )


# -- what a query asks for ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Wanted:
    ref: bool
    fields: tuple[str, ...]  # person fields asked for, within the decision (members excluded)
    members: _Wanted | None


def _wanted(selections: list[Selection], allowed: tuple[str, ...]) -> _Wanted:
    chosen = _by_name(selections)
    members = None
    if "members" in chosen and "members" in allowed:
        members = _wanted(
            [s for field in chosen["members"] for s in field.selections],
            tuple(name for name in allowed if name != "members"),
        )
    fields = field_order({name for name in chosen if name in allowed and name != "members"})
    return _Wanted(ref="ref" in chosen, fields=fields, members=members)


def _by_name(selections: Iterable[Selection]) -> dict[str, list[SelectedField]]:
    """Selected fields by field name (not alias), through fragments, honouring @skip and @include."""
    out: dict[str, list[SelectedField]] = {}
    for selection in selections:
        if _skipped(selection.directives):
            continue
        if isinstance(selection, SelectedField):
            out.setdefault(selection.name, []).append(selection)
        elif isinstance(selection, FragmentSpread | InlineFragment):
            for name, fields in _by_name(selection.selections).items():
                out.setdefault(name, []).extend(fields)
    return out


def _selections(info: strawberry.Info) -> list[Selection]:
    """What the query selects under this root field, from every field node merged under its
    response key: `{ person(ref: $r) { givenName } person(ref: $r) { familyName } }` asks for both."""
    return [selection for field in info.selected_fields for selection in field.selections]


def _skipped(directives: dict[str, dict[str, Any]]) -> bool:
    skip, include = directives.get("skip"), directives.get("include")
    return bool(skip and skip.get("if")) or (include is not None and not include.get("if"))


def _context(info: strawberry.Info) -> ViewContext:
    context = info.context
    if not isinstance(context, ViewContext):  # pragma: no cover - a wiring error in the gateway
        raise TypeError("the view was executed without a ViewContext")
    return context


# -- turning records into view objects -----------------------------------------------------------


class _Presenter:
    def __init__(self, *, person: type, member: type | None, withheld: bool) -> None:
        self.person = person
        self.member = member
        self.withheld = withheld  # the types carry `withheld` (break-glass views only)

    def present(
        self,
        context: ViewContext,
        root: str,
        record: PersonRecord,
        wanted: _Wanted,
        members: dict[int, list[PersonRecord]],
        *,
        as_member: bool = False,
    ) -> Any:
        refs = context.refs
        values: dict[str, Any] = {"ref": refs.encode(RefKind.PERSON, record.person_id)}
        if self.withheld:
            values["withheld"] = list(record.withheld)
        elif record.withheld:
            raise AssertionError("a view without `withheld` was given a person with withheld fields")
        for name in wanted.fields:
            attribute = FIELD_TYPES[name][0]
            raw = record.values.get(name)
            if name == "familyRef":
                values[attribute] = refs.encode(RefKind.FAMILY, record.household_id)
            elif name == "address":
                values[attribute] = None if raw is None else Address(**raw)
            elif name in ENUMS:
                values[attribute] = None if raw is None else ENUMS[name](raw)
            else:
                values[attribute] = raw
        if wanted.members is not None and not as_member:
            values["members"] = [
                self.present(context, root, other, wanted.members, {}, as_member=True)
                for other in members.get(record.person_id, [])
            ]
        sent = (("ref",) if wanted.ref else ()) + tuple(f for f in wanted.fields if f not in record.withheld)
        withheld = tuple(f for f in wanted.fields if f in record.withheld)
        context.disclosures.append(
            Disclosure(
                root=root, person_id=record.person_id, fields=sent, withheld=withheld, member=as_member
            )
        )
        return (self.member if as_member else self.person)(**values)  # type: ignore[misc]


async def _members_of(
    conn: AsyncConnection, context: ViewContext, wanted: _Wanted, records: list[PersonRecord]
) -> dict[int, list[PersonRecord]]:
    if wanted.members is None or not records:
        return {}
    return await household_members(conn, decision=context.decision, fields=wanted.members.fields, of=records)


# -- root resolvers ------------------------------------------------------------------------------


def _signed(func: Callable[..., Any], params: list[inspect.Parameter], returns: Any) -> Callable[..., Any]:
    """Give a resolver an explicit signature: its argument and return types are per view."""
    info = inspect.Parameter("info", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=strawberry.Info)
    func.__signature__ = inspect.Signature([info, *params], return_annotation=returns)  # type: ignore[attr-defined]
    func.__annotations__ = {}
    return func


def _keyword(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _person_resolver(presenter: _Presenter) -> Callable[..., Any]:
    async def person(info: strawberry.Info, ref: str) -> Any:
        context = _context(info)
        person_id = context.refs.decode(RefKind.PERSON, ref)
        if person_id is None:
            return None
        wanted = _wanted(_selections(info), context.decision.fields)
        async with context.connect() as conn:
            record = await get_person(
                conn, decision=context.decision, fields=wanted.fields, person_id=person_id
            )
            if record is None:
                return None
            members = await _members_of(conn, context, wanted, [record])
        return presenter.present(context, str(info.path.key), record, wanted, members)

    return _signed(person, [_keyword("ref", strawberry.ID)], presenter.person | None)


def _people_resolver(
    presenter: _Presenter, edge: type, connection: type, agreement: Agreement
) -> Callable[..., Any]:
    maximum = agreement.limits.max_page_size or 0
    default = min(DEFAULT_PAGE_SIZE, maximum)

    async def people(info: strawberry.Info, first: int | None = default, after: str | None = None) -> Any:
        context = _context(info)
        size = default if first is None else first
        if not 1 <= size <= (context.decision.max_page_size or 0):
            raise BadUserInputError(f"first must be between 1 and {context.decision.max_page_size}.")
        after_id = None
        if after is not None:
            after_id = context.refs.decode(RefKind.CURSOR, after)
            if after_id is None:
                raise BadUserInputError("after must be a cursor returned by this view.")
        selected = _by_name(_selections(info))
        edges_selected = "edges" in selected
        # Encrypting a cursor per edge costs as much as a ref: only when the query asks for them.
        cursors_selected = any("cursor" in _by_name(edges.selections) for edges in selected.get("edges", []))
        nodes = [
            selection
            for edges in selected.get("edges", [])
            for node in _by_name(edges.selections).get("node", [])
            for selection in node.selections
        ]
        wanted = _wanted(nodes, context.decision.fields)
        async with context.connect() as conn:
            page = await list_people(
                conn, decision=context.decision, fields=wanted.fields, first=size, after=after_id
            )
            members = await _members_of(conn, context, wanted, page.people) if edges_selected else {}
        built = [
            edge(
                cursor=context.refs.encode(RefKind.CURSOR, record.person_id) if cursors_selected else "",
                node=presenter.present(context, str(info.path.key), record, wanted, members),
            )
            for record in (page.people if edges_selected else [])
        ]
        end_cursor = context.refs.encode(RefKind.CURSOR, page.people[-1].person_id) if page.people else None
        return connection(edges=built, page_info=PageInfo(has_next_page=page.has_next, end_cursor=end_cursor))

    return _signed(
        people,
        [_keyword("first", int | None, default), _keyword("after", str | None, None)],
        connection,
    )


def counted_by(agreement: Agreement) -> tuple[str, ...]:
    """What `peopleCounts` groups by: every countable field of the view, in its order."""
    return tuple(name for name in agreement.fields if name in COUNTABLE_FIELDS)


def _counts_resolver(agreement: Agreement, suppress_below: int) -> Callable[..., Any]:
    """Always grouped by the same fields, every one the view may count: counts of one grouping
    cannot be subtracted from another's to reveal a group that was left out."""
    by = counted_by(agreement)
    group = counts_type(by, suppress_below)

    async def people_counts(info: strawberry.Info) -> list[Any]:
        context = _context(info)
        if set(by) - set(context.decision.fields):  # pragma: no cover - the view is the agreement's
            raise AssertionError("the decision narrowed the fields a count is grouped by")
        async with context.connect() as conn:
            groups = await count_people(conn, decision=context.decision, by=by, suppress_below=suppress_below)
        return [
            group(
                people=people,
                **{
                    FIELD_TYPES[name][0]: None
                    if values[name] is None
                    else ENUMS[name](values[name])
                    if name in ENUMS
                    else values[name]
                    for name in by
                },
            )
            for values, people in groups
        ]

    return _signed(people_counts, [], list[group])  # type: ignore[valid-type]


def _find_resolver(presenter: _Presenter, agreement: Agreement) -> Callable[..., Any]:
    async def find_people(info: strawberry.Info, **arguments: Any) -> Any:
        context = _context(info)
        criteria: dict[str, str | datetime.date] = {}
        for name in agreement.match:
            value = arguments[_ARGUMENT_NAMES[name]]
            if isinstance(value, str):
                value = " ".join(value.split())
                if not 1 <= len(value) <= MAX_MATCH_TEXT:
                    raise BadUserInputError(f"{name} must be 1 to {MAX_MATCH_TEXT} characters.")
            criteria[name] = value
        wanted = _wanted(_selections(info), context.decision.fields)
        async with context.connect() as conn:
            # Two rows are enough to know a match is not single; more would only be read and dropped.
            found = await match_people(
                conn, decision=context.decision, fields=wanted.fields, criteria=criteria, limit=2
            )
            if len(found) != 1:
                return None
            members = await _members_of(conn, context, wanted, found)
        return presenter.present(context, str(info.path.key), found[0], wanted, members)

    params = [_keyword(_ARGUMENT_NAMES[name], _ARGUMENT_TYPES[name]) for name in agreement.match]
    return _signed(find_people, params, presenter.person | None)
