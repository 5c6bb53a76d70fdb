"""Value-level minimisation and the public-health planning view, over HTTP with real tokens, on SQLite
and PostgreSQL.

The public-health view holds only derived values (postcode district, age band) and programme status:
no name, no date of birth, no postcode ever appears in an answer, in any shape of query. Its refs are
its own. Its counts leave out every group of fewer than ten people, and a count names no one in the
ledger. The value oracle of every listing (tests/gateway/guard/test_oracles.py) checks each derived
value against the record, person by person, on the edge-case birthdays too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import Settings
from gateway.keys import SigningKeys
from policies import Agreement
from resolvers.models import addresses, assessments, households, objections, people
from resolvers.scopes import years_before
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.ledger import Fresh, app_on, fresh_database
from tests.support.oracle import Oracle
from tests.support.partners import Partner

PUBLIC_HEALTH = "public-health-planning"
COUNTS = "query Counts { peopleCounts { postcodeDistrict ageBand programmeStatus people } }"
EVERYTHING = "ref postcodeDistrict ageBand programmeStatus __typename"


def _leaks(answer: Any, person: Any) -> list[str]:
    """The raw values of `person` found anywhere in `answer` (as text, any case, any spacing)."""
    flat = "".join(str(answer).lower().split())
    raw = {
        "given name": person.given_name,
        "family name": person.family_name,
        "date of birth": person.date_of_birth.isoformat(),
        "postcode": person.address["postcode"],
    }
    return [label for label, value in raw.items() if "".join(value.lower().split()) in flat]


async def test_the_public_health_view_never_returns_a_name_a_date_of_birth_or_a_postcode(
    local_partner: Callable[[str], Partner], oracle: Oracle, agreements: dict[str, Agreement]
) -> None:
    client = local_partner(PUBLIC_HEALTH)
    seen = await client.all_people(EVERYTHING, page_size=500)
    expected = oracle.expected(agreements[PUBLIC_HEALTH], FIXED_TODAY)
    assert len(seen) == len(expected) > 100
    leaks = []
    for node in seen:
        person = oracle.people[client.person_id(node["ref"])]
        assert set(node) == {"ref", "postcodeDistrict", "ageBand", "programmeStatus", "__typename"}
        # A district is the start of the postcode, and never the whole of it.
        postcode = person.address["postcode"]
        assert postcode.replace(" ", "").startswith(node["postcodeDistrict"])
        assert len(node["postcodeDistrict"]) < len(postcode.replace(" ", ""))
        leaks += [(person.id, label) for label in _leaks(node, person)]
    # Family names as short as a district cannot be told apart from one: none in this population.
    assert not leaks, leaks[:5]


@pytest.mark.parametrize(
    "field", ["givenName", "familyName", "dateOfBirth", "postcode", "address", "familyRef", "yearOfBirth"]
)
async def test_a_field_the_view_does_not_have_is_refused_before_anything_is_read(
    local_partner: Callable[[str], Partner], field: str
) -> None:
    response = await local_partner(PUBLIC_HEALTH).post(
        f"{{ people(first: 1) {{ edges {{ node {{ {field} }} }} }} }}"
    )
    body = response.json()
    assert "data" not in body, body
    # Only registered documents run here: one that names a field outside the view cannot be registered.
    assert [e["extensions"]["code"] for e in body["errors"]] == ["DOCUMENT_NOT_TRUSTED"]


async def test_public_health_refs_link_to_no_other_partners(
    local_partner: Callable[[str], Partner], oracle: Oracle, agreements: dict[str, Agreement]
) -> None:
    health, police = local_partner(PUBLIC_HEALTH), local_partner("police-prevention")
    both = sorted(
        oracle.expected(agreements[PUBLIC_HEALTH], FIXED_TODAY)
        & oracle.expected(agreements["police-prevention"], FIXED_TODAY)
    )
    assert len(both) > 10
    person = both[len(both) // 2]
    assert health.ref(person) != police.ref(person)
    lookup = "query One($ref: ID!) { person(ref: $ref) { ref } }"
    assert (await health.data(lookup, {"ref": health.ref(person)}))["person"] == {"ref": health.ref(person)}
    # Another partner's ref for the same person is no ref here: null, as for one never issued.
    assert (await health.data(lookup, {"ref": police.ref(person)}))["person"] is None


# -- counts, on a population made for them ---------------------------------------------------------


@pytest.fixture
async def fresh(database_url: str, tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY, people=60) as made:
        yield made


async def _add_block(
    engine: AsyncEngine, *, first_id: int, district: str, age: int, count: int, **flags: Any
) -> list[int]:
    """`count` people of one age, each in a household of their own in `district`, eligible."""
    born = years_before(FIXED_TODAY, age) - timedelta(days=30)
    rows: dict[str, list[dict[str, Any]]] = {"a": [], "h": [], "p": [], "s": []}
    for i in range(count):
        n = first_id + i
        rows["a"].append({"id": n, "uprn": None, "line1": f"{n} Block Road", "line2": None, "town": "London",
                          "postcode": f"{district} {1 + i % 9}AB"})  # fmt: skip
        rows["h"].append({"id": n, "address_id": n})
        rows["p"].append({"id": n, "household_id": n, "given_name": "Zed", "family_name": f"Blockley{n}",
                          "date_of_birth": born, "retention_until": date(2030, 1, 1),
                          "protected_address": flags.get("protected", False)})  # fmt: skip
        rows["s"].append({"id": n, "household_id": n, "assessed_on": FIXED_TODAY - timedelta(days=10),
                          "eligible": True, "coordinated_support": False})  # fmt: skip
    async with engine.begin() as conn:
        for table, key in ((addresses, "a"), (households, "h"), (people, "p"), (assessments, "s")):
            await conn.execute(insert(table), rows[key])
        for n in range(first_id, first_id + flags.get("objectors", 0)):
            await conn.execute(
                insert(objections).values(person_id=n, agreement_id=PUBLIC_HEALTH, recorded_on=FIXED_TODAY)
            )
    return [first_id + i for i in range(count)]


async def test_counts_leave_out_every_group_of_fewer_than_ten_and_name_no_one(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    # Twelve people aged 30 in ZZ1 and nine aged 30 in ZZ2; in ZZ3 twelve, but two of them protected
    # and one objecting, so that the view reaches only nine there.
    await _add_block(fresh.engine, first_id=7_000_001, district="ZZ1", age=30, count=12)
    await _add_block(fresh.engine, first_id=7_000_101, district="ZZ2", age=30, count=9)
    await _add_block(fresh.engine, first_id=7_000_201, district="ZZ3", age=30, count=10, objectors=1)
    await _add_block(fresh.engine, first_id=7_000_301, district="ZZ3", age=30, count=2, protected=True)
    async with app_on(fresh, settings, signing, REF_SECRET, FIXED_TODAY, PUBLIC_HEALTH) as (_, health):
        token = await health.token()
        response = await health.post(COUNTS, token=token)
        assert response.status_code == 200, response.text
        groups = response.json()["data"]["peopleCounts"]
        rows = await health.all_people(EVERYTHING, page_size=500)
    assert groups, "the seeded population and the blocks make at least one group of ten"
    assert all(group["people"] >= 10 for group in groups), groups
    # Every group given is exactly what the listing holds for it; every group of the listing with ten
    # or more people is given, and none with fewer.
    listed = Counter((r["postcodeDistrict"], r["ageBand"], r["programmeStatus"]) for r in rows)
    given = {(g["postcodeDistrict"], g["ageBand"], g["programmeStatus"]): g["people"] for g in groups}
    assert given == {key: n for key, n in listed.items() if n >= 10}
    assert given[("ZZ1", "AGE_25_TO_44", "ELIGIBLE")] == 12
    assert (
        listed[("ZZ2", "AGE_25_TO_44", "ELIGIBLE")] == 9 and ("ZZ2", "AGE_25_TO_44", "ELIGIBLE") not in given
    )
    assert (
        listed[("ZZ3", "AGE_25_TO_44", "ELIGIBLE")] == 9 and ("ZZ3", "AGE_25_TO_44", "ELIGIBLE") not in given
    )
    assert any(0 < n < 10 for n in listed.values()), "some group is small enough to be left out"
    # The count's event is in the ledger, and names no one: a count is not a disclosure of a person.
    event_id = response.headers["x-audit-event-id"]
    async with fresh.engine.connect() as conn:
        event = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).one()
        named = (
            await conn.execute(select(audit_disclosures).where(audit_disclosures.c.event_id == event_id))
        ).all()
    assert (event.outcome, event.operation_name, event.people_count, named) == ("allowed", "Counts", 0, [])


async def _add_one(engine: AsyncEngine, n: int, *, born: date, postcode: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(addresses).values(id=n, line1=f"{n} Odd Row", town="London", postcode=postcode)
        )
        await conn.execute(insert(households).values(id=n, address_id=n))
        await conn.execute(
            insert(people).values(id=n, household_id=n, given_name="Ode", family_name=f"Oddley{n}",
                                  date_of_birth=born, retention_until=date(2030, 1, 1))
        )  # fmt: skip
        await conn.execute(
            insert(assessments).values(id=n, household_id=n, assessed_on=date(2026, 1, 5), eligible=False)
        )


ONE = "query One($ref: ID!) { person(ref: $ref) { ref ageBand postcodeDistrict } }"


@pytest.mark.parametrize(
    ("postcode", "district"),
    [("W2 1AA", "W2"), ("W21AA   ", "W2"), ("w2 1aa", "W2"), (" W2 1AA", "W2"), ("W2  1AA", "W2"),
     ("EC1A1BB", "EC1A"), ("EC1A 1BB", "EC1A"), ("W2", None), ("", None), ("1AA", None)],
)  # fmt: skip
async def test_a_district_is_the_outward_code_of_any_spelling_and_never_more(
    fresh: Fresh, settings: Settings, signing: SigningKeys, postcode: str, district: str | None
) -> None:
    await _add_one(fresh.engine, 7_100_001, born=date(1990, 5, 5), postcode=postcode)
    async with app_on(fresh, settings, signing, REF_SECRET, FIXED_TODAY, PUBLIC_HEALTH) as (_, health):
        answer = await health.data(ONE, {"ref": health.ref(7_100_001)})
        # The whole view still answers: one odd record does not take the listing down with it.
        listed = await health.all_people("ref postcodeDistrict", page_size=500)
    assert answer["person"]["postcodeDistrict"] == district
    assert {"ref": health.ref(7_100_001), "postcodeDistrict": district} in listed


async def test_an_age_band_changes_on_the_first_of_january_and_never_on_a_birthday(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    """Judged by the day, the band of someone turning 18 would change on their birthday, and a partner
    reading every day would learn their date of birth."""
    born = date(2008, 11, 22)  # 18 on 2026-11-22
    await _add_one(fresh.engine, 7_100_101, born=born, postcode="W2 1AA")
    bands = {}
    for day in (
        date(2025, 12, 31),
        date(2026, 1, 1),
        date(2026, 11, 21),
        date(2026, 11, 22),
        date(2026, 12, 31),
    ):
        async with app_on(fresh, settings, signing, REF_SECRET, day, PUBLIC_HEALTH) as (_, health):
            bands[day] = (await health.data(ONE, {"ref": health.ref(7_100_101)}))["person"]["ageBand"]
    assert bands == {
        date(2025, 12, 31): "AGE_10_TO_17",
        date(2026, 1, 1): "AGE_18_TO_24",  # the year they turn 18
        date(2026, 11, 21): "AGE_18_TO_24",
        date(2026, 11, 22): "AGE_18_TO_24",
        date(2026, 12, 31): "AGE_18_TO_24",
    }
