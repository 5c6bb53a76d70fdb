"""A Decision's row scope as SQL: populations, visibility, objection and protected addresses.

Every rule here is a WHERE clause evaluated by the database, never a filter applied in Python
after rows were fetched: a person outside the scope is never read into the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Final

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, true

from policies import POPULATIONS, ProtectedAddress, RowScope
from resolvers.models import (
    CRITERION,
    ELIGIBLE,
    EVERY_AGREEMENT,
    OUTCOMES,
    assessments,
    eligibility_intervals,
    objections,
    people,
    restrictions,
)


def years_before(day: date, years: int) -> date:
    """The same calendar day `years` earlier; 29 February becomes 28 February in a common year."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def on_timeline(kind: str, today: date) -> ColumnElement[bool]:
    """The person's family is `kind` (eligible; meets a criterion) on `today` by its eligibility
    timeline: the assessor's needs and partners' recorded contributions under the programme's rules."""
    return exists().where(
        eligibility_intervals.c.household_id == people.c.household_id,
        eligibility_intervals.c.kind == kind,
        eligibility_intervals.c.valid_from <= today,
        or_(eligibility_intervals.c.valid_until.is_(None), eligibility_intervals.c.valid_until > today),
    )


def eligible_on(today: date) -> ColumnElement[bool]:
    """Eligible: as the assessor recorded (a council fact, never overwritten), or by the evidence now."""
    return or_(assessments.c.eligible.is_(true()), on_timeline(ELIGIBLE, today))


def _cohort(today: date) -> ColumnElement[bool]:
    return eligible_on(today)


def _criterion_met(today: date) -> ColumnElement[bool]:
    return or_(*(assessments.c[name].is_(true()) for name, _ in OUTCOMES), on_timeline(CRITERION, today))


def _assessed(_: date) -> ColumnElement[bool]:
    return assessments.c.id.is_not(None)


def _eligible_without_support(today: date) -> ColumnElement[bool]:
    # A family with no assessment (eligible on partners' evidence alone) has no coordinated support yet.
    return and_(eligible_on(today), func.coalesce(assessments.c.coordinated_support, false()).is_(false()))


def _children_10_to_17(today: date) -> ColumnElement[bool]:
    # Aged 10 or more: born on or before the day ten years ago. Aged 17 or less (not yet 18):
    # born after the day eighteen years ago.
    return and_(
        people.c.date_of_birth <= years_before(today, 10),
        people.c.date_of_birth > years_before(today, 18),
    )


def _school_age(today: date) -> ColumnElement[bool]:
    return and_(
        people.c.date_of_birth <= years_before(today, 4),
        people.c.date_of_birth > years_before(today, 18),
    )


def _all_records(_: date) -> ColumnElement[bool]:
    return true()


POPULATION_CLAUSES: Final[dict[str, Callable[[date], ColumnElement[bool]]]] = {
    "supporting-families-cohort": _cohort,
    "eligibility-criterion-met": _criterion_met,
    "assessed": _assessed,
    "eligible-without-coordinated-support": _eligible_without_support,
    "children-10-to-17": _children_10_to_17,
    "school-age-children": _school_age,
    "all-records": _all_records,
}
if POPULATION_CLAUSES.keys() != POPULATIONS.keys():  # pragma: no cover - caught by the test suite too
    raise RuntimeError("policies.POPULATIONS and resolvers.POPULATION_CLAUSES name different populations")


def visible_to_anyone(today: date) -> ColumnElement[bool]:
    """Restricted and past-retention people are out of every view, whatever the agreement says."""
    return and_(people.c.restricted.is_(false()), people.c.retention_until >= today)


def in_scope(scope: RowScope) -> ColumnElement[bool]:
    """The full WHERE clause for people a decision reaches (assessments must be outer-joined)."""
    clauses = [visible_to_anyone(scope.today), POPULATION_CLAUSES[scope.population](scope.today)]
    restricted_for = (
        (EVERY_AGREEMENT,) if scope.restrictions_of is None else (EVERY_AGREEMENT, scope.restrictions_of)
    )
    clauses.append(
        ~exists().where(
            restrictions.c.person_id == people.c.id, restrictions.c.agreement_id.in_(restricted_for)
        )
    )
    if scope.objections_of is not None:
        clauses.append(
            ~exists().where(
                objections.c.person_id == people.c.id,
                objections.c.agreement_id.in_((EVERY_AGREEMENT, scope.objections_of)),
            )
        )
    if scope.protected_address is ProtectedAddress.EXCLUDE:
        clauses.append(people.c.protected_address.is_(false()))
    return and_(*clauses)
