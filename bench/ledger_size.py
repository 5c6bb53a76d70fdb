"""What the ledger costs on disk, and how long verification takes, on PostgreSQL.

    .venv/bin/python -m bench.ledger_size [--events 200000] [--chains 4] [--runs 2]

On a fresh database (created on the server named by GATEWAY_TEST_POSTGRES_URL and dropped afterwards),
migrated to the partitioned ledger, writes `--events` hash-chained events over `--chains` chains, as a
day of partner traffic would: nine in ten are one-person lookups, one in ten a page of 100 people, so
about 10.9 disclosure rows per event. Rows are written in batches of 1,000 events (the hashes are the
writer's own, `event_row`), with a signed checkpoint every 1,000 events per chain. Prints:

- bytes per event and per disclosure row, tables and their indexes included (pg_total_relation_size
  over every partition, after VACUUM ANALYZE);
- the time `gateway audit verify` takes (verify_ledger: every hash recomputed, every checkpoint
  signature checked), the median of `--runs`, and that time scaled to a million events.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import verify_ledger
from gateway.audit.chains import sign_checkpoint
from gateway.audit.events import GENESIS, EventDraft, event_row, time_text
from gateway.audit.tables import audit_chains, audit_checkpoints, audit_disclosures, audit_events
from gateway.db import create_engine, upgrade
from gateway.keys import SigningKeys, generate_key
from tests.support.databases import postgres_database

FIELDS = ("givenName", "familyName", "dateOfBirth", "postcode")
BATCH = 1_000


async def _write(engine: AsyncEngine, signing: SigningKeys, events: int, chains: int) -> tuple[int, int]:
    rng = random.Random(20261130)
    start = datetime.now(UTC) - timedelta(days=1)
    heads = {str(uuid.uuid4()): (0, GENESIS) for _ in range(chains)}
    async with engine.begin() as conn:
        for chain_id in heads:
            await conn.execute(
                insert(audit_chains).values(
                    chain_id=chain_id,
                    started_at=time_text(start),
                    host="bench",
                    process_id=1,
                    writer="gateway",
                )
            )
    written = disclosures = 0
    while written < events:
        rows: list[dict[str, Any]] = []
        register: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        for chain_id, (seq, prev) in list(heads.items()):
            for _ in range(min(BATCH // chains, events - written)):
                people = 100 if rng.random() < 0.1 else 1
                first = rng.randrange(1, 200_000)
                moment = time_text(start + timedelta(microseconds=written * 400))
                draft = EventDraft(
                    endpoint="graphql", outcome="allowed", http_status=200,
                    latency_us=rng.randrange(2_000, 30_000), occurred_at=moment, client_id="bench-client",
                    agreement_id="police-prevention",
                    agreement_version=3, purpose="Prevention", lawful_basis=("UK GDPR 6(1)(e)",),
                    decision_rule="population", acting_user="pc-4471", case_reference="CASE-2026-0001",
                    operation_name="PolicePage", document_sha256="ab" * 32, fields_disclosed=FIELDS,
                    client_address="10.0.0.7", trace_id="cd" * 16, token_jti=uuid.uuid4().hex,
                    disclosures=tuple((first + i, FIELDS) for i in range(people)),
                )  # fmt: skip
                seq += 1
                row = event_row(draft, chain_id=chain_id, seq=seq, prev_hash=prev)
                row["recorded_at"] = moment
                prev = row["hash"]
                rows.append(row)
                register += [
                    {"event_id": row["id"], "person_id": p, "fields": ",".join(f), "recorded_at": moment}
                    for p, f in draft.disclosures
                ]
                written += 1
            heads[chain_id] = (seq, prev)
            if seq:
                checkpoints.append(sign_checkpoint(signing, chain_id, seq, prev, final=False))
        async with engine.begin() as conn:
            await conn.execute(insert(audit_events), rows)
            await conn.execute(insert(audit_disclosures), register)
            await conn.execute(insert(audit_checkpoints), checkpoints)
        disclosures += len(register)
    return written, disclosures


async def _bytes(engine: AsyncEngine, parent: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                "WHERE i.inhparent = CAST(:p AS regclass)"
            ),
            {"p": parent},
        )
        return int(found.scalar_one())


async def main(events: int, chains: int, runs: int) -> None:
    signing = SigningKeys.from_keys([generate_key()])
    async with postgres_database() as url:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            began = time.perf_counter()
            written, disclosures = await _write(engine, signing, events, chains)
            seconds = time.perf_counter() - began
            print(f"wrote {written:,} events and {disclosures:,} disclosure rows in {seconds:.1f} s")
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE audit_events"))
                await conn.execute(text("VACUUM ANALYZE audit_disclosures"))
            event_bytes = await _bytes(engine, "audit_events")
            disclosure_bytes = await _bytes(engine, "audit_disclosures")
            mib = event_bytes / 2**20
            print(f"audit_events:      {event_bytes / written:8.0f} bytes per event ({mib:,.0f} MiB)")
            print(
                f"audit_disclosures: {disclosure_bytes / disclosures:8.0f} bytes per disclosure row "
                f"({disclosure_bytes / 2**20:,.0f} MiB; {disclosure_bytes / written:,.0f} bytes per event)"
            )
            timings = []
            for _ in range(runs):
                began = time.perf_counter()
                reports = await verify_ledger(engine, signing.audit_verification)
                timings.append(time.perf_counter() - began)
                assert all(r.ok for r in reports) and sum(r.events for r in reports) == written, reports
            median = statistics.median(timings)
            print(
                f"audit verify: {median:.1f} s for {written:,} events (median of {runs}: "
                f"{', '.join(f'{t:.1f}' for t in timings)}), "
                f"{median * 1_000_000 / written / 60:.1f} min per million"
            )
        finally:
            await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    asyncio.run(main(options.events, options.chains, options.runs))
