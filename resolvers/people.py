"""Reading people within a Decision: only its columns, only its rows.

Each function builds one SELECT whose column list is the fields asked for (never more than the
decision allows) and whose WHERE clause is the decision's row scope. Location and contact columns
of a person with a protected-address marker are replaced by NULL inside the SQL, so under a
`withhold` decision the value never leaves the database.

Exceptions (all `AccessError`):
    DecisionNotAllowedError   the decision refused the request; nothing may be read
    FieldNotAllowedError      a caller asked for a field outside the decision (a bug above us)
    LookupNotAllowedError     listing or matching that the decision does not include
    PageSizeError             a page size outside 1..the decision's maximum
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Final, NamedTuple, cast

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    extract,
    false,
    func,
    literal,
    null,
    select,
    true,
)
from sqlalchemy import cast as cast_
from sqlalchemy.ext.asyncio import AsyncConnection

from policies import LOCATION_FIELDS, Decision, ProtectedAddress, RowScope
from policies.fields import COUNTABLE_FIELDS
from resolvers.models import addresses, assessments, households, people
from resolvers.scopes import eligible_on, in_scope

ADDRESS_PARTS: Final = ("line1", "line2", "town", "postcode")
_ADDRESS_FIELDS: Final = frozenset({"postcode", "postcodeDistrict", "address", "uprn"})
_NAME_FIELDS: Final = frozenset({"givenName", "familyName"})


def programme_status(today: date) -> ColumnElement[Any]:
    """Where the family stands on `today`: eligible as the assessor recorded or by the evidence now."""
    return case(
        (assessments.c.coordinated_support.is_(true()), literal("COORDINATED_SUPPORT")),
        (eligible_on(today), literal("ELIGIBLE")),
        (assessments.c.id.is_(None), literal("NOT_ASSESSED")),
        else_=literal("NOT_ELIGIBLE"),
    )


ASSESSMENT_OUTCOME: Final = case(
    (assessments.c.id.is_(None), null()),
    (assessments.c.eligible.is_(true()), literal("ELIGIBLE")),
    else_=literal("NOT_ELIGIBLE"),
)

# Age bands (ageBand): the youngest age in each, ascending, and its name. Ages the programme's partners
# plan by: under-5s (early years), primary, 10 to 17 (youth justice), young adults, adults, older people.
AGE_BANDS: Final[tuple[tuple[int, str], ...]] = (
    (0, "AGE_0_TO_4"),
    (5, "AGE_5_TO_9"),
    (10, "AGE_10_TO_17"),
    (18, "AGE_18_TO_24"),
    (25, "AGE_25_TO_44"),
    (45, "AGE_45_TO_64"),
    (65, "AGE_65_AND_OVER"),
)
# Minimised values, computed by the database: the raw value is never read into the gateway.
YEAR_OF_BIRTH: Final = cast_(extract("year", people.c.date_of_birth), Integer)
# The outward code: the postcode without spaces, upper case, less its inward code (always its last three
# characters: a digit and two letters). Shorter than the shortest real postcode (five characters): no
# district, rather than part of whatever was written.
_POSTCODE: Final = func.upper(func.replace(addresses.c.postcode, " ", ""))
POSTCODE_DISTRICT: Final = case(
    (func.length(_POSTCODE) >= 5, func.substr(_POSTCODE, 1, func.length(_POSTCODE) - 3)), else_=null()
)


def age_band(today: date) -> ColumnElement[Any]:
    """The band of the age the person reaches in `today`'s calendar year, from the year of birth, in SQL.
    Judged by the year, not the day: a band then changes for everyone on 1 January, and watching a
    person's band change tells no more than their year of birth (by the day, the change would give
    away the birthday)."""
    whens = [
        (today.year - youngest >= YEAR_OF_BIRTH, literal(name)) for youngest, name in reversed(AGE_BANDS[1:])
    ]
    return case(*whens, else_=literal(AGE_BANDS[0][1]))


# The columns behind each field. familyRef and members are derived from the household id, which
# every query selects anyway; ageBand and programmeStatus depend on the day (see `_columns`).
_COLUMNS: Final[dict[str, tuple[ColumnElement[Any], ...]]] = {
    "givenName": (people.c.given_name,),
    "familyName": (people.c.family_name,),
    "dateOfBirth": (people.c.date_of_birth,),
    "yearOfBirth": (YEAR_OF_BIRTH,),
    "ageBand": (),
    "postcode": (addresses.c.postcode,),
    "postcodeDistrict": (POSTCODE_DISTRICT,),
    "address": tuple(addresses.c[part] for part in ADDRESS_PARTS),
    "uprn": (addresses.c.uprn,),
    "phone": (people.c.phone,),
    "email": (people.c.email,),
    "school": (people.c.school,),
    "programmeStatus": (),
    "assessmentOutcome": (ASSESSMENT_OUTCOME,),
    "familyRef": (),
    "members": (),
}


class AccessError(Exception):
    """Base class: the request asked for something the decision does not cover."""


class DecisionNotAllowedError(AccessError):
    pass


class FieldNotAllowedError(AccessError):
    pass


class LookupNotAllowedError(AccessError):
    pass


class PageSizeError(AccessError):
    def __init__(self, maximum: int) -> None:
        super().__init__(f"first must be between 1 and {maximum}")
        self.maximum = maximum


class PersonRecord(NamedTuple):
    """One person as a decision lets the gateway see them. The ids never leave the gateway. (A tuple:
    a page makes a hundred per request.)"""

    person_id: int
    household_id: int
    withheld: tuple[str, ...]
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    people: list[PersonRecord]
    has_next: bool


async def list_people(
    conn: AsyncConnection, *, decision: Decision, fields: Collection[str], first: int, after: int | None
) -> Page:
    scope = _scope(decision)
    if not decision.listing:
        raise LookupNotAllowedError("this agreement does not include listing")
    maximum = decision.max_page_size or 0
    if not 1 <= first <= maximum:
        raise PageSizeError(maximum)
    statement = _statement("page" if after is None else "page_after", decision, scope, tuple(fields))
    rows = await statement.rows(conn, {"n": first + 1, "after": after})
    records = [_record(decision, scope, fields, row) for row in rows[:first]]
    return Page(people=records, has_next=len(rows) > first)


async def get_person(
    conn: AsyncConnection, *, decision: Decision, fields: Collection[str], person_id: int
) -> PersonRecord | None:
    scope = _scope(decision)
    rows = await _statement("one", decision, scope, tuple(fields)).rows(conn, {"person_id": person_id})
    return _record(decision, scope, fields, rows[0]) if rows else None


async def match_people(
    conn: AsyncConnection,
    *,
    decision: Decision,
    fields: Collection[str],
    criteria: Mapping[str, str | date],
    limit: int,
) -> list[PersonRecord]:
    """People in scope matching every criterion exactly (names and postcodes normalised).

    A search that uses a location field never matches a person with a protected-address marker,
    so the search cannot confirm where they live.
    """
    scope = _scope(decision)
    if set(criteria) != set(decision.match) or not criteria:
        raise LookupNotAllowedError("the search must use exactly the agreement's match fields")
    if not 1 <= limit <= 10:
        raise PageSizeError(10)
    names = tuple(sorted(criteria))
    values = {f"match_{name}": _normalised(name, value) for name, value in criteria.items()}
    statement = _statement("match", decision, scope, tuple(fields), names)
    rows = await statement.rows(conn, {**values, "n": limit})
    return [_record(decision, scope, fields, row) for row in rows]


async def household_members(
    conn: AsyncConnection, *, decision: Decision, fields: Collection[str], of: Iterable[PersonRecord]
) -> dict[int, list[PersonRecord]]:
    """For each given person, the other members of their household that the decision reaches."""
    scope = _scope(decision)
    if "members" not in decision.fields:
        raise FieldNotAllowedError("members")
    persons = list(of)
    household_ids = {p.household_id for p in persons}
    if not household_ids:
        return {}
    stmt = (
        _select(decision, scope, fields).where(people.c.household_id.in_(household_ids)).order_by(people.c.id)
    )
    by_household: dict[int, list[PersonRecord]] = {}
    for row in (await conn.execute(stmt)).all():
        record = _record(decision, scope, fields, row._mapping)
        by_household.setdefault(record.household_id, []).append(record)
    return {
        p.person_id: [m for m in by_household.get(p.household_id, []) if m.person_id != p.person_id]
        for p in persons
    }


async def count_people(
    conn: AsyncConnection, *, decision: Decision, by: tuple[str, ...], suppress_below: int
) -> list[tuple[dict[str, Any], int]]:
    """How many people the decision reaches, grouped by `by` (countable fields of the decision),
    counted by the database. A group of fewer than `suppress_below` people is left out altogether:
    neither its count nor that it exists leaves the gateway, so no count singles anyone out."""
    scope = _scope(decision)
    if not decision.listing:
        raise LookupNotAllowedError("this agreement does not include listing")
    if not by or set(by) - set(decision.fields) or set(by) - set(COUNTABLE_FIELDS):
        raise FieldNotAllowedError(", ".join(sorted(by)))
    if scope.protected_address is not ProtectedAddress.EXCLUDE:
        # A located count of people whose location is protected would place them: never made.
        raise FieldNotAllowedError("counts where protected people are not excluded")
    grouped = [_columns(name, scope.today)[0].label(name) for name in by]
    joined = people.outerjoin(assessments, assessments.c.household_id == people.c.household_id)
    if _ADDRESS_FIELDS.intersection(by):
        joined = joined.join(households, households.c.id == people.c.household_id).join(
            addresses, addresses.c.id == households.c.address_id
        )
    people_counted = func.count(people.c.id).label("people")
    statement = (
        select(*grouped, people_counted)
        .select_from(joined)
        .where(in_scope(scope))
        .group_by(*grouped)
        .having(func.count(people.c.id) >= suppress_below)
        .order_by(*grouped)
    )
    return [
        ({name: row._mapping[name] for name in by}, int(row._mapping["people"]))
        for row in (await conn.execute(statement)).all()
    ]


# -- statements, built once per (kind, scope, fields) -------------------------------------------


class _Statement:
    """One SELECT with its per-request values as named parameters. On PostgreSQL through asyncpg it
    is compiled once and run on the pooled connection's driver: no transaction is begun for a
    single read, so nothing is rolled back when the connection returns to the pool."""

    __slots__ = ("_asyncpg", "select")

    def __init__(self, select_: Select[Any]) -> None:
        self.select = select_
        self._asyncpg: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

    async def rows(self, conn: AsyncConnection, values: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        if conn.dialect.driver != "asyncpg":
            return [row._mapping for row in (await conn.execute(self.select, dict(values))).all()]
        if self._asyncpg is None:
            compiled = self.select.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
            self._asyncpg = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))
        sql, names, fixed = self._asyncpg
        arguments = [values[name] if name in values else fixed[name] for name in names]
        sync = conn.sync_connection
        assert sync is not None
        # A connection just checked out holds its driver connection: read it without a greenlet (one
        # less round through SQLAlchemy's bridge per request). One invalidated or closed is reopened
        # (network I/O) by SQLAlchemy, inside the greenlet it needs.
        raw = sync.connection if not (sync.invalidated or sync.closed) else await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        # The engine's statement events fire as for any statement (tracing spans, tests' watchers).
        execution = SimpleNamespace()
        sync.dispatch.before_cursor_execute(sync, None, sql, arguments, execution, False)
        try:
            rows = await driver.fetch(sql, *arguments)
        except Exception as error:
            # As SQLAlchemy's ExceptionContext has it, for the listeners (the SQL span's status).
            failure = SimpleNamespace(
                connection=sync, engine=sync.engine, dialect=sync.dialect, cursor=None,
                statement=sql, parameters=arguments, original_exception=error,
                sqlalchemy_exception=None, chained_exception=None, execution_context=execution,
                is_disconnect=_disconnected(error), invalidate_pool_on_disconnect=True,
                is_pre_ping=False,
            )  # fmt: skip
            sync.dialect.dispatch.handle_error(failure)
            if not _statement_error(error):
                # Anything but the statement's own fault may have broken the connection: never
                # hand it back to the pool (SQLAlchemy did not see the error, so it would).
                if _disconnected(error):
                    # The server went away (a restart, a cut): every connection opened before now
                    # is as dead as this one, and is replaced at its next checkout, as SQLAlchemy
                    # does for the disconnects it sees itself.
                    sync.engine.pool._invalidate(raw, error, _checkin=False)
                await conn.invalidate()
            raise
        sync.dispatch.after_cursor_execute(sync, None, sql, arguments, execution, False)
        return cast("list[Mapping[str, Any]]", rows)


def _statement_error(error: BaseException) -> bool:
    """An error the server raised for this statement, on a connection that is still good."""
    state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and state[:2] not in _BROKEN_SQLSTATE_CLASSES


# Connection exceptions, operator intervention, insufficient resources: the session may be gone.
_BROKEN_SQLSTATE_CLASSES: Final = frozenset({"08", "53", "57", "58", "XX"})


def _disconnected(error: BaseException) -> bool:
    """The connection to the server is gone, not just this session's statement."""
    if isinstance(error, OSError | asyncpg.InterfaceError):
        return True
    state = getattr(error, "sqlstate", None)
    # Connection exceptions; the server shutting down or starting up (57P01, 57P02, 57P03).
    return isinstance(state, str) and (state[:2] == "08" or state in ("57P01", "57P02", "57P03"))


