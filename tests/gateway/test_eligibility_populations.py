"""Populations that depend on eligibility follow the evidence, on SQLite and PostgreSQL, over HTTP with real
tokens: a family the assessor found not eligible moves into the police's cohort when a recorded
contribution meets a third outcome, and out on the day that evidence ages; a family never assessed moves
into the DWP's population on a report of out-of-work benefits, and out when a later report says otherwise.
Evidence whose request's audit event was never written (pending) changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Settings
from gateway.keys import SigningKeys
from policies.eligibility import load_eligibility
from resolvers.eligibility import refresh_households
from resolvers.models import addresses, assessments, contributions, households, people
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.ledger import Fresh, app_on, fresh_database

RULES = load_eligibility()
FAMILY, PARENT = 8_000_001, 8_000_001
LONER = 8_000_101


@pytest.fixture
async def fresh(database_url: str, tmp_path: Path) -> AsyncIterator[Fresh]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY, people=40) as made:
        yield made


async def _family(engine: AsyncEngine, n: int, *, needs: tuple[str, ...] | None) -> None:
    """One adult in a household of their own; assessed with `needs` (None: never assessed)."""
    address = {"id": n, "uprn": str(300_000_000_000 + n), "line1": f"{n} Evidence Way", "town": "London",
               "postcode": "W9 2BB"}  # fmt: skip
    person = {"id": n, "household_id": n, "given_name": "Eve", "family_name": f"Proofley{n}",
              "date_of_birth": date(1985, 4, 4), "retention_until": date(2031, 1, 1)}  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(addresses).values(**address))
        await conn.execute(insert(households).values(id=n, address_id=n))
        await conn.execute(insert(people).values(**person))
        if needs is not None:
            await conn.execute(
                insert(assessments).values(
                    id=n, household_id=n, assessed_on=date(2026, 6, 1), eligible=False,
                    **dict.fromkeys(needs, True),
                )
            )  # fmt: skip


async def _contribute(engine: AsyncEngine, person: int, indicator: str, on: date, *, state: str = "recorded",
                      **values: Any) -> str:  # fmt: skip
    made = uuid.uuid4().hex
    async with engine.begin() as conn:
        await conn.execute(
            insert(contributions).values(
                id=made, person_id=person, household_id=person, indicator=indicator, observed_on=on,
                client_id="test-client", agreement_id="police-prevention", event_id=uuid.uuid4().hex,
                recorded_at=datetime.now(UTC), state=state, idempotency_key=made, fingerprint="0" * 64,
                **values,
            )
        )  # fmt: skip
        await refresh_households(conn, [person], RULES)
    return made


async def _listed(
    fresh: Fresh, settings: Settings, signing: SigningKeys, agreement: str, day: date
) -> set[int]:
    """Everyone the agreement's listing holds on `day`, paged to the end."""
    async with app_on(fresh, settings, signing, REF_SECRET, day, agreement) as (_, partner):
        return {partner.person_id(node["ref"]) for node in await partner.all_people("ref")}


async def test_a_third_outcome_from_the_police_brings_a_family_into_the_cohort_until_it_ages(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    await _family(fresh.engine, FAMILY, needs=("need_housing", "need_health"))
    assert PARENT not in await _listed(fresh, settings, signing, "police-prevention", FIXED_TODAY)
    # Reported, but its request's event was never written: no effect.
    await _contribute(fresh.engine, PARENT, "proven_offence", date(2025, 12, 10), state="pending")
    assert PARENT not in await _listed(fresh, settings, signing, "police-prevention", FIXED_TODAY)
    await _contribute(fresh.engine, PARENT, "proven_offence", date(2025, 12, 10))
    assert PARENT in await _listed(fresh, settings, signing, "police-prevention", FIXED_TODAY)
    assert PARENT in await _listed(fresh, settings, signing, "police-prevention", date(2026, 12, 9))
    # Twelve months after the offence, the evidence has aged: out, with no job run and nothing written.
    assert PARENT not in await _listed(fresh, settings, signing, "police-prevention", date(2026, 12, 10))


async def test_out_of_work_benefits_bring_an_unassessed_family_into_the_dwp_view_until_a_later_report(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    await _family(fresh.engine, LONER, needs=None)
    assert LONER not in await _listed(fresh, settings, signing, "dwp-worklessness", FIXED_TODAY)
    await _contribute(fresh.engine, LONER, "out_of_work_benefits", date(2026, 9, 1), flag=True)
    assert LONER in await _listed(fresh, settings, signing, "dwp-worklessness", FIXED_TODAY)
    # One outcome is not three: the police's cohort does not have them.
    assert LONER not in await _listed(fresh, settings, signing, "police-prevention", FIXED_TODAY)
    await _contribute(fresh.engine, LONER, "out_of_work_benefits", date(2026, 11, 1), flag=False)
    assert LONER not in await _listed(fresh, settings, signing, "dwp-worklessness", FIXED_TODAY)
    # Before the later report, they were in: the timeline keeps the past as well as the future.
    assert LONER in await _listed(fresh, settings, signing, "dwp-worklessness", date(2026, 10, 15))


async def test_a_conflict_between_reports_moves_no_one(
    fresh: Fresh, settings: Settings, signing: SigningKeys
) -> None:
    await _family(fresh.engine, LONER, needs=None)
    await _contribute(fresh.engine, LONER, "out_of_work_benefits", date(2026, 9, 1), flag=True)
    await _contribute(fresh.engine, LONER, "out_of_work_benefits", date(2026, 9, 1), flag=False)
    assert LONER not in await _listed(fresh, settings, signing, "dwp-worklessness", FIXED_TODAY)
    async with fresh.engine.begin() as conn:  # the contradicting report withdrawn: the first stands
        await conn.execute(
            update(contributions).where(contributions.c.flag.is_(False)).values(state="withdrawn")
        )
        await refresh_households(conn, [LONER], RULES)
    assert LONER in await _listed(fresh, settings, signing, "dwp-worklessness", FIXED_TODAY)
