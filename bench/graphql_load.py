"""What the audit ledger costs: the police page and lookup under load, ledger on and off.

    .venv/bin/python -m bench.graphql_load [--people 100000] [--runs 3] [--seconds 15] [--connections 8]

A real load generator (wrk, from Debian's packages: `apt-get install wrk`) against uvicorn on
127.0.0.1, on a fresh PostgreSQL database (created on the server named by GATEWAY_TEST_POSTGRES_URL
and dropped afterwards) seeded with synthetic people. Each round runs every workload with the ledger
on and off, alternating, so both see the same machine; the figures are medians over the rounds.
"Off" is `create_app(..., unaudited_for_benchmarks=True)`, which nothing outside bench/ uses.

wrk sends the same request again and again, so it cannot sign a fresh DPoP proof per request: the
benchmark serves a copy of the shipped agreements in which police-prevention takes a shared secret,
bearer tokens and an asserted officer (`bench_agreements`), with its daily quota of people raised; the
two documents are registered for the client, and the client's rate limits raised. The view, its SQL,
the trusted-document lookup, the rate limiter and the ledger are those of the shipped agreement; the
proof check (one ES256 verification and one replay-store insert per request) is not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from bench.wrk import run_wrk
from gateway.app import create_app
from gateway.audit import verify_ledger
from gateway.audit.tables import audit_events
from gateway.config import Settings
from gateway.db import create_engine, upgrade
from gateway.guard import add_document
from gateway.keys import SigningKeys, generate_key
from gateway.oauth import add_client
from policies import AGREEMENTS_DIR, load_agreements
from resolvers import seed_population
from resolvers.models import assessments, people
from schema import build_view
from tests.support.databases import postgres_database
from tests.support.server import serve_in_thread

TODAY = date(2026, 11, 22)
SECRET = b"benchmark ref secret, at least thirty-two bytes"
PAGE = (
    "query Page { people(first: 100) { edges { node { ref givenName familyName dateOfBirth postcode } } } }"
)
LOOKUP = (
    'query Lookup { findPeople(familyName: "{family}", dateOfBirth: "{born}") '
    "{ ref givenName familyName dateOfBirth postcode } }"
)


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def bench_agreements(directory: Path) -> Path:
    """The shipped agreements, with police-prevention's access relaxed to what wrk can send."""
    for source in AGREEMENTS_DIR.glob("*.yaml"):
        text = source.read_text(encoding="utf-8")
        if source.stem == "police-prevention":
            access = text.index("client_authentication:")
            end = text.index("\n", text.index("officer_claim:")) + 1
            relaxed = (
                "client_authentication: [client_secret_basic]\ntoken_binding: bearer\nacting_user: asserted\n"
            )
            text = text[:access] + relaxed + text[end:]
            # The measured client asks for the same people again and again, far past a day's quota.
            text = text.replace("people_per_day: 5000", "people_per_day: 10000000")
        (directory / source.name).write_text(text, encoding="utf-8")
    load_agreements(directory)  # refuse to measure anything the loader would not accept
    return directory


def _lua(body: str, token: str) -> str:
    quoted = body.replace("\\", "\\\\").replace('"', '\\"')
    return (
        'wrk.method = "POST"\n'
        f'wrk.body = "{quoted}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        'wrk.headers["X-Acting-User"] = "bench-officer"\n'
        'wrk.headers["X-Case-Reference"] = "BENCH-1"\n'
    )


def _wrk(url: str, script: Path, seconds: int, connections: int) -> Run:
    done = run_wrk(url, script, seconds, connections)
    return Run(done.requests_per_second, done.p50_ms, done.p99_ms, done.requests, done.non_2xx)