def _statement(
    kind: str, decision: Decision, scope: RowScope, fields: tuple[str, ...], criteria: tuple[str, ...] = ()
) -> _Statement:
    outside = set(fields) - set(decision.fields)
    if outside:
        raise FieldNotAllowedError(", ".join(sorted(outside)))
    return _built(kind, scope, fields, criteria)


@lru_cache(maxsize=1024)
def _built(kind: str, scope: RowScope, fields: tuple[str, ...], criteria: tuple[str, ...]) -> _Statement:
    if kind == "match":
        stmt = _within(scope, fields, join_address=bool(_ADDRESS_FIELDS.intersection(criteria)))
        for name in criteria:
            stmt = stmt.where(
                _criterion(name, bindparam(f"match_{name}", None, type_=_CRITERION_TYPES[name]))
            )
        if any(name in LOCATION_FIELDS for name in criteria):
            stmt = stmt.where(people.c.protected_address.is_(false()))
        return _Statement(stmt.order_by(people.c.id).limit(bindparam("n", None, type_=Integer)))
    stmt = _within(scope, fields)
    if kind == "one":
        return _Statement(stmt.where(people.c.id == bindparam("person_id", None, type_=Integer)))
    if kind == "page_after":
        stmt = stmt.where(people.c.id > bindparam("after", None, type_=Integer))
    return _Statement(stmt.order_by(people.c.id).limit(bindparam("n", None, type_=Integer)))


