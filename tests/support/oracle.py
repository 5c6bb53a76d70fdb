"""An independent statement of who each agreement reaches, computed in Python from raw rows.

The gateway decides in SQL (resolvers/scopes.py); this oracle decides again from `SELECT *`, with
its own reading of the rules, so a wrong WHERE clause shows up as a difference between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from policies import Agreement

OUTCOME_COLUMNS = (
    "need_education",
    "need_early_years",
    "need_health",
    "need_substance_use",
    "need_family_relationships",
    "need_safe_from_exploitation",
    "need_crime_prevention",
    "need_domestic_abuse",
    "need_housing",
    "need_financial_stability",
)
LOCATION_FIELDS = {"postcode", "address", "uprn", "phone", "email", "school"}


@dataclass(frozen=True)
class Person:
    id: int
    household_id: int
    given_name: str
    family_name: str
    date_of_birth: date
    phone: str | None
    email: str | None
    school: str | None
    protected: bool
    restricted: bool
    retention_until: date
    address: dict[str, Any]
    assessment: dict[str, Any] | None
    objections: frozenset[str]

    def age_on(self, today: date) -> int:
        had_birthday = (today.month, today.day) >= (self.date_of_birth.month, self.date_of_birth.day)
        return today.year - self.date_of_birth.year - (0 if had_birthday else 1)


class Oracle:
    def __init__(self, people: dict[int, Person]) -> None:
        self.people = people

    @classmethod
    async def load(cls, conn: AsyncConnection) -> Oracle:
        addresses = {r.id: dict(r._mapping) for r in await conn.execute(text("SELECT * FROM addresses"))}
        household_address = {r.id: r.address_id for r in await conn.execute(text("SELECT * FROM households"))}
        assessments = {
            r.household_id: dict(r._mapping) for r in await conn.execute(text("SELECT * FROM assessments"))
        }
        objections: dict[int, set[str]] = {}
        for r in await conn.execute(text("SELECT * FROM objections")):
            objections.setdefault(r.person_id, set()).add(r.agreement_id)
        people = {}
        for r in await conn.execute(text("SELECT * FROM people")):
            people[r.id] = Person(
                id=r.id,
                household_id=r.household_id,
                given_name=r.given_name,
                family_name=r.family_name,
                date_of_birth=_day(r.date_of_birth),
                phone=r.phone,
                email=r.email,
                school=r.school,
                protected=bool(r.protected_address),
                restricted=bool(r.restricted),
                retention_until=_day(r.retention_until),
                address=addresses[household_address[r.household_id]],
                assessment=assessments.get(r.household_id),
                objections=frozenset(objections.get(r.id, ())),
            )
        return cls(people)

    def in_population(self, person: Person, population: str, today: date) -> bool:
        a = person.assessment
        if population == "supporting-families-cohort":
            return a is not None and bool(a["eligible"])
        if population == "eligibility-criterion-met":
            return a is not None and any(bool(a[c]) for c in OUTCOME_COLUMNS)
        if population == "assessed":
            return a is not None
        if population == "eligible-without-coordinated-support":
            return a is not None and bool(a["eligible"]) and not bool(a["coordinated_support"])
        if population == "children-10-to-17":
            return 10 <= person.age_on(today) <= 17
        if population == "school-age-children":
            return 4 <= person.age_on(today) <= 17
        if population == "all-records":
            return True
        raise AssertionError(f"the oracle does not know population {population}")

    def reaches(self, agreement: Agreement, person: Person, today: date) -> bool:
        if person.restricted or person.retention_until < today:
            return False
        if not self.in_population(person, agreement.population, today):
            return False
        if agreement.honours_objection and agreement.id in person.objections:
            return False
        return not (agreement.protected_address == "exclude" and person.protected)

    def expected(self, agreement: Agreement, today: date) -> set[int]:
        return {p.id for p in self.people.values() if self.reaches(agreement, p, today)}

    def invisible_everywhere(self, today: date) -> set[int]:
        return {p.id for p in self.people.values() if p.restricted or p.retention_until < today}


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
