"""A synthetic, deterministic population of families for demos, tests and benchmarks.

Everyone here is invented. Names and postcodes come from Faker's en_GB locale (postcodes moved into
the council's own districts, the inward code kept, so they need not exist); telephone numbers
come from the ranges Ofcom reserves for drama (07700 900xxx, 020 7946 0xxx) and email addresses
use the reserved domain example.org, so no generated contact detail can reach a real person.

For one `seed` and one `today` the output is identical, ids included, so refs are stable too.

Every person's records by class (policies/retention.yaml) agree with their `retention_until`: the
record that decides runs out exactly then (or, from a 29 February, the day after), a few are still
open, and a few young people past retention have no record a schedule explains (unclassified). They are
drawn from a random stream of their own per person, so the rest of the population is the same as it
was before records were added.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

from faker import Faker
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from policies.retention import add_years
from resolvers.models import (
    ELIGIBILITY_THRESHOLD,
    OUTCOMES,
    addresses,
    assessments,
    households,
    objections,
    people,
    person_records,
)
from resolvers.scopes import years_before

BATCH: Final = 5_000
_HOUSEHOLD_SIZES: Final = ((1, 22), (2, 24), (3, 21), (4, 17), (5, 10), (6, 6))
_NEEDS_COUNT: Final = ((0, 8), (1, 14), (2, 18), (3, 22), (4, 18), (5, 12), (6, 8))
# The council's own postcode districts (Westminster, Kensington and Chelsea): a family it supports lives
# there, so a count by district means something. Faker's inward code is kept.
COUNCIL_DISTRICTS: Final = ("W1", "W2", "W8", "W9", "W10", "W11", "W14", "NW1", "NW8", "SW1", "SW3", "SW7")
_SCHOOL_KINDS: Final = ("Primary School", "C of E Primary School", "Academy", "High School", "School")
_STREET_TOWNS: Final = ("London",) * 7 + ("Westminster", "Paddington", "Pimlico")

# Proportions, chosen to give every rule of every agreement people to act on.
P_ASSESSED: Final = 0.40  # households with a Supporting Families assessment
P_SUPPORTED: Final = 0.55  # of eligible families, those receiving coordinated support
P_PROTECTED: Final = 0.02  # households with a protected-address marker (refuge, witness protection)
P_RESTRICTED: Final = 0.01  # people under restriction of processing
P_PAST_RETENTION: Final = 0.015  # people past their retention date
P_LEGAL_HOLD: Final = 0.01
P_NO_UPRN: Final = 0.04
OBJECTION_RATES: Final = {"family-hub-outreach": 0.05, "police-prevention": 0.02, "ons-evaluation": 0.02}
# Years each record class is kept (policies/retention.yaml; a test holds the two together).
KEEP_YEARS: Final = {"supporting-families": 1, "family-hub": 6, "youth-justice": 25, "rescue-and-response": 7}
P_RESCUE_REFERRAL: Final = 0.04  # people whose latest record is a Rescue and Response referral
P_PROGRAMME_OPEN: Final = 0.05  # of assessed people not past retention, still in the programme
P_YOUTH_JUSTICE: Final = 0.25  # of young adults, a youth justice record kept to their 25th birthday
P_EARLIER_CONTACT: Final = 0.5  # of programme families, an earlier Family Hub contact


class PopulationNotEmptyError(Exception):
    """Seeding would mix with records already in the database."""


@dataclass
class SeedSummary:
    people: int = 0
    households: int = 0
    assessed_households: int = 0
    eligible_households: int = 0
    protected_people: int = 0
    restricted_people: int = 0
    past_retention_people: int = 0
    objections: int = 0
    tables: dict[str, int] = field(default_factory=dict)


async def seed_population(
    conn: AsyncConnection,
    *,
    people_count: int,
    seed: int,
    today: date,
    progress: Callable[[int], None] | None = None,
) -> SeedSummary:
    """Insert `people_count` synthetic people (in whole households) into an empty database."""
    if people_count < 1:
        raise ValueError("people_count must be at least 1")
    existing = (await conn.execute(select(func.count()).select_from(people))).scalar_one()
    if existing:
        raise PopulationNotEmptyError(f"the database already holds {existing} people")

    generator = _Generator(seed=seed, today=today)
    summary = SeedSummary()
    buffers: dict[str, list[dict[str, Any]]] = {
        "addresses": [],
        "households": [],
        "people": [],
        "assessments": [],
        "objections": [],
        "person_records": [],
    }
    tables = {
        "addresses": addresses,
        "households": households,
        "people": people,
        "assessments": assessments,
        "objections": objections,
        "person_records": person_records,
    }
    order = ("addresses", "households", "people", "assessments", "objections", "person_records")

    async def flush() -> None:
        for name in order:  # parents before children, for the foreign keys
            if buffers[name]:
                await conn.execute(insert(tables[name]), buffers[name])
                summary.tables[name] = summary.tables.get(name, 0) + len(buffers[name])
                buffers[name].clear()

    while summary.people < people_count:
        size = min(generator.household_size(), people_count - summary.people)
        household = generator.household(size)
        for name in order:
            buffers[name].extend(household[name])
        summary.households += 1
        summary.people += size
        summary.assessed_households += bool(household["assessments"])
        summary.eligible_households += any(a["eligible"] for a in household["assessments"])
        summary.protected_people += sum(p["protected_address"] for p in household["people"])
        summary.restricted_people += sum(p["restricted"] for p in household["people"])
        summary.past_retention_people += sum(p["retention_until"] < today for p in household["people"])
        summary.objections += len(household["objections"])
        if len(buffers["people"]) >= BATCH:
            await flush()
            if progress:
                progress(summary.people)
    await flush()
    if progress:
        progress(summary.people)
    return summary


class _Generator:
    def __init__(self, *, seed: int, today: date) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.fake = Faker("en_GB")
        self.fake.seed_instance(seed)
        self.today = today
        self.next_id = {"addresses": 1, "households": 1, "people": 1, "assessments": 1}

    def _id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value

    def household_size(self) -> int:
        return _weighted(self.rng, _HOUSEHOLD_SIZES)

    def household(self, size: int) -> dict[str, list[dict[str, Any]]]:
        rng, fake = self.rng, self.fake
        address_id = self._id("addresses")
        household_id = self._id("households")
        line2 = f"Flat {rng.randint(1, 40)}" if rng.random() < 0.35 else None
        address = {
            "id": address_id,
            # Three lengths of UPRN, so that 12-digit values (beyond a 32-bit Int) are common.
            "uprn": None
            if rng.random() < P_NO_UPRN
            else str(rng.choice((10**9, 10**10, 10**11)) + address_id * 97 + rng.randint(0, 96)),
            "line1": f"{rng.randint(1, 220)} {fake.street_name()}",
            "line2": line2,
            "town": rng.choice(_STREET_TOWNS),
            "postcode": _local(fake.postcode()),
        }
        protected = rng.random() < P_PROTECTED
        family_name = fake.last_name()
        members = self._members(size, family_name, household_id, protected)

        assessment_rows: list[dict[str, Any]] = []
        if rng.random() < P_ASSESSED:
            needs = _weighted(rng, _NEEDS_COUNT)
            chosen = set(rng.sample([name for name, _ in OUTCOMES], needs))
            eligible = needs >= ELIGIBILITY_THRESHOLD
            assessment_rows.append(
                {
                    "id": self._id("assessments"),
                    "household_id": household_id,
                    "assessed_on": self.today - timedelta(days=rng.randint(14, 700)),
                    **{name: name in chosen for name, _ in OUTCOMES},
                    "eligible": eligible,
                    "coordinated_support": eligible and rng.random() < P_SUPPORTED,
                }
            )

        objection_rows = [
            {
                "person_id": person["id"],
                "agreement_id": agreement,
                "recorded_on": self.today - timedelta(days=rng.randint(1, 900)),
            }
            for person in members
            for agreement, rate in OBJECTION_RATES.items()
            if rng.random() < rate
        ]
        return {
            "addresses": [address],
            "households": [{"id": household_id, "address_id": address_id}],
            "people": members,
            "assessments": assessment_rows,
            "objections": objection_rows,
            "person_records": [
                {"person_id": person["id"], "record_class": record_class, "counted_from": counted_from}
                for person in members
                for record_class, counted_from in self._records(person, assessed=bool(assessment_rows))
            ],
        }

    def _records(self, person: dict[str, Any], *, assessed: bool) -> list[tuple[str, date | None]]:
        """The person's records by class, whose latest runs out on their `retention_until`."""
        # A stream of its own, not self.rng: the people, households and everything else stay as they were.
        rng = random.Random(f"records:{self.seed}:{person['id']}")
        until, born, today = person["retention_until"], person["date_of_birth"], self.today
        past = until < today
        records: dict[str, date | None] = {}
        referral = _counted_from(until, KEEP_YEARS["rescue-and-response"])
        programme_end = _counted_from(until, KEEP_YEARS["supporting-families"])
        last_contact = _counted_from(until, KEEP_YEARS["family-hub"])
        if rng.random() < P_RESCUE_REFERRAL and add_years(born, 10) <= referral <= today:
            records["rescue-and-response"] = referral
        elif assessed and born <= programme_end <= today:
            records["supporting-families"] = programme_end
        elif born <= last_contact <= today:
            records["family-hub"] = last_contact
        elif not past:
            records["family-hub"] = None  # a young child's family still in contact: open, never due
        else:
            return []  # a young child past retention whom no schedule explains: unclassified
        if assessed and not past and "supporting-families" not in records and rng.random() < P_PROGRAMME_OPEN:
            records["supporting-families"] = None  # the family's programme has not ended
        # Earlier records, each running out no later than the one above.
        earliest, latest = max(born, last_contact - timedelta(days=700)), min(last_contact, today)
        if "family-hub" not in records and earliest <= latest and rng.random() < P_EARLIER_CONTACT:
            records["family-hub"] = earliest + timedelta(days=rng.randint(0, (latest - earliest).days))
        # A youth justice record (aged 10 to 17) is kept to the 25th birthday: young adults up to about 30.
        twenty_fifth = add_years(born, KEEP_YEARS["youth-justice"])
        if today - timedelta(days=5 * 366) <= twenty_fifth <= until and rng.random() < P_YOUTH_JUSTICE:
            records["youth-justice"] = born
        return sorted(records.items())

    def _members(
        self, size: int, family_name: str, household_id: int, protected: bool
    ) -> list[dict[str, Any]]:
        rng = self.rng
        adults = 1 if size == 1 or rng.random() < 0.3 else 2
        if size == 1:
            ages = [rng.randint(18, 85)]
        else:
            first_adult = rng.randint(24, 58)
            ages = [first_adult] + ([max(18, first_adult + rng.randint(-6, 6))] if adults == 2 else [])
            # Children of every age 0 to 17, so that the 10-to-17 population is a fair share.
            ages += [rng.randint(0, 17) for _ in range(size - len(ages))]
        return [
            self._person(age, family_name, household_id, protected, adult=i < adults)
            for i, age in enumerate(ages)
        ]

    def _person(
        self, age: int, household_name: str, household_id: int, protected: bool, *, adult: bool
    ) -> dict[str, Any]:
        rng, fake = self.rng, self.fake
        person_id = self._id("people")
        born = years_before(self.today, age) - timedelta(days=rng.randint(0, 364))
        given = fake.first_name()
        family = household_name if (not adult or rng.random() < 0.75) else fake.last_name()
        past_retention = rng.random() < P_PAST_RETENTION
        retention_until = (
            self.today - timedelta(days=rng.randint(1, 400))
            if past_retention
            else self.today + timedelta(days=rng.randint(30, 6 * 365))
        )
        has_phone = rng.random() < (0.85 if adult else 0.45 if age >= 13 else 0.0)
        has_email = rng.random() < (0.7 if adult else 0.3 if age >= 13 else 0.0)
        return {
            "id": person_id,
            "household_id": household_id,
            "given_name": given,
            "family_name": family,
            "date_of_birth": born,
            "phone": self._phone() if has_phone else None,
            "email": f"{_slug(given)}.{_slug(family)}{person_id}@example.org" if has_email else None,
            "school": f"{fake.last_name()} {rng.choice(_SCHOOL_KINDS)}" if 4 <= age <= 17 else None,
            "protected_address": protected,
            "restricted": rng.random() < P_RESTRICTED,
            "retention_until": retention_until,
            "legal_hold": rng.random() < (0.2 if past_retention else P_LEGAL_HOLD),
        }

    def _phone(self) -> str:
        # Ofcom's drama ranges: 07700 900000-900999 (mobile) and 020 7946 0000-0999 (London).
        if self.rng.random() < 0.75:
            return f"07700 900{self.rng.randint(0, 999):03d}"
        return f"020 7946 0{self.rng.randint(0, 999):03d}"


def _counted_from(until: date, years: int) -> date:
    """The earliest date whose schedule of `years` runs to `until`: exactly, except that nothing runs
    to a 29 February in a common year's span, so it runs to 1 March instead (a day later, never earlier)."""
    try:
        return until.replace(year=until.year - years)
    except ValueError:
        return date(until.year - years, 3, 1)


def _weighted(rng: random.Random, table: tuple[tuple[int, int], ...]) -> int:
    values, weights = zip(*table, strict=True)
    return int(rng.choices(values, weights=weights)[0])


def _local(postcode: str) -> str:
    """Faker's postcode moved into one of the council's districts, chosen by the postcode itself (no
    draw from any random stream, so the rest of the population is what it was)."""
    inward = postcode.split()[-1]
    return f"{COUNCIL_DISTRICTS[zlib.crc32(postcode.encode()) % len(COUNCIL_DISTRICTS)]} {inward}"


def _slug(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum()) or "person"
