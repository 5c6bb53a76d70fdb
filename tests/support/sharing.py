"""Two-way sharing's test database: the police and the DWP enrolled over a fresh database, with a family
the DWP sees and the police do not (yet). The `sharing` fixture is offered to tests/gateway by its conftest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings
from gateway.keys import SigningKeys
from resolvers.models import addresses, assessments, households, people
from tests.conftest import FIXED_TODAY, REF_SECRET
from tests.support.ledger import Fresh, fresh_database
from tests.support.partners import Partner, enrol

FAMILY = 8_100_001  # assessed with two needs: in the DWP's view, not in the police's cohort


@dataclass
class Sharing:
    fresh: Fresh
    police: Partner
    dwp: Partner
    app: Starlette


@pytest.fixture
async def sharing(
    database_url: str, tmp_path: Path, settings: Settings, signing: SigningKeys
) -> AsyncIterator[Sharing]:
    async with open_sharing(database_url, tmp_path, settings, signing) as made:
        yield made


@asynccontextmanager
async def open_sharing(
    database_url: str, tmp_path: Path, settings: Settings, signing: SigningKeys
) -> AsyncIterator[Sharing]:
    async with fresh_database(database_url, tmp_path, today=FIXED_TODAY, people=40) as fresh:
        await _family(fresh.engine)
        app = create_app(
            settings, engine=fresh.engine, signing=signing, ref_secret=REF_SECRET, today=lambda: FIXED_TODAY
        )
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http:
                made = [
                    await enrol(
                        fresh.engine, http, a, ref_secret=REF_SECRET, jwks_dir=settings.partner_jwks_dir
                    )
                    for a in ("police-prevention", "dwp-worklessness")
                ]
                yield Sharing(fresh, *made, app=app)
        finally:
            await app.state.batches.close()
            await app.state.sharing.settled()
            if app.state.gateway.ledger is not None:
                await app.state.gateway.ledger.close()


async def _family(engine: AsyncEngine) -> None:
    n = FAMILY
    address = {"id": n, "uprn": str(310_000_000_000 + n), "line1": f"{n} Report Road", "town": "London",
               "postcode": "W10 4CC"}  # fmt: skip
    person = {"id": n, "household_id": n, "given_name": "Cas", "family_name": "Reportley",
              "date_of_birth": date(1980, 2, 2), "retention_until": date(2031, 1, 1)}  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(insert(addresses).values(**address))
        await conn.execute(insert(households).values(id=n, address_id=n))
        await conn.execute(insert(people).values(**person))
        await conn.execute(
            insert(assessments).values(id=n, household_id=n, assessed_on=date(2026, 5, 1), eligible=False,
                                       need_housing=True, need_health=True)
        )  # fmt: skip