def normalise_name(value: str) -> str:
    return " ".join(value.split()).lower()


def normalise_postcode(value: str) -> str:
    return "".join(value.split()).upper()


def _scope(decision: Decision) -> RowScope:
    if not decision.allowed or decision.scope is None:
        raise DecisionNotAllowedError(decision.rule)
    return decision.scope


_CRITERION_TYPES: Final[dict[str, Any]] = {
    "givenName": String(),
    "familyName": String(),
    "dateOfBirth": Date(),
    "postcode": String(),
}


def _normalised(name: str, value: str | date) -> str | date:
    if name in _NAME_FIELDS and isinstance(value, str):
        return normalise_name(value)
    if name == "dateOfBirth" and isinstance(value, date):
        return value
    if name == "postcode" and isinstance(value, str):
        return normalise_postcode(value)
    raise LookupNotAllowedError(f"cannot search on {name}")


def _criterion(name: str, value: ColumnElement[Any]) -> ColumnElement[bool]:
    """The match on one field, its value already normalised (`_normalised`)."""
    if name in _NAME_FIELDS:
        column = people.c.given_name if name == "givenName" else people.c.family_name
        return func.lower(column) == value
    if name == "dateOfBirth":
        return people.c.date_of_birth == value
    if name == "postcode":
        return func.replace(func.upper(addresses.c.postcode), " ", "") == value
    raise LookupNotAllowedError(f"cannot search on {name}")


