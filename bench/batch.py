"""A partner's batch of 10,000 reports, uploaded and worked through, on PostgreSQL and SQLite.

    .venv/bin/python -m bench.batch [--rows 10000] [--people 30000] [--databases postgresql,sqlite]

For each database: a fresh one (PostgreSQL on the server of GATEWAY_TEST_POSTGRES_URL, dropped afterwards;
SQLite in a temporary directory) migrated and seeded with `--people` synthetic people; the gateway's app
with the ledger on, the DWP enrolled with real keys (private_key_jwt, DPoP). The DWP uploads `--rows` rows
of NDJSON: nine in ten report out-of-work benefits about a person in its view (by its own ref, each person
once), one in twenty refers a two-year-old, one in twenty is wrong (a ref it was never given, a bad date).
Prints the upload's time, the job's progress as the partner polls it (every half second), the time to the
last row and to the batch's event, rows per second, and checks: every row has one result, the ledger has
one batch event naming every person reported on, and every accepted report is recorded evidence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.audit.tables import audit_disclosures, audit_events
from gateway.config import Settings
from gateway.keys import SigningKeys, generate_key
from resolvers.models import batch_rows, contributions, referrals
from tests.conftest import UNLIMITED
from tests.support.databases import postgres_admin_url
from tests.support.ledger import drop_templates, fresh_database
from tests.support.partners import enrol

TODAY = date(2026, 11, 22)
REF_SECRET = b"bench-batch-ref-secret-0123456789abcdef"


def _letters(n: int) -> str:
    """A made-up given name for row n (names hold no digits)."""
    out = ""
    while True:
        n, rest = divmod(n, 26)
        out += "abcdefghijklmnopqrstuvwxyz"[rest]
        if n == 0:
            return out.capitalize()


def _rows(refs: list[str], count: int, rng: random.Random) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in range(count):
        pick = n % 20
        if pick == 0:
            born = TODAY - timedelta(days=rng.randrange(365 * 2, 365 * 3 - 30))
            rows.append({
                "report": "reportTwoYearOldOfferEligible", "givenName": _letters(n), "familyName": "Benchley",
                "dateOfBirth": born.isoformat(), "addressLine1": f"{n} Batch Road", "town": "London",
                "postcode": "W2 1AA",
            })  # fmt: skip
        elif pick == 1:
            rows.append({"report": "reportBenefitStatus", "ref": "not-a-ref", "outOfWorkBenefits": True,
                         "asOf": "2026-10-01"})  # fmt: skip
        else:
            rows.append({
                "report": "reportBenefitStatus", "ref": refs[n % len(refs)],
                "outOfWorkBenefits": rng.random() < 0.5,
                "asOf": (TODAY - timedelta(days=rng.randrange(1, 300))).isoformat(),
            })  # fmt: skip
    return rows


async def _one(database_url: str, *, rows: int, people: int, directory: Path) -> None:
    kind = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    settings = Settings(
        database_url=database_url, issuer="http://127.0.0.1:8000",
        signing_key_file=directory / "unused-signing-key.json", ref_secret=SecretStr(REF_SECRET.decode()),
        ref_secret_file=directory / "unused-ref-secret", audit_witness=str(directory / "witness"),
        partner_jwks_dir=directory / "partner-jwks", dpop_nonce=False, **UNLIMITED,
    )  # fmt: skip
    signing = SigningKeys.from_keys([generate_key()])
    started = time.perf_counter()
    async with fresh_database(database_url, directory, today=TODAY, people=people) as fresh:
        seeded = time.perf_counter() - started
        app = create_app(
            settings, engine=fresh.engine, signing=signing, ref_secret=REF_SECRET, today=lambda: TODAY
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            dwp = await enrol(fresh.engine, http, "dwp-worklessness", ref_secret=REF_SECRET,
                              jwks_dir=settings.partner_jwks_dir)  # fmt: skip
            refs = [node["ref"] for node in await dwp.all_people("ref", page_size=500)]
            body = b"".join(json.dumps(r).encode() + b"\n" for r in _rows(refs, rows, random.Random(7)))
            print(f"{kind}: {people:,} people seeded in {seeded:.1f} s; {len(refs):,} in the DWP's view")
            sent = time.perf_counter()
            headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "bench-0001"}
            answered = await dwp.send("POST", "/batches", content=body, headers=headers)
            uploaded = time.perf_counter() - sent
            assert answered.status_code == 202, answered.text
            job = answered.json()
            print(
                f"  upload: {len(body) / 1e6:.2f} MB, {job['rows']:,} rows, answered 202 in {uploaded:.2f} s"
            )
            shown = None
            polls: list[float] = []  # each progress request's time: what other requests wait meanwhile
            while job["state"] in ("received", "running", "sealing"):
                await asyncio.sleep(0.5)
                asked = time.perf_counter()
                job = (await dwp.send("GET", f"/batches/{job['id']}")).json()
                polls.append(time.perf_counter() - asked)
                if (job["state"], job["processed"]) == shown:
                    continue  # polled, and nothing moved: printed when it does
                shown = (job["state"], job["processed"])
                print(f"  {time.perf_counter() - sent:6.1f} s  {job['state']:<8} {job['processed']:>6,} rows "
                      f"({job['percent']:>3}%)  accepted {job['accepted']:,}  "
                      f"rejected {job['rejected']:,}")  # fmt: skip
            total = time.perf_counter() - sent
            results = (await dwp.send("GET", f"/batches/{job['id']}/results")).text.splitlines()
            await app.state.batches.close()
            await app.state.sharing.settled()  # referrals are matched in the background, after `done`
            if app.state.gateway.ledger is not None:
                await app.state.gateway.ledger.close()
        async with fresh.engine.connect() as conn:
            events = (
                await conn.execute(select(func.count()).where(audit_events.c.endpoint == "batch"))
            ).scalar()
            named = (
                await conn.execute(select(func.count()).where(audit_disclosures.c.event_id == job["eventId"]))
            ).scalar()
            distinct = (
                await conn.execute(
                    select(func.count(func.distinct(batch_rows.c.person_id))).where(
                        batch_rows.c.status == "accepted"
                    )
                )
            ).scalar()
            recorded = (
                await conn.execute(select(func.count()).where(contributions.c.state == "recorded"))
            ).scalar()
            opened = (await conn.execute(select(func.count()).where(referrals.c.state != "pending"))).scalar()
    print(f"  done in {total:.1f} s: {rows / total:,.0f} rows/s; {job['accepted']:,} accepted, "
          f"{job['rejected']:,} rejected; {len(results):,} row results")  # fmt: skip
    median, slowest = statistics.median(polls) * 1000, max(polls) * 1000
    print(f"  progress requests while it ran (each with its own audit event): median {median:.0f} ms, "
          f"slowest {slowest:.0f} ms, {len(polls)} asked")  # fmt: skip
    print(f"  ledger: {events} batch event naming {named:,} people ({distinct:,} reported on); "
          f"{recorded:,} reports recorded as evidence; {opened:,} referrals matched or opened")  # fmt: skip
    ok = len(results) == rows and events == 1 and named == distinct and job["state"] == "done"
    print(f"  checks: {'passed' if ok else 'FAILED'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--people", type=int, default=30_000)
    parser.add_argument("--databases", default="postgresql,sqlite")
    args = parser.parse_args()
    try:
        for kind in args.databases.split(","):
            with tempfile.TemporaryDirectory(prefix="bench-batch-") as directory:
                url = (
                    postgres_admin_url() if kind == "postgresql" else f"sqlite+aiosqlite:///{directory}/x.db"
                )
                await _one(url, rows=args.rows, people=args.people, directory=Path(directory))
    finally:
        await drop_templates()


if __name__ == "__main__":
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "WARNING")
    asyncio.run(main())
