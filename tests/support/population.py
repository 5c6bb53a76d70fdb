"""Hand-made synthetic people, one for each rule the agreements must get right.

The seeded population gives volume; these give certainty: each case exists for a reason named in
its key, with a double-barrelled family name that Faker never produces, so a search for it can only
find what the case intends. Ids start at 900000, far above the seeded ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from resolvers.models import OUTCOMES, addresses, assessments, households, objections, people
from resolvers.scopes import years_before

FIRST_ID = 900_000


@dataclass(frozen=True)
class Case:
    key: str
    household: str
    given: str
    family: str
    age: int
    birthday_offset: int = -40  # days relative to the birthday that gives `age` today
    assessment: str | None = "eligible"  # eligible | supported | criterion | zero | None
    protected: bool = False
    restricted: bool = False
    retention_offset: int = 1_000  # retention_until = today + offset days
    legal_hold: bool = False
    objections: tuple[str, ...] = ()
    phone: str | None = "07700 900123"
    email: str | None = None
    school: str | None = None
    uprn: str | None = None


CASES: tuple[Case, ...] = (
    Case("cohort_plain", "h_plain", "Ada", "Brackenridge-Vale", 34, email="ada.bv@example.org"),
    Case(
        "cohort_protected",
        "h_protected",
        "Bea",
        "Ferncastle-Orme",
        29,
        protected=True,
        email="bea.fo@example.org",
    ),
    Case("cohort_restricted", "h_restricted", "Cal", "Holloway-Quince", 41, restricted=True),
    Case("cohort_past_retention", "h_past", "Dot", "Ingleby-Marsh", 38, retention_offset=-1),
    Case("cohort_retention_today", "h_today", "Eve", "Juniper-Soames", 44, retention_offset=0),
    Case(
        "cohort_legal_hold_past_retention",
        "h_hold",
        "Fay",
        "Kettering-Lyle",
        52,
        retention_offset=-30,
        legal_hold=True,
    ),
    Case("fh_objector", "h_fh_objector", "Gus", "Larkspur-Penn", 36, objections=("family-hub-outreach",)),
    Case(
        "police_objector",
        "h_police_objector",
        "Hal",
        "Merriweather-Cole",
        27,
        objections=("police-prevention",),
    ),
    Case("supported", "h_supported", "Ivy", "Northcote-Wren", 33, assessment="supported"),
    Case(
        "criterion_only",
        "h_criterion",
        "Jem",
        "Oakhurst-Bligh",
        45,
        assessment="criterion",
        uprn="100023336956",
    ),
    Case("assessed_zero", "h_zero", "Kit", "Pemberton-Shaw", 39, assessment="zero"),
    Case("unassessed", "h_unassessed", "Lou", "Quayle-Ashdown", 31, assessment=None),
    Case(
        "child_10_today",
        "h_children",
        "Max",
        "Radcliffe-Hume",
        10,
        birthday_offset=0,
        school="Radcliffe Primary School",
    ),
    Case("child_10_tomorrow", "h_children", "Ned", "Radcliffe-Hume", 9, birthday_offset=-364),
    Case(
        "child_17",
        "h_children",
        "Oli",
        "Radcliffe-Hume",
        17,
        birthday_offset=-364,
        school="Thornbury High School",
    ),
    Case("adult_18_today", "h_children", "Pip", "Radcliffe-Hume", 18, birthday_offset=0),
    Case(
        "child_protected",
        "h_child_protected",
        "Quin",
        "Selwood-Trent",
        12,
        protected=True,
        school="Selwood Academy",
    ),
    Case("twin_a", "h_twins", "Rae", "Tennyson-Uxley", 14, birthday_offset=-100, school="Uxley School"),
    Case("twin_b", "h_twins", "Rob", "Tennyson-Uxley", 14, birthday_offset=-100, school="Uxley School"),
    Case("mash_adult", "h_mash", "Sol", "Underwood-Voss", 40, assessment=None, email="sol.uv@example.org"),
    Case("mash_child_restricted", "h_mash", "Tam", "Underwood-Voss", 8, assessment=None, restricted=True),
    Case(
        "mash_adult_past_retention",
        "h_mash",
        "Uma",
        "Underwood-Voss",
        42,
        assessment=None,
        retention_offset=-5,
    ),
    Case("mash_child", "h_mash", "Val", "Underwood-Voss", 11, assessment=None, school="Voss Primary School"),
    Case(
        "refuge_adult",
        "h_refuge",
        "Wyn",
        "Vickery-Wolde",
        30,
        protected=True,
        assessment=None,
        email="wyn.vw@example.org",
    ),
    Case("refuge_child", "h_refuge", "Xan", "Vickery-Wolde", 6, protected=True, assessment=None),
    Case(
        "ph_objector",
        "h_ph_objector",
        "Yves",
        "Ashcombe-Rudd",
        58,
        assessment="zero",
        objections=("public-health-planning",),
    ),
)


@dataclass
class EdgeCases:
    ids: dict[str, int] = field(default_factory=dict)
    household_ids: dict[str, int] = field(default_factory=dict)

    def id(self, key: str) -> int:
        return self.ids[key]

    def case(self, key: str) -> Case:
        return next(c for c in CASES if c.key == key)


def date_of_birth(case: Case, today: date) -> date:
    return years_before(today, case.age) + timedelta(days=case.birthday_offset)


async def add_edge_cases(conn: AsyncConnection, today: date) -> EdgeCases:
    out = EdgeCases()
    rows: dict[str, list[dict[str, Any]]] = {
        "addresses": [],
        "households": [],
        "people": [],
        "assessments": [],
        "objections": [],
    }
    next_id = FIRST_ID
    for case in CASES:
        if case.household not in out.household_ids:
            next_id += 1
            out.household_ids[case.household] = next_id
            rows["addresses"].append(
                {
                    "id": next_id,
                    "uprn": case.uprn or str(200_000_000_000 + next_id),
                    "line1": f"{next_id % 200 + 1} Larch Crescent",
                    "line2": None,
                    "town": "London",
                    "postcode": "W2 1ZZ" if not case.protected else "NW8 9ZZ",
                }
            )
            rows["households"].append({"id": next_id, "address_id": next_id})
            if case.assessment is not None:
                needs = {"eligible": 4, "supported": 3, "criterion": 1, "zero": 0}[case.assessment]
                rows["assessments"].append(
                    {
                        "id": next_id,
                        "household_id": next_id,
                        "assessed_on": today - timedelta(days=60),
                        **{name: i < needs for i, (name, _) in enumerate(OUTCOMES)},
                        "eligible": needs >= 3,
                        "coordinated_support": case.assessment == "supported",
                    }
                )
        next_id += 1
        out.ids[case.key] = next_id
        rows["people"].append(
            {
                "id": next_id,
                "household_id": out.household_ids[case.household],
                "given_name": case.given,
                "family_name": case.family,
                "date_of_birth": date_of_birth(case, today),
                "phone": case.phone,
                "email": case.email,
                "school": case.school,
                "protected_address": case.protected,
                "restricted": case.restricted,
                "retention_until": today + timedelta(days=case.retention_offset),
                "legal_hold": case.legal_hold,
            }
        )
        for agreement in case.objections:
            rows["objections"].append(
                {"person_id": next_id, "agreement_id": agreement, "recorded_on": today - timedelta(days=3)}
            )
    for table in (addresses, households, people, assessments, objections):
        if rows[table.name]:
            await conn.execute(insert(table), rows[table.name])
    return out