def _measure(
    settings: Settings,
    signing: SigningKeys,
    client_id: str,
    secret: str,
    workloads: dict[str, str],
    *,
    runs: int,
    seconds: int,
    connections: int,
) -> dict[tuple[str, str], list[Run]]:
    """Serve each mode in turn on uvicorn and load it with wrk; blocking, so it runs on a thread."""
    results: dict[tuple[str, str], list[Run]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(runs):
            for mode in ("ledger on", "ledger off"):
                app = create_app(
                    settings,
                    signing=signing,
                    ref_secret=SECRET,
                    today=lambda: TODAY,
                    unaudited_for_benchmarks=mode == "ledger off",
                )
                with serve_in_thread(app) as base:
                    for name, query in workloads.items():
                        token = httpx.post(  # a token lives ten minutes at most: one per workload
                            f"{base}/oauth/token",
                            data={"grant_type": "client_credentials"},
                            auth=(client_id, secret),
                        ).json()["access_token"]
                        script = Path(scratch) / "post.lua"
                        script.write_text(_lua(json.dumps({"query": query}), token), encoding="utf-8")
                        _wrk(f"{base}/graphql", script, 3, connections)  # warm-up
                        run = _wrk(f"{base}/graphql", script, seconds, connections)
                        results.setdefault((name, mode), []).append(run)
                        print(
                            f"  round {round_number + 1} {name:<28} {mode:<10} "
                            f"{run.requests_per_second:8.1f} req/s  p50 {run.p50_ms:6.2f} ms  "
                            f"p99 {run.p99_ms:6.2f} ms  non-2xx {run.errors}",
                            flush=True,
                        )
    return results


def _report(results: dict[tuple[str, str], list[Run]], workloads: dict[str, str], heading: str) -> None:
    print(f"\n{heading}")
    print(f"  {'workload':<28} {'mode':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name in workloads:
        medians = {}
        for mode in ("ledger on", "ledger off"):
            series = results[(name, mode)]
            medians[mode] = statistics.median(r.requests_per_second for r in series)
            p50 = statistics.median(r.p50_ms for r in series)
            p99 = statistics.median(r.p99_ms for r in series)
            print(f"  {name:<28} {mode:<10} {medians[mode]:8.1f} {p50:8.2f} {p99:8.2f}")
        print(f"  {'':<28} {'on / off':<10} {medians['ledger on'] / medians['ledger off']:8.2f}")
    errors = sum(r.errors for series in results.values() for r in series)
    print(f"  non-2xx responses in all runs: {errors}")


async def main(people_count: int, runs: int, seconds: int, connections: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    agreements_dir = bench_agreements(Path(tempfile.mkdtemp(prefix="gateway-bench-agreements-")))
    async with postgres_database() as url:
        engine = create_engine(url)
        await upgrade(engine)
        print(f"seeding {people_count:,} synthetic people into a fresh PostgreSQL database ...", flush=True)
        async with engine.begin() as conn:
            await seed_population(conn, people_count=people_count, seed=1, today=TODAY)
            client = await add_client(
                conn,
                agreement_id="police-prevention",
                known_agreements=set(load_agreements(agreements_dir)),
                with_secret=True,
            )
        async with engine.connect() as conn:
            member = (
                await conn.execute(
                    select(people.c.family_name, people.c.date_of_birth)
                    .join(assessments, assessments.c.household_id == people.c.household_id)
                    .where(assessments.c.eligible.is_(True), people.c.restricted.is_(False))
                    .order_by(people.c.id)
                    .limit(1)
                )
            ).one()
        await engine.dispose()

        settings = Settings(
            database_url=url,
            ref_secret=SecretStr(SECRET.decode()),
            token_ttl_seconds=600,
            agreements_dir=agreements_dir,
            audit_witness=tempfile.mkdtemp(prefix="gateway-bench-witness-"),
            # wrk is one client asking as fast as it can: the rate limits would measure only themselves.
            requests_per_second=10_000,
            requests_per_minute=600_000,
        )
        signing = SigningKeys.from_keys([generate_key()])
        lookup = LOOKUP.replace("{family}", member.family_name).replace(
            "{born}", member.date_of_birth.isoformat()
        )
        workloads = {"police page (100 people)": PAGE, "police lookup (findPeople)": lookup}
        # The police run registered documents only: register the two, as the council's operator would.
        engine = create_engine(url)
        police = build_view(load_agreements(agreements_dir)["police-prevention"])
        async with engine.begin() as conn:
            for document in workloads.values():
                await add_document(
                    conn, client_id=client.record.client_id, text=document, view=police, added_by="bench",
                    max_tokens=settings.max_query_tokens,
                )  # fmt: skip
        await engine.dispose()
        results = await asyncio.to_thread(
            _measure, settings, signing, client.record.client_id, client.secret or "", workloads,
            runs=runs, seconds=seconds, connections=connections,
        )  # fmt: skip
        _report(
            results,
            workloads,
            f"medians over {runs} rounds, {seconds} s each, wrk -t1 -c{connections}, "
            f"PostgreSQL, {people_count:,} people",
        )

        engine = create_engine(url)
        async with engine.connect() as conn:
            recorded = len((await conn.execute(select(audit_events.c.id))).all())
        reports = await verify_ledger(engine, signing.verification)
        await engine.dispose()
        state = "intact" if all(r.ok for r in reports) else "NOT INTACT"
        print(f"  ledger after the runs: {recorded:,} events, {len(reports)} chains, {state}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.people, arguments.runs, arguments.seconds, arguments.connections))