def _select(
    decision: Decision, scope: RowScope, fields: Collection[str], *, join_address: bool = False
) -> Select[Any]:
    """SELECT the fields asked for, within the decision. `join_address`: a criterion needs addresses."""
    outside = set(fields) - set(decision.fields)
    if outside:
        raise FieldNotAllowedError(", ".join(sorted(outside)))
    return _within(scope, fields, join_address=join_address)


def _within(scope: RowScope, fields: Collection[str], *, join_address: bool = False) -> Select[Any]:
    withhold = scope.protected_address is ProtectedAddress.WITHHOLD
    columns: list[ColumnElement[Any]] = [
        people.c.id.label("person_id"),
        people.c.household_id.label("household_id"),
        people.c.protected_address.label("protected"),
    ]
    hidden: ColumnElement[bool] = people.c.protected_address.is_(true())
    if scope.opened:
        hidden = and_(hidden, people.c.id.not_in(sorted(scope.opened)))
    for name in fields:
        for index, column in enumerate(_columns(name, scope.today)):
            if withhold and name in LOCATION_FIELDS:
                column = case((hidden, null()), else_=column)
            columns.append(column.label(f"{name}__{index}"))
    joined = people.outerjoin(assessments, assessments.c.household_id == people.c.household_id)
    if join_address or _ADDRESS_FIELDS.intersection(fields):
        joined = joined.join(households, households.c.id == people.c.household_id).join(
            addresses, addresses.c.id == households.c.address_id
        )
    return select(*columns).select_from(joined).where(in_scope(scope))


def _record(
    decision: Decision, scope: RowScope, fields: Collection[str], row: Mapping[str, Any]
) -> PersonRecord:
    labels, address = _labels(fields if isinstance(fields, tuple) else tuple(fields))
    values: dict[str, Any] = {name: row[label] for name, label in labels}
    if address:
        parts = {part: row[f"address__{i}"] for i, part in enumerate(ADDRESS_PARTS)}
        values["address"] = None if parts["line1"] is None else parts
    withheld: tuple[str, ...] = ()
    person_id = int(row["person_id"])
    if (
        row["protected"]
        and scope.protected_address is ProtectedAddress.WITHHOLD
        and person_id not in scope.opened
    ):
        withheld = tuple(name for name in decision.fields if name in LOCATION_FIELDS)
    return PersonRecord(person_id, int(row["household_id"]), withheld, values)


def _columns(name: str, today: date) -> tuple[ColumnElement[Any], ...]:
    if name == "ageBand":
        return (age_band(today),)
    if name == "programmeStatus":
        return (programme_status(today),)
    return _COLUMNS[name]


_NOT_ONE_COLUMN: Final = frozenset({"address", "familyRef", "members"})


@lru_cache(maxsize=256)
def _labels(fields: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], bool]:
    """Each one-column field with the label its column is selected under; whether address is asked."""
    labels = tuple((name, f"{name}__0") for name in fields if name not in _NOT_ONE_COLUMN)
    return labels, "address" in fields
